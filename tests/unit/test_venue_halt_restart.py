"""A per-venue halt survives a restart, and the start says so (a break
test: nothing at start mentioned the halt kept in the store)."""

import sqlite3

from desk.cli import main


def test_a_kept_venue_halt_is_named_at_start(tmp_path, capsys):
    state = tmp_path / "s"
    assert main(["run", "--headless", "--bars", "3", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    with sqlite3.connect(state / "desk.sqlite") as c:  # as governance.halt_venue stores it
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('halted_venues', 'SIM')")
    assert main(["run", "--headless", "--bars", "6", "--state-dir", str(state)]) == 0
    err = capsys.readouterr().err
    assert "venue halt kept from before this start: SIM" in err
