"""Canary decisions on seeded regime-switching markets: our analysis
(``core.analysis.CanaryAnalysis``: PSR of the excess return against a
Wang-Tsiatis boundary, Flagger ladder) against two naive rules, on the same
series in the same run.

Rules compared:
  ours         CanaryAnalysis(CanaryPolicy()) -- the defaults.
  psr>=0.95    the same ladder with a fixed PSR >= 0.95 gate (and <= 0.05 for
               a failed check) looked at every interval: what repeated looks
               do to a fixed significance level.
  naive        "promote when the canary's Sharpe is higher after N trades":
               at the first interval where the canary has N fills, promote if
               sample_sharpe(canary returns) > sample_sharpe(live returns),
               else roll back.

Market (per seed): a two-state Markov regime (calm / turbulent, sticky: stay
probabilities 0.97 and 0.90) sets the mean and volatility of a market
factor per 30-minute interval; the live version's return is
beta_live * market + its own noise, the canary's beta_canary * market + its
own noise + an edge that depends on the regime (stronger in calm, weaker in
turbulent), scaled per case so that the canary is truly better (average
edge +0.25 of the excess return's unconditional sd), equal (0) or worse
(-0.25). Fills per interval are Poisson(3) for each version; an interval
without fills returns 0 for that version (issue 7: "intervals without
trades count as zero return").

Correct decision: better -> promote; worse -> rollback; equal -> anything
but a promotion is acceptable (the live version stays), and the median
time is that of the rollbacks. Wrong: promoting an equal or worse canary,
rolling back a better one.

Run:  .venv/bin/python bench/decisions.py [--seeds 500] [--horizon 200]
      .venv/bin/python bench/decisions.py --calibrate [--alpha 0.036] [--sims 100000]
The second form finds the policy's ``boundary_z`` (Wang-Tsiatis constant)
for a target false-promotion rate under i.i.d. normal excess returns with 3
fills per interval, using a vectorized mirror of CanaryAnalysis (checked
against the class on the first paths), and prints the power it gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.analysis import CanaryAnalysis, CanaryPolicy, IntervalResult, sample_sharpe  # noqa: E402

NAIVE_TRADES = 30
CASES = (("better", 0.25), ("equal", 0.0), ("worse", -0.25))


# --------------------------------------------------------------------------- markets


def regime_market(seed: int, horizon: int, edge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One seeded regime-switching market: (canary returns, live returns,
    canary fills, live fills), each of length ``horizon`` (returns are
    fractions of each version's budget per 30-minute interval)."""
    rng = np.random.default_rng(seed)
    stay = (0.97, 0.90)
    mu_m, sd_m = (0.0004, -0.0008), (0.004, 0.012)
    reg = np.empty(horizon, dtype=np.int8)
    s = int(rng.random() < 0.25)
    u = rng.random(horizon)
    for t in range(horizon):
        reg[t] = s
        if u[t] > stay[s]:
            s = 1 - s
    market = np.where(reg == 0, mu_m[0], mu_m[1]) + rng.standard_normal(horizon) * np.where(reg == 0, sd_m[0], sd_m[1])
    beta_live, beta_canary = 0.8, 0.7
    noise_sd = 0.004
    # the excess return's unconditional sd: beta difference times the market
    # (mixture over the stationary regimes) plus both versions' own noise
    p0 = (1 - stay[1]) / ((1 - stay[0]) + (1 - stay[1]))
    m_mean = p0 * mu_m[0] + (1 - p0) * mu_m[1]
    m_var = p0 * (sd_m[0] ** 2 + mu_m[0] ** 2) + (1 - p0) * (sd_m[1] ** 2 + mu_m[1] ** 2) - m_mean ** 2
    ex_sd = math.sqrt((beta_canary - beta_live) ** 2 * m_var + 2 * noise_sd ** 2)
    # the canary's edge: 1.5x in calm, 0x in turbulent, normalised so the
    # stationary mean edge is `edge` sd of the excess; the beta difference
    # also shifts the excess mean: cancel it so "equal" is equal on average
    shape = np.where(reg == 0, 1.5, 0.0) / (p0 * 1.5)
    bias = (beta_canary - beta_live) * m_mean
    live = beta_live * market + rng.standard_normal(horizon) * noise_sd
    canary = beta_canary * market + rng.standard_normal(horizon) * noise_sd + edge * ex_sd * shape - bias
    cf = rng.poisson(3.0, horizon)
    lf = rng.poisson(3.0, horizon)
    canary = np.where(cf > 0, canary, 0.0)
    live = np.where(lf > 0, live, 0.0)
    return canary, live, cf, lf


# --------------------------------------------------------------------------- rules


def run_analysis(policy: CanaryPolicy, canary, live, cf, lf) -> tuple[str, int]:
    """Drive one CanaryAnalysis over a series: (final action, interval)."""
    a = CanaryAnalysis(policy)
    v = None
    for i in range(len(canary)):
        v = a.observe(IntervalResult(float(canary[i]), float(live[i]), int(cf[i]), int(lf[i])))
        if v.action in ("promote", "rollback", "inconclusive"):
            return v.action, i + 1
    return (v.action if v else "none"), len(canary)


