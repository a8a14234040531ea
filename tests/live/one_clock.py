"""One clock for a desk with an IBKR venue and a Binance venue (issue 6,
"Isolation"), shared by tests/live/test_live_ibkr_binance.py and
tests/live/test_live_daemon_ibkr.py.

The stand-in IB gateway of tests/live/test_live_ibkr.py runs on a driven
clock in 2024 (its bar table starts there, AAPL's hours are those of
2024-01-02); the fake Binance of tests/live/test_live_binance.py runs on
real time. One desk has one clock, so here all three (the desk, the gateway
and the fake Binance) share :class:`SharedClock`: UTC nanoseconds that only
the test moves (``move_to``), starting at 2024-01-02 15:00:30 UTC (10:00:30
in New York: AAPL trades). Signed Binance requests carry this time and the
fake checks them against it, like the exchange against its own clock.

* :class:`BookGateway` is ``LiveGateway`` (the gateway that answers
  historical bars and fills limit orders) that keeps its books the way TWS
  does, so a reconnect's synchronisation tells the truth: every fill goes
  into its executions (with the commission report), completed orders and
  positions; a limit order priced more than 5 % away from the last close
  rests (``Submitted``, listed open) until :meth:`BookGateway.fill_resting`
  fills it (live, or while the API client is away: then only the books
  change, as at IB while the gateway restarts); a cancel moves it to the
  completed orders; the handshake's ``nextValidId`` is the next unused order
  id, as TWS answers after a reconnect.
* :class:`ClockedBinance` is the fake Binance on its own thread with the
  shared clock; the test pushes each live kline itself (:meth:`push`).
* :func:`one_clock_desk` patches the desk (its clock, the IBKR feed's sleep,
  ib_async's ``IB``; the Binance adapter's request wrapper is wrapped to
  count the requests in flight, so the test moves the clock only between
  them) and returns ``(clock, gateways)``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ib_async import IB
from ib_async.order import OrderState

import desk.live
import venues.ibkr.adapter
import venues.ibkr.feed
from tests.live.test_live_binance import EXCHANGE_INFO, KEY, KEY_ENV, SECRET, SECRET_ENV, WARMUP, kline_rows, price_path
from tests.live.test_live_ibkr import MIN, T0, LiveGateway
from tests.venues.binance_server import FakeBinance
from tests.venues_ibkr.conftest import ACCOUNT, CLIENT_ID, commission, execution, frame, stock_details

D = Decimal
NANOS = 1_000_000_000
MIN_MS = 60_000
#: live bars in both tables after the warm-up
LIVE = 60


class SharedClock:
    """The desk's clock, the gateway's and the fake Binance's: UTC ns that
    only the test moves (:meth:`move_to`); the engine's ``set_time`` and
    ``advance`` do nothing (as on ``desk.live.LiveEngineClock``). The IBKR
    feed's sleep waits (in real time, 5 ms at a time) until the test has
    moved the clock that far. One writer (the test), any number of readers
    and threads."""

    def __init__(self, start_ns: int) -> None:
        self.now = int(start_ns)
        #: Binance requests in flight (signed with the time they left at): the clock waits for none
        self.inflight = 0

    def timestamp_ns(self) -> int:
        """Now (UTC ns)."""
        return self.now

    def set_time(self, ts_ns: int) -> None:
        """Ignored (the engine moves a replay clock to each bar)."""

    def advance(self, delta_ns: int) -> None:
        """Ignored."""

    def move_to(self, ts_ns: int) -> None:
        """The test moves time forward to ``ts_ns`` (never back)."""
        self.now = max(self.now, int(ts_ns))

    async def step_to(self, ts_ns: int) -> None:
        """:meth:`move_to` once no Binance request is in flight (a request
        signed before a one-minute jump would arrive outside its recvWindow:
        real time never jumps)."""
        while self.inflight:
            await asyncio.sleep(0.002)
        self.move_to(ts_ns)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock is ``seconds`` further than now."""
        target = self.now + int(round(seconds * NANOS))
        while self.now < target:
            await asyncio.sleep(0.005)


def bar_close_ns(k: int) -> int:
    """Close time of live bar ``k`` (it opens at ``T0 + k`` minutes)."""
    return T0 + (k + 1) * MIN


