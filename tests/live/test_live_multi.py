"""A live desk with two venues on one Binance account (issue 6,
"Isolation"): ``BINANCE`` (spot, ``BTCUSDT.BINANCE``) and ``BINANCE_USDM``
(USD-M futures, ``BTCUSDT-PERP.BINANCE_USDM``), run in-process through
``desk.cli.main`` against ONE local fake Binance that answers both the spot
API (``/api/v3``, its streams on ``/ws``, its user data on ``/ws-api/v3``)
and the futures API (``/fapi``, its market streams and its user data stream
on ``/fws``) on one port, each side with its own books and balances
(tests/venues/binance_server.py's ``FakeBinance`` and ``FakeBinanceUsdm``
behind one dispatcher).

The fake runs on its own thread with a real-time clock (as in
tests/live/test_live_binance.py, whose fixtures and helpers are reused).
The live bars are pushed by a scenario that runs in the desk's own event
loop (``desk.live.run_live`` wrapped), so it can wait for what the desk did
before it moves the fake on; the desk's sleeps are scaled down and its
watchdog's limits patched so nothing waits for real minutes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

import desk.live
from core.clock import LiveClock
from core.identifiers import InstrumentId
from desk.cli import main
from tests.conftest import SHARED_DATA
from tests.live.test_live_binance import (  # noqa: F401 - fixtures
    EXCHANGE_INFO,
    KEY,
    KEY_ENV,
    LIVE_BARS,
    MIN_MS,
    SECRET,
    SECRET_ENV,
    WARMUP,
    ThreadedFake,
    _root_log_handlers,
    creds,
    kline_rows,
    price_path,
)
from tests.venues.binance_server import FakeBinance, FakeBinanceUsdm

D = Decimal
USDM_INFO = SHARED_DATA / "exchange-info" / "binance-usdm-exchangeInfo-2022-02-19-sample.json"
SPOT, PERP = "BTCUSDT.BINANCE", "BTCUSDT-PERP.BINANCE_USDM"
PERP_ID = InstrumentId("BTCUSDT-PERP", "BINANCE_USDM")


class OneFake(ThreadedFake):
    """One fake Binance on one port, on its own thread: spot requests go to
    ``spot`` (a ``FakeBinance``), ``/fapi`` requests and the ``/fws``
    streams to ``fut`` (a ``FakeBinanceUsdm``); ``/sapi`` (the account's key
    permissions) to the spot side. ``requests`` lists every request in
    arrival order. ``fapi_down``: every ``/fapi`` request is answered HTTP
    503 (the futures API is unavailable). No bar is pushed by itself: the
    test pushes them (:meth:`push`)."""

    def __init__(self, klines: Path) -> None:  # noqa: D107 - ThreadedFake's start, two sides
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        clock = LiveClock()
        self.srv = self.spot = FakeBinance(clock, EXCHANGE_INFO, api_key=KEY, secret=SECRET, klines=klines,
                                           balances={"USDT": D("10000"), "BTC": D("1")})
        self.fut = FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, klines=klines, wallet=D("10000"))
        self.requests: list[tuple[str, str]] = []
        self.fapi_down = False
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._pusher = self.loop.create_future  # ThreadedFake.close cancels it: nothing to cancel here
        self.call(self._start())
        self._pusher = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = self.spot.base_url = self.fut.base_url = f"http://127.0.0.1:{port}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        ws = request.headers.get("Upgrade", "").lower() == "websocket"
        self.requests.append(("WS" if ws else request.method, path))
        if path.startswith("/fws"):
            return await self.fut._ws(request)
        if path.startswith("/fapi"):
            if self.fapi_down:
                return web.Response(status=503, text="Service Unavailable")
            return await self.fut._handle(request)
        return await self.spot._handle(request)

    @property
    def spot_urls(self) -> dict[str, str]:
        return self.spot.urls

    @property
    def fut_urls(self) -> dict[str, str]:
        urls = {k: v for k, v in self.fut.urls.items() if k != "sapi"}  # demo trading has no /sapi
        urls["ws"] = self.base_url.replace("http://", "ws://") + "/fws"
        return urls

    def close(self) -> None:
        async def stop() -> None:
            await self.spot.drop_ws()
            await self.fut.drop_ws()
            if self._runner is not None:
                await self._runner.cleanup()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def acall(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` (a coroutine function or a plain one) on the fake's
        thread, awaited from another loop (the desk's)."""
        async def wrap() -> Any:
            r = fn()
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(wrap(), self.loop))


