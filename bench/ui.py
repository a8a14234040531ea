"""The Textual app under load: event-loop lag while replaying at max speed,
and the kill switch's latency with 100 working orders. A measurement, not
a test.

Run:  .venv/bin/python bench/ui.py [--data CSV] [--seconds S] [--orders N]

Prints:

1. the event-loop lag p50 / p99 / max (ms) while the app (headless, 160×48,
   every pane live) replays at max speed: the real engine built by
   ``desk.wiring.build`` (the SIM default, or ``--data`` a Binance kline
   CSV, e.g. ../shared/data/binance/klines/BTCUSDT-1m-2025-05-20_2025-06-30.csv)
   with its HMM models and fit worker process, after the warm-up. The lag
   is how late a 10 ms timer fires (``asyncio.sleep(0.01)`` overshoot),
   sampled for ``--seconds``; the bars per second reached are printed too;
2. the time from the second ``ctrl+k`` (the key posted to the app) to the
   acknowledgement of the last of ``--orders`` cancels (the paper venue's
   ``OrderCanceled`` on the bus), with the engine replaying at max speed in
   the app (scripted models on the SIM market, so the resting orders are
   the only ones working), and the same with the engine idle.

The app runs with Textual's headless driver: every frame is composed and
rendered, only the terminal write is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (160, 48)


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def _lag_probe(stop: asyncio.Event, out: list[float], period: float = 0.01) -> None:
    """Record how late a ``period`` sleep wakes up, until ``stop``."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(period)
        out.append((time.perf_counter() - t - period) * 1000)


async def bench_lag(data: list[Path], seconds: float) -> None:
    """Part 1: loop lag while replaying at max speed with the real engine."""
    from core.clock import TestClock
    from desk.app import make_app
    from desk.wiring import RunOptions, build

    with tempfile.TemporaryDirectory() as d:
        built = build(RunOptions(data=data, state_dir=Path(d) / "state"))
        try:
            app = make_app(built, wall_clock=TestClock(), speed=None, install_signals=False)
            engine = built.engine
            async with app.run_test(size=SIZE):
                t0 = time.perf_counter()
                while engine.stats.bars == 0 and app.engine_worker and app.engine_worker.is_running:
                    await asyncio.sleep(0.05)
                warm = time.perf_counter() - t0
                lags: list[float] = []
                stop = asyncio.Event()
                bars0 = engine.stats.bars
                t1 = time.perf_counter()
                probe = asyncio.create_task(_lag_probe(stop, lags))
                await asyncio.sleep(seconds)
                stop.set()
                await probe
                dt = time.perf_counter() - t1
                bars = engine.stats.bars - bars0
                await app.shutdown(halt=False)
        finally:
            built.close()
    what = ", ".join(p.name for p in data) if data else "SIM (2 instruments)"
    print(f"1. event-loop lag while replaying at max speed ({what}; warm-up {warm:.1f} s; "
          f"{len(lags)} samples over {dt:.1f} s)")
    print(f"   p50 {_pct(lags, 50):.1f} ms   p99 {_pct(lags, 99):.1f} ms   max {max(lags):.1f} ms   "
          f"mean {statistics.fmean(lags):.1f} ms")
    print(f"   replay: {bars / dt:,.0f} bars/s with the UI ({bars:,} bars)")


async def _kill(n_orders: int, running: bool) -> tuple[float, float, int]:
    """Part 2 on one app; returns (ms to the last cancel ack, ms to the
    return of governance.halt (cancels sent, store committed), acks)."""
    from core.clock import TestClock
    from desk.app import DeskApp
    from tests.app.engines import close_engine, place_resting_buys, scripted_sim_engine

    with tempfile.TemporaryDirectory() as d:
        # the models trade small (at most 30 % of capital) so the resting orders have cash
        small = {"hmm_v1": ["0.3", "0.3", "0.1", "0.1", "0", "0"], "hmm_v2_canary": ["0.3", "0", "0.3", "0"]}
        engine = scripted_sim_engine(Path(d) / "state", targets=small)
        try:
            await engine.warm_up()
            await engine.run(max_bars=10)
            wall = TestClock(1_000_000_000_000)
            app = DeskApp(engine, wall_clock=wall, speed=None, autostart=running, install_signals=False)
            acks: list[float] = []

            def on_cancel(ev) -> None:
                if ev.client_order_id in coids:
                    acks.append(time.perf_counter())

            coids: set[str] = set()
            engine.bus.subscribe("OrderCanceled", on_cancel)
            marks: dict[str, float] = {}
            halt = engine.governance.halt

            async def timed_halt(*a, **k):  # when governance.halt returns (cancels sent, store flushed)
                r = await halt(*a, **k)
                marks["halt"] = time.perf_counter()
                return r

            engine.governance.halt = timed_halt  # type: ignore[method-assign]
            async with app.run_test(size=SIZE) as pilot:
                # the rails' message throttle allows 60 submits a minute of engine
                # clock: place the orders in batches a few engine minutes apart
                placed = 0
                while placed < n_orders:
                    k = min(50, n_orders - placed)
                    coids |= set(await place_resting_buys(engine, k, below="0.5", model_id="manual"))
                    placed += k
                    if running:
                        target = engine.stats.steps + 2
                        while engine.stats.steps < target:
                            await asyncio.sleep(0.001)
                    else:
                        engine.clock.advance(120_000_000_000)
                working = [c for c in coids if engine.orders[c].is_working]
                assert len(working) == n_orders, f"only {len(working)} of {n_orders} orders are working"
                await pilot.press("ctrl+k")
                wall.advance(500_000_000)
                gc.collect()
                t0 = time.perf_counter()
                await pilot.press("ctrl+k")
                await app.wait_governance()
                t_halt = marks.get("halt", float("nan"))
                if running:
                    await app.shutdown(halt=False)
        finally:
            close_engine(engine)
    return (max(acks) - t0) * 1000 if acks else float("nan"), (t_halt - t0) * 1000, len(acks)


async def bench_kill(n_orders: int) -> None:
    """Part 2: the kill switch with ``n_orders`` working orders."""
    for running in (True, False):
        ack_ms, halt_ms, n = await _kill(n_orders, running)
        load = "engine replaying at max speed in the app" if running else "engine idle"
        print(f"2. kill switch, {n_orders} working orders, {load}: second ctrl+k → last cancel ack "
              f"{ack_ms:.1f} ms ({n} acks; halt() returned, store committed, at {halt_ms:.1f} ms)")


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and print both measurements."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", type=Path, default=[], help="kline CSV to replay (default: SIM)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to sample the loop lag")
    p.add_argument("--orders", type=int, default=100, help="working orders for the kill switch")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(bench_lag(args.data, args.seconds))
    asyncio.run(bench_kill(args.orders))


if __name__ == "__main__":
    main()