class BookGateway(LiveGateway):
    """``LiveGateway`` keeping TWS's books (module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rested: dict[int, tuple[Any, Any]] = {}  # order id -> (contract, order) of a resting order
        client = self.ib.client
        spied_cancel = client.cancelOrder

        def cancel(*args: Any) -> Any:
            r = spied_cancel(*args)
            self._later(self._book_cancel, args[0])
            return r

        client.cancelOrder = cancel

    def close_now(self) -> float:
        """The close of the last bar closed at the clock's time (USD)."""
        assert self.clock is not None
        k = (self.clock.now - self.first_open) // MIN - 1
        return self.prices[max(0, min(k, len(self.prices) - 1))]

    def _on_message(self, msg: bytes) -> None:
        if not msg.startswith(b"API\0") and msg[4:].split(b"\0", 1)[0] == b"71":  # startApi
            self.sent.append(msg[4:].decode().split("\0")[:-1])
            self.requests.append("startApi")
            next_id = max((p[0] for p in self.placed), default=0) + 1  # TWS never hands an id out twice
            self._later(self.ib.client._onSocketHasData, frame(9, 1, next_id) + frame(15, 1, self.account))
            return
        super()._on_message(msg)

    def _ib_order(self, order_id: int, order: Any) -> Any:
        o = copy.copy(order)
        o.orderId, o.permId, o.clientId, o.account = order_id, 9000 + order_id, CLIENT_ID, self.account
        return o

    def _fill(self, order_id: int, contract: Any, order: Any) -> None:
        px = float(order.lmtPrice)
        if abs(px - self.close_now()) > 0.05 * self.close_now():  # far from the market: it rests
            perm, qty = 9000 + order_id, float(order.totalQuantity)
            self.rested[order_id] = (contract, order)
            self.open_orders.append((order_id, contract, self._ib_order(order_id, order), OrderState(status="Submitted"),
                                     (order_id, "Submitted", 0.0, qty, 0.0, perm, 0, 0.0, CLIENT_ID, "", 0.0)))
            self.status(order_id, "Submitted", 0.0, qty, perm)
            return
        self._execute(order_id, contract, order, px, live=True)

    def _execute(self, order_id: int, contract: Any, order: Any, px: float, live: bool) -> None:
        perm, qty = 9000 + order_id, float(order.totalQuantity)
        side = "BOT" if order.action == "BUY" else "SLD"
        exec_id = f"0000e0d5.{self.next_exec:08x}.01.01"
        self.next_exec += 1
        assert self.clock is not None
        ex = execution(exec_id, order_id, perm, side, qty, px, order.orderRef, qty, px, at_ns=self.clock.now)
        report = commission(exec_id, 1.0)
        self.held += qty if side == "BOT" else -qty
        self.executions.append((contract, ex, report))
        self.completed.append((contract, self._ib_order(order_id, order), OrderState(status="Filled")))
        self.open_orders = [x for x in self.open_orders if x[0] != order_id]
        self.positions = [(contract, self.held, px)]
        if live:
            self.status(order_id, "Submitted", 0.0, qty, perm)
            self.exec(contract, ex)
            self.status(order_id, "Filled", qty, 0.0, perm, avg_fill=px, last_fill=px)
            self.commission(report)
            self.ib.wrapper.position(ACCOUNT, contract, self.held, px)

    def fill_resting(self, order_id: int, live: bool) -> None:
        """IB fills a resting order at its limit price; ``live=False``: while
        the API client is away (only the gateway's books change)."""
        contract, order = self.rested.pop(order_id)
        self._execute(order_id, contract, order, float(order.lmtPrice), live=live)

    def _book_cancel(self, order_id: int) -> None:
        if order_id in self.rested:
            contract, order = self.rested.pop(order_id)
            self.open_orders = [x for x in self.open_orders if x[0] != order_id]
            self.completed.append((contract, self._ib_order(order_id, order), OrderState(status="Cancelled")))

    def restart(self) -> None:
        """The gateway's daily restart: it refuses connections and the socket closes."""
        self.up = False
        self.drop()