@pytest.fixture
def one(tmp_path: Path):
    if not EXCHANGE_INFO.is_file() or not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    now_ms = time.time_ns() // 1_000_000
    last_closed_open = now_ms // MIN_MS * MIN_MS - MIN_MS
    first = last_closed_open - (WARMUP + 9) * MIN_MS
    rows = kline_rows(first, price_path(WARMUP + 10, LIVE_BARS))
    path = tmp_path / "klines.json"
    path.write_text(json.dumps(rows[:WARMUP + 10]))
    f = OneFake(path)
    f.live_rows = rows[WARMUP + 10:]
    # spot: the touch sits below every price, a buy at the bar's close crosses and fills at the ask
    f.run(lambda: f.spot.set_book("BTCUSDT", "20000.00", "20000.01"))
    # futures: the touch sits above every price, a buy at the bar's close rests (a working order)
    f.run(lambda: f.fut.set_book("BTCUSDT", "60000.0", "60000.1"))
    yield f
    f.close()


def write_multi_config(tmp_path: Path, one: OneFake, name: str = "multi.yaml") -> Path:
    common = {"kind": "binance", "testnet": True, "symbols": ["BTCUSDT"], "recv_window_ms": 5000,
              "api_key_env": KEY_ENV, "api_secret_env": SECRET_ENV}
    cfg = {"capital": "1000", "tz": "UTC", "venues": [
        {**common, "name": "BINANCE", "market": "spot", "urls": one.spot_urls},
        {**common, "name": "BINANCE_USDM", "market": "usdm", "leverage": 2, "margin_mode": "isolated",
         "urls": one.fut_urls},
    ]}
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


Scenario = Callable[[Any, OneFake], Awaitable[None]]


@pytest.fixture
def drive(monkeypatch: pytest.MonkeyPatch):
    """``drive(one, scenario)``: the next ``desk run`` runs ``scenario(built,
    one)`` as a task in its own loop beside the engine (a scenario that
    fails stops the run; one that wants the run to end before ``--bars``
    stops the engine and the feed itself, as SIGTERM does); the desk's sleeps
    last a tenth (order polls every 1 s instead of 10 s), and its watchdog
    declares a feed hung after 1.5 s without a step. Returns the list the
    built desks are appended to."""
    built_seen: list[Any] = []
    orig = desk.live.run_live
    tasks: list[asyncio.Task[Any]] = []

    async def fast_sleep(s: float) -> None:
        await asyncio.sleep(s / 10)

    def install(one: OneFake, scenario: Scenario | None) -> list[Any]:
        async def run_live(built: Any, **kw: Any) -> int:
            built_seen.append(built)
            if scenario is not None:
                async def run_scenario() -> None:
                    try:
                        await scenario(built, one)
                    except BaseException:  # failed: the run ends (as on SIGTERM), the test reports it
                        built.engine.stop()
                        built.feed.stop()
                        raise
                tasks.append(asyncio.create_task(run_scenario()))
            try:
                return await orig(built, sleep=fast_sleep, **kw)
            finally:
                for t in tasks:
                    if not t.done():
                        t.cancel()
                try:
                    for t in tasks:
                        try:
                            await t
                        except asyncio.CancelledError:
                            pass
                finally:
                    tasks.clear()

        monkeypatch.setattr(desk.live, "run_live", run_live)
        return built_seen

    monkeypatch.setattr(desk.live, "HUNG_AFTER_INTERVALS", 0)
    monkeypatch.setattr(desk.live, "HUNG_GRACE_S", 1.5)
    monkeypatch.setattr(desk.live, "WATCH_EVERY_S", 2.0)  # x 1/10: every 0.2 s
    return install


