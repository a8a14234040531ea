"""Venue isolation in time (issue 6, "Isolation"), printed, not asserted.

Run:  .venv/bin/python bench/isolation.py [HANG_S]

Two paper venues under one engine (``core.venue_hub``), VA (ETHUSDT) and VB
(BTCUSDT), scripted models that trade both every bar. From bar 6 on, every
request to VB hangs for ``HANG_S`` wall seconds (default 3: a venue whose
backend stalls until ccxt's timeout). Prints, for 12 bars after the stall
starts:

* the wall time of each engine step (median, max);
* VA's order latency: from the start of the step that wrote an order to
  its submit reaching VA (median, max);

for the desk (each venue's requests in its own chain, a step waits at most
``STEP_BUDGET_S`` = 1 s for a venue) and for the naive way measured in the
same run (one request after the other, the step waiting for each: what the
engine did before the hub had chains), where every step behind a stalled VB
request waits the full stall.
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

from core.venue_hub import SessionGroup  # noqa: E402
from tests.recovery.test_multi_venue import A, B, build  # noqa: E402

BARS = 12


class Naive(SessionGroup):
    """The engine's old way: each request awaited in turn, no budget."""

    async def submit_batch(self, orders):  # type: ignore[override]
        for o in orders:
            await self.of(o.instrument_id).submit(o)

    async def tick(self) -> None:
        for s in self.sessions.values():
            await s.tick()

    async def cancel(self, order, reason):  # type: ignore[override]
        await self.of(order.instrument_id).cancel(order, reason)


def run(hang_s: float, naive: bool) -> tuple[list[float], list[float]]:
    """Step wall times and VA submit latencies (seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        eng, _ = build(Path(tmp), n=6 + BARS + 2)
        if naive:
            group = Naive(eng)
            eng.session = group
        vb = eng.venue.members["VB"]
        va = eng.venue.members["VA"]
        lat: list[float] = []
        step_t0 = [0.0]
        real_b, real_a = vb.submit_order, va.submit_order

        async def slow_b(order):
            await asyncio.sleep(hang_s)
            await real_b(order)

        async def timed_a(order):
            lat.append(time.perf_counter() - step_t0[0])  # from the start of the step that wrote it
            await real_a(order)

        steps: list[float] = []

        async def go() -> None:
            await eng.warm_up()
            await eng.run(max_bars=12)  # 6 steps of two bars
            vb.submit_order = slow_b
            va.submit_order = timed_a
            for _ in range(BARS):
                t0 = step_t0[0] = time.perf_counter()
                await eng.run(max_bars=2)
                steps.append(time.perf_counter() - t0)
            await asyncio.sleep(hang_s + 0.1)  # let the stalled requests finish before the stores close
        asyncio.run(go())
        eng.audit.close()
        eng.store.close()
        _ = (A, B)
        return steps, lat


def main() -> None:
    hang = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print(f"venue isolation: VB stalls {hang:g} s per request, {BARS} bars after the stall begins")
    for label, naive in (("desk (chains, 1 s budget)", False), ("naive (one after the other)", True)):
        steps, lat = run(hang, naive)
        print(f"  {label:30s} step wall median {statistics.median(steps) * 1e3:8.1f} ms  max {max(steps):6.2f} s"
              f"  total {sum(steps):6.2f} s;  VA submits {len(lat):2d}, latency median "
              f"{(statistics.median(lat) if lat else float('nan')) * 1e3:8.1f} ms  max "
              f"{(max(lat) if lat else float('nan')):6.2f} s")


if __name__ == "__main__":
    main()
