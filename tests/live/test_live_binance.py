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


@pytest.fixture(autouse=True)
def _root_log_handlers():
    """desk.cli.main points the root logger at this test's stderr: put the
    handlers back afterwards (the captured stream is closed then)."""
    import logging

    saved = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = saved


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


# ---------------------------------------------------------------- the feed alone (a stub venue, a test clock)
from core.clock import TestClock  # noqa: E402
from core.data import Bar  # noqa: E402
from core.identifiers import InstrumentId  # noqa: E402
from venues.binance.feed import BinanceLiveFeed  # noqa: E402

BTC = InstrumentId("BTCUSDT", "BINANCE")
ETH = InstrumentId("ETHUSDT", "BINANCE")
M = 60_000_000_000  # one minute in ns
T = 1_700_000_000 * 1_000_000_000 // M * M  # 2023-11-14 22:13:00 UTC, a minute boundary


class StubVenue:
    """What the feed uses of BinanceVenue: REST klines from a table (closed
    ones only, ``startTime`` and ``limit`` like Binance), scripted stream
    answers, the adapter's own last-bar table."""

    venue = "BINANCE"
    md_mode = "ws"
    clock_offset_ms = 0

    def __init__(self, clock: TestClock, table: dict[InstrumentId, list[Bar]]) -> None:
        self.clock = clock
        self.instruments = {i: object() for i in table}
        self.table = table
        self.rest_calls: list[tuple[InstrumentId, int | None, int]] = []
        self.stream: asyncio.Queue[list[Bar]] = asyncio.Queue()
        self._last_bar_ts: dict[InstrumentId, int] = {}

    async def fetch_bars(self, iid, interval="1m", since_ms=None, limit=500):
        self.rest_calls.append((iid, since_ms, limit))
        now = self.clock.timestamp_ns()
        rows = [b for b in self.table[iid] if b.ts_event <= now and (since_ms is None or b.ts_open >= since_ms * 10**6)]
        return rows[:limit]

    async def next_bars(self, interval="1m", *, ws_retry_ns=0):
        return await self.stream.get()


def minute_bars(iid: InstrumentId, first_open: int, n: int) -> list[Bar]:
    return [Bar(iid, D(100 + k), D(101 + k), D(99 + k), D(100 + k), D(1), first_open + k * M,
                first_open + (k + 1) * M) for k in range(n)]


