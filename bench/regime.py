"""Regime models: per-bar cost of the online update and accuracy of online
filtering against offline Viterbi, on synthetic series with known regimes.

Run:  .venv/bin/python bench/regime.py [--seeds N] [--train N] [--test N]

1. Cost per bar (medians, microseconds) of ``models.hmm.forward_step``, of
   ``HmmRegimeModel.observe`` (features + step + policy) and of an
   ``EnsembleModel`` of two members, against hmmlearn's ``predict_proba`` on
   the trailing 500-bar window (what a naive per-bar re-inference costs);
   ratio naive / online.
2. Accuracy: the fraction of bars whose label equals the true regime, for
   (a) online filtering: argmax of ``P(s_t | x_1..t)``, the desk's per-bar
   posterior, and (b) offline Viterbi: hmmlearn ``decode`` over the whole
   series (uses the future, so it is an upper reference), plus (c) offline
   smoothing (argmax of ``predict_proba``, also using the future); and the
   ratio online / Viterbi. The model is fitted on the first ``--train``
   feature rows and scored on the next ``--test`` rows. Labels are the
   canonical states (ascending return variance); the true regimes are
   generated with ascending volatility, so true regime k is label k. Each
   setting is run with one EM start (``n_init`` 1, the default) and with
   ``--n-init`` starts (best log-likelihood kept).

The synthetic market: log returns ``r_t = mu_s + sigma_s * eps``, 3 regimes
(mu = +0.0004, 0, -0.001 per bar; sigma = 0.002, 0.006, 0.015), Markov
transitions with expected durations 33, 25 and 20 bars; closes rounded to
0.01. Seeded: the same run prints the same accuracies.

Prints figures; it is not a timed test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from core.data import Bar  # noqa: E402
from core.identifiers import InstrumentId  # noqa: E402
from forward_filter import measure  # noqa: E402
from models.ensemble import EnsembleConfig, EnsembleModel  # noqa: E402
from models.hmm import (  # noqa: E402
    HmmConfig,
    features_from_closes,
    fit_hmm,
    forward_filter,
    prepare_filter,
)

DRIFTS = (0.0004, 0.0, -0.001)
VOLS = (0.002, 0.006, 0.015)
TRANS = ((0.97, 0.02, 0.01), (0.02, 0.96, 0.02), (0.02, 0.03, 0.95))
INSTR = InstrumentId("SYNTH", "SIM")


def synthetic(n: int, seed: int) -> tuple[list[Decimal], np.ndarray]:
    """``n`` closes (2 decimals, from 20000) and the (n,) true regime of each
    bar: ``states[t]`` drew the return ``log(c_t / c_t-1)`` (for bar 0, the
    step from 20000)."""
    rng = np.random.default_rng(seed)
    s, logp = 0, math.log(20000.0)
    closes, states = [], np.empty(n, dtype=int)
    for t in range(n):
        states[t] = s
        logp += DRIFTS[s] + VOLS[s] * rng.standard_normal()
        closes.append(Decimal(f"{math.exp(logp):.2f}"))
        s = int(rng.choice(3, p=TRANS[s]))
    return closes, states


def _hmmlearn(fit):
    from hmmlearn.hmm import GaussianHMM

    m = GaussianHMM(n_components=fit.n_states, covariance_type="full")
    m.startprob_, m.transmat_ = np.array(fit.startprob), np.array(fit.transmat)
    m.means_, m.covars_ = np.array(fit.means), np.array(fit.covars)
    return m


def accuracy(seed: int, cfg: HmmConfig, n_train: int, n_test: int) -> dict[str, float]:
    """Fit on the first ``n_train`` feature rows, score online filtering,
    Viterbi and smoothing on the next ``n_test`` rows against the truth."""
    w = cfg.vol_window
    closes, states = synthetic(n_train + n_test + w + 1, seed)
    feats = features_from_closes(closes, w, cfg.features)
    # feature row r is the return of bar r + w (bar 0 has no return)
    truth = states[w:][: len(feats)]  # states[t] drives the return of bar t, log(c_t / c_t-1)
    fit = fit_hmm(feats[:n_train], HmmConfig(**{**cfg.to_dict(), "warmup": n_train}))
    online = np.argmax(forward_filter(feats, prepare_filter(fit)), axis=1)
    ref = _hmmlearn(fit)
    _, viterbi = ref.decode(feats, algorithm="viterbi")
    smooth = np.argmax(ref.predict_proba(feats), axis=1)
    test = slice(n_train, n_train + n_test)
    acc = {name: float(np.mean(lab[test] == truth[test])) for name, lab in
           (("online", online), ("viterbi", viterbi), ("smoothed", smooth))}
    acc["fit_iter"] = fit.n_iter
    return acc


def ensemble_cost(closes, n_steps: int) -> float:
    """Median microseconds of one ``EnsembleModel.observe`` (two members)."""
    from models.ensemble import fit_ensemble

    cfg = EnsembleConfig(members=(HmmConfig(n_states=3), HmmConfig(n_states=2, features=("log_return",))))
    ens = EnsembleModel("bench_ens", INSTR, cfg)
    bars = [Bar(INSTR, c, c, c, c, Decimal(1), i, i + 1) for i, c in enumerate(closes)]
    i = 0
    while not ens.fit_due():
        ens.observe(bars[i])
        i += 1
    fn, args = ens.fit_job()
    assert fn is fit_ensemble
    ens.apply_fit(fn(*args))
    perf = time.perf_counter_ns
    ns = []
    for bar in bars[i : i + n_steps]:
        t = perf()
        ens.observe(bar)
        ns.append(perf() - t)
    return statistics.median(ns) / 1e3


def main(argv: list[str] | None = None) -> int:
    """CLI: print the cost and accuracy figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="synthetic series for the accuracy (default 5)")
    ap.add_argument("--train", type=int, default=2000, help="feature rows fitted (default 2000)")
    ap.add_argument("--test", type=int, default=3000, help="feature rows scored after them (default 3000)")
    ap.add_argument("--steps", type=int, default=3000, help="bars timed (default 3000)")
    ap.add_argument("--n-init", type=int, default=4, help="EM runs per fit in the n_init rows (default 4)")
    ns = ap.parse_args(argv)
    import logging

    # hmmlearn logs "Model is not converging" when a step falls; fit_hmm
    # rejects such a run itself (check_fit_history) and n_init moves on
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)

    closes, _ = synthetic(4000, seed=100)
    r = measure([str(c) for c in closes], ns.steps)
    ens_us = ensemble_cost(closes, ns.steps)
    print(f"cost per bar, K={r['n_states']}, warmup 500, {r['n_steps']} bars (medians):")
    print(f"  forward_step                    {r['forward_step_us']:9.2f} us")
    print(f"  HmmRegimeModel.observe          {r['observe_us']:9.2f} us  (features + step + policy)")
    print(f"  EnsembleModel.observe (2 models){ens_us:9.2f} us")
    print(f"  predict_proba, trailing 500 bars{r['predict_proba_500_us']:9.1f} us  (naive per-bar re-inference)")
    print(f"  ratio predict_proba / forward_step {r['ratio']}x, / observe "
          f"{r['predict_proba_500_us'] / r['observe_us']:.1f}x; "
          f"max |filter - predict_proba over the same history| {r['max_abs_diff']:.1e}")

    both, ret = "features log_return + realized_vol (20)", "feature log_return only"
    for cfg, label in ((HmmConfig(n_states=3), both),
                       (HmmConfig(n_states=3, n_init=ns.n_init), f"{both}, n_init {ns.n_init}"),
                       (HmmConfig(n_states=3, features=("log_return",)), ret),
                       (HmmConfig(n_states=3, features=("log_return",), n_init=ns.n_init), f"{ret}, n_init {ns.n_init}")):
        print(f"\naccuracy vs true regimes, K=3, {label}, fit on {ns.train} rows, scored on the next {ns.test}:")
        print("  seed   online  viterbi smoothed  online/viterbi  EM iters")
        rows = []
        for seed in range(ns.seeds):
            a = accuracy(seed, cfg, ns.train, ns.test)
            rows.append(a)
            print(f"  {seed:4d}   {a['online']:.3f}    {a['viterbi']:.3f}    {a['smoothed']:.3f}"
                  f"        {a['online'] / a['viterbi']:.3f}      {a['fit_iter']:4d}")
        mean = {k: statistics.fmean(x[k] for x in rows) for k in ("online", "viterbi", "smoothed")}
        print(f"  mean   {mean['online']:.3f}    {mean['viterbi']:.3f}    {mean['smoothed']:.3f}"
              f"        {mean['online'] / mean['viterbi']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