class ClockedBinance:
    """FakeBinance on its own thread, on the shared clock; nothing is pushed
    by itself (:meth:`push`). ``srv`` is the FakeBinance."""

    def __init__(self, klines: Path, live_rows: list[list[Any]], clock: SharedClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.live_rows = live_rows
        self.srv = FakeBinance(clock, EXCHANGE_INFO, api_key=KEY, secret=SECRET, klines=klines,  # type: ignore[arg-type]
                               balances={"USDT": D("10000"), "BTC": D("1")})
        self.call(self.srv.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def run(self, fn: Any) -> Any:
        async def wrap() -> Any:
            return fn()
        return self.call(wrap())

    async def push(self, k: int) -> None:
        """Push live row ``k`` to the desk's kline stream (from the desk's
        loop), waiting (up to 8 s) until the desk is subscribed."""
        row = self.live_rows[k]
        t0 = time.monotonic()
        while not await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                self.srv.push_kline("BTCUSDT", row), self.loop)):
            if time.monotonic() - t0 > 8:
                raise AssertionError("no kline subscriber")
            await asyncio.sleep(0.02)

    def push_sync(self, k: int) -> None:
        """:meth:`push` from another thread than the desk's."""
        t0 = time.monotonic()
        while not self.call(self.srv.push_kline("BTCUSDT", self.live_rows[k])):
            if time.monotonic() - t0 > 8:
                raise AssertionError("no kline subscriber")
            time.sleep(0.02)

    def close(self) -> None:
        self.call(self.srv.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def binance_on(clock: SharedClock, tmp_path: Path) -> ClockedBinance:
    """The fake Binance: 530 closed REST bars ending with the one that
    closed at ``T0`` (as the IB table: the last warm-up bar of both venues
    opens at ``T0 - 1 min``), :data:`LIVE` live rows after it, the touch
    20000.00 / 20000.01 below every price (a buy at a bar's close fills at
    the ask). Skips when ../shared/data is absent."""
    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    first = T0 // 1_000_000 - (WARMUP + 10) * MIN_MS
    rows = kline_rows(first, price_path(WARMUP + 10, LIVE))
    path = tmp_path / "klines.json"
    path.write_text(json.dumps(rows[:WARMUP + 10]))
    f = ClockedBinance(path, rows[WARMUP + 10:], clock)
    f.run(lambda: f.srv.set_book("BTCUSDT", "20000.00", "20000.01", "100", "100"))
    return f


def one_clock_desk(monkeypatch: pytest.MonkeyPatch) -> tuple[SharedClock, list[BookGateway]]:
    """Patch the desk for the shared clock (module docstring): the desk's
    clock, the IBKR feed's sleep, ib_async's ``IB`` (a :class:`BookGateway`
    with AAPL and 100,000 USD, a new one per connection object). Returns the
    clock and the list the gateways are appended to."""
    clock = SharedClock(T0 + 30 * NANOS)
    made: list[BookGateway] = []

    def make_ib() -> IB:
        ib = IB()
        gw = BookGateway(ib)
        gw.add(stock_details())
        gw.cash = {"USD": "100000.00"}
        gw.clock = clock  # type: ignore[assignment]
        made.append(gw)
        return ib

    class Feed(venues.ibkr.feed.IbkrLiveFeed):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, sleep=clock.sleep, **kw)

    from venues.binance.adapter import BinanceVenue

    guard = BinanceVenue._guard

    async def counted(self: Any, what: str, fn: Any) -> Any:  # counts the requests in flight, changes nothing
        clock.inflight += 1
        try:
            return await guard(self, what, fn)
        finally:
            clock.inflight -= 1

    monkeypatch.setattr(BinanceVenue, "_guard", counted)
    monkeypatch.setattr(venues.ibkr.adapter, "IB", make_ib)
    monkeypatch.setattr(venues.ibkr.feed, "IbkrLiveFeed", Feed)
    monkeypatch.setattr(desk.live, "LiveEngineClock", lambda: clock)
    return clock, made


def ibkr_venue(**kw: Any) -> dict[str, Any]:
    """The IBKR venue entry of a config (AAPL on the paper port)."""
    return {"kind": "ibkr", "name": "IBKR", "host": "127.0.0.1", "port": 4002, "client_id": CLIENT_ID,
            "account": ACCOUNT, "contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART",
                                               "currency": "USD"}], **kw}


def binance_venue(fake: ClockedBinance) -> dict[str, Any]:
    """The Binance spot venue entry of a config (the fake's URLs)."""
    return {"kind": "binance", "name": "BINANCE", "market": "spot", "testnet": True, "symbols": ["BTCUSDT"],
            "recv_window_ms": 5000, "api_key_env": KEY_ENV, "api_secret_env": SECRET_ENV, "urls": fake.srv.urls}
