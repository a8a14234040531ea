"""``desk run --exchange-info FILE`` without ``--data`` (the SIM market or a
live venue, whose filters come from elsewhere) is refused with exit 2, not
silently ignored."""

from __future__ import annotations

import logging

import pytest

from desk.cli import main


@pytest.fixture(autouse=True)
def _root_log_handlers():
    saved = logging.root.handlers[:]  # main() points the root logger at this test's stderr
    yield
    logging.root.handlers[:] = saved


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_exchange_info_without_data_is_refused(tmp_path, capsys):
    state = tmp_path / "s"
    code, out, err = run(capsys, "run", "--headless", "--bars", "50", "--exchange-info", "/nonexistent",
                         "--state-dir", str(state))
    assert code == 2 and out == ""
    assert "desk: error: --exchange-info: only with --data (the SIM market and live venues have their own " \
           "filters)" in err
    assert not state.exists()