async def test_feed_warm_up_pages_of_1000_from_an_explicit_start_time():
    # now = T + 30 s: the last closed bar opened at T - 1 min; 1,500 bars: opens T - 1500 min ... T - 1 min
    clock = TestClock(T + 30 * 10**9)
    v = StubVenue(clock, {BTC: minute_bars(BTC, T - 3000 * M, 3001)})  # the last one (open T) is still open
    feed = BinanceLiveFeed(v, warmup_bars=1500)
    assert await feed.prepare() == 1500
    bars = feed.warmup()
    assert [bars[0].ts_open, bars[-1].ts_open] == [T - 1500 * M, T - M]
    # two requests: startTime = T - 1500 min, then after the 1,000th bar (T - 500 min)
    assert v.rest_calls == [(BTC, (T - 1500 * M) // 10**6, 1000), (BTC, (T - 500 * M) // 10**6, 1000)]
    assert feed.state_dict() == {"interval": "1m", "last": {"BTCUSDT.BINANCE": T - M}}
    assert v._last_bar_ts == {BTC: T - M}  # the adapter's stream and REST fallback continue after it
    assert feed.warmup() == []  # handed over once


async def test_feed_steps_group_by_close_time_and_fill_a_gap_from_rest():
    clock = TestClock(T + 30 * 10**9)
    table = {BTC: minute_bars(BTC, T - 10 * M, 20), ETH: minute_bars(ETH, T - 10 * M, 20)}
    v = StubVenue(clock, table)
    feed = BinanceLiveFeed(v, warmup_bars=3)
    assert await feed.prepare() == 6  # 3 bars of each, opens T-3..T-1 min
    clock.set_time(T + 4 * M)
    # the stream's first bars: ETH opened at T (no gap) and BTC opened at T + 2 min (T and T + 1 min missed)
    v.stream.put_nowait([table[ETH][10], table[BTC][12]])
    steps = [await feed.next_step() for _ in range(3)]
    assert [[(str(b.instrument_id), (b.ts_open - T) // M) for b in s] for s in steps] == [
        [("BTCUSDT.BINANCE", 0), ("ETHUSDT.BINANCE", 0)],  # one step: both closed at T + 1 min
        [("BTCUSDT.BINANCE", 1)],
        [("BTCUSDT.BINANCE", 2)],
    ]
    assert feed.gap_bars == 2 and v.rest_calls[-1] == (BTC, T // 10**6, 1000)
    # a bar the stream repeats is not handed over twice
    v.stream.put_nowait([table[BTC][12], table[ETH][11]])
    assert [(str(b.instrument_id), (b.ts_open - T) // M) for b in await feed.next_step()] == [("ETHUSDT.BINANCE", 1)]
    assert feed.state_dict()["last"] == {"BTCUSDT.BINANCE": T + 2 * M, "ETHUSDT.BINANCE": T + M}


async def test_feed_stop_ends_a_pending_step_with_no_bars():
    clock = TestClock(T)
    feed = BinanceLiveFeed(StubVenue(clock, {BTC: []}), warmup_bars=0)
    task = asyncio.ensure_future(feed.next_step())
    await asyncio.sleep(0)
    assert not task.done()  # waiting for the stream
    feed.stop()
    assert await asyncio.wait_for(task, 1) == []
    assert await feed.next_step() == []


async def test_feed_restart_catches_up_only_after_its_last_bar():
    clock = TestClock(T + 30 * 10**9)
    v = StubVenue(clock, {BTC: minute_bars(BTC, T - 100 * M, 101)})
    feed = BinanceLiveFeed(v, warmup_bars=50)
    feed.load_state_dict({"interval": "1m", "last": {"BTCUSDT.BINANCE": T - 5 * M}})
    assert v._last_bar_ts == {BTC: T - 5 * M}
    assert await feed.prepare() == 4  # opens T-4 .. T-1 min: closed while the desk was down
    assert [b.ts_open for b in feed.warmup()] == [T - 4 * M, T - 3 * M, T - 2 * M, T - M]
    with pytest.raises(ValueError, match="interval '5m' differs"):
        feed.load_state_dict({"interval": "5m", "last": {}})


def test_feed_refuses_an_unknown_interval_and_instrument():
    v = StubVenue(TestClock(T), {BTC: []})
    with pytest.raises(ValueError, match="'1M'"):
        BinanceLiveFeed(v, interval="1M")
    with pytest.raises(ValueError, match="ETHUSDT.BINANCE is not traded"):
        BinanceLiveFeed(v, [ETH])


def test_header_tones_of_venue_states():
    from desk.widgets.header import venue_tone

    assert [venue_tone(p) for p in ("BINANCE CONNECTED", "BINANCE DEGRADED", "BINANCE THROTTLED until x",
                                    "BINANCE BANNED until x", "IBKR DISCONNECTED since x", "STORE FAILED",
                                    "1 unknown", "2 cancels queued")] == [
        "active", "reducing", "reducing", "halted", "halted", "halted", "reducing", "reducing"]


# ---------------------------------------------------------------- the session against the fake, in the test's loop
async def _engine_on_fake(tmp_path: Path, clock: TestClock, balances: dict[str, Decimal]):
    from core.audit import AuditLog
    from core.engine import Engine, EngineConfig, ModelSpec
    from core.risk import RiskConfig, RiskEngine
    from core.router import RouterConfig
    from core.store import Store
    from tests.helpers.scripted import ScriptedModel
    from venues.binance.adapter import BinanceConfig, BinanceVenue
    from venues.feeds import ReplayFeed

    srv = await FakeBinance(clock, EXCHANGE_INFO, api_key=KEY, secret=SECRET, balances=balances).start()
    venue = BinanceVenue(BinanceConfig(symbols=("ETHUSDT",), urls=srv.urls), clock,
                         env={"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET})
    await venue.start()
    iid = InstrumentId("ETHUSDT", "BINANCE")
    eng = Engine(config=EngineConfig(router=RouterConfig(capital=D("1000"))), clock=clock,
                 store=Store(tmp_path / "desk.sqlite"), audit=AuditLog(tmp_path / "audit.jsonl"),
                 feed=ReplayFeed([]), instruments=dict(venue.instruments),
                 models={"m0": {iid: ScriptedModel("m0", iid, ["1"])}}, specs=[ModelSpec("m0", D("1"))],
                 risk=RiskEngine(RiskConfig()), executor=InlineExecutor(), venue_factory=venue.bind)
    return srv, venue, eng


async def test_reconciliation_compares_changes_since_the_baseline(tmp_path):
    from core.recovery import balance_baseline, reconcile

    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    clock = TestClock(T)
    srv, venue, eng = await _engine_on_fake(tmp_path, clock, {"USDT": D("250.5"), "ETH": D("3")})
    try:
        # without a baseline (the paper venue's rule): the account's own coins are differences
        report = await reconcile(eng, 0)
        # (the fake writes Binance's 8-decimal strings; the adapter keeps them exact)
        assert report.differences == ["ETHUSDT.BINANCE: the venue holds 3.00000000 ETH, the store 0",
                                      "cash: the venue holds 250.50000000 USDT, the store 1000"]
        assert await balance_baseline(eng, capture=True) == {"ETH": D("3"), "USDT": D("250.5")}
        assert (await reconcile(eng, 0)).differences == []
        # 0.5 ETH arrive on the account from elsewhere: the venue holds 3.5, the book explains 3 + 0
        srv.free["ETH"] += D("0.5")
        await venue.refresh_balances()
        want = ["ETHUSDT.BINANCE: the venue holds 3.50000000 ETH, the store 3.00000000"]
        assert (await reconcile(eng, 0)).differences == want
        # a venue that opts out of cash (IBKR) is compared on its positions only
        venue.reconcile_cash = False
        srv.free["USDT"] -= D("100")
        await venue.refresh_balances()
        assert (await reconcile(eng, 0)).differences == want
    finally:
        eng.store.close()
        eng.audit.close()
        await venue.close()
        await srv.close()


async def test_a_418_ban_reads_BANNED_until_in_the_session_status(tmp_path):
    from core.venue_errors import VenueBanned, VenueThrottled, is_ban
    from venues.binance.errors import BinanceBanned, BinanceRateLimited

    assert is_ban(VenueBanned("X", 1)) and is_ban(BinanceBanned("X", 1)) and not is_ban(BinanceRateLimited("X", 1))
    assert isinstance(VenueBanned("X", 1), VenueThrottled) and not is_ban(ValueError())
    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    clock = TestClock(T)
    srv, venue, eng = await _engine_on_fake(tmp_path, clock, {"USDT": D("1000")})
    try:
        assert eng.session.status() == "BINANCE CONNECTED"
        from core.enums import OrderSide, OrderType

        srv.set_book("ETHUSDT", "1999.99", "2000.00")
        srv.fail_next(418, retry_after_s=120)
        eng.submit("m0", InstrumentId("ETHUSDT", "BINANCE"), OrderSide.BUY, D("0.01"), D("1990"), D("1990"),
                   OrderType.LIMIT)
        await eng.send_pending()
        # T = 2023-11-14 22:13:00 UTC; banned for 120 s
        assert eng.session.status() == "BINANCE BANNED until 2023-11-14 22:15:00 UTC"
        assert eng.session.venue_state() == ("BANNED", T + 120 * 10**9)
        clock.advance(120 * 10**9)
        assert eng.session.status() == "BINANCE CONNECTED"
        venue.md_mode = "rest"  # the kline stream fell back to REST polling
        assert eng.session.status() == "BINANCE DEGRADED"
    finally:
        eng.store.close()
        eng.audit.close()
        await venue.close()
        await srv.close()


async def test_a_bnb_holding_account_gets_the_bnb_price_for_its_fees(tmp_path):
    from desk.live import LiveBuilt, refresh_fee_asset_price

    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    clock = TestClock(T)
    srv, venue, eng = await _engine_on_fake(tmp_path, clock, {"USDT": D("1000"), "BNB": D("2")})
    try:
        srv.set_book("BNBUSDT", "215.40", "215.50")
        built = LiveBuilt(eng, venue, None, None, InlineExecutor(), False, False, [])
        # the mid of BNBUSDT: (215.40 + 215.50) / 2 = 215.45 USDT per BNB
        assert await refresh_fee_asset_price(built) == D("215.45")
        assert eng.portfolio.asset_prices == {"BNB": D("215.45")}
        assert ("GET", "/api/v3/ticker/bookTicker") in srv.requests
        srv.free["BNB"] = D("0")  # the BNB is gone: Binance cannot charge fees in it, nothing is read
        await venue.refresh_balances()
        n = len(srv.requests)
        assert await refresh_fee_asset_price(built) is None and len(srv.requests) == n
    finally:
        eng.store.close()
        eng.audit.close()
        await venue.close()
        await srv.close()


def test_the_governance_policy_applies_on_a_live_venue(tmp_path, fake, creds, capsys):
    # a rule that holds from the first evaluation (a drawdown is always >= 0) and halts: the desk starts,
    # the rule fires once at the first live bar, the desk is HALTED by policy:always and sends no order
    (tmp_path / "policy.yaml").write_text(
        "rules:\n  - {name: always, figure: drawdown, op: '>=', threshold: 0, action: halt}\n")
    cfg_path = write_config(tmp_path, fake.srv)
    cfg = json.loads(cfg_path.read_text())
    cfg["policy"] = "policy.yaml"  # relative to the config file
    cfg_path.write_text(json.dumps(cfg))
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg_path), "--headless", "--bars", "5", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "policy" in err and "1 rule" in err, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["trading_state"] == "HALTED"
    import sqlite3

    with sqlite3.connect(state / "desk.sqlite") as c:
        fired = [json.loads(p) for (p,) in c.execute("SELECT payload FROM journal WHERE type='PolicyTriggered'")]
        states = [json.loads(p) for (p,) in c.execute("SELECT payload FROM journal WHERE type='TradingStateChanged'")]
    assert [(f["rule"], f["action"]) for f in fired] == [("always", "halt")]
    assert [(s["state"], s["who"]) for s in states] == [("HALTED", "policy:always")]
    assert not [o for o in fake.srv.orders.values() if o.client_order_id.startswith("NHD-")]
