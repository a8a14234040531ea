"""The one-shot operator commands against a real daemon: ``desk status``
exits 0 ACTIVE, 3 HALTED or REDUCING, 1 unreachable (2 without a usable
token); ``desk halt`` through the API, and through the HALT file when the
API does not answer (confirmed in the store when a desk runs on the state
dir; exit 0 when none does: it halts when it starts); ``desk resume --reason`` removes the HALT file
and resumes. The commands run in-process (``desk.cli.main``) against one
daemon subprocess shared by this module."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from desk.cli import main
from tests.daemon.test_daemon import Daemon, free_port


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("oneshot"), "--speed", "20")
    try:
        d.wait_healthy()
        yield d
    finally:
        d.kill()


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)


def desk(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on(d: Daemon, *argv: str) -> list[str]:
    return [*argv, "--url", d.url, "--state-dir", str(d.state)]


def governance_rows(d: Daemon) -> list[tuple[str, str, str]]:
    with sqlite3.connect(d.state / "desk.sqlite") as c:
        return list(c.execute("SELECT who, action, reason FROM governance_actions ORDER BY seq"))


def test_status_halt_resume_exit_codes(daemon, capsys):
    d = daemon
    code, out, _ = desk(capsys, *on(d, "status"))
    assert code == 0 and out.splitlines()[0] == "trading_state: ACTIVE"

    code, out, _ = desk(capsys, *on(d, "halt", "--reason", "desk test halt"))
    assert code == 0 and json.loads(out)["trading_state"] == "HALTED"
    code, out, _ = desk(capsys, *on(d, "status", "--json"))
    assert code == 3 and json.loads(out)["trading_state"] == "HALTED"

    code, out, _ = desk(capsys, *on(d, "resume", "--reason", "desk test resume"))
    assert code == 0 and json.loads(out)["trading_state"] == "ACTIVE"
    assert desk(capsys, *on(d, "status"))[0] == 0

    code, out, _ = desk(capsys, *on(d, "halt", "--mode", "REDUCE", "--reason", "desk test reduce"))
    assert code == 0 and json.loads(out)["trading_state"] == "REDUCING"
    code, out, _ = desk(capsys, *on(d, "status"))
    assert code == 3 and out.splitlines()[0] == "trading_state: REDUCING"
    assert desk(capsys, *on(d, "resume", "--reason", "desk test resume 2"))[0] == 0

    # one venue halted (the desk ACTIVE): the desk cannot trade there, status exits 3 naming it, also from /health
    from desk.client import DaemonClient

    token = (d.state / "ops_token").read_text().strip()
    client = DaemonClient(d.url, token)
    try:
        client.request("POST", "/kill", {"enabled": False, "venue": "SIM", "reason": "desk test venue"})
        code, out, err = desk(capsys, *on(d, "status"))
        assert code == 3 and out.splitlines()[0] == "trading_state: ACTIVE" and "venues halted: SIM" in err
        client.request("POST", "/resume", {"venue": "SIM", "reason": "desk test venue back"})
    finally:
        client.close()
    assert desk(capsys, *on(d, "status"))[0] == 0

    # every command audited with the caller and the reason
    rows = [r for r in governance_rows(d) if r[2].startswith("desk test") and "venue" not in r[2]]
    assert rows == [("api:127.0.0.1", "HALTED", "desk test halt"), ("api:127.0.0.1", "ACTIVE", "desk test resume"),
                    ("api:127.0.0.1", "REDUCING", "desk test reduce"),
                    ("api:127.0.0.1", "ACTIVE", "desk test resume 2")]


def test_status_finds_the_daemon_of_its_state_dir_without_url(daemon, capsys):
    # the daemon serves on a free port (not 8002) and wrote its URL into the state dir at start
    assert (daemon.state / "api_url").read_text().strip() == daemon.url
    code, out, _ = desk(capsys, "status", "--state-dir", str(daemon.state))
    assert code in (0, 3) and "trading_state:" in out


def test_halt_falls_back_to_the_halt_file_when_the_api_does_not_answer(daemon, capsys):
    d = daemon
    dead = f"http://127.0.0.1:{free_port()}"
    code, out, err = desk(capsys, "halt", "--url", dead, "--state-dir", str(d.state), "--reason", "api down")
    assert code == 0, err
    assert "does not answer" in err and f"wrote {d.state / 'HALT'}" in err and "confirmed in the store" in err
    assert "api down" in (d.state / "HALT").read_text()
    assert desk(capsys, *on(d, "status"))[0] == 3
    assert governance_rows(d)[-1][:2] == ("HALT file", "HALTED")

    code, _, err = desk(capsys, *on(d, "resume", "--reason", "back after the HALT file"))
    assert code == 0 and "removed the HALT file" in err
    assert not (d.state / "HALT").exists()
    assert desk(capsys, *on(d, "status"))[0] == 0


def test_wrong_or_missing_token_is_exit_2(daemon, capsys, monkeypatch, tmp_path):
    d = daemon
    monkeypatch.setenv("OPS_TOKEN", "wrong-token-0123456789")
    code, _, err = desk(capsys, *on(d, "status"))
    assert code == 2 and "403" in err and "wrong-token" not in err
    code, _, err = desk(capsys, *on(d, "halt"))
    assert code == 2 and "refused the halt" in err and not (d.state / "HALT").exists()
    monkeypatch.delenv("OPS_TOKEN")
    # no token at all: status still answers from /health (which needs none), for monitoring
    code, out, _ = desk(capsys, "status", "--url", d.url, "--state-dir", str(tmp_path / "nothing"))
    health_state = d.get("/health").json()["components"]["engine"]["trading_state"]
    assert code == {"ACTIVE": 0, "HALTED": 3, "REDUCING": 3}[health_state]
    assert f"trading_state: {health_state}" in out and "no token" in out
    tok = tmp_path / "tok"
    tok.write_text(d.token())
    tok.chmod(0o644)
    code, _, err = desk(capsys, "status", "--url", d.url, "--token-file", str(tok))
    assert code == 2 and "chmod 600" in err
    tok.chmod(0o600)
    assert desk(capsys, "status", "--url", d.url, "--token-file", str(tok))[0] == 0


def test_unreachable_daemon(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    state = tmp_path / "s"
    state.mkdir()
    (state / "ops_token").write_text("some-token-0123456789\n")
    (state / "ops_token").chmod(0o600)
    code, out, err = desk(capsys, "status", "--url", dead, "--state-dir", str(state))
    assert code == 1 and out == "" and "unreachable" in err
    code, out, err = desk(capsys, "resume", "--url", dead, "--state-dir", str(state), "--reason", "x")
    assert code == 1
    # no desk runs on the state dir: the HALT file is written (the halt is in place: exit 0), and the command
    # says the desk halts when it starts
    code, out, err = desk(capsys, "halt", "--url", dead, "--state-dir", str(state), "--mode", "FLATTEN")
    assert code == 0 and (state / "HALT").exists()
    assert "no desk is running" in err and "the desk will halt when it starts" in err
    assert "does not reduce or flatten" in err
    code, _, err = desk(capsys, "halt", "--url", dead, "--state-dir", str(tmp_path / "missing"))
    assert code == 1 and "no state dir" in err


def test_resume_needs_a_reason(capsys):
    assert desk(capsys, "resume")[0] == 2
    assert desk(capsys, "resume", "--reason", "  ")[0] == 2


def test_export_pnl_calls_the_exporter(monkeypatch, tmp_path, capsys):
    import desk.export as export_module

    calls = []
    monkeypatch.setattr(export_module, "export_pnl_main", lambda *a: calls.append(a) or 0)
    assert desk(capsys, "export-pnl", "--date", "2025-01-02", "--tz", "Europe/Berlin",
                "--state-dir", str(tmp_path))[0] == 0
    assert desk(capsys, "export-pnl", "--state-dir", str(tmp_path))[0] == 0
    assert calls == [(Path(tmp_path), "2025-01-02", "Europe/Berlin"), (Path(tmp_path), None, None)]  # the run's zone
    assert desk(capsys, "export-pnl", "--date", "2025-13-01")[0] == 2
    assert desk(capsys, "export-pnl", "--tz", "Nowhere/City")[0] == 2


def test_zz_sigterm_stops_the_sim_default_cleanly(daemon):
    """Last in this module: the SIM default daemon (fit worker, fitted
    models) stopped by SIGTERM exits 0 with a committed stop."""
    import signal

    from tests.daemon.test_daemon import last_journal, meta

    assert daemon.stop(signal.SIGTERM) == 0, daemon.stderr[-3000:]
    m = meta(daemon.state)
    assert m["status"] == "stopped" and m["stopped_by"] == "SIGTERM" and m["trading_state"] == "ACTIVE"
    assert last_journal(daemon.state)[2]["code"] == "DAEMON_STOPPED"
    with sqlite3.connect(daemon.state / "desk.sqlite") as c:
        step, snap = c.execute("SELECT step, snapshot FROM checkpoint").fetchone()
    assert step == json.loads(snap)["stats"]["bars"] and json.loads(snap)["stats"]["warmup_bars"] > 1000
    assert "Traceback" not in daemon.stderr


def test_no_token_on_the_command_line(capsys):
    for argv in (["status", "--token", "SECRET-VALUE-42"], ["run", "--token=SECRET-VALUE-42"],
                 ["halt", "--url", "http://127.0.0.1:1", "--token", "SECRET-VALUE-42"]):
        code, out, err = desk(capsys, *argv)
        assert code == 2 and "no --token flag" in err and "SECRET-VALUE-42" not in err + out
    # abbreviations are off: --token-f is not --token-file
    code, _, err = desk(capsys, "status", "--token-f", "x")
    assert code == 2 and "unrecognized arguments" in err
