"""``venues: []`` in a desk.yaml is refused (exit 2), not run quietly as the
SIM paper desk; the key left out still means the SIM market."""

from __future__ import annotations

import logging

import pytest

from core.errors import ConfigError
from desk.cli import main
from desk.config import load_config


@pytest.fixture(autouse=True)
def _root_log_handlers():
    saved = logging.root.handlers[:]  # main() points the root logger at this test's stderr
    yield
    logging.root.handlers[:] = saved


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_empty_venues_list_is_refused(tmp_path, capsys):
    cfg = tmp_path / "desk.yaml"
    cfg.write_text("venues: []\n")
    with pytest.raises(ConfigError, match=r"venues: empty list; leave the key out for the SIM market, "
                                          r"or list a venue"):
        load_config(cfg)
    state = tmp_path / "s"
    code, out, err = run(capsys, "run", "--headless", "--config", str(cfg), "--bars", "3",
                         "--state-dir", str(state))
    assert code == 2 and out == "" and "venues: empty list" in err
    assert not state.exists()
    cfg.write_text("capital: 100\n")  # the key left out: the SIM market, as before
    assert load_config(cfg).venues == []