def run_naive(canary, live, cf, lf, n_trades: int = NAIVE_TRADES) -> tuple[str, int]:
    """Promote when the canary's Sharpe is higher after ``n_trades`` fills,
    else roll back."""
    tot = np.cumsum(cf)
    hit = np.nonzero(tot >= n_trades)[0]
    if not len(hit):
        return "inconclusive", len(canary)
    i = int(hit[0]) + 1
    better = sample_sharpe(canary[:i].tolist()) > sample_sharpe(live[:i].tolist())
    return ("promote" if better else "rollback"), i


# --------------------------------------------------------------------------- vectorized mirror (calibration)


def vectorized_decisions(policy: CanaryPolicy, excess: np.ndarray, canary: np.ndarray,
                         fills: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CanaryAnalysis's rule on many paths at once (rows = paths): the
    interval of promotion and of rollback per path (a large number when it
    did not happen within the columns)."""
    S, T = excess.shape
    n = np.arange(1, T + 1, dtype=float)
    # central moments by cumulative sums of a shifted series (shift by the
    # first value keeps the cancellation small for these magnitudes)
    x = excess - excess[:, :1]
    s1 = np.cumsum(x, 1); s2 = np.cumsum(x * x, 1); s3 = np.cumsum(x ** 3, 1); s4 = np.cumsum(x ** 4, 1)
    m = s1 / n
    with np.errstate(all="ignore"):
        v = np.maximum(s2 / n - m * m, 0.0)
        m3 = s3 / n - 3 * m * s2 / n + 2 * m ** 3
        m4 = s4 / n - 4 * m * s3 / n + 6 * m * m * s2 / n - 3 * m ** 4
        sd = np.sqrt(v * n / np.maximum(n - 1, 1))
        mean = m + excess[:, :1]
        sr = mean / sd
        g3 = m3 / v ** 1.5
        g4 = m4 / (v * v)
        den = np.maximum(1 - g3 * sr + (g4 - 1) / 4 * sr * sr, 1e-12)
        z = (sr - policy.benchmark) * np.sqrt(n - 1) / np.sqrt(den)
    scale = np.maximum.accumulate(np.abs(excess), 1)
    z = np.where((sd <= 1e-12 * scale) | ~np.isfinite(z), 0.0, z)
    z[:, :2] = 0.0
    cum = np.cumsum(canary, 1)
    peak = np.maximum(np.maximum.accumulate(cum, 1), 0.0)
    dd = np.maximum.accumulate(peak - cum, 1)
    trades = np.cumsum(fills, 1)
    c = policy.boundary_z * (n / policy.max_intervals) ** (policy.boundary_delta - 0.5)
    K = len(policy.step_weights)
    step = np.zeros(S, int); fails = np.zeros(S, int)
    big = 10 ** 9
    t_prom = np.full(S, big); t_rb = np.full(S, big)
    done = np.zeros(S, bool)
    for t in range(T):
        nn = t + 1
        warmed = (nn >= policy.min_intervals) & (trades[:, t] >= policy.min_trades) & ~done
        f = warmed & ((dd[:, t] > policy.max_drawdown) | (z[:, t] <= -c[t]))
        p = warmed & ~f & (z[:, t] >= c[t])
        fails += f
        rb = f & (fails >= policy.failure_threshold)
        prom = p & (step == K - 1) & (nn <= policy.max_intervals)
        step = np.where(p & ~prom & (nn < policy.max_intervals), step + 1, step)
        t_rb[rb] = nn; t_prom[prom] = nn
        done |= rb | prom
    return t_prom, t_rb


def normal_paths(sims: int, horizon: int, delta: float, sigma: float, seed: int):
    rng = np.random.default_rng(seed)
    ex = rng.standard_normal((sims, horizon)) * sigma + delta * sigma
    return ex, np.full((sims, horizon), 3)


def calibrate(policy: CanaryPolicy, alpha: float, sims: int, seed: int = 12345) -> None:
    """Print the boundary_z giving a false-promotion rate ``alpha`` within the
    policy's horizon (i.i.d. normal excess, live 0, 3 fills per interval),
    and the power it gives at +-0.25 and +0.35 sd."""
    T = policy.max_intervals
    sigma = 0.01
    ex0, fills = normal_paths(sims, T, 0.0, sigma, seed)
    # check the mirror against the class on the first paths
    bad = 0
    for i in range(50):
        tp, tr = vectorized_decisions(policy, ex0[i:i + 1], ex0[i:i + 1], fills[i:i + 1])
        a, t = run_analysis(policy, ex0[i], np.zeros(T), fills[i], fills[i])
        want = ("promote", int(tp[0])) if tp[0] <= T else ("rollback", int(tr[0])) if tr[0] <= T else None
        got = (a, t) if a in ("promote", "rollback") else None
        bad += want != got
    print(f"vectorized mirror vs CanaryAnalysis on 50 null paths: {50 - bad}/50 identical")
    chunk = 10_000
    chunks = {}

    def outcomes(pol: CanaryPolicy, delta: float) -> tuple[np.ndarray, np.ndarray]:
        tps, trs = [], []
        for k in range(max(1, sims // chunk)):
            key = (delta, k)
            if key not in chunks:
                chunks[key] = normal_paths(chunk, T, delta, sigma, seed + 7919 * k + int(delta * 1000))
            ex, fl = chunks[key]
            tp, tr = vectorized_decisions(pol, ex, ex, fl)
            tps.append(tp); trs.append(tr)
        return np.concatenate(tps), np.concatenate(trs)

    lo, hi = 1.0, 4.0
    for _ in range(12):
        mid = (lo + hi) / 2
        tp, _ = outcomes(dataclasses.replace(policy, boundary_z=mid), 0.0)
        if np.mean(tp <= T) > alpha:
            lo = mid
        else:
            hi = mid
    chunks = {k: v for k, v in chunks.items() if k[0] == 0.0}
    pol = dataclasses.replace(policy, boundary_z=math.ceil(hi * 100) / 100)
    print(f"boundary_z = {pol.boundary_z} (delta {pol.boundary_delta}, horizon {T}, min_intervals "
          f"{pol.min_intervals}, min_trades {pol.min_trades}, {len(pol.step_weights)} passes to promote, "
          f"failure_threshold {pol.failure_threshold}, max_drawdown {pol.max_drawdown}; {sims} paths per case)")
    for n_ in (10, 30, 60, 120, 200):
        c = pol.boundary(n_)
        print(f"  after {n_:3d} intervals: z >= {c:.3f}  (PSR >= {statistics.NormalDist().cdf(c):.5f})")
    for delta in (0.0, 0.25, -0.25, 0.30, 0.35):
        tp, tr = outcomes(pol, delta)
        print(f"  excess Sharpe {delta:+.2f}/interval: promoted {np.mean(tp <= T):.3f} "
              f"(within 120: {np.mean(tp <= 120):.3f}), rolled back {np.mean(tr <= T):.3f}, "
              f"median promotion at {np.median(tp[tp <= T]) if (tp <= T).any() else float('nan'):.0f}")
        chunks = {k: v for k, v in chunks.items() if k[0] == 0.0}


# --------------------------------------------------------------------------- table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=500, help="markets per case (default 500)")
    ap.add_argument("--horizon", type=int, default=200, help="intervals per market (default 200)")
    ap.add_argument("--calibrate", action="store_true", help="calibrate boundary_z instead")
    ap.add_argument("--alpha", type=float, default=0.036, help="target false-promotion rate for --calibrate")
    ap.add_argument("--sims", type=int, default=40_000, help="paths for --calibrate")
    ap.add_argument("--delta", type=float, default=None, help="boundary_delta for --calibrate")
    args = ap.parse_args(argv)

    if args.calibrate:
        pol = CanaryPolicy() if args.delta is None else CanaryPolicy(boundary_delta=args.delta)
        calibrate(pol, args.alpha, args.sims)
        return 0

    ours = CanaryPolicy()
    fixed = dataclasses.replace(ours, boundary_delta=0.5, boundary_z=statistics.NormalDist().inv_cdf(0.95))
    rules = (("ours", lambda *s: run_analysis(ours, *s)),
             ("psr>=0.95", lambda *s: run_analysis(fixed, *s)),
             (f"naive N={NAIVE_TRADES}", lambda *s: run_naive(*s)))
    t0 = time.perf_counter()
    rows = []
    for case, edge in CASES:
        markets = [regime_market(1000 * (1 + CASES.index((case, edge))) + s, args.horizon, edge)
                   for s in range(args.seeds)]
        ex_sr = statistics.fmean(sample_sharpe((c - lv).tolist()) for c, lv, _, _ in markets)
        for name, rule in rules:
            outs = [rule(*m) for m in markets]
            prom = sum(a == "promote" for a, _ in outs) / len(outs)
            rb = sum(a == "rollback" for a, _ in outs) / len(outs)
            if case == "better":
                wrong, right = rb, [t for a, t in outs if a == "promote"]
            elif case == "worse":
                wrong, right = prom, [t for a, t in outs if a == "rollback"]
            else:
                wrong, right = prom, [t for a, t in outs if a == "rollback"]
            med = statistics.median(right) if right else float("nan")
            rows.append((case, ex_sr, name, prom, rb, max(0.0, 1 - prom - rb), wrong, med))
    dt = time.perf_counter() - t0
    print(f"{args.seeds} regime-switching markets per case, {args.horizon} intervals of 30 min each "
          f"(edge +-0.25 sd of the excess), same series for every rule")
    print(f"{'case':7s} {'excess SR':>9s} {'rule':13s} {'promote':>8s} {'rollback':>8s} {'undecided':>9s} "
          f"{'wrong':>7s} {'median intervals to a correct decision':>40s}")
    for case, sr, name, prom, rb, und, wrong, med in rows:
        print(f"{case:7s} {sr:9.3f} {name:13s} {prom:8.3f} {rb:8.3f} {und:9.3f} {wrong:7.3f} {med:40.1f}")
    print(f"({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
