"""Per-bar regime update cost: one ``forward_step`` vs hmmlearn ``predict_proba``
on a trailing 500-bar window (what a naive implementation would run per bar).

Run:  .venv/bin/python bench/forward_filter.py [CSV] [--bars N] [--steps N]
(default CSV: ../shared/data/binance/klines/BTCUSDT-1m-2025-05-20_2025-06-30.csv,
first 5000 bars). Prints figures; it is not a timed test.

Importable by other benches (``sys.path.insert(0, <repo>/bench)`` then
``from forward_filter import measure``); importing it does not import
hmmlearn.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.hmm import HmmConfig, HmmRegimeModel, features_from_closes, fit_hmm, forward_step, prepare_filter

DEFAULT_CSV = (
    Path(__file__).resolve().parents[1].parent
    / "shared" / "data" / "binance" / "klines" / "BTCUSDT-1m-2025-05-20_2025-06-30.csv"
)
WINDOW = 500


def read_closes(path: Path, n: int) -> list[str]:
    """The first ``n`` closes (column 5, as strings) of a Binance kline CSV;
    a non-numeric first line is taken as a header."""
    out: list[str] = []
    with Path(path).open(newline="") as f:
        for row in csv.reader(f):
            if len(out) >= n:
                break
            try:
                float(row[4])
            except ValueError:
                continue
            out.append(row[4])
    return out


def measure(closes: Sequence[Any], n_steps: int, cfg: HmmConfig | None = None) -> dict[str, Any]:
    """Fit on the first ``cfg.warmup`` feature rows, then time per-bar updates.

    Args:
        closes: closes (Decimal, str or float), at least
            ``cfg.vol_window + cfg.warmup + 1`` of them.
        n_steps: bars to time after the fit window (capped by the data).
        cfg: model config (default ``HmmConfig()``: 3 states, full
            covariance, vol_window 20, warmup 500).

    Returns:
        dict with medians in microseconds per bar:
        ``forward_step_us`` (one ``models.hmm.forward_step``),
        ``observe_us`` (``HmmRegimeModel.observe``: features + step),
        ``predict_proba_500_us`` (hmmlearn ``predict_proba`` on the trailing
        500 feature rows, last row taken), ``ratio`` (predict_proba /
        forward_step), ``max_abs_diff`` (largest posterior difference
        from the last row of ``predict_proba`` over the same whole history,
        checked at ~20 of the timed bars), ``fit_s`` (wall time of the
        fit), ``fit_iter``, ``n_steps`` (bars timed), ``n_states``.

    Raises:
        ValueError: if there are too few closes.
        models.hmm.HmmFitError: if the fit fails.
    """
    from decimal import Decimal

    from hmmlearn.hmm import GaussianHMM

    from core.data import Bar
    from core.identifiers import InstrumentId

    cfg = cfg or HmmConfig()
    feats = features_from_closes(closes, cfg.vol_window)
    if len(feats) <= cfg.warmup:
        raise ValueError(f"measure: {len(feats)} feature rows, need more than warmup={cfg.warmup}")
    t0 = time.perf_counter()
    fit = fit_hmm(feats[: cfg.warmup], cfg)
    fit_s = time.perf_counter() - t0
    fp = prepare_filter(fit)
    steps = min(n_steps, len(feats) - cfg.warmup)

    la = None
    for row in feats[: cfg.warmup]:
        la = forward_step(la, row, fp)
    step_ns: list[int] = []
    posts = np.empty((steps, fit.n_states))
    perf = time.perf_counter_ns
    for i in range(steps):
        row = feats[cfg.warmup + i]
        t = perf()
        la = forward_step(la, row, fp)
        step_ns.append(perf() - t)
        posts[i] = la

    ref = GaussianHMM(n_components=fit.n_states, covariance_type="full")
    ref.startprob_ = np.array(fit.startprob)
    ref.transmat_ = np.array(fit.transmat)
    ref.means_ = np.array(fit.means)
    ref.covars_ = np.array(fit.covars)
    naive_ns: list[int] = []
    for i in range(steps):
        end = cfg.warmup + i + 1
        t = perf()
        ref.predict_proba(feats[end - WINDOW : end])[-1]
        naive_ns.append(perf() - t)
    # the filter equals the last row of predict_proba over the same history
    # (earlier rows of predict_proba are smoothed, so check ~20 prefixes)
    max_abs_diff = 0.0
    for i in sorted({*range(0, steps, max(1, steps // 20)), steps - 1}):
        last = ref.predict_proba(feats[: cfg.warmup + i + 1])[-1]
        max_abs_diff = max(max_abs_diff, float(np.abs(np.exp(posts[i]) - last).max()))

    # the model's whole per-bar path (features + forward step), on Bars
    instr = InstrumentId("BTCUSDT", "BINANCE")
    bars = [
        Bar(instr, c, c, c, c, Decimal(1), i, i + 1)
        for i, c in enumerate(Decimal(str(x)) for x in closes[: cfg.vol_window + cfg.warmup + steps])
    ]
    model = HmmRegimeModel("bench", instr, cfg)
    for bar in bars[: cfg.vol_window + cfg.warmup]:
        model.observe(bar)
    model.fit_job()
    model.apply_fit(fit)
    obs_ns: list[int] = []
    for bar in bars[cfg.vol_window + cfg.warmup :]:
        t = perf()
        model.observe(bar)
        obs_ns.append(perf() - t)

    fwd = statistics.median(step_ns) / 1e3
    naive = statistics.median(naive_ns) / 1e3
    return {
        "forward_step_us": round(fwd, 2),
        "observe_us": round(statistics.median(obs_ns) / 1e3, 2),
        "predict_proba_500_us": round(naive, 1),
        "ratio": round(naive / fwd, 1),
        "max_abs_diff": max_abs_diff,
        "fit_s": round(fit_s, 3),
        "fit_iter": fit.n_iter,
        "n_steps": steps,
        "n_states": fit.n_states,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: print the figures of ``measure`` on a kline CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--bars", type=int, default=5000, help="closes read from the CSV (default 5000)")
    ap.add_argument("--steps", type=int, default=4000, help="bars timed after the fit window (default 4000)")
    ns = ap.parse_args(argv)
    if not ns.csv.exists():
        print(f"no data at {ns.csv}", file=sys.stderr)
        return 2
    closes = read_closes(ns.csv, ns.bars)
    r = measure(closes, ns.steps)
    print(f"data: {ns.csv.name}, {len(closes)} closes, K={r['n_states']}, fit {r['fit_s']} s ({r['fit_iter']} EM iterations)")
    print(f"forward_step           median {r['forward_step_us']:8.2f} us/bar")
    print(f"HmmRegimeModel.observe median {r['observe_us']:8.2f} us/bar (features + step)")
    print(f"predict_proba(500 bars) median {r['predict_proba_500_us']:7.1f} us/bar")
    print(f"ratio {r['ratio']}x over {r['n_steps']} bars; max |posterior - predict_proba over the same history| {r['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
