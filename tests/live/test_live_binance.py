"""``desk run --config <yaml> --headless`` on Binance (issue 6), in-process
through ``desk.cli.main`` against the local fake Binance
(tests/venues/binance_server.py) on loopback, ccxt pointed at it through the
config's ``urls``.

The CLI runs its own event loop (``asyncio.run``), so the fake runs in a
thread with its own loop and a real-time clock (signed requests carry the
real time; the fake checks them against its own clock, like the exchange).
Its REST klines are the warm-up history, ending with the last bar closed at
the real time; once the desk subscribes to the kline stream the fake pushes
the following bars. The default models (two HMM families) fit inline
(``desk.live.default_executor`` replaced by an inline executor)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import desk.live
from core.clock import LiveClock
from desk.cli import main
from tests.conftest import SHARED_DATA
from tests.helpers.scripted import InlineExecutor
from tests.venues.binance_server import FakeBinance

D = Decimal
EXCHANGE_INFO = SHARED_DATA / "exchange-info" / "binance-spot-exchangeInfo-2023-09-08-subset.json"
KEY, SECRET = "live-test-key-0123456789", "live-test-secret-abcdef"
KEY_ENV, SECRET_ENV = "NHD_TEST_BINANCE_KEY", "NHD_TEST_BINANCE_SECRET"
MIN_MS = 60_000
#: the default models need 500 + 20 + 1 bars before their first fit (desk.wiring._warmup_bars)
WARMUP = 521
LIVE_BARS = 30


def kline_rows(first_open_ms: int, closes: list[float]) -> list[list[Any]]:
    """Binance's 12-field REST kline rows (strings) for 1-minute bars."""
    rows = []
    prev = closes[0]
    for k, c in enumerate(closes):
        o = prev
        hi, lo = max(o, c) * 1.0002, min(o, c) * 0.9998
        t = first_open_ms + k * MIN_MS
        rows.append([t, f"{o:.2f}", f"{hi:.2f}", f"{lo:.2f}", f"{c:.2f}", "12.50000000", t + MIN_MS - 1,
                     "375000.00", 100, "6.25", "187500.00", "0"])
        prev = c
    return rows


