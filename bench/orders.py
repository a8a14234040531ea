"""Order path and kill-switch latency (issue 4), printed, not asserted.

Run:  .venv/bin/python bench/orders.py

Prints:
* median and p99 in microseconds of one pre-trade check plus submit through
  the OMS to the paper venue (rails, journal, write-before-send commit
  excluded: the commit is shared per step; measured separately);
* the time from the halt command to the last cancel acknowledgement for
  100, 1,000 and 10,000 working orders, with the venue answering each
  request after 1 ms (a loopback-like round trip), the desk's concurrent
  cancels against the naive loop that awaits each cancel in turn, in the
  same run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.audit import AuditLog  # noqa: E402
from core.clock import TestClock  # noqa: E402
from core.data import Bar  # noqa: E402
from core.engine import Engine, EngineConfig  # noqa: E402
from core.enums import OrderSide, OrderType, TradingState  # noqa: E402
from core.identifiers import InstrumentId  # noqa: E402
from core.instruments import Instrument  # noqa: E402
from core.risk import RiskConfig, RiskEngine  # noqa: E402
from core.router import RouterConfig  # noqa: E402
from core.store import Store  # noqa: E402
from venues.feeds import ReplayFeed  # noqa: E402
from venues.klines import KlineFile  # noqa: E402
from venues.paper import PaperConfig, PaperVenue  # noqa: E402

D = Decimal
IID = InstrumentId("ETHUSDT", "BINANCE")
ETH = Instrument(IID, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))
MIN = 60_000_000_000


class SlowVenue:
    """The paper venue behind a simulated round trip of ``delay_s`` per request."""

    def __init__(self, inner: PaperVenue, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def submit_order(self, order) -> None:
        await asyncio.sleep(self.delay_s)
        await self.inner.submit_order(order)

    async def cancel_order(self, order, reason: str = "CANCELED") -> None:
        await asyncio.sleep(self.delay_s)
        await self.inner.cancel_order(order, reason)


def make_engine(folder: Path, delay_s: float = 0.0) -> Engine:
    clock = TestClock()
    bars = [Bar(IID, D("2000"), D("2001"), D("1999"), D("2000"), D("10"), k * MIN, (k + 1) * MIN) for k in range(3)]
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000000"))), clock=clock,
        store=Store(folder / "desk.sqlite"), audit=AuditLog(folder / "audit.jsonl"),
        feed=ReplayFeed([KlineFile(Path("x.csv"), IID, "ETHUSDT", MIN, bars, [])]), instruments={IID: ETH},
        models={}, specs=[], risk=RiskEngine(RiskConfig(max_submits=10**9, max_cancels=10**9)),
        executor=None,  # type: ignore[arg-type]
        venue_factory=lambda cb: PaperVenue(folder / "venue.sqlite", "BINANCE", "USDT", {IID: ETH}, clock,
                                            PaperConfig(starting_cash=D("10000000")), cb),
    )
    if delay_s:
        eng.venue = SlowVenue(eng.venue, delay_s)  # type: ignore[assignment]
    return eng


async def submit_latency(n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        eng = make_engine(Path(d))
        await eng.run(max_bars=1)
        times = []
        for k in range(n):
            t0 = time.perf_counter_ns()
            eng.submit("bench", IID, OrderSide.BUY, D("0.01"), D("1000.00") - D(k % 500) / 100, D("2000"),
                       OrderType.LIMIT)
            order = eng._to_send.pop()
            await eng.venue.submit_order(order)
            times.append((time.perf_counter_ns() - t0) / 1000)
        t0 = time.perf_counter()
        eng.flush()
        commit_ms = (time.perf_counter() - t0) * 1000
        eng.store.close()
        times.sort()
        return statistics.median(times), times[int(len(times) * 0.99) - 1], commit_ms


async def halt_time(n: int, concurrent: bool, delay_s: float) -> float:
    with tempfile.TemporaryDirectory() as d:
        eng = make_engine(Path(d))
        await eng.run(max_bars=1)
        for k in range(n):
            eng.submit("bench", IID, OrderSide.BUY, D("0.01"), D("1000.00") - D(k % 500) / 100, D("2000"),
                       OrderType.LIMIT)
        await eng.send_pending()
        eng.venue = SlowVenue(eng.venue, delay_s)  # type: ignore[assignment]
        working = eng.working_orders()
        assert len(working) == n
        t0 = time.perf_counter()
        if concurrent:
            await eng.governance.halt("bench", "kill switch")
        else:  # the naive loop: set HALTED, then await each cancel in turn
            eng.trading_state = TradingState.HALTED
            for o in working:
                await eng.cancel(o, "HALT")
        took = time.perf_counter() - t0
        assert all(not o.is_working for o in working)
        eng.store.close()
        return took


def main() -> None:
    med, p99, commit_ms = asyncio.run(submit_latency(5000))
    print(f"pre-trade check + submit through the OMS to the paper venue: median {med:.0f} us, p99 {p99:.0f} us "
          f"(5,000 orders; their journal commit afterwards: {commit_ms:.0f} ms)")
    for n in (100, 1000, 10000):
        fast = asyncio.run(halt_time(n, True, 0.001))
        slow = asyncio.run(halt_time(n, False, 0.001)) if n <= 1000 else None
        line = f"halt -> last cancel ack, {n:>6,} working orders, 1 ms per request: concurrent {fast * 1000:,.0f} ms"
        if slow is not None:
            line += f" vs one by one {slow * 1000:,.0f} ms: {slow / fast:.0f}x"
        else:
            line += f" (one by one would take >= {n} ms of round trips alone)"
        print(line)


if __name__ == "__main__":
    main()
