"""A live start refused with exit 2 leaves the state dir as it found it
(break test of the README): an IBKR gateway or a Binance API that cannot
be reached at start left ``desk.sqlite`` and ``venue-ibkr.sqlite`` behind;
missing credentials created and locked the state dir (``desk.lock``) before
they were refused. Now: credentials are refused before the state dir is
created, and what a refused start created in a dir without a store is
removed again (``desk.wiring.StateDir.abandon``).

Also: a new live run that gets fewer warm-up bars than its models need says
so in a WARNING start-up line (how many it got, how many the models need,
what that means).

Through ``desk.cli.main`` in-process. The unreachable venues are loopback
ports nobody listens on (connection refused at once); the warm-up case runs
against the local fake Binance (tests/venues/binance_server.py)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

import desk.live
from desk.cli import main
from tests.daemon.test_daemon import free_port
from tests.helpers.scripted import InlineExecutor
from tests.live.test_live_binance import (
    EXCHANGE_INFO,
    KEY,
    KEY_ENV,
    MIN_MS,
    SECRET,
    SECRET_ENV,
    ThreadedFake,
    kline_rows,
    price_path,
    write_config,
)


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


@pytest.fixture
def short_fake(tmp_path: Path):
    """The fake Binance with only 10 closed 1-minute bars of history (the
    last one closed just now) and one live bar pushed after the
    subscription."""
    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    now_ms = time.time_ns() // 1_000_000
    last_closed_open = now_ms // MIN_MS * MIN_MS - MIN_MS
    rows = kline_rows(last_closed_open - 9 * MIN_MS, price_path(11, 0))
    path = tmp_path / "klines.json"
    path.write_text(json.dumps(rows[:10]))
    f = ThreadedFake(path, rows[10:])
    f.run(lambda: f.srv.set_book("BTCUSDT", "20000.00", "20000.01", "100", "100"))
    yield f
    f.close()


def test_a_short_warm_up_is_a_warning_naming_what_it_got_and_what_the_models_need(tmp_path, capsys, short_fake,
                                                                                   creds):
    cfg = write_config(tmp_path, short_fake.srv)
    code, out, err = run(capsys, "run", "--config", str(cfg), "--headless", "--bars", "1",
                         "--state-dir", str(tmp_path / "s"))
    assert code == 0, err[-3000:]
    # the default models need 500 + 20 + 1 = 521 bars before their first fit (HmmConfig warmup 500,
    # vol_window 20, one more for the first return); 10 came: 521 - 10 = 511 live bars to go
    warning = [line for line in err.splitlines() if " WARNING desk.live: desk: WARNING: only " in line]
    assert len(warning) == 1, err[-3000:]
    assert warning[0].endswith(
        "desk: WARNING: only 10 warm-up bars of BTCUSDT.BINANCE (1m); the models need 521 before their first fit "
        "(desk.wiring._warmup_bars): they trade only after they have fitted, 511 more live bars from now")
    assert json.loads(out)["orders"] == {}  # nothing fitted, nothing traded


def test_the_warm_up_warning_names_only_the_instruments_that_fell_short():
    from core.identifiers import InstrumentId
    from desk.live import warmup_shortfall, warmup_warning

    btc, eth = InstrumentId.parse("BTCUSDT.BINANCE"), InstrumentId.parse("ETHUSDT.BINANCE")
    short = warmup_shortfall({eth: 0, btc: 521}, 521)  # BTC got all it needs
    assert short == {eth: 0}
    assert warmup_shortfall({btc: 521}, 521) == {}
    two = warmup_shortfall({eth: 7, btc: 500}, 521)
    # 521 - 500 = 21 and 521 - 7 = 514 more bars, in instrument order
    assert warmup_warning(two, 521, "1m") == (
        "desk: WARNING: only 500 warm-up bars of BTCUSDT.BINANCE, 7 warm-up bars of ETHUSDT.BINANCE (1m); the "
        "models need 521 before their first fit (desk.wiring._warmup_bars): they trade only after they have "
        "fitted, 21 (BTCUSDT.BINANCE), 514 (ETHUSDT.BINANCE) more live bars from now")