def price_path(n_warm: int, n_live: int) -> list[float]:
    """A deterministic path: 20-bar calm rises (+0.1 % a bar) alternating with
    20-bar turbulent falls (-0.1 % a bar, 0.6 % swings), then a calm rise for
    the live bars (the regime the models go long in)."""
    out, p = [], 30000.0
    for k in range(n_warm):
        if (k // 20) % 2 == 0:
            p *= 1.001 + 0.0002 * math.sin(k)
        else:
            p *= 0.999 + 0.006 * math.sin(1.7 * k)
        out.append(p)
    for k in range(n_live):
        p *= 1.001 + 0.0002 * math.sin(k)
        out.append(p)
    return out


class ThreadedFake:
    """FakeBinance in a thread of its own (its loop, a real-time clock)."""

    def __init__(self, klines: Path, live_rows: list[list[Any]], **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.live_rows = live_rows
        self.srv = FakeBinance(LiveClock(), EXCHANGE_INFO, api_key=KEY, secret=SECRET, klines=klines,
                               balances={"USDT": D("10000"), "BTC": D("1")}, **kw)
        self.pushed = 0
        self.call(self.srv.start())
        self._pusher = asyncio.run_coroutine_threadsafe(self._push_after_subscribe(), self.loop)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def run(self, fn: Any) -> Any:
        async def wrap() -> Any:
            return fn()
        return self.call(wrap())

    async def _push_after_subscribe(self) -> None:
        while True:  # after every (re)subscription, every live bar not pushed yet (a new desk: all again)
            await self.srv.subscribed.wait()
            self.srv.subscribed.clear()
            for row in self.live_rows:
                await self.srv.push_kline("BTCUSDT", row)
                self.pushed += 1

    def close(self) -> None:
        self._pusher.cancel()
        self.call(self.srv.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fake(tmp_path: Path):
    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    now_ms = time.time_ns() // 1_000_000
    last_closed_open = now_ms // MIN_MS * MIN_MS - MIN_MS
    first = last_closed_open - (WARMUP + 9) * MIN_MS  # 530 closed bars: more than the warm-up asks
    closes = price_path(WARMUP + 10, LIVE_BARS)
    rows = kline_rows(first, closes)
    path = tmp_path / "klines.json"
    path.write_text(json.dumps(rows[:WARMUP + 10]))
    f = ThreadedFake(path, rows[WARMUP + 10:])
    # the touch sits below every price: a buy at the bar's close crosses and fills at the ask
    f.run(lambda: f.srv.set_book("BTCUSDT", "20000.00", "20000.01", "100", "100"))
    f.rows = rows
    yield f
    f.close()


def write_config(tmp_path: Path, srv: FakeBinance, **venue: Any) -> Path:
    v = {"kind": "binance", "name": "BINANCE", "market": "spot", "testnet": True, "symbols": ["BTCUSDT"],
         "recv_window_ms": 5000, "api_key_env": KEY_ENV, "api_secret_env": SECRET_ENV, "urls": srv.urls, **venue}
    cfg = {"capital": "1000", "tz": "UTC", "venues": [v]}
    p = tmp_path / "binance.yaml"
    p.write_text(json.dumps(cfg))  # JSON is YAML
    return p


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setattr(desk.live, "default_executor", InlineExecutor)


def test_desk_run_config_trades_on_the_fake_binance(tmp_path, fake, creds, capsys):
    cfg = write_config(tmp_path, fake.srv)
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "20", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    # warm-up: the 521 last closed bars over REST (startTime paged), then 20 bars from the kline stream
    assert summary["warmup_bars"] == WARMUP and summary["bars"] == 20
    srv = fake.srv
    klines = [p for m, p in srv.requests if p == "/api/v3/klines"]
    assert klines, "the warm-up read REST klines"
    # start-up lines: the venue, the account, the limits and the config's hash
    import hashlib

    digest = hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert f"sha256={digest}" in err
    assert "BINANCE: account" in err and "limits REQUEST_WEIGHT" in err and "testnet" in err
    # the desk's orders reached the fake, signed, each under its NHD- client order id
    ours = [o for o in srv.orders.values() if o.client_order_id.startswith("NHD-")]
    assert ours and len(ours) == len(srv.orders)
    assert srv.signed_ok == srv.signed_total > 0
    # books: the first buy filled at the ask 20000.01; the venue's BTC moved by exactly the book's position
    filled = [o for o in ours if o.executed_qty > 0]
    assert filled
    book_btc = D(summary["positions"]["BTCUSDT.BINANCE"]["quantity"])
    bought = sum((o.executed_qty for o in filled if o.side == "BUY"), D(0))
    sold = sum((o.executed_qty for o in filled if o.side == "SELL"), D(0))
    fee = sum((t.commission for t in srv.trades if t.commission_asset == "BTC"), D(0))
    assert book_btc == bought - sold - fee
    assert fake.run(lambda: srv.free["BTC"] + srv.locked.get("BTC", D(0))) == D(1) + book_btc
    assert "unreconciled" not in summary and summary["trading_state"] == "ACTIVE"
    # bars from the kline stream, order updates from the user data stream (the WebSocket API)
    assert ("WS", "/ws/0") in srv.requests and ("WS", "/ws-api/v3") in srv.requests
    assert summary["venue_state"] == "BINANCE CONNECTED"
    # no order is left working at the end (api.on_stop: cancel)
    assert not [o for o in srv.orders.values() if o.is_open]
    # the state dir holds the journal, the audit log and the baseline of the account
    import sqlite3

    with sqlite3.connect(state / "desk.sqlite") as c:
        types = {r[0] for r in c.execute("SELECT DISTINCT type FROM journal")}
        baseline = json.loads(c.execute("SELECT value FROM meta WHERE key='balance_baseline'").fetchone()[0])
        setup = json.loads(c.execute("SELECT value FROM meta WHERE key='setup'").fetchone()[0])
    assert {"OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"} <= types
    assert {k: D(v) for k, v in baseline.items()} == {"BTC": D("1"), "USDT": D("10000")}
    assert setup["mode"] == "live" and setup["config_sha256"] == digest
    audit = (state / "audit" / "orders.jsonl").read_text().splitlines()
    assert any(json.loads(line)["type"] == "OrderFilled" for line in audit)


def test_missing_credentials_exit_2_naming_the_variable(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    cfg = write_config(tmp_path, fake.srv)
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "5", "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2
    assert KEY_ENV in err and SECRET_ENV not in err.split("desk: error:")[-1]
    assert fake.srv.requests == []  # refused before any request


def test_a_live_venue_without_live_flag_exit_2(tmp_path, fake, creds, capsys):
    cfg = write_config(tmp_path, fake.srv, testnet=False)
    state = tmp_path / "s"
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "5", "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 2 and "--live" in err and "BINANCE" in err
    assert fake.srv.requests == [] and not state.exists()


def test_a_key_that_can_withdraw_is_refused_with_live(tmp_path, fake, creds, capsys):
    # --live on a non-testnet venue goes as far as the key check (GET /sapi/v1/account/apiRestrictions)
    fake.srv.can_withdraw = True
    cfg = write_config(tmp_path, fake.srv, testnet=False)
    code = main(["run", "--config", str(cfg), "--headless", "--live", "--bars", "5",
                 "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "withdraw" in err
    assert ("GET", "/sapi/v1/account/apiRestrictions") in fake.srv.requests
    assert not [p for _, p in fake.srv.requests if p == "/api/v3/order"]


def _checkpoint(state: Path) -> dict[str, Any]:
    from core.store import Store

    store = Store(state / "desk.sqlite")
    try:
        return store.load_checkpoint()[1]
    finally:
        store.close()


def test_a_restart_continues_after_its_last_bar_and_keeps_its_baseline(tmp_path, fake, creds, capsys):
    cfg = write_config(tmp_path, fake.srv)
    state = tmp_path / "state"
    args = ["run", "--config", str(cfg), "--headless", "--state-dir", str(state)]
    live = fake.live_rows
    assert main(args + ["--bars", "20"]) == 0, capsys.readouterr().err[-3000:]
    capsys.readouterr()
    ns = 1_000_000
    assert _checkpoint(state)["feed"]["last"] == {"BTCUSDT.BINANCE": live[19][0] * ns}
    held = fake.run(lambda: fake.srv.free["BTC"] + fake.srv.locked.get("BTC", D(0)))
    # the second process: the stream sends every live bar again; only bars 21-25 are new to the desk
    assert main(args + ["--bars", "25"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    # nothing closed at the venue since the last bar processed: no catch-up bar (the count is the whole run's)
    assert summary["bars"] == 25 and summary["warmup_bars"] == WARMUP
    assert "continuing after bar 20" in err and "unreconciled" not in summary
    assert _checkpoint(state)["feed"]["last"] == {"BTCUSDT.BINANCE": live[24][0] * ns}
    coids = [o.client_order_id for o in fake.srv.orders.values()]
    assert len(coids) == len(set(coids))  # no order sent twice
    # someone deposits 0.5 BTC on the account: the next start finds the venue 0.5 above the book and halts (exit 3)
    book = D(summary["positions"]["BTCUSDT.BINANCE"]["quantity"])
    now_held = fake.run(lambda: fake.srv.free["BTC"] + fake.srv.locked.get("BTC", D(0)))
    assert now_held - D(1) == book and now_held >= held
    fake.run(lambda: fake.srv.free.__setitem__("BTC", fake.srv.free["BTC"] + D("0.5")))
    assert main(args + ["--bars", "26"]) == 3
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    want = f"BTCUSDT.BINANCE: the venue holds {now_held + D('0.5')} BTC, the store {D(1) + book}"
    assert summary["unreconciled"] == [want], summary["unreconciled"]
    assert summary["trading_state"] == "HALTED"
