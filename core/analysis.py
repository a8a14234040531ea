"""Statistics of the canary analysis and the capital allocator (issue 7).

Pure functions and small classes, no engine coupling: the engine feeds them
numbers and acts on what they return.

* :func:`sample_sharpe`, :func:`probabilistic_sharpe_ratio`, :func:`psr_of`,
  :func:`max_drawdown`: per-interval return statistics (floats; a return is
  a fraction of a budget, ``0.01`` = 1 %).
* :class:`CanaryPolicy`, :class:`IntervalResult`, :class:`Verdict`,
  :class:`CanaryAnalysis`: the Flagger-style canary analysis (step weights,
  failed-check threshold, Argo-style "inconclusive" horizon) whose statistic
  is the probabilistic Sharpe ratio of the canary's excess return over the
  live version, judged against a boundary that accounts for looking at it
  every interval (Wang & Tsiatis 1987).
* :class:`AllocationResult`, :func:`allocate`: the capital allocator
  (weights proportional to positive Sharpe within floors and caps); weights
  and budgets are Decimal.

Sources:
    Bailey, D.H. and Lopez de Prado, M. (2012), "The Sharpe ratio efficient
    frontier", Journal of Risk 15(2), 3-44: the probabilistic Sharpe ratio
    (PSR), with the variance of the Sharpe estimator from Mertens (2002).
    Wang, S.K. and Tsiatis, A.A. (1987), "Approximately optimal one-parameter
    boundaries for group sequential trials", Biometrics 43(1), 193-199: the
    boundary family ``c(n) = C * (n / N) ** (delta - 0.5)`` (delta 0.5 is
    Pocock's constant boundary, delta 0 O'Brien & Fleming's).
    Flagger (fluxcd/flagger, docs/gitbook/usage/deployment-strategies.md):
    ``stepWeights``, ``threshold`` (failed checks before rollback).
    Argo Rollouts (docs/features/analysis.md): "Inconclusive" pauses for a
    human.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, localcontext
from numbers import Integral, Real
from typing import Any

from core.values import to_decimal

__all__ = [
    "sample_sharpe",
    "probabilistic_sharpe_ratio",
    "psr_of",
    "max_drawdown",
    "psr_boundary",
    "CanaryPolicy",
    "IntervalResult",
    "Verdict",
    "CanaryAnalysis",
    "AllocationResult",
    "allocate",
    "ACTIONS",
]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _PHI(z: float) -> float:
    """Standard normal CDF (``statistics.NormalDist().cdf``, inlined)."""
    return 0.5 * (1.0 + math.erf(z * _INV_SQRT2))


#: a sample standard deviation at most this times the largest |value| is
#: float noise of a constant series, i.e. zero variance
_ZERO_VAR_REL = 1e-12


# --------------------------------------------------------------------------- statistics


def _check_finite(returns: Sequence[float], name: str = "returns") -> list[float]:
    out = []
    if isinstance(returns, (str, bytes)):
        raise ValueError(f"{name}: need a sequence of numbers, got {returns!r}")
    for i, x in enumerate(returns):
        if isinstance(x, (bool, str, bytes)):
            raise ValueError(f"{name}[{i}]: not a number: {x!r}")
        try:
            xf = float(x)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}]: not a number: {x!r}") from None
        if not math.isfinite(xf):
            raise ValueError(f"{name}[{i}]: not a finite number: {x!r}")
        out.append(xf)
    return out


def _zero_var(sd: float, scale: float) -> bool:
    return sd <= _ZERO_VAR_REL * scale or sd == 0.0


def _moments(xs: list[float]) -> tuple[float, float, float, float, float]:
    """(mean, sample sd ddof=1, population m2, m3, m4) by two passes."""
    n = len(xs)
    mean = math.fsum(xs) / n
    d = [x - mean for x in xs]
    m2 = math.fsum(v * v for v in d) / n
    m3 = math.fsum(v * v * v for v in d) / n
    m4 = math.fsum(v * v * v * v for v in d) / n
    sd = math.sqrt(m2 * n / (n - 1))
    return mean, sd, m2, m3, m4


def sample_sharpe(returns: Sequence[float]) -> float:
    """Sharpe ratio per interval of ``returns``: mean / sample standard
    deviation (ddof=1), no annualisation, no risk-free rate.

    Args:
        returns: per-interval returns (fractions of a budget; an interval
            without trades counts as ``0.0``, the caller passes it).

    Returns:
        The Sharpe ratio per interval; ``0.0`` when there are fewer than two
        returns or the variance is zero (a constant series gets zero, not
        infinity; "zero" also covers float noise: a sample standard deviation
        at most 1e-12 times the largest absolute return).

    Raises:
        ValueError: naming the index of a non-finite (or non-numeric) return.
    """
    xs = _check_finite(returns)
    if len(xs) < 2:
        return 0.0
    if max(xs) == min(xs):
        return 0.0
    mean, sd, *_ = _moments(xs)
    if _zero_var(sd, max(abs(x) for x in xs)):
        return 0.0
    return mean / sd


def probabilistic_sharpe_ratio(sharpe: float, n: int, skewness: float, kurtosis: float,
                               benchmark: float = 0.0) -> float:
    """Probabilistic Sharpe ratio: the probability that the true Sharpe ratio
    exceeds ``benchmark`` given an observed one.

    Bailey & Lopez de Prado (2012), "The Sharpe ratio efficient frontier",
    eq. for PSR::

        PSR(SR*) = Phi( (SR - SR*) * sqrt(n - 1)
                        / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR**2) )

    Args:
        sharpe: observed Sharpe ratio per interval (not annualised).
        n: number of returns it was measured on (>= 2).
        skewness: g3 of the returns.
        kurtosis: g4 of the returns, NOT excess (3 for a normal).
        benchmark: SR*, per interval like ``sharpe``.

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: ``n`` below 2, a non-finite argument, or moments for
            which ``1 - g3*SR + (g4-1)/4*SR^2 <= 0`` (impossible for real
            data: Pearson's inequality g4 >= 1 + g3^2 keeps it >= 0).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: need an integer >= 2, got {n!r}")
    for name, v in (("sharpe", sharpe), ("skewness", skewness), ("kurtosis", kurtosis),
                    ("benchmark", benchmark)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}: need a finite number, got {v!r}")
    den = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if den <= 0.0:
        raise ValueError(
            f"skewness/kurtosis: 1 - g3*SR + (g4-1)/4*SR^2 = {den!r} <= 0 for SR={sharpe!r}, "
            f"g3={skewness!r}, g4={kurtosis!r} (kurtosis must be the non-excess one)")
    return _PHI((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(den))


def _psr_z(sr: float, n: int, g3: float, g4: float, benchmark: float) -> float:
    """The PSR's z (PSR = Phi(z)); the denominator floored at 1e-12 (it is
    >= 0 for sample moments by Pearson's inequality, 0 only for a two-point
    sample at one particular SR)."""
    den = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    return (sr - benchmark) * math.sqrt(n - 1) / math.sqrt(max(den, 1e-12))


def psr_of(returns: Sequence[float], benchmark: float = 0.0) -> float:
    """PSR of ``returns`` against ``benchmark`` (Sharpe per interval).

    The Sharpe ratio is :func:`sample_sharpe` (sd with ddof=1); skewness and
    kurtosis are the population moments of the sample, as in Bailey & Lopez
    de Prado (2012): ``g3 = m3 / m2**1.5``, ``g4 = m4 / m2**2`` (non-excess),
    with ``mk`` the k-th central moment divided by ``n``.

    Returns:
        PSR in [0, 1]; ``0.5`` ("no evidence either way") when there are
        fewer than 3 returns (skewness and kurtosis of two points say
        nothing) or the variance is zero (e.g. neither version traded: all
        excess returns 0) -- whatever the benchmark.

    Raises:
        ValueError: naming the index of a non-finite return, or a non-finite
            ``benchmark``.
    """
    if not isinstance(benchmark, (int, float)) or not math.isfinite(benchmark):
        raise ValueError(f"benchmark: need a finite number, got {benchmark!r}")
    xs = _check_finite(returns)
    n = len(xs)
    if n < 3 or max(xs) == min(xs):
        return 0.5
    mean, sd, m2, m3, m4 = _moments(xs)
    if _zero_var(sd, max(abs(x) for x in xs)):
        return 0.5
    return _PHI(_psr_z(mean / sd, n, m3 / m2 ** 1.5, m4 / (m2 * m2), benchmark))


def max_drawdown(returns: Sequence[float]) -> float:
    """Largest peak-to-trough fall of the cumulative sum of ``returns``.

    Additive (PnL over a fixed budget, as a fraction of that budget), not
    compounded. The cumulative sum starts at 0 before the first return, so
    a series that loses from the start has a drawdown: ``[-1, -2, 3, -4]``
    gives 4 (0 down to -4).

    Returns:
        The drawdown (>= 0, same unit as the returns); 0.0 for an empty or
        never-falling series.

    Raises:
        ValueError: naming the index of a non-finite return.
    """
    xs = _check_finite(returns)
    cum = peak = dd = 0.0
    for x in xs:
        cum += x
        if cum > peak:
            peak = cum
        elif peak - cum > dd:
            dd = peak - cum
    return dd


# --------------------------------------------------------------------------- canary analysis

#: every action a :class:`Verdict` can carry
ACTIONS = ("warming", "hold", "step", "promote", "fail", "rollback", "inconclusive")

_DEFAULT_STEPS = (Decimal("0.10"), Decimal("0.25"), Decimal("0.50"), Decimal("1"))


def psr_boundary(n: int, boundary_z: float, boundary_delta: float, max_intervals: int) -> float:
    """The z a canary's PSR must reach after ``n`` intervals for a passing
    check (the PSR level is ``Phi`` of it; a failing check is the mirror
    image, ``z <= -boundary``).

    Wang & Tsiatis (1987) one-parameter family::

        c(n) = boundary_z * (n / max_intervals) ** (boundary_delta - 0.5)

    ``boundary_delta = 0.5`` is Pocock's constant boundary, ``0`` O'Brien &
    Fleming's (very strict early, lenient at the horizon). The constant
    ``boundary_z`` (the boundary at the horizon) is calibrated by simulation
    for a false-promotion rate (``bench/decisions.py --calibrate``).

    Raises:
        ValueError: ``n`` or ``max_intervals`` below 1.
    """
    if n < 1 or max_intervals < 1:
        raise ValueError(f"n/max_intervals: need >= 1, got n={n!r}, max_intervals={max_intervals!r}")
    return boundary_z * (n / max_intervals) ** (boundary_delta - 0.5)


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """How a canary is judged. Intervals are the engine's analysis intervals
    (the lead runs 30 minutes of engine clock on 1-minute bars).

    Fields:
        step_weights: the canary's stage weights (fractions of its family's
            budget, strictly increasing, in (0, 1], the last one 1); a
            passing check moves one step up, a pass at the last step
            promotes (Flagger ``stepWeights``). Default 10 -> 25 -> 50 -> 100 %.
        min_intervals: warm-up: no judgement before this many intervals ...
        min_trades: ... and this many canary fills (cumulative).
        failure_threshold: failed checks (cumulative, not reset by a pass,
            as Flagger's ``threshold``) that roll the canary back.
        max_intervals: horizon: an undecided canary at this many intervals
            is "inconclusive" (weight held, the operator decides; Argo).
        max_drawdown: a canary drawdown (largest fall of its cumulative
            return, fraction of its budget) beyond this is a failed check;
            the figure is the maximum so far, so once breached every later
            check fails and the canary is rolled back ``failure_threshold``
            failed checks later.
        boundary_z: Wang-Tsiatis constant: the PSR's z needed at the
            horizon (see :func:`psr_boundary`).
        boundary_delta: Wang-Tsiatis shape parameter in [0, 0.5].
        benchmark: SR* of the PSR, Sharpe per interval of the excess return
            (0: "better than the live version at all").

    Defaults (calibrated with ``bench/decisions.py --calibrate --alpha
    0.03``, 40 000 simulated canaries per case, i.i.d. normal excess
    returns with sd 0.01, 3 fills per interval): min_intervals 10 (5 h of
    30-minute intervals), min_trades 20, failure_threshold 3, max_intervals
    200 (100 h), max_drawdown 0.25, boundary_delta 0.3, boundary_z 2.26.
    PSR needed for a pass: 0.99998 after 10 intervals, 0.9995 after 30,
    0.9980 after 60, 0.9938 after 120, 0.9881 at 200. Measured: an equal
    canary (true excess Sharpe 0) is promoted in 3.0 % of runs (1.4 %
    within 120 intervals; 13 % rolled back, mostly by the drawdown limit,
    the rest inconclusive); excess Sharpe +0.25 per interval: promoted in
    91.8 % within 200 intervals, 62.7 % within 120, median 97; +0.35:
    91.1 % within 120; -0.25: rolled back in 98.5 %, promoted in under 0.1 %.
    (3 % rather than 5 % so that a 400-seed test of "at most 5 %" fails by
    chance for under 1 % of seed sets.) No rule can promote a +0.25 canary
    within 120 intervals in 90 % of runs while promoting an equal one in at
    most 5 %: by Neyman-Pearson the best test on 120 intervals has power
    Phi(0.25*sqrt(120) - 1.645) = 86 %.

    Raises:
        ValueError: naming the field and the value, from ``__post_init__``.
    """

    step_weights: tuple[Decimal, ...] = _DEFAULT_STEPS
    min_intervals: int = 10
    min_trades: int = 20
    failure_threshold: int = 3
    max_intervals: int = 200
    max_drawdown: float = 0.25
    boundary_z: float = 2.26
    boundary_delta: float = 0.3
    benchmark: float = 0.0

    def __post_init__(self) -> None:
        steps = self.step_weights
        if not isinstance(steps, tuple) or not steps:
            raise ValueError(f"step_weights: need a non-empty tuple of Decimal, got {steps!r}")
        for i, w in enumerate(steps):
            if not isinstance(w, Decimal) or not w.is_finite() or not (0 < w <= 1):
                raise ValueError(f"step_weights[{i}]: need a Decimal in (0, 1], got {w!r}")
            if i and w <= steps[i - 1]:
                raise ValueError(f"step_weights[{i}]: must increase, got {w} after {steps[i - 1]}")
        if steps[-1] != 1:
            raise ValueError(f"step_weights: the last step must be 1, got {steps[-1]}")
        for name, lo in (("min_intervals", 2), ("min_trades", 0), ("failure_threshold", 1),
                         ("max_intervals", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: need an integer >= {lo}, got {v!r}")
        if self.max_intervals < self.min_intervals:
            raise ValueError(f"max_intervals: must be >= min_intervals ({self.min_intervals}), "
                             f"got {self.max_intervals!r}")
        for name in ("max_drawdown", "boundary_z", "boundary_delta", "benchmark"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: need a finite number, got {v!r}")
        if self.max_drawdown <= 0:
            raise ValueError(f"max_drawdown: need > 0 (fraction of the canary budget), got {self.max_drawdown!r}")
        if self.boundary_z <= 0:
            raise ValueError(f"boundary_z: need > 0, got {self.boundary_z!r}")
        if not 0 <= self.boundary_delta <= 0.5:
            raise ValueError(f"boundary_delta: need a number in [0, 0.5], got {self.boundary_delta!r}")

    def boundary(self, n: int) -> float:
        """The z (PSR = Phi(z)) a passing check needs after ``n`` intervals;
        :func:`psr_boundary` with this policy's constants."""
        return psr_boundary(n, self.boundary_z, self.boundary_delta, self.max_intervals)


@dataclass(frozen=True, slots=True)
class IntervalResult:
    """What one analysis interval did.

    Fields:
        canary_return: canary PnL change over the interval / canary budget
            (fraction; 0.0 when it did not trade). Ints, Decimals and numpy
            numbers are stored as float (a statistic, not money).
        live_return: the live version's PnL change over the same interval /
            its budget (fraction).
        canary_trades: canary fills in the interval (>= 0; stored as int).
        live_trades: live fills in the interval (>= 0).

    Raises:
        ValueError: naming the field, for a non-finite return or a negative
            or non-integer trade count.
    """

    canary_return: float
    live_return: float
    canary_trades: int
    live_trades: int

    def __post_init__(self) -> None:
        for name in ("canary_return", "live_return"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (Real, Decimal)) or not math.isfinite(v):
                raise ValueError(f"{name}: need a finite number, got {v!r}")
            if type(v) is not float:
                object.__setattr__(self, name, float(v))
        for name in ("canary_trades", "live_trades"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 0:
                raise ValueError(f"{name}: need an integer >= 0, got {v!r}")
            if type(v) is not int:
                object.__setattr__(self, name, int(v))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one analysis interval.

    Fields:
        action: one of :data:`ACTIONS`: ``warming`` (before the warm-up
            ends), ``hold`` (no evidence either way), ``step`` (passed:
            weight moved one step up), ``promote`` (passed at the last
            step), ``fail`` (failed check below the threshold),
            ``rollback`` (failed checks reached the threshold),
            ``inconclusive`` (horizon reached undecided: weight held, the
            operator decides).
        weight: the canary's step weight after this verdict (fraction).
        figures: ``n`` (intervals), ``psr``, ``psr_needed`` (the level for a
            pass), ``psr_fail`` (at or below it a check fails), ``z``,
            ``boundary_z`` (z needed now), ``sharpe`` (of the excess return,
            per interval), ``canary_pnl``/``live_pnl``/``excess_pnl`` (sums
            of returns, fractions of budget), ``drawdown`` (canary, fraction
            of budget), ``max_drawdown`` (limit), ``canary_trades``,
            ``live_trades`` (cumulative), ``passes``, ``failures``,
            ``failure_threshold``, ``step`` (index), ``boundary``
            (``"wang-tsiatis delta=0.3 z=2.26@200"``).
        reason: one human line with the figures.
    """

    action: str
    weight: Decimal
    figures: dict[str, float | int | str]
    reason: str


def _pct(w: Decimal) -> str:
    return f"{(w * 100).normalize():f}%"


class CanaryAnalysis:
    """The running analysis of one canary against the live version of its
    family, one :class:`IntervalResult` per analysis interval.

    Decision rule (per interval, after the warm-up of ``min_intervals``
    intervals and ``min_trades`` canary fills):

    1. excess return = canary_return - live_return; its running mean, sample
       sd and population skewness/kurtosis are kept in O(1) per interval
       (Welford/Pebay updates), and ``z`` is the PSR's z
       (:func:`probabilistic_sharpe_ratio` with ``SR* = policy.benchmark``;
       ``z = 0``, PSR 0.5, while the excess has zero variance);
    2. a failed check: the canary's maximum drawdown so far exceeds
       ``max_drawdown``, or ``z <= -c(n)`` (evidence it is worse); failures
       reaching ``failure_threshold`` -> ``rollback``, else ``fail``;
    3. a passing check: ``z >= c(n)`` -> ``step`` one weight up, or
       ``promote`` when already at the last step (so a promotion needs
       ``len(step_weights)`` passing checks, not necessarily consecutive);
    4. otherwise ``hold``;
    5. the interval that reaches ``max_intervals`` without a promote or
       rollback is ``inconclusive`` (a pass there does not step; a warm-up
       not over by then is inconclusive too), and so is every later one: the
       weight is held and only the operator promotes; failed checks still
       count after the horizon, so a canary that keeps failing (drawdown)
       is still rolled back without waiting for the operator.

    ``c(n)`` is :func:`psr_boundary`: a Wang & Tsiatis (1987) boundary
    rather than a fixed PSR >= 0.95, which, looked at every interval with
    the same ladder, promotes an equal canary in about a fifth of the runs
    (22 % of i.i.d. normal ones, 23 % in ``bench/decisions.py``'s
    regime-switching markets: repeated looks).

    Attributes:
        weight: current step weight (Decimal fraction).
        failures: failed checks so far.
        passes: passing checks so far.
        n_intervals: intervals observed (warm-up included).
        decided: True after ``promote`` or ``rollback``.
        action: the last verdict's action (``""`` before the first).

    Raises (constructor):
        ValueError: ``weight`` not one of ``policy.step_weights``.
    """

    __slots__ = ("policy", "weight", "_step", "failures", "passes", "n_intervals", "action",
                 "_n", "_mean", "_m2", "_m3", "_m4", "_scale",
                 "_canary_pnl", "_live_pnl", "_peak", "_drawdown", "_canary_trades", "_live_trades")

    def __init__(self, policy: CanaryPolicy, weight: Decimal | None = None):
        if not isinstance(policy, CanaryPolicy):
            raise ValueError(f"policy: need a CanaryPolicy, got {type(policy).__name__}")
        self.policy = policy
        if weight is None:
            self._step = 0
        else:
            w = to_decimal(weight, "weight")
            if w not in policy.step_weights:
                raise ValueError(f"weight: {weight} is not one of the step weights "
                                 f"{[str(s) for s in policy.step_weights]}")
            self._step = policy.step_weights.index(w)
        self.weight = policy.step_weights[self._step]
        self.failures = 0
        self.passes = 0
        self.n_intervals = 0
        self.action = ""
        self._n = 0
        self._mean = self._m2 = self._m3 = self._m4 = 0.0
        self._scale = 0.0
        self._canary_pnl = self._live_pnl = 0.0
        self._peak = self._drawdown = 0.0
        self._canary_trades = self._live_trades = 0

    @property
    def decided(self) -> bool:
        """True once the canary was promoted or rolled back."""
        return self.action in ("promote", "rollback")

    # -- statistics of the excess return

    def _push(self, x: float) -> None:
        # Pebay (2008) / Terriberry one-pass update of the central moment sums
        n1 = self._n
        n = n1 + 1
        delta = x - self._mean
        dn = delta / n
        dn2 = dn * dn
        t1 = delta * dn * n1
        self._mean += dn
        self._m4 += t1 * dn2 * (n * n - 3 * n + 3) + 6 * dn2 * self._m2 - 4 * dn * self._m3
        self._m3 += t1 * dn * (n - 2) - 3 * dn * self._m2
        self._m2 += t1
        self._n = n
        ax = abs(x)
        if ax > self._scale:
            self._scale = ax

    def _sharpe_z(self) -> tuple[float, float]:
        """(Sharpe per interval of the excess, PSR z) from the running moments."""
        n = self._n
        if n < 2:
            return 0.0, 0.0
        m2 = self._m2
        sd = math.sqrt(m2 / (n - 1)) if m2 > 0 else 0.0
        if _zero_var(sd, self._scale):
            return 0.0, 0.0
        sr = self._mean / sd
        if n < 3:
            return sr, 0.0
        pm2 = m2 / n
        g3 = (self._m3 / n) / pm2 ** 1.5
        g4 = (self._m4 / n) / (pm2 * pm2)
        return sr, _psr_z(sr, n, g3, g4, self.policy.benchmark)

    # -- the decision

    def observe(self, result: IntervalResult) -> Verdict:
        """Judge one analysis interval and move the weight accordingly.

        Args:
            result: the interval's returns (fractions of each version's
                budget) and fill counts.

        Returns:
            The :class:`Verdict` (see the class docstring for the rule).

        Raises:
            ValueError: ``result`` is not an :class:`IntervalResult`.
            RuntimeError: the analysis is already decided (promote or
                rollback); start a new one for a new canary.
        """
        if not isinstance(result, IntervalResult):
            raise ValueError(f"result: need an IntervalResult, got {type(result).__name__}")
        if self.decided:
            raise RuntimeError(f"canary analysis already decided ({self.action}) after "
                               f"{self.n_intervals} intervals")
        p = self.policy
        self.n_intervals += 1
        n = self.n_intervals
        self._push(result.canary_return - result.live_return)
        self._canary_pnl += result.canary_return
        self._live_pnl += result.live_return
        if self._canary_pnl > self._peak:
            self._peak = self._canary_pnl
        elif self._peak - self._canary_pnl > self._drawdown:
            self._drawdown = self._peak - self._canary_pnl
        self._canary_trades += result.canary_trades
        self._live_trades += result.live_trades

        sr, z = self._sharpe_z()
        c = p.boundary(n)
        w0 = self.weight
        psr = _PHI(z)
        horizon = n >= p.max_intervals
        warmed = n >= p.min_intervals and self._canary_trades >= p.min_trades
        if not warmed and not horizon:
            action = "warming"
            why = (f"warming up: {n} intervals (min {p.min_intervals}), "
                   f"{self._canary_trades} canary trades (min {p.min_trades})")
        elif not warmed:
            action = "inconclusive"
            why = (f"warm-up not over after {n} intervals ({self._canary_trades}/{p.min_trades} "
                   f"canary trades): inconclusive, holding {_pct(w0)}; operator to decide")
        else:
            dd_breach = self._drawdown > p.max_drawdown
            if dd_breach or z <= -c:
                self.failures += 1
                if dd_breach:
                    what = f"drawdown {self._drawdown:.4f} > {p.max_drawdown:g} of budget"
                else:
                    what = f"PSR {psr:.4f} <= {_PHI(-c):.4f} after {n} intervals"
                if self.failures >= p.failure_threshold:
                    action = "rollback"
                    why = f"{what}: failed check {self.failures}/{p.failure_threshold}, roll back"
                else:
                    action = "fail"
                    why = f"{what}: failed check {self.failures}/{p.failure_threshold}, hold at {_pct(w0)}"
            elif z >= c:
                last = self._step + 1 >= len(p.step_weights)
                if last and n <= p.max_intervals:
                    self.passes += 1
                    action = "promote"
                    why = f"PSR {psr:.4f} >= {_PHI(c):.4f} after {n} intervals at {_pct(w0)}: promote"
                elif not horizon:
                    self.passes += 1
                    self._step += 1
                    self.weight = p.step_weights[self._step]
                    action = "step"
                    why = (f"PSR {psr:.4f} >= {_PHI(c):.4f} after {n} intervals: "
                           f"step {_pct(w0)} -> {_pct(self.weight)}")
                else:
                    action = "hold"
                    why = f"PSR {psr:.4f} >= {_PHI(c):.4f} after {n} intervals, but the horizon is reached"
            else:
                action = "hold"
                why = (f"PSR {psr:.4f} between {_PHI(-c):.4f} and {_PHI(c):.4f} after {n} "
                       f"intervals: hold at {_pct(w0)}")
            if horizon and action not in ("promote", "rollback"):
                action = "inconclusive"
                why = (f"{why}; no decision after {p.max_intervals} intervals: inconclusive, "
                       f"holding {_pct(w0)}; operator to decide")
        self.action = action
        return Verdict(action, self.weight, self._figures(sr, z, c, psr), why)

    def _figures(self, sr: float, z: float, c: float, psr: float) -> dict[str, float | int | str]:
        p = self.policy
        return {
            "n": self.n_intervals,
            "psr": psr,
            "psr_needed": _PHI(c),
            "psr_fail": _PHI(-c),
            "z": z,
            "boundary_z": c,
            "sharpe": sr,
            "canary_pnl": self._canary_pnl,
            "live_pnl": self._live_pnl,
            "excess_pnl": self._canary_pnl - self._live_pnl,
            "drawdown": self._drawdown,
            "max_drawdown": p.max_drawdown,
            "canary_trades": self._canary_trades,
            "live_trades": self._live_trades,
            "passes": self.passes,
            "failures": self.failures,
            "failure_threshold": p.failure_threshold,
            "step": self._step,
            "boundary": f"wang-tsiatis delta={p.boundary_delta:g} z={p.boundary_z:g}@{p.max_intervals}",
        }

    # -- checkpoint

    _STATE_FLOATS = ("_mean", "_m2", "_m3", "_m4", "_scale", "_canary_pnl", "_live_pnl", "_peak", "_drawdown")
    _STATE_INTS = ("_step", "failures", "passes", "n_intervals", "_n", "_canary_trades", "_live_trades")

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serializable snapshot (floats as floats: ``json`` writes
        their shortest repr, which reads back to the same float; the weight
        as a decimal string) from which :meth:`from_state_dict` continues
        identically."""
        d: dict[str, Any] = {"version": 1, "weight": str(self.weight), "action": self.action}
        for k in self._STATE_INTS:
            d[k.lstrip("_")] = getattr(self, k)
        for k in self._STATE_FLOATS:
            d[k.lstrip("_")] = getattr(self, k)
        return d

    @classmethod
    def from_state_dict(cls, policy: CanaryPolicy, d: Mapping[str, Any]) -> CanaryAnalysis:
        """Rebuild an analysis from :meth:`state_dict` under ``policy``.

        Raises:
            ValueError: naming the missing or bad field (a weight not in the
                policy's steps, an unknown action, a non-finite figure).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"state: need a mapping, got {type(d).__name__}")
        if d.get("version") != 1:
            raise ValueError(f"version: unsupported canary analysis state version {d.get('version')!r}")
        for k in ("weight", "action", *(k.lstrip("_") for k in cls._STATE_INTS + cls._STATE_FLOATS)):
            if k not in d:
                raise ValueError(f"{k}: missing from the canary analysis state")
        a = cls(policy, to_decimal(d["weight"], "weight"))
        step = d["step"]
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < len(policy.step_weights) \
                or policy.step_weights[step] != a.weight:
            raise ValueError(f"step: {step!r} does not match weight {d['weight']}")
        if d["action"] not in ("",) + ACTIONS:
            raise ValueError(f"action: unknown {d['action']!r}")
        a.action = d["action"]
        for k in cls._STATE_INTS:
            v = d[k.lstrip("_")]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k.lstrip('_')}: need an integer >= 0, got {v!r}")
            setattr(a, k, v)
        for k in cls._STATE_FLOATS:
            v = d[k.lstrip("_")]
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{k.lstrip('_')}: not a number: {v!r}") from None
            if not math.isfinite(f):
                raise ValueError(f"{k.lstrip('_')}: not a finite number: {v!r}")
            setattr(a, k, f)
        return a


# --------------------------------------------------------------------------- allocator


@dataclass(frozen=True, slots=True)
class AllocationResult:
    """The allocator's output.

    Fields:
        weights: fraction of the desk's total capital per family, each in
            [0, 1], a multiple of the weight quantum, sum <= 1.
        budgets: quote currency per family = weight * capital, quantized
            down to the quote quantum.
        sharpe: the trailing Sharpe per interval used for each family.
        idle: fraction of capital left unallocated (1 - sum of weights):
            excess over caps with no uncapped family to take it, the
            remainder after the floors when no Sharpe is positive, and the
            rounding dust.
    """

    weights: dict[str, Decimal]
    budgets: dict[str, Decimal]
    sharpe: dict[str, float]
    idle: Decimal


def _fraction(name: str, v: object) -> Decimal:
    d = to_decimal(v, name)
    if not 0 <= d <= 1:
        raise ValueError(f"{name}: need a fraction in [0, 1], got {v!r}")
    return d


def allocate(returns: Mapping[str, Sequence[float]], capital: Decimal, *,
             floors: Mapping[str, Decimal] | None = None,
             caps: Mapping[str, Decimal] | None = None,
             quantum: Decimal = Decimal("0.00000001"),
             weight_quantum: Decimal = Decimal("0.00001"),
             sharpes: Mapping[str, float] | None = None) -> AllocationResult:
    """Set each family's share of the desk's capital from its trailing
    risk-adjusted record (issue 7).

    Rule:

    1. Sharpe per family: :func:`sample_sharpe` of its trailing per-interval
       returns (an interval without trades is a 0.0 the caller passes; zero
       variance gets 0, not infinity).
    2. Every family first gets its floor (default 0); the floors must sum
       to at most 1.
    3. The remainder ``1 - sum(floors)`` is shared among the families with
       a positive Sharpe, in proportion to it: weight = floor + share.
    4. A weight above its cap (default 1) is set to the cap, and the excess
       is shared among the families with a positive Sharpe still below
       their cap, in proportion to their Sharpe, repeated until none is
       above its cap (water-filling); when no such family is left, the
       excess stays idle.
    5. With no positive Sharpe, each family gets its floor and the rest is
       idle.
    6. Weights are quantized down to ``weight_quantum``; the quanta lost to
       rounding are handed back one each to the largest remainders (ties
       by family name, never above a cap), as DESIGN.md's pro-rata splits,
       so the weights sum to the exact total rounded down to the quantum
       -- never above 1. (Floors and caps that are not multiples of the
       quantum can thus be missed by less than one quantum.)
    7. budget = weight * capital, quantized down (ROUND_DOWN) to ``quantum``.

    Example (issue 7): A = [1, -1, 2, 0, 1], B = [1, 1, 1, 2, 1],
    C = [0, 0, 0, 0, 0] -> A 0.16396, B 0.83604, C 0.

    Args:
        returns: family -> per-interval returns (fractions of its budget)
            over the trailing window.
        capital: the desk's total trading capital (quote currency, >= 0).
        floors, caps: family -> fraction of capital in [0, 1], floor <= cap;
            families missing get 0 and 1.
        quantum: quote currency precision of the budgets (e.g. 1e-8 USDT).
        weight_quantum: precision of the weights.
        sharpes: family -> its Sharpe when the caller already has it
            (computed incrementally, e.g. by :func:`rolling_sharpe`); the
            family's returns are then not read.

    Raises:
        ValueError: naming the field: a non-finite return (family and
            index), a negative or non-finite capital, a floor or cap outside
            [0, 1] or for an unknown family, a floor above its cap, floors
            summing above 1, a non-positive quantum.
    """
    cap_total = to_decimal(capital, "capital")
    if cap_total < 0:
        raise ValueError(f"capital: need >= 0, got {capital!r}")
    q = to_decimal(quantum, "quantum")
    wq = to_decimal(weight_quantum, "weight_quantum")
    if q <= 0:
        raise ValueError(f"quantum: need > 0, got {quantum!r}")
    if wq <= 0 or wq > 1:
        raise ValueError(f"weight_quantum: need a number in (0, 1], got {weight_quantum!r}")
    if not isinstance(returns, Mapping):
        raise ValueError(f"returns: need a mapping family -> returns, got {type(returns).__name__}")
    names = sorted(returns)
    for nm in names:
        if not isinstance(nm, str) or not nm:
            raise ValueError(f"returns: family names must be non-empty strings, got {nm!r}")
    floors = dict(floors or {})
    caps = dict(caps or {})
    for label, m in (("floors", floors), ("caps", caps)):
        for k in m:
            if k not in returns:
                raise ValueError(f"{label}[{k!r}]: unknown family (families: {names})")
    fl = {k: _fraction(f"floors[{k!r}]", floors.get(k, 0)) for k in names}
    cp = {k: _fraction(f"caps[{k!r}]", caps.get(k, 1)) for k in names}
    for k in names:
        if fl[k] > cp[k]:
            raise ValueError(f"floors[{k!r}]: {fl[k]} is above caps[{k!r}] {cp[k]}")
    floor_sum = sum(fl.values(), Decimal(0))
    if floor_sum > 1:
        raise ValueError(f"floors: sum to {floor_sum} > 1")

    sharpe: dict[str, float] = {}
    for k in names:
        if sharpes is not None and k in sharpes:
            sharpe[k] = float(sharpes[k])
            if not math.isfinite(sharpe[k]):
                raise ValueError(f"sharpes[{k!r}]: not a finite number: {sharpes[k]!r}")
        else:
            sharpe[k] = sample_sharpe(_check_finite(returns[k], f"returns[{k!r}]"))

    with localcontext() as ctx:
        ctx.prec = 50
        w = dict(fl)
        pos = {k: Decimal(repr(s)) for k, s in sharpe.items() if s > 0}
        free = set(pos)
        capped: set[str] = set()
        remainder = 1 - floor_sum
        while free:
            pool = remainder - sum((cp[k] - fl[k] for k in capped), Decimal(0))
            tot = sum((pos[k] for k in free), Decimal(0))
            tent = {k: fl[k] + pool * pos[k] / tot for k in free}
            over = {k for k, v in tent.items() if v > cp[k]}
            if not over:
                w.update(tent)
                break
            capped |= over
            free -= over
        for k in capped:
            w[k] = cp[k]
        # the exact total, known without the rounding of the shares
        total = (Decimal(1) if free else floor_sum + sum((cp[k] - fl[k] for k in capped), Decimal(0)))

        units = {k: int((w[k] / wq).to_integral_value(rounding=ROUND_DOWN)) for k in names}
        left = int((total / wq).to_integral_value(rounding=ROUND_DOWN)) - sum(units.values())
        rem = sorted(names, key=lambda k: (-(w[k] / wq - units[k]), k))
        for k in rem:
            if left <= 0:
                break
            if w[k] / wq - units[k] > 0 and (units[k] + 1) * wq <= cp[k]:
                units[k] += 1
                left -= 1
        weights = {k: units[k] * wq for k in names}
        budgets = {k: (weights[k] * cap_total).quantize(q, rounding=ROUND_DOWN) for k in names}
        idle = 1 - sum(weights.values(), Decimal(0))
    return AllocationResult(weights=weights, budgets=budgets, sharpe=sharpe, idle=idle)


def rolling_sharpe(returns: Sequence[float]) -> float:
    """:func:`sample_sharpe` of a long trailing window with numpy (the same
    rule: fewer than two returns, a constant series, or a sample standard
    deviation at most 1e-12 times the largest absolute return give 0), for
    the allocator's per-period call on thousands of returns. Inputs are
    trusted finite floats (the engine produces them).
    """
    import numpy as np

    xs = np.fromiter(returns, dtype=np.float64)
    if xs.size < 2:
        return 0.0
    hi, lo = float(xs.max()), float(xs.min())
    if hi == lo:
        return 0.0
    sd = float(xs.std(ddof=1))
    if _zero_var(sd, max(abs(hi), abs(lo))):
        return 0.0
    return float(xs.mean()) / sd


class RollingSharpe:
    """:func:`sample_sharpe` over a trailing window, updated in O(1) per
    new return: running sums of ``x - K`` and ``(x - K)^2`` about a shift
    ``K`` (the window's mean at the last exact re-sum, which keeps the
    subtraction in the variance from cancelling), recomputed exactly with
    ``math.fsum`` once per ``window`` additions so float drift cannot build
    up. The allocator adds one return per period on every bar; the
    two-pass formula over 1,440 returns per bar cost most of a replay's
    time.

    Zero variance gives 0, as in :func:`sample_sharpe`; here "zero" is a
    sample standard deviation at most 1e-7 of the window's root mean square
    (the running sums cannot resolve less; a window whose returns differ by
    less than that is constant for any allocation).

    Args:
        window: the number of trailing returns kept (>= 2).
        values: initial returns (oldest first; only the last ``window`` kept).

    Raises:
        ValueError: a window below 2.
    """

    def __init__(self, window: int, values: Sequence[float] = ()) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window: expected an int >= 2, got {window!r}")
        from collections import deque

        self.window = window
        self.values: deque[float] = deque((float(v) for v in values), maxlen=window)
        self._resum()

    def _resum(self) -> None:
        n = len(self.values)
        self._k = math.fsum(self.values) / n if n else 0.0
        k = self._k
        self._s1 = math.fsum(v - k for v in self.values)
        self._s2 = math.fsum((v - k) * (v - k) for v in self.values)
        self._sq = math.fsum(v * v for v in self.values)
        self._since = 0

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Any:
        return iter(self.values)

    def append(self, x: float) -> None:
        """Add the newest return (the oldest leaves a full window)."""
        x = float(x)
        k = self._k
        if len(self.values) == self.window:
            old = self.values[0]
            self._s1 -= old - k
            self._s2 -= (old - k) * (old - k)
            self._sq -= old * old
        self.values.append(x)
        self._s1 += x - k
        self._s2 += (x - k) * (x - k)
        self._sq += x * x
        self._since += 1
        if self._since >= self.window:
            self._resum()

    def sharpe(self) -> float:
        """Mean over sample standard deviation (ddof=1) of the window; 0
        with fewer than two returns or zero variance."""
        n = len(self.values)
        if n < 2:
            return 0.0
        d = self._s1 / n
        var = max(0.0, (self._s2 - n * d * d) / (n - 1))
        sd = math.sqrt(var)
        rms = math.sqrt(max(0.0, self._sq / n))
        if sd == 0.0 or sd <= 1e-7 * rms:
            return 0.0
        return (self._k + d) / sd

    def state(self) -> dict[str, Any]:
        """The window and the running sums, so a restored instance continues
        bit for bit (a fresh exact re-sum could differ in the last digit)."""
        return {"values": list(self.values), "sums": [self._k, self._s1, self._s2, self._sq, self._since]}

    @classmethod
    def from_state(cls, window: int, state: Any) -> "RollingSharpe":
        """Rebuild from :meth:`state` (or from a bare list of returns)."""
        if isinstance(state, dict):
            rs = cls(window, state["values"])
            k, s1, s2, sq, since = state["sums"]
            rs._k, rs._s1, rs._s2, rs._sq, rs._since = float(k), float(s1), float(s2), float(sq), int(since)
            return rs
        return cls(window, state)
