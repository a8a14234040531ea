"""Replay throughput of the headless pipeline, and the per-bar cost of the
regime update against the naive way, in one run.

Run:  .venv/bin/python bench/replay.py [CSV ...] [--filter-steps N]
(default CSV: ../shared/data/binance/klines/BTCUSDT-1m-2025-05-20_2025-06-30.csv).

Prints:
* bars per second of the whole headless pipeline (``desk run --headless
  --speed max``: CSV validation excluded, store, audit, rails, paper venue,
  two HMM models, the fit worker process included), on a fresh state dir;
* the same replay with the store's commits forced per bar (the naive
  write path) for the ratio;
* µs per bar of one forward-filter step vs hmmlearn ``predict_proba`` on a
  trailing 500-bar window, and their ratio.
It is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from forward_filter import measure, read_closes  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "binance" / "klines" / "BTCUSDT-1m-2025-05-20_2025-06-30.csv"


def replay(files: list[Path], per_bar_commit: bool = False) -> tuple[int, float, dict]:
    """Run one replay on a temporary state dir; returns (bars, seconds, summary)."""
    from desk.wiring import RunOptions, build

    with tempfile.TemporaryDirectory() as d:
        built = build(RunOptions(data=files, state_dir=Path(d)))
        eng = built.engine
        if per_bar_commit:
            orig = eng._process_bar

            async def committing(bar):  # the naive way: one fsync-ed commit per bar
                await orig(bar)
                eng.flush()
                eng.store.conn.execute("INSERT OR REPLACE INTO meta VALUES ('bench', ?)", (str(eng.stats.bars),))
                eng.store.conn.commit()

            eng._process_bar = committing
        t0 = time.perf_counter()
        asyncio.run(eng.run())
        wall = time.perf_counter() - t0
        summary = eng.summary(wall, eng.stats.bars)
        built.close()
    return summary["bars"], wall, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="*", type=Path, default=[DEFAULT_CSV])
    ap.add_argument("--filter-steps", type=int, default=4000)
    ap.add_argument("--naive-bars", type=int, default=20000, help="bars for the per-bar-commit comparison")
    args = ap.parse_args()
    missing = [p for p in args.csv if not p.is_file()]
    if missing:
        raise SystemExit(f"bench/replay.py: no such file: {', '.join(map(str, missing))} "
                         f"(give a kline CSV, e.g. ../shared/data/binance/klines/BTCUSDT-1m-....csv)")

    bars, wall, s = replay(args.csv)
    print(f"replay: {bars} bars in {wall:.2f} s = {bars / wall:,.0f} bars/s "
          f"({s['fills']} fills, {sum(s['orders'].values())} orders)")

    from tests.conftest import head_csv  # a shorter copy for the slow naive path

    with tempfile.TemporaryDirectory() as d:
        short = [head_csv(p, Path(d) / p.name, args.naive_bars) for p in args.csv]
        b1, w1, _ = replay(short)
        b2, w2, _ = replay(short, per_bar_commit=True)
    print(f"store path on {b1} bars: batched {b1 / w1:,.0f} bars/s vs one fsync-ed commit per bar "
          f"{b2 / w2:,.0f} bars/s: ratio {(b1 / w1) / (b2 / w2):.1f}x")

    closes = read_closes(args.csv[0], 520 + args.filter_steps + 1)
    m = measure(closes, args.filter_steps)
    print(f"regime update: forward_step {m['forward_step_us']:.1f} us/bar, model.observe {m['observe_us']:.1f} us/bar "
          f"vs predict_proba(500-bar window) {m['predict_proba_500_us']:.0f} us/bar: ratio {m['ratio']:.0f}x "
          f"(max |diff| {m['max_abs_diff']:.1e})")


if __name__ == "__main__":
    main()
