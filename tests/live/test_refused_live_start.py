"""A live start refused with exit 2 leaves the state dir as it found it
(break test of the README): an IBKR gateway or a Binance API that cannot
be reached at start left ``desk.sqlite`` and ``venue-ibkr.sqlite`` behind;
missing credentials created and locked the state dir (``desk.lock``) before
they were refused. Now: credentials are refused before the state dir is
created, and what a refused start created in a dir without a store is
removed again (``desk.wiring.StateDir.abandon``).

Through ``desk.cli.main`` in-process. The unreachable venues are loopback
ports nobody listens on (connection refused at once)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import desk.live
from desk.cli import main
from tests.daemon.test_daemon import free_port
from tests.helpers.scripted import InlineExecutor
from tests.live.test_live_binance import KEY, KEY_ENV, SECRET, SECRET_ENV


@pytest.fixture(autouse=True)
def _root_log_handlers():
    saved = logging.root.handlers[:]  # main() points the root logger at this test's stderr
    yield
    logging.root.handlers[:] = saved


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's credentials in the environment; fits inline."""
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setattr(desk.live, "default_executor", InlineExecutor)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ibkr_config(tmp_path: Path, port: int) -> Path:
    """examples/ibkr-paper.yaml, its gateway on ``port``."""
    cfg = {"venues": [{"kind": "ibkr", "name": "IBKR", "host": "127.0.0.1", "port": port, "client_id": 17,
                       "account": "DU0000000",
                       "contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART", "currency": "USD"}]}]}
    p = tmp_path / "ibkr.yaml"
    p.write_text(json.dumps(cfg))
    return p


def binance_config(tmp_path: Path, port: int) -> Path:
    """A Binance spot testnet venue whose API is on ``port`` (ccxt pointed there)."""
    b = f"http://127.0.0.1:{port}"
    urls = {"public": f"{b}/api/v3", "private": f"{b}/api/v3", "v1": f"{b}/api/v1", "sapi": f"{b}/sapi/v1",
            "ws": f"ws://127.0.0.1:{port}/ws", "ws-api": f"ws://127.0.0.1:{port}/ws-api/v3"}
    cfg = {"capital": "1000", "venues": [{"kind": "binance", "name": "BINANCE", "market": "spot", "testnet": True,
                                          "symbols": ["BTCUSDT"], "api_key_env": KEY_ENV,
                                          "api_secret_env": SECRET_ENV, "urls": urls}]}
    p = tmp_path / "binance.yaml"
    p.write_text(json.dumps(cfg))
    return p


def test_an_unreachable_ibkr_gateway_leaves_the_state_dir_as_it_was(tmp_path, capsys):
    port = free_port()
    cfg = ibkr_config(tmp_path, port)
    state = tmp_path / "var" / "x"  # neither var/ nor var/x exist
    code, out, err = run(capsys, "run", "--config", str(cfg), "--headless", "--state-dir", str(state))
    assert code == 2 and out == ""
    assert f"127.0.0.1:{port}" in err.split("desk: error:")[-1]
    assert not (tmp_path / "var").exists()

    mine = tmp_path / "mine"  # a dir of the operator's, with a file in it
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    assert run(capsys, "run", "--config", str(cfg), "--headless", "--state-dir", str(mine))[0] == 2
    # desk.sqlite and venue-ibkr.sqlite (and their -wal/-shm) are gone; desk.lock stays in a dir that existed
    assert sorted(p.name for p in mine.iterdir()) == ["desk.lock", "notes.txt"]


def test_an_unreachable_binance_api_leaves_the_state_dir_as_it_was(tmp_path, capsys, creds):
    cfg = binance_config(tmp_path, free_port())
    state = tmp_path / "s"
    state.mkdir()
    code, out, err = run(capsys, "run", "--config", str(cfg), "--headless", "--state-dir", str(state))
    assert code == 2 and out == ""
    assert "venue BINANCE at start" in err
    assert sorted(p.name for p in state.iterdir()) == ["desk.lock"]


def test_missing_credentials_are_refused_before_the_state_dir_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    cfg = binance_config(tmp_path, free_port())
    state = tmp_path / "var" / "x"
    code, out, err = run(capsys, "run", "--config", str(cfg), "--headless", "--state-dir", str(state))
    assert code == 2 and KEY_ENV in err and SECRET_ENV in err
    assert not (tmp_path / "var").exists()  # not created, not locked
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "run", "--config", str(cfg), "--headless", "--state-dir", str(empty))[0] == 2
    assert list(empty.iterdir()) == []  # no desk.lock either