async def until(cond: Callable[[], bool], what: Any, timeout: float = 8.0) -> None:
    """Wait (in the desk's loop) until ``cond()``; fail naming ``what``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for: {what() if callable(what) else what}")
        await asyncio.sleep(0.02)


async def push(one: OneFake, side: str, k: int) -> None:
    """Push live row ``k`` on ``side`` (``spot`` or ``fut``) to the desk's
    kline stream, waiting (up to 8 s) until the desk is subscribed."""
    srv = one.spot if side == "spot" else one.fut
    row = one.live_rows[k]
    t0 = time.monotonic()
    while not await one.acall(lambda: srv.push_kline("BTCUSDT", row)):
        if time.monotonic() - t0 > 8:
            raise AssertionError(f"no {side} kline subscriber")
        await asyncio.sleep(0.02)


def journal(state: Path, type_: str) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "desk.sqlite") as c:
        return [json.loads(p) for (p,) in c.execute("SELECT payload FROM journal WHERE type=? ORDER BY seq", (type_,))]


def meta(state: Path, key: str) -> str | None:
    with sqlite3.connect(state / "desk.sqlite") as c:
        row = c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else row[0]


def summary_of(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


def pushing(rows: range) -> Scenario:
    """A scenario: once both kline streams are subscribed, live rows
    ``rows`` on both venues, spot first."""
    async def scenario(built: Any, one: OneFake) -> None:
        for k in rows:
            await push(one, "spot", k)
            await push(one, "fut", k)
    return scenario


def test_two_venues_trade_each_at_its_own_api(tmp_path, one, creds, drive, capsys):
    # both books sit below every price: a buy at the bar's close crosses and fills at the ask
    one.run(lambda: one.fut.set_book("BTCUSDT", "20000.0", "20000.1"))
    cfg = write_multi_config(tmp_path, one)
    state = tmp_path / "state"
    args = ["run", "--config", str(cfg), "--headless", "--state-dir", str(state)]
    drive(one, pushing(range(6)))
    code = main(args + ["--bars", "12"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    s = summary_of(out)
    assert s["bars"] == 12 and s["warmup_bars"] == 2 * WARMUP  # 521 REST bars of each venue
    # start-up lines: each venue, its account and its limits
    assert "desk: BINANCE (binance, testnet), BINANCE_USDM (binance, testnet); config" in err
    assert "BINANCE: account SPOT" in err and "BINANCE_USDM: account USD-M futures" in err
    assert f"{PERP}: margin isolated, leverage 2x" in err
    # one setup, one request log: each instrument's orders went to its own API, and only there
    spot_coids = {o.client_order_id for o in one.spot.orders.values()}
    fut_coids = {o.client_order_id for o in one.fut.orders.values()}
    assert spot_coids and fut_coids
    submitted = journal(state, "OrderSubmitted")
    inits = {j["client_order_id"]: j["instrument_id"] for j in journal(state, "OrderInitialized")}
    assert {inits[j["client_order_id"]] for j in submitted} == {SPOT, PERP}
    assert {c for c in (j["client_order_id"] for j in submitted) if inits[c] == SPOT} == spot_coids
    assert {c for c in (j["client_order_id"] for j in submitted) if inits[c] == PERP} == fut_coids
    posts = [p for m, p in one.requests if m == "POST" and p.endswith("/order")]
    assert posts.count("/api/v3/order") == len(one.spot.orders)
    assert posts.count("/fapi/v1/order") == len(one.fut.orders)
    assert one.spot.signed_ok == one.spot.signed_total and one.fut.signed_ok == one.fut.signed_total
    # the book's position of each instrument is what its venue holds: spot BTC above the 1 BTC the account
    # had (fees in BTC are already off it), the perpetual's signed positionAmt
    pos = {k: D(v["quantity"]) for k, v in s["positions"].items()}
    spot_btc = one.run(lambda: one.spot.free["BTC"] + one.spot.locked.get("BTC", D(0)))
    bought = sum((o.executed_qty for o in one.spot.orders.values() if o.side == "BUY"), D(0))
    sold = sum((o.executed_qty for o in one.spot.orders.values() if o.side == "SELL"), D(0))
    fee = sum((t.commission for t in one.spot.trades if t.commission_asset == "BTC"), D(0))
    assert pos[SPOT] == spot_btc - D(1) == bought - sold - fee and pos[SPOT] > 0
    perp = one.run(lambda: one.fut.position("BTCUSDT").qty)
    f_bought = sum((o.executed_qty for o in one.fut.orders.values() if o.side == "BUY"), D(0))
    f_sold = sum((o.executed_qty for o in one.fut.orders.values() if o.side == "SELL"), D(0))
    assert pos[PERP] == perp == f_bought - f_sold and perp > 0  # futures fees are USDT, not the position
    # both venues number their trades from 1: every trade is its own row (futures ids F-<id>, usdm.py)
    with sqlite3.connect(state / "desk.sqlite") as c:
        stored = {r[0] for r in c.execute("SELECT trade_id FROM fills")}
    assert stored == {str(t.id) for t in one.spot.trades} | {f"F-{t.id}" for t in one.fut.trades}
    assert s["venue_state"] == "BINANCE CONNECTED; BINANCE_USDM CONNECTED"
    assert "unreconciled" not in s and s["trading_state"] == "ACTIVE"
    # each venue's order updates came by its own user data stream: spot by the WebSocket API, futures by a
    # listenKey (POST /fapi/v1/listenKey, the API key header only) and a stream connection on the futures base
    assert ("WS", "/ws-api/v3") in one.requests
    assert one.requests.count(("POST", "/fapi/v1/listenKey")) == 1 and one.fut.key_ok == one.fut.key_checked == 1
    assert ("WS", "/fws") in one.fut.requests and one.fut.listen_keys  # /fws?listenKey=<key>
    # the ClientOrderIds carry the state dir's tag
    tag = meta(state, "coid_tag")
    assert tag and all(c.endswith("-" + tag) for c in spot_coids | fut_coids)

    # a restart of the same state dir: the same tag; the stream repeats rows 0-5, only rows 6-9 are new
    n_spot, n_fut = len(one.spot.orders), len(one.fut.orders)
    drive(one, pushing(range(10)))
    code = main(args + ["--bars", "20"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "continuing after bar 12" in err and summary_of(out)["bars"] == 20
    assert meta(state, "coid_tag") == tag
    assert len(one.spot.orders) + len(one.fut.orders) > n_spot + n_fut  # the restart sent orders of its own
    assert all(c.endswith("-" + tag) for c in {o.client_order_id for o in one.spot.orders.values()}
               | {o.client_order_id for o in one.fut.orders.values()})

    # a new state dir on the same account: another tag, no id met twice at the venue, no duplicate answer
    state2 = tmp_path / "state2"
    before = {id(o) for o in one.spot.orders.values()} | {id(o) for o in one.fut.orders.values()}
    drive(one, pushing(range(2)))
    code = main(["run", "--config", str(cfg), "--headless", "--state-dir", str(state2), "--bars", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    tag2 = meta(state2, "coid_tag")
    assert tag2 and tag2 != tag
    new = [o for o in list(one.spot.orders.values()) + list(one.fut.orders.values()) if id(o) not in before]
    assert new and all(o.client_order_id.endswith("-" + tag2) for o in new)
    every = [o.client_order_id for o in one.spot.orders.values()] + [o.client_order_id for o in one.fut.orders.values()]
    assert len(every) == len(set(every))
    assert not [e for e in one.spot.errors + one.fut.errors if e[1] in (-2010, -4116)]
    assert summary_of(out)["venue_state"] == "BINANCE CONNECTED; BINANCE_USDM CONNECTED"


def working_of(engine: Any, iid: str) -> list[str]:
    return [o.client_order_id for o in engine.working_orders() if str(o.instrument_id) == iid]


def test_a_failing_futures_venue_is_isolated_while_spot_trades_on(tmp_path, one, creds, drive, capsys):
    # both books sit above every price: every buy rests, and is re-priced (cancel, new order) while it waits
    one.run(lambda: one.spot.set_book("BTCUSDT", "60000.00", "60000.01"))
    rec: dict[str, Any] = {}

    async def scenario(built: Any, one: OneFake) -> None:
        eng = built.engine
        for k in range(3):
            await push(one, "spot", k)
            await push(one, "fut", k)
        await until(lambda: eng.stats.bars >= 6 and working_of(eng, PERP), "a working futures order")
        # the fault: the futures API answers HTTP 503 and its kline stream goes silent; spot goes on
        rec["working"] = working_of(eng, PERP)
        rec["bars_at_fault"] = eng.stats.bars
        one.fapi_down = True
        rec["fault_at"] = len(one.requests)
        k = 3
        while "DEGRADED since" not in eng.session.status():
            await push(one, "spot", k)
            k += 1
            await asyncio.sleep(0.2)
            assert k < 25, eng.session.status()  # the watchdog fires after 1.5 s: ~8 bars of 0.2 s
        rec["degraded"] = eng.session.status()
        rec["suspect"] = eng.session.suspect_venues()
        for _ in range(3):  # spot keeps trading while BINANCE_USDM is DEGRADED
            await push(one, "spot", k)
            k += 1
            await asyncio.sleep(0.2)
        rec["still"] = eng.session.status()
        rec["spot_bars_in_fault"] = eng.stats.bars - rec["bars_at_fault"]
        # meanwhile the venue fills the working futures buy (the book moves through it): the desk cannot see it
        await one.acall(lambda: one.fut.set_book("BTCUSDT", "20000.0", "20000.1"))
        rec["end_at"] = len(one.requests)
        one.fapi_down = False
        await push(one, "fut", 3)
        while eng.session.suspect_venues():  # spot bars go on: each step ticks the sessions (reconciliation)
            await push(one, "spot", k)
            k += 1
            await asyncio.sleep(0.2)
            assert k < 40, eng.session.status()
        # the moment the desk knows its futures orders again, they are what the venue says
        o = eng.orders[rec["working"][0]]
        rec["reconciled"] = (eng.session.status(), o.status.value, o.filled_qty, eng.portfolio.quantity(PERP_ID))
        await push(one, "spot", k)
        await push(one, "fut", 4)
        await until(lambda: eng.stats.bars >= rec["bars_at_fault"] + rec["spot_bars_in_fault"] + 3, "the last bars")
        eng.stop()
        built.feed.stop()

    drive(one, scenario)
    cfg = write_multi_config(tmp_path, one)
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "100", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    s = summary_of(out)
    # the header while the futures venue hung: DEGRADED since the watchdog's verdict, spot CONNECTED
    assert rec["degraded"].startswith("BINANCE CONNECTED; BINANCE_USDM DEGRADED since "), rec
    assert rec["still"].startswith("BINANCE CONNECTED; BINANCE_USDM DEGRADED since "), rec
    assert rec["suspect"] == {"BINANCE_USDM"}
    # one alert names the futures order working at the fault as unknown
    degraded = [a for a in journal(state, "AlertRaised") if a["code"] == "VENUE_DEGRADED"]
    assert len(degraded) == 1, degraded
    assert degraded[0]["message"].startswith("BINANCE_USDM: VenueHung: no bar from its feed")
    assert degraded[0]["message"].endswith(f"working orders unknown until reconciled: {rec['working'][0]}")
    # spot went on: bars processed and orders sent to /api/v3 while /fapi answered 503
    during = one.requests[rec["fault_at"]:rec["end_at"]]
    assert rec["spot_bars_in_fault"] >= 4
    assert ("POST", "/api/v3/order") in during and ("DELETE", "/api/v3/order") in during  # re-priced
    assert not [r for r in during if r[1].startswith("/fapi") and r[0] != "GET"]  # no futures order or cancel
    # after the fault: read again, reconciled on what the venue did meanwhile (the buy filled), CONNECTED
    venue_perp = one.run(lambda: one.fut.position("BTCUSDT").qty)
    filled = one.run(lambda: one.fut.order_by_client_id(rec["working"][0]))
    assert filled.status == "FILLED" and venue_perp == filled.executed_qty > 0
    assert rec["reconciled"] == ("BINANCE CONNECTED; BINANCE_USDM CONNECTED", "FILLED", venue_perp, venue_perp)
    assert D(s["positions"][PERP]["quantity"]) == venue_perp and D(s["positions"][SPOT]["quantity"]) == 0
    assert s["venue_state"] == "BINANCE CONNECTED; BINANCE_USDM CONNECTED"
    assert "unreconciled" not in s and s["trading_state"] == "ACTIVE"


def test_a_per_venue_halt_denies_futures_orders_not_spot_ones(tmp_path, one, creds, drive, capsys):
    # both books sit above every price: every buy rests, and is re-priced (cancel, new order) while it waits
    one.run(lambda: one.spot.set_book("BTCUSDT", "60000.00", "60000.01"))
    rec: dict[str, Any] = {}

    async def scenario(built: Any, one: OneFake) -> None:
        eng = built.engine
        for k in range(3):
            await push(one, "spot", k)
            await push(one, "fut", k)
        await until(lambda: eng.stats.bars >= 6 and working_of(eng, PERP) and working_of(eng, SPOT),
                    "a working order on each venue")
        working = working_of(eng, PERP)
        # what the control API's POST /kill {"mode": "HALT", "venue": "BINANCE_USDM"} calls
        rec["cancels"] = await eng.governance.halt_venue("BINANCE_USDM", "test", "futures halted by the operator")
        rec["halt_at"] = len(one.requests)
        rec["canceled"] = [eng.orders[c].status.value for c in working]
        # an order asked for by hand (what POST /orders does) is denied at the rails, naming the venue halt
        from core.enums import OrderSide, OrderType
        from core.identifiers import InstrumentId

        perp = InstrumentId.parse(PERP)
        px = eng.instruments[perp].round_price(str(eng.portfolio.marks[perp]))
        manual = eng.submit("manual", perp, OrderSide.BUY, D("0.002"), px, px, OrderType.LIMIT)
        rec["manual"] = (manual.client_order_id, manual.status.value)
        rec["halt_bar"] = eng.stats.bars
        for k in range(3, 9):
            await push(one, "spot", k)
            await push(one, "fut", k)
        await until(lambda: eng.stats.bars >= 18, "12 bars after the halt")
        rec["resume_at"] = len(one.requests)
        eng.governance.resume_venue("BINANCE_USDM", "test", "futures back")
        for k in range(9, 12):
            await push(one, "spot", k)
            await push(one, "fut", k)
        await until(lambda: eng.stats.bars >= 24 and working_of(eng, PERP), "a futures order after the resume")
        rec["last_perp"] = working_of(eng, PERP)
        # the venue fills it (the book moves through it) and the desk stops at once: the stop's reconciliation
        # reads each venue again, so the fill is booked before the summary
        await one.acall(lambda: one.fut.set_book("BTCUSDT", "20000.0", "20000.1"))
        eng.stop()
        built.feed.stop()

    drive(one, scenario)
    cfg = write_multi_config(tmp_path, one)
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "100", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    s = summary_of(out)
    # the halt canceled the futures order working then, and only it
    assert rec["cancels"] == 1 and rec["canceled"] == ["CANCELED"]
    halted = one.requests[rec["halt_at"]:rec["resume_at"]]
    assert ("POST", "/api/v3/order") in halted  # spot re-priced its buys: orders went on
    assert not [r for r in halted if r[1] == "/fapi/v1/order" and r[0] == "POST"]  # no futures order
    inits = {j["client_order_id"]: j["instrument_id"] for j in journal(state, "OrderInitialized")}
    denied = journal(state, "OrderDenied")
    assert rec["manual"][1] == "DENIED" and [d["client_order_id"] for d in denied] == [rec["manual"][0]]
    assert {(d["code"], d["reason"]) for d in denied} == {("TRADING_HALTED", "venue BINANCE_USDM is HALTED")}
    # while halted the router sent the futures venue nothing (no order, so no denial flood), spot went on
    assert not [c for c, i in inits.items() if i == PERP and c != rec["manual"][0]
                and rec["halt_bar"] <= int(c.split("-")[1], 16) < 18]
    assert meta(state, "halted_venues") == ""  # resumed
    assert ("POST", "/fapi/v1/order") in one.requests[rec["resume_at"]:]
    # the order filled just before the stop is in the book: the final reconciliation polled BINANCE_USDM
    last = one.run(lambda: one.fut.order_by_client_id(rec["last_perp"][0]))
    venue_perp = one.run(lambda: one.fut.position("BTCUSDT").qty)
    assert last.status == "FILLED" and venue_perp == last.executed_qty > 0
    assert D(s["positions"][PERP]["quantity"]) == venue_perp
    assert "unreconciled" not in s and s["trading_state"] == "ACTIVE"


async def test_a_cancel_of_an_order_the_venue_closed_looks_it_up_at_once(tmp_path):
    # no order updates are read here (as while the user data stream is down and before the next poll): a resting
    # buy the venue filled is still open in the adapter's view. The cancel's -2011 "Unknown order sent." makes the adapter ask at once (GET /fapi/v1/order,
    # then its trades), so the fill reaches the engine now and the session's cancel retry finds it closed.
    from core.clock import TestClock
    from core.enums import OrderSide, OrderType, TimeInForce
    from core.events import OrderFilled
    from core.orders import Order
    from core.venue_errors import OrderNotFound
    from venues.binance.adapter import BinanceConfig, BinanceVenue

    if not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    clock = TestClock(1_700_000_000 * 10**9)
    srv = await FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, wallet=D("10000"),
                                book=[("BTCUSDT", "36567.0", "5", "36567.1", "5")]).start()
    venue = BinanceVenue(BinanceConfig(name="BINANCE_USDM", market="usdm", symbols=("BTCUSDT",), urls=srv.urls),
                         clock, env={"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET})
    events: list[Any] = []
    try:
        await venue.start()
        venue.bind(events.append)
        order = Order(client_order_id="NHD-1-0-0-abcde", model_id="hmm_v1", instrument_id=PERP_ID,
                      side=OrderSide.BUY, order_type=OrderType.LIMIT, quantity=D("0.002"), price=D("36000.0"),
                      time_in_force=TimeInForce.GTC, ts_init=0, step=1)
        await venue.submit_order(order)
        assert venue.open_orders() == {"NHD-1-0-0-abcde": D(0)}  # resting
        srv.set_book("BTCUSDT", "35990.0", "35990.1")  # the book moves through it: filled at its own 36000.0
        assert srv.order_by_client_id("NHD-1-0-0-abcde").status == "FILLED"
        n = len(srv.requests)
        with pytest.raises(OrderNotFound):
            await venue.cancel_order(order, "REPRICE")
        for _ in range(200):
            if any(isinstance(e, OrderFilled) for e in events):
                break
            await asyncio.sleep(0.01)
        fills = [e for e in events if isinstance(e, OrderFilled)]
        # one fill: 0.002 at the order's price 36000.0, maker; fee 0.002 x 36000 x 0.0002 = 0.0144 USDT
        assert [(f.last_qty, f.last_px, f.commission, f.commission_currency) for f in fills] == [
            (D("0.002"), D("36000.0"), D("0.0144"), "USDT")]
        assert venue.lookup("NHD-1-0-0-abcde").status == "FILLED" and venue.open_orders() == {}
        assert srv.paths()[n:] == ["/fapi/v1/order", "/fapi/v1/order", "/fapi/v1/userTrades"]  # DELETE, GET, trades
    finally:
        await venue.close()
        await srv.close()


def test_missing_credentials_of_one_venue_exit_2_and_leave_no_store(tmp_path, one, creds, monkeypatch, capsys):
    # the futures venue reads its key from its own variables, one of them unset; the spot venue's are set
    monkeypatch.setenv("NHD_TEST_USDM_SECRET", SECRET)
    monkeypatch.delenv("NHD_TEST_USDM_KEY", raising=False)
    cfg_path = write_multi_config(tmp_path, one)
    cfg = json.loads(cfg_path.read_text())
    cfg["venues"][1].update(api_key_env="NHD_TEST_USDM_KEY", api_secret_env="NHD_TEST_USDM_SECRET")
    cfg_path.write_text(json.dumps(cfg))
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg_path), "--headless", "--bars", "5", "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    last = err.split("desk: error:")[-1]
    assert "NHD_TEST_USDM_KEY" in last and "NHD_TEST_USDM_SECRET" not in last and SECRET not in err
    assert not (state / "desk.sqlite").exists()
    assert one.requests == []  # refused before any request to either API
