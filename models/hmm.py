"""Gaussian HMM regime model: features, fit, canonical order, forward filter, policy.

The model follows DESIGN.md section 5 ("Models") and section 7:

* Features per bar (float64, model input only, never accounting), chosen by
  ``HmmConfig.features`` (column 0 is always the log return, which the
  policy reads): the log return of the close, ``log(c_t / c_{t-1})``; the
  rolling realized volatility ``sqrt(mean(r^2))`` over the last
  ``vol_window`` log returns; the volume z-score ``(v_t - mean) / std`` over
  the last ``vol_window`` volumes. A feature row exists once ``vol_window``
  returns are available, i.e. from the ``vol_window + 1``-th bar on. A row
  may be non-finite (volume z-score undefined): the fit drops it, the
  filter treats it as a missing observation.
* The fit is hmmlearn's ``GaussianHMM`` (Baum-Welch / EM) on the last
  ``warmup`` feature rows, run off the event loop through a ``FitExecutor``
  (``fit_hmm`` is a picklable top-level function). The parametrization
  (``startprob_``, ``transmat_``, ``means_``, ``covars_`` as full matrices)
  is hmmlearn's (https://hmmlearn.readthedocs.io, version 0.3.3). A fit that
  did not converge, diverged, or gave unusable parameters is rejected with
  ``HmmFitError`` (``check_fit_history``, ``check_fit_params``).
* After every fit the states are put in a canonical order: ascending variance
  of the return feature (``covars[k][0][0]``), so labels do not depend on the
  fit's random initialisation; or, for a refit, matched to the previous
  version's states (minimum total symmetric Kullback-Leibler divergence), so
  "regime 0" keeps its meaning across versions.
* Per bar the posterior ``P(state_t | x_1..t)`` is updated with one step of
  the forward recursion (Rabiner 1989, "A Tutorial on Hidden Markov Models
  and Selected Applications in Speech Recognition", Proc. IEEE 77(2),
  eqs. 19-20), in log space and normalized at every step. hmmlearn has no
  public one-step API; ``predict_proba`` over the same history gives the
  same posterior (tested to 1e-9).
* The policy reads the posterior-weighted expected return and volatility,
  never a bare state index.
* Retraining on a schedule: ``HmmRegimeModel.refit_due`` / ``spawn`` give a
  new model instance (a new version) that fits the trailing window.

Nothing here imports hmmlearn (or scipy) at module level (hmmlearn's import
costs ~1.2 s): only ``fit_hmm`` imports it, inside the worker that runs the
fit.
"""

from __future__ import annotations

import base64
import itertools
import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Sequence

import numpy as np

from core.data import Bar
from core.identifiers import InstrumentId

__all__ = [
    "HmmConfig",
    "FitResult",
    "FilterParams",
    "HmmFitError",
    "HmmRegimeModel",
    "canonicalize",
    "check_fit_history",
    "check_fit_params",
    "features_from_closes",
    "fit_hmm",
    "forward_filter",
    "forward_step",
    "policy_target",
    "predict_step",
    "prepare_filter",
    "state_distances",
]

#: feature names ``HmmConfig.features`` may list (column 0 must be the log return)
FEATURE_NAMES = ("log_return", "realized_vol", "volume_z")

#: the default features: [log return, realized volatility]
DEFAULT_FEATURES = ("log_return", "realized_vol")

#: number of features per row with the default features
N_FEATURES = len(DEFAULT_FEATURES)

#: a fit is skipped when more than this fraction of its window's rows are
#: not finite (5 %); fewer are dropped before the fit
MAX_BAD_FRACTION = Decimal("0.05")

#: up to this many states the matching to a previous fit tries every
#: permutation (6! = 720); above it scipy's linear_sum_assignment is used
_BRUTE_FORCE_MAX_K = 6

#: quantum of a target fraction
FRACTION_QUANTUM = Decimal("0.0001")

_COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")

#: transition probabilities at or below this make a step take the guarded
#: log-space path (a column of zeros makes a state unreachable: -inf).
_TINY_TRANSITION = 1e-280

_LOG_2PI = math.log(2.0 * math.pi)

_STATE_FORMAT = "hmm_regime_model"
#: v2: trailing ``warmup`` rows kept after a fit, their bar times, volumes,
#: refit anchor, fit info, previous fit (a spawned version). v1 states load.
_STATE_VERSION = 2
_STATE_VERSIONS_READ = (1, 2)


class HmmFitError(RuntimeError):
    """A fit that cannot be used, or a fit skipped: more than 5 % of the
    window's rows are not finite ("skipped: N of M rows bad (> 5 %)"); EM did
    not converge within ``n_iter`` iterations or diverged (see
    ``check_fit_history``); hmmlearn failed; a feature has zero variance in
    the window; the parameters are not finite, a transition row is all zeros
    (see ``check_fit_params``), or a covariance is not positive definite.

    The message names the cause and the figures (iterations, last change of
    the log-likelihood, rows). Picklable, so it crosses the process boundary
    of a ``ProcessFitExecutor`` future unchanged. The engine keeps the
    previous version and raises an alert.
    """


@dataclass(frozen=True, slots=True)
class HmmConfig:
    """Configuration of one HMM regime model (immutable, picklable).

    Attributes:
        n_states: number of hidden states K (>= 1; default 3).
        covariance_type: hmmlearn covariance type used in the fit: ``"full"``
            (default), ``"diag"``, ``"spherical"`` or ``"tied"``. Fitted
            covariances are always stored as full (K, 2, 2) matrices.
        vol_window: bars in the rolling realized volatility (default 20):
            ``sqrt(mean(r^2))`` over the last ``vol_window`` log returns.
        warmup: feature rows in the fit window (default 500); a fit is due
            once this many rows exist.
        n_iter: maximum EM iterations (default 1000). The desk's brief said
            100; measured on the recorded BTC/ETH 1m, 5m and 1h data, about
            half of the 500-row windows had not reached ``tol`` after 100
            iterations (EM crawls), while all reached it within 650; a
            500-row fit at 650 iterations still takes well under a second.
        tol: EM stops when the log-likelihood improves by less than this
            (hmmlearn's absolute criterion; default 1e-4).
        random_state: seed of hmmlearn's initialisation (k-means for the
            means, Dirichlet draws for startprob/transmat); required int,
            default 42. Same window + same config = same fit.
        threshold: the policy is long when the posterior-weighted expected
            log return per bar divided by the posterior-weighted return
            volatility per bar (a per-bar Sharpe-like ratio, dimensionless)
            is strictly above this. Default 0.02 per bar: about 1.9
            annualized on 1h bars (x sqrt(8760)) and 14.5 on 1m bars
            (x sqrt(525600)), i.e. the model must expect a clearly positive
            drift relative to its own noise before it buys.
        max_fraction: target fraction of the budget when long, in [0, 1]
            (default 1.0; spot is long-only).
        exit_threshold: hysteresis: once long, the policy stays long while
            the ratio is strictly above this (<= ``threshold``); None (the
            default) exits as soon as the ratio falls to ``threshold``. A
            band between entry and exit keeps a posterior hovering near the
            threshold from flipping the target every bar (each flip costs
            two fees).
        relative: when True the ratio is measured against the fit's
            long-run baseline ``sum_k pi_k * means_ret[k] / vols[k]`` (pi the
            stationary distribution of the transition matrix), so the policy
            is long in regimes better than the model's average even when
            every regime of the fit window drifted down. False (default):
            the ratio is absolute.
        features: the feature columns, in order (a list in JSON); the first
            must be ``"log_return"`` (the policy reads column 0 and its
            variance); the others any of ``"realized_vol"``
            (``sqrt(mean(r^2))`` over the last ``vol_window`` log returns,
            per bar) and ``"volume_z"`` (``(v_t - mean) / std`` of the last
            ``vol_window`` finite volumes including ``v_t``, population std,
            dimensionless; not finite when the std is 0 or the volume is not
            finite), each at most once. Default
            ``("log_return", "realized_vol")``.
        refit_every_bars: retraining schedule: ``refit_due()`` turns true
            once this many bars (feature rows) were observed after the
            installed fit's window end (or after the last ``spawn``); None
            (default) never. Not part of the model's identity: a saved state
            loads into a model whose config differs only here.
        n_init: EM runs per fit, from ``random_state``, ``random_state + 1``,
            ...; the run with the best final log-likelihood among those that
            pass the checks is kept (as scikit-learn's ``GaussianMixture``
            ``n_init``). Default 1. EM finds local optima: in
            ``bench/regime.py`` a single start (seed 42) left most synthetic
            1-feature 3-regime fits with one regime split in two and two
            merged; 4 starts found the true regimes. Fit time grows with
            ``n_init``.

    Raises:
        ValueError: naming the field when a value is out of range.
    """

    n_states: int = 3
    covariance_type: str = "full"
    vol_window: int = 20
    warmup: int = 500
    n_iter: int = 1000
    tol: float = 1e-4
    random_state: int = 42
    threshold: float = 0.02
    max_fraction: float = 1.0
    exit_threshold: float | None = None
    relative: bool = False
    features: tuple[str, ...] = DEFAULT_FEATURES
    refit_every_bars: int | None = None
    n_init: int = 1

    def __post_init__(self) -> None:
        def _int(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"HmmConfig.{name}: expected an int >= {minimum}, got {v!r}")

        _int("n_states", 1)
        _int("vol_window", 1)
        _int("n_iter", 1)
        _int("random_state", 0)
        _int("n_init", 1)
        _int("warmup", 2 * self.n_states if isinstance(self.n_states, int) else 2)
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"HmmConfig.covariance_type: expected one of {_COVARIANCE_TYPES}, "
                f"got {self.covariance_type!r}"
            )
        if not isinstance(self.relative, bool):
            raise ValueError(f"HmmConfig.relative: expected true or false, got {self.relative!r}")
        for name in ("tol", "threshold", "max_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"HmmConfig.{name}: expected a finite number, got {v!r}")
        if self.tol <= 0:
            raise ValueError(f"HmmConfig.tol: must be > 0, got {self.tol!r}")
        if self.exit_threshold is not None:
            v = self.exit_threshold
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"HmmConfig.exit_threshold: expected a finite number or None, got {v!r}")
            if v > self.threshold:
                raise ValueError(
                    f"HmmConfig.exit_threshold: must be <= threshold {self.threshold!r}, got {v!r}"
                )
        if not 0 <= self.max_fraction <= 1:
            raise ValueError(f"HmmConfig.max_fraction: must be in [0, 1], got {self.max_fraction!r}")
        feats = self.features
        if isinstance(feats, str) or not isinstance(feats, (tuple, list)) or not feats:
            raise ValueError(f"HmmConfig.features: expected a non-empty list of names, got {feats!r}")
        feats = tuple(feats)
        bad = [f for f in feats if f not in FEATURE_NAMES]
        if bad or len(set(feats)) != len(feats) or feats[0] != "log_return":
            raise ValueError(
                f"HmmConfig.features: expected 'log_return' first, then distinct names of {FEATURE_NAMES}, "
                f"got {list(feats)!r}"
            )
        object.__setattr__(self, "features", feats)
        r = self.refit_every_bars
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"HmmConfig.refit_every_bars: expected an int >= 1 or None, got {r!r}")

    @property
    def n_features(self) -> int:
        """D, the number of feature columns."""
        return len(self.features)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict (``features`` as a list)."""
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    def identity(self) -> dict[str, Any]:
        """``to_dict()`` without ``refit_every_bars`` (a schedule, not a
        property of the fitted model): what a saved state must match."""
        d = self.to_dict()
        d.pop("refit_every_bars")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HmmConfig":
        """Build from ``to_dict()`` output.

        Raises:
            ValueError: on unknown fields or invalid values.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"HmmConfig: unknown fields {sorted(unknown)}")
        return cls(**data)


@dataclass
class FitResult:
    """The parameters of a fitted Gaussian HMM, in plain lists and floats
    (picklable and JSON-serializable through ``to_dict``), in hmmlearn's
    parametrization, states in canonical order when produced by ``fit_hmm``
    or ``canonicalize``.

    Attributes:
        startprob: (K,) initial state distribution, sums to 1.
        transmat: (K, K) row-stochastic; ``transmat[i][j] = P(s_t=j | s_t-1=i)``.
        means: (K, D) emission means in feature units (D features, in
            ``HmmConfig.features`` order; by default log return per bar and
            realized volatility per bar).
        covars: (K, D, D) full emission covariance matrices, feature units
            squared, symmetric positive definite.
        n_iter: EM iterations run.
        converged: True when EM stopped because the log-likelihood improved by
            less than ``tol`` (not because it ran out of iterations).
        log_likelihood: per-iteration log-likelihood of the fit window (nats,
            feature units), as hmmlearn's ConvergenceMonitor reported it.
        n_samples: rows the fit used (finite rows of the window).
        n_dropped: non-finite rows of the window dropped before the fit.
    """

    startprob: list[float]
    transmat: list[list[float]]
    means: list[list[float]]
    covars: list[list[list[float]]]
    n_iter: int = 0
    converged: bool = True
    log_likelihood: list[float] = field(default_factory=list)
    n_samples: int = 0
    n_dropped: int = 0

    @property
    def n_states(self) -> int:
        """K, the number of states."""
        return len(self.startprob)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (lists of floats, ints, bool)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FitResult":
        """Build from ``to_dict()`` output (e.g. after ``json.loads``).

        Raises:
            ValueError: on missing or unknown fields, or inconsistent shapes.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        missing = {"startprob", "transmat", "means", "covars"} - set(data)
        if unknown or missing:
            raise ValueError(f"FitResult: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        res = cls(**data)
        _arrays(res)  # validates shapes
        return res


def _arrays(fit: FitResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(startprob (K,), transmat (K,K), means (K,D), covars (K,D,D)) as float64
    arrays; raises ValueError on inconsistent shapes."""
    sp = np.asarray(fit.startprob, dtype=np.float64)
    tm = np.asarray(fit.transmat, dtype=np.float64)
    mu = np.asarray(fit.means, dtype=np.float64)
    cv = np.asarray(fit.covars, dtype=np.float64)
    k = sp.shape[0] if sp.ndim == 1 else -1
    if (
        k < 1
        or tm.shape != (k, k)
        or mu.ndim != 2
        or mu.shape[0] != k
        or cv.shape != (k, mu.shape[1], mu.shape[1])
    ):
        raise ValueError(
            "FitResult: inconsistent shapes: startprob "
            f"{sp.shape}, transmat {tm.shape}, means {mu.shape}, covars {cv.shape}"
        )
    return sp, tm, mu, cv


def state_distances(params: FitResult, previous: FitResult) -> np.ndarray:
    """Symmetric Kullback-Leibler divergence between every state of
    ``params`` and every state of ``previous`` (their Gaussian emissions).

    For ``N(m1, S1)`` and ``N(m2, S2)`` in D dimensions,
    ``KL(1||2) + KL(2||1) = 1/2 [tr(S2^-1 S1) + tr(S1^-1 S2) - 2D
    + (m1 - m2)^T (S1^-1 + S2^-1) (m1 - m2)]`` (the log-determinants cancel;
    Kullback 1959, "Information Theory and Statistics"; the one-way formula
    is in e.g. Duchi, "Derivations for Linear Algebra and Optimization",
    section 9). Dimensionless, >= 0, 0 only for identical Gaussians; it
    separates two states of equal mean by their variances.

    Args:
        params: K states, D features.
        previous: K' states, the same D features.

    Returns:
        (K, K') float64 array, ``[i, j]`` = divergence of ``params`` state i
        from ``previous`` state j.

    Raises:
        ValueError: on inconsistent shapes, different D, or a covariance
            that cannot be inverted.
    """
    _, _, mu_a, cv_a = _arrays(params)
    _, _, mu_b, cv_b = _arrays(previous)
    d = mu_a.shape[1]
    if mu_b.shape[1] != d:
        raise ValueError(f"state_distances: {d} features vs {mu_b.shape[1]} in the previous fit")
    try:
        inv_a = np.linalg.inv(cv_a)
        inv_b = np.linalg.inv(cv_b)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"state_distances: a covariance is singular ({exc})") from None
    # tr(B^-1 A) for every pair: sum over the elementwise product (covariances symmetric)
    tr_ab = np.einsum("jkl,ilk->ij", inv_b, cv_a)
    tr_ba = np.einsum("ikl,jlk->ij", inv_a, cv_b)
    diff = mu_a[:, None, :] - mu_b[None, :, :]  # (K, K', D)
    prec = inv_a[:, None, :, :] + inv_b[None, :, :, :]
    maha = np.einsum("ijk,ijkl,ijl->ij", diff, prec, diff)
    return 0.5 * (tr_ab + tr_ba - 2 * d + maha)


def canonicalize(params: FitResult, previous: FitResult | None = None) -> FitResult:
    """Put the states of ``params`` in the canonical order.

    Without ``previous`` (or when ``previous`` has another number of states
    or features): ascending variance of the return feature
    (``covars[k][0][0]``); ties are broken by ascending mean return, then by
    the original index (stable). Idempotent.

    With ``previous`` (the fit of the version this one replaces, same K and
    D): matched order. State j of the result is the state of ``params``
    assigned to state j of ``previous`` by the permutation that minimizes
    the total symmetric KL divergence (``state_distances``) between matched
    pairs: every permutation is tried for K <= 6 (the first minimum in
    lexicographic order wins, so exact ties are deterministic), scipy's
    ``linear_sum_assignment`` (Hungarian method) is used above. So "regime 0"
    means the same Gaussian after each refit, even when two regimes have
    the same mean, and even when their variances have changed order. If the
    divergences are not finite, the variance order is used.

    The same permutation ``p`` is applied to every parameter:
    ``startprob[p]``, ``transmat[p][:, p]`` (rows AND columns), ``means[p]``,
    ``covars[p]``. Pure function.

    Args:
        params: a FitResult with K states and D features.
        previous: the previous version's fit (canonical or matched), or None.

    Returns:
        A new FitResult with the same fit metadata (n_iter, converged,
        log_likelihood, n_samples, n_dropped).

    Raises:
        ValueError: on inconsistent shapes.
    """
    sp, tm, mu, cv = _arrays(params)
    k = sp.shape[0]
    order = None
    if previous is not None:
        psp, _, pmu, _ = _arrays(previous)
        if psp.shape[0] == k and pmu.shape[1] == mu.shape[1]:
            order = _match_order(params, previous)
    if order is None:
        order = np.lexsort((np.arange(k), mu[:, 0], cv[:, 0, 0]))
    return FitResult(
        startprob=sp[order].tolist(),
        transmat=tm[np.ix_(order, order)].tolist(),
        means=mu[order].tolist(),
        covars=cv[order].tolist(),
        n_iter=params.n_iter,
        converged=params.converged,
        log_likelihood=list(params.log_likelihood),
        n_samples=params.n_samples,
        n_dropped=params.n_dropped,
    )


def _match_order(params: FitResult, previous: FitResult) -> np.ndarray | None:
    """The permutation p (p[j] = state of ``params`` matched to state j of
    ``previous``) of least total symmetric KL, or None when the divergences
    are not finite."""
    try:
        cost = state_distances(params, previous)
    except ValueError:
        return None
    if not np.isfinite(cost).all():
        return None
    k = cost.shape[0]
    if k <= _BRUTE_FORCE_MAX_K:
        perms = np.array(list(itertools.permutations(range(k))), dtype=np.intp)
        totals = cost[perms, np.arange(k)].sum(axis=1)
        return perms[int(np.argmin(totals))]
    from scipy.optimize import linear_sum_assignment  # lazy: scipy ships with scikit-learn

    rows, cols = linear_sum_assignment(cost.T)  # rows: previous states, cols: new states
    order = np.empty(k, dtype=np.intp)
    order[rows] = cols
    return order


class _Features:
    """Per-bar feature state of one model (the single implementation behind
    ``HmmRegimeModel.observe`` and ``features_from_closes``): the last close,
    the last ``vol_window`` log returns and, with ``"volume_z"``, the last
    ``vol_window`` finite volumes."""

    __slots__ = ("window", "names", "use_volume", "returns", "volumes", "last_close")

    def __init__(self, window: int, names: tuple[str, ...]) -> None:
        self.window = window
        self.names = names
        self.use_volume = "volume_z" in names
        self.returns: deque[float] = deque(maxlen=window)
        self.volumes: deque[float] = deque(maxlen=window)
        self.last_close: float | None = None

    def copy(self) -> "_Features":
        other = _Features(self.window, self.names)
        other.returns = deque(self.returns, maxlen=self.window)
        other.volumes = deque(self.volumes, maxlen=self.window)
        other.last_close = self.last_close
        return other

    def push(self, close: float, volume: float | None) -> tuple[float, ...] | None:
        """Take one bar's close (finite, > 0) and volume (float, may be
        non-finite; None when unused); the new feature row or None."""
        w = self.window
        vz = math.nan
        if self.use_volume and volume is not None and math.isfinite(volume):
            self.volumes.append(volume)
            if len(self.volumes) == w:
                mean = math.fsum(self.volumes) / w
                sd = math.sqrt(math.fsum((v - mean) ** 2 for v in self.volumes) / w)
                if sd > 0:
                    vz = (volume - mean) / sd
        prev, self.last_close = self.last_close, close
        if prev is None:
            return None
        r = math.log(close / prev)
        self.returns.append(r)
        if len(self.returns) < w:
            return None
        out = []
        for name in self.names:
            if name == "log_return":
                out.append(r)
            elif name == "realized_vol":
                out.append(_realized_vol(self.returns, w))
            else:
                out.append(vz)
        return tuple(out)


def features_from_closes(
    closes: Sequence[Any],
    vol_window: int,
    features: Sequence[str] = DEFAULT_FEATURES,
    volumes: Sequence[Any] | None = None,
) -> np.ndarray:
    """Feature rows of a close series, exactly as ``HmmRegimeModel.observe``
    computes them one bar at a time (bit-identical).

    Args:
        closes: N closes (Decimal, str, int or float), positive, in time
            order; each is converted with ``float(str(c))``.
        vol_window: returns per realized-volatility window, volumes per
            volume z-score window (>= 1).
        features: feature names (see ``HmmConfig.features``); default
            log return and realized volatility.
        volumes: N volumes in base units (needed with ``"volume_z"``).

    Returns:
        (max(0, N - vol_window), D) float64 array, columns in ``features``
        order: ``log_return`` = ``log(c_t / c_t-1)``; ``realized_vol`` =
        ``sqrt(mean(r^2))`` over the last ``vol_window`` returns (both per
        bar, dimensionless); ``volume_z`` = ``(v_t - mean) / std`` over the
        last ``vol_window`` finite volumes (NaN when undefined).

    Raises:
        ValueError: on a close that is not a finite positive number, a
            negative volume, a missing or short ``volumes``, or bad feature
            names.
    """
    names = HmmConfig(vol_window=vol_window, features=tuple(features)).features
    state = _Features(vol_window, names)
    if state.use_volume and (volumes is None or len(volumes) != len(closes)):
        raise ValueError(f"volumes: expected {len(closes)} volumes for 'volume_z', got "
                         f"{None if volumes is None else len(volumes)}")
    rows: list[tuple[float, ...]] = []
    for i, c in enumerate(closes):
        x = _close_float(c)
        v = _volume_float(volumes[i]) if state.use_volume else None  # type: ignore[index]
        row = state.push(x, v)
        if row is not None:
            rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))


def _close_float(c: Any) -> float:
    x = float(str(c))
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"close: expected a finite positive price, got {c!r}")
    return x


def _volume_float(v: Any) -> float:
    """A bar's volume as float; NaN/inf pass (the row becomes bad), a
    negative volume is an error."""
    x = float(str(v))
    if x < 0:
        raise ValueError(f"volume: expected a non-negative quantity, got {v!r}")
    return x


def _realized_vol(returns: deque[float], window: int) -> float:
    # fsum: exactly rounded, so the value depends only on the window's contents
    return math.sqrt(math.fsum(r * r for r in returns) / window)


def check_fit_history(history: Sequence[float], n_iter: int, max_iter: int, tol: float) -> str | None:
    """Why an EM run must be rejected, from its log-likelihood history, or
    None when it converged.

    hmmlearn 0.3.3's ``ConvergenceMonitor.converged`` is true when the last
    change is below ``tol`` *or* when all iterations ran, so a fall of the
    log-likelihood (which EM never does when exact: Dempster, Laird & Rubin
    1977, theorem 1) and an exhausted budget both look converged; this reads
    the history itself. Checked in this order:

    1. a non-finite log-likelihood: ``"EM log-likelihood is not finite at
       iteration i"``;
    2. divergence: some step ``history[i] - history[i-1] < -tol``: ``"EM
       diverged: the log-likelihood fell by F (> tol T) at iteration i of
       N"``;
    3. non-convergence: fewer than 2 values, or the last improvement
       ``history[-1] - history[-2] >= tol``: ``"EM did not converge in N
       iterations (max M): last log-likelihood change F >= tol T"``.

    Args:
        history: log-likelihood after each EM iteration (hmmlearn's
            ``monitor_.history``), nats.
        n_iter: iterations run (``monitor_.iter``).
        max_iter: the iteration budget (``HmmConfig.n_iter``).
        tol: the convergence threshold on the log-likelihood gain (nats).

    Returns:
        The cause, or None.
    """
    h = [float(v) for v in history]
    for i, v in enumerate(h, 1):
        if not math.isfinite(v):
            return f"EM log-likelihood is not finite at iteration {i} ({v!r})"
    for i in range(1, len(h)):
        step = h[i] - h[i - 1]
        if step < -tol:
            return (
                f"EM diverged: the log-likelihood fell by {-step:.6g} (> tol {tol:g}) "
                f"at iteration {i + 1} of {n_iter}"
            )
    last = h[-1] - h[-2] if len(h) >= 2 else math.nan
    if not last < tol:
        return (
            f"EM did not converge in {n_iter} iterations (max {max_iter}): "
            f"last log-likelihood change {last:.3g} >= tol {tol:g}"
        )
    return None


def check_fit_params(startprob: Any, transmat: Any, means: Any, covars: Any) -> str | None:
    """Why fitted parameters must be rejected before ``prepare_filter``
    looks at them, or None.

    Causes: a parameter with a non-finite entry (``"fitted transmat is not
    finite: [...]"``); a transition row that is all zeros (``"transition row
    k is all zeros"``: hmmlearn leaves a state that was never left in the
    window with an empty row, which makes the chain undefined there).

    Args:
        startprob: (K,), transmat: (K, K), means: (K, D), covars: (K, D, D)
            array-likes.

    Returns:
        The cause, or None.
    """
    arrays = {
        "startprob": np.asarray(startprob, dtype=np.float64),
        "transmat": np.asarray(transmat, dtype=np.float64),
        "means": np.asarray(means, dtype=np.float64),
        "covars": np.asarray(covars, dtype=np.float64),
    }
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
            return f"fitted {name} is not finite: {arr.tolist()}"
    tm = arrays["transmat"]
    zero = np.flatnonzero((tm == 0).all(axis=1)) if tm.ndim == 2 else []
    if len(zero):
        return f"transition row {int(zero[0])} is all zeros: {tm.tolist()}"
    return None


def fit_hmm(features: np.ndarray, cfg: HmmConfig) -> FitResult:
    """Fit a Gaussian HMM to a feature window and return canonical parameters.

    Top-level and picklable, for ``FitExecutor.submit(fit_hmm, features, cfg)``.
    Imports hmmlearn lazily (only the process that fits pays for it).

    The fit is ``hmmlearn.hmm.GaussianHMM(n_components=cfg.n_states,
    covariance_type=cfg.covariance_type, n_iter=cfg.n_iter, tol=cfg.tol,
    random_state=cfg.random_state)`` (Baum-Welch EM, hmmlearn 0.3.3; with
    ``cfg.n_init`` > 1 also from the next seeds, keeping the best run) on the
    features standardized per column (z = (x - mean) / std over the window);
    the parameters are then mapped back to feature units exactly
    (``means = mean + std * means_z``, ``covars = S covars_z S`` with
    ``S = diag(std)``), so posteriors are the same as for the data in feature
    units. Standardizing is needed because hmmlearn's defaults are scale
    dependent: ``covars_prior=1e-2`` is added to every covariance entry and
    ``min_covar=1e-3`` to the initial covariance, which swamp per-bar return
    variances of 1e-4 (1h) to 1e-7 (1m) (measured: on raw 1m features the fit
    fails with a non positive-definite covariance; on raw 1h features the
    return/vol correlation comes out ~1 in every state).

    Rows with a non-finite entry are dropped first (the rows around them are
    then fitted as consecutive); when more than 5 % of the window's rows are
    bad the fit is skipped. The result is checked with ``check_fit_history``
    (on hmmlearn's history, in standardized units, where ``tol`` applied),
    ``check_fit_params`` and ``prepare_filter``.

    Args:
        features: (T, D) float64 feature rows, D = ``cfg.n_features``,
            T >= 2 * n_states (and as many finite rows).
        cfg: the model configuration.

    Returns:
        FitResult in canonical state order (see ``canonicalize``), with the
        log-likelihood history in feature units, ``n_samples`` the finite
        rows used and ``n_dropped`` the rows dropped.

    Raises:
        ValueError: if ``features`` is not a (T, D) array with D =
            ``cfg.n_features`` and enough rows.
        HmmFitError: "skipped: N of M rows bad (> 5 %)"; EM did not
            converge within ``cfg.n_iter`` iterations or diverged; hmmlearn
            raised; a feature has zero variance in the window; the fitted
            parameters are non-finite, have an all-zero transition row, or a
            covariance is not positive definite.
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != cfg.n_features:
        raise ValueError(
            f"fit_hmm: features must be a (T, {cfg.n_features}) array for {list(cfg.features)}, "
            f"got shape {X.shape}"
        )
    n_total, d = X.shape
    if n_total < 2 * cfg.n_states:
        raise ValueError(f"fit_hmm: need at least {2 * cfg.n_states} rows, got {n_total}")
    good = np.isfinite(X).all(axis=1)
    n_bad = int(n_total - good.sum())
    if n_bad > MAX_BAD_FRACTION * n_total:
        raise HmmFitError(f"fit_hmm: skipped: {n_bad} of {n_total} rows bad (> 5 %)")
    if n_bad:
        X = X[good]
    n = int(X.shape[0])
    if n < 2 * cfg.n_states:
        raise ValueError(f"fit_hmm: need at least {2 * cfg.n_states} finite rows, got {n}")
    center = X.mean(axis=0)
    scale = X.std(axis=0)
    if not ((scale > 0) & (scale > 1e-9 * np.abs(center))).all():
        raise HmmFitError(
            f"fit_hmm: a feature has zero variance over the {n}-row window (std {scale.tolist()})"
        )
    Z = (X - center) / scale

    # n_init EM runs from random_state, random_state + 1, ...: the best final
    # log-likelihood among the runs that pass the checks wins (the first on a
    # tie); when none passes, the first run's error is raised.
    best: FitResult | None = None
    best_ll = -math.inf
    first_error: HmmFitError | None = None
    for i in range(cfg.n_init):
        try:
            res, ll_z = _fit_once(Z, center, scale, cfg, cfg.random_state + i, n_bad)
        except HmmFitError as exc:
            if first_error is None:
                first_error = exc
            continue
        if best is None or ll_z > best_ll:
            best, best_ll = res, ll_z
    if best is None:
        assert first_error is not None
        raise first_error
    return best


def _fit_once(
    Z: np.ndarray, center: np.ndarray, scale: np.ndarray, cfg: HmmConfig, seed: int, n_bad: int
) -> tuple[FitResult, float]:
    """One EM run of ``fit_hmm`` from ``seed``: (canonical FitResult in
    feature units, final log-likelihood in standardized units)."""
    n = int(Z.shape[0])
    from hmmlearn.hmm import GaussianHMM  # lazy: ~1.2 s import

    model = GaussianHMM(
        n_components=cfg.n_states,
        covariance_type=cfg.covariance_type,
        n_iter=cfg.n_iter,
        tol=cfg.tol,
        random_state=seed,
    )
    # One BLAS/OpenMP thread during the fit, wherever it runs: scikit-learn's
    # k-means initialisation reduces in OpenMP chunks, so with 2 threads the
    # fit differs from a 1-thread worker's in the 10th digit (measured). With
    # this the same window and config give a bit-identical FitResult in the
    # worker process and inline. (Process-wide while the fit runs.)
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=1):
            model.fit(Z)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        raise HmmFitError(f"fit_hmm: hmmlearn failed on the {n}-row window: {exc}") from exc

    history_z = [float(v) for v in model.monitor_.history]
    n_iter = int(model.monitor_.iter)
    cause = check_fit_history(history_z, n_iter, cfg.n_iter, cfg.tol)
    if cause is not None:
        raise HmmFitError(f"fit_hmm: {cause} on {n} rows")
    # log L(x) = log L(z) - n * sum(log std): the Jacobian of the standardization
    jac = n * float(np.log(scale).sum())
    means = center + np.asarray(model.means_, dtype=np.float64) * scale
    covars = np.asarray(model.covars_, dtype=np.float64) * np.outer(scale, scale)
    startprob = np.asarray(model.startprob_, dtype=np.float64)
    transmat = np.asarray(model.transmat_, dtype=np.float64)
    cause = check_fit_params(startprob, transmat, means, covars)
    if cause is not None:
        raise HmmFitError(f"fit_hmm: {cause} ({n} rows, {n_iter} iterations)")
    result = canonicalize(
        FitResult(
            startprob=startprob.tolist(),
            transmat=transmat.tolist(),
            means=means.tolist(),
            covars=covars.tolist(),
            n_iter=n_iter,
            converged=True,
            log_likelihood=[v - jac for v in history_z],
            n_samples=n,
            n_dropped=n_bad,
        )
    )
    try:
        prepare_filter(result)
    except ValueError as exc:
        raise HmmFitError(f"fit_hmm: unusable parameters: {exc}") from exc
    return result, history_z[-1]


@dataclass(frozen=True, eq=False)
class FilterParams:
    """Per-fit constants of the forward filter, precomputed once by
    ``prepare_filter`` so that a step does no factorisation.

    Attributes:
        log_startprob: (K,) ``log(startprob)``; -inf where startprob is 0.
        log_transmat: (K, K) ``log(transmat)``; -inf where 0.
        means: (K, D) emission means.
        chol_inv: (K, D, D) inverse of the lower Cholesky factor L_k of each
            covariance (``covars[k] = L_k L_k^T``).
        log_norm: (K,) ``-D/2 log(2 pi) - sum(log diag L_k)``, the log
            normalizer of each Gaussian density.
        guarded: True when some transition probability is <= 1e-280 (or 0),
            so a step must handle -inf columns (unreachable states).
        means_ret: (K,) ``means[:, 0]``, expected log return per bar.
        vol_ret: (K,) ``sqrt(covars[:, 0, 0])``, return volatility per bar.
    """

    log_startprob: np.ndarray
    log_transmat: np.ndarray
    means: np.ndarray
    chol_inv: np.ndarray
    log_norm: np.ndarray
    guarded: bool
    means_ret: np.ndarray
    vol_ret: np.ndarray

    @property
    def n_states(self) -> int:
        """K."""
        return int(self.log_startprob.shape[0])


def stationary_baseline(params: FitResult) -> float:
    """Long-run average of the per-state ratio ``means_ret[k] / vols[k]``
    weighted by the stationary distribution pi of the transition matrix
    (the left eigenvector of eigenvalue 1, ``pi A = pi``, normalized to sum 1;
    Rabiner 1989 section II).

    Raises:
        ValueError: when pi cannot be found (no eigenvalue 1, non-finite).
    """
    a = np.asarray(params.transmat, dtype=np.float64)
    w, v = np.linalg.eig(a.T)
    k = int(np.argmin(np.abs(w - 1.0)))
    pi = np.real(v[:, k])
    pi = pi / pi.sum()
    if not (abs(w[k] - 1.0) < 1e-8 and np.all(np.isfinite(pi))):
        raise ValueError("stationary_baseline: transition matrix has no stationary distribution")
    means = np.asarray(params.means, dtype=np.float64)[:, 0]
    vols = np.sqrt(np.asarray(params.covars, dtype=np.float64)[:, 0, 0])
    return float(np.clip(pi, 0.0, 1.0) @ (means / vols))


def prepare_filter(params: FitResult) -> FilterParams:
    """Precompute the forward filter's constants for one fit.

    Args:
        params: a FitResult (any state order; the filter uses it as given).

    Returns:
        FilterParams with read-only arrays.

    Raises:
        ValueError: on inconsistent shapes, non-finite values, negative
            probabilities, rows not summing to 1 (within 1e-6), or a
            covariance that is not symmetric positive definite.
    """
    sp, tm, mu, cv = _arrays(params)
    for name, arr in (("startprob", sp), ("transmat", tm), ("means", mu), ("covars", cv)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: not finite")
    if (sp < 0).any() or (tm < 0).any():
        raise ValueError("startprob/transmat: negative probability")
    if abs(sp.sum() - 1.0) > 1e-6 or (np.abs(tm.sum(axis=1) - 1.0) > 1e-6).any():
        raise ValueError(f"startprob/transmat: rows must sum to 1 (got {sp.sum()}, {tm.sum(axis=1)})")
    if not np.allclose(cv, np.swapaxes(cv, 1, 2), rtol=1e-10, atol=0.0):
        raise ValueError("covars: not symmetric")
    try:
        chol = np.linalg.cholesky(cv)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"covars: not positive definite ({exc})") from None
    d = mu.shape[1]
    eye = np.broadcast_to(np.eye(d), cv.shape)
    chol_inv = np.linalg.solve(chol, eye)
    log_diag = np.log(np.diagonal(chol, axis1=1, axis2=2))
    log_norm = -0.5 * d * _LOG_2PI - log_diag.sum(axis=1)
    with np.errstate(divide="ignore"):
        log_sp = np.log(sp)
        log_tm = np.log(tm)
    arrays = {
        "log_startprob": log_sp,
        "log_transmat": log_tm,
        "means": mu.copy(),
        "chol_inv": chol_inv,
        "log_norm": log_norm,
        "means_ret": mu[:, 0].copy(),
        "vol_ret": np.sqrt(cv[:, 0, 0]),
    }
    for arr in arrays.values():
        arr.setflags(write=False)
    return FilterParams(guarded=bool((tm <= _TINY_TRANSITION).any()), **arrays)


def forward_step(log_alpha_prev: np.ndarray | None, x: np.ndarray, params: FilterParams) -> np.ndarray:
    """One step of the forward filter in log space (Rabiner 1989, eqs. 19-20).

    ``log_alpha_t[j] = log b_j(x_t) + logsumexp_i(log_alpha_t-1[i] + log A[i, j])``
    (or ``log pi_j + log b_j(x_1)`` on the first step), then normalized so
    that ``exp(log_alpha_t)`` sums to 1: the result is the log posterior
    ``log P(state_t = j | x_1..x_t)``. ``b_j`` is the Gaussian density with
    full covariance, evaluated through the precomputed inverse Cholesky
    factor. This equals the last row of hmmlearn's ``predict_proba`` over
    the same history (tested to 1e-9). Costs ~10 us for K = 3 (numpy only).

    Args:
        log_alpha_prev: (K,) the previous step's result, or None for the
            first observation (then ``startprob`` is used).
        x: (D,) float64 finite feature row.
        params: the fit's ``FilterParams``.

    Returns:
        (K,) new float64 array of log posteriors (max entry finite; -inf for
        impossible states).

    Raises:
        ValueError: if the observation has zero likelihood under every
            reachable state, or ``x`` is not finite (the posterior would be
            undefined).
    """
    diff = x - params.means  # (K, D)
    y = np.matmul(params.chol_inv, diff[:, :, None])  # (K, D, 1): L_k^-1 (x - mu_k)
    log_b = params.log_norm - 0.5 * (y * y).sum(axis=(1, 2))
    if log_alpha_prev is None:
        la = params.log_startprob + log_b
    elif not params.guarded:
        # every column of log A is finite and the previous posterior has a
        # finite entry, so every column max is finite: plain logsumexp.
        m = log_alpha_prev[:, None] + params.log_transmat
        mx = m.max(axis=0)
        la = mx + np.log(np.exp(m - mx).sum(axis=0)) + log_b
    else:
        m = log_alpha_prev[:, None] + params.log_transmat
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = m.max(axis=0)
            mx = np.where(np.isfinite(mx), mx, 0.0)
            la = mx + np.log(np.exp(m - mx).sum(axis=0)) + log_b
    top = la.max()
    if not math.isfinite(top):
        raise ValueError(f"forward_step: observation {x!r} has zero likelihood (or is not finite)")
    la -= top + math.log(np.exp(la - top).sum())
    return la


def predict_step(log_alpha_prev: np.ndarray | None, params: FilterParams) -> np.ndarray:
    """One step of the forward filter for a missing (non-finite) observation:
    the emission of a missing observation integrates to 1 (``b_j = 1``), so
    the step is the prediction alone,
    ``log_alpha_t[j] = logsumexp_i(log_alpha_t-1[i] + log A[i, j])`` (or
    ``log pi_j`` on the first step), normalized: the regime may still have
    switched during that bar. (Rabiner 1989, eq. 20 with b_j(x_t) = 1.)

    Args:
        log_alpha_prev: (K,) the previous log posterior, or None.
        params: the fit's ``FilterParams``.

    Returns:
        (K,) new float64 array of log posteriors.

    Raises:
        ValueError: if no state is reachable (cannot happen for a valid fit).
    """
    if log_alpha_prev is None:
        la = params.log_startprob.copy()
    else:
        m = log_alpha_prev[:, None] + params.log_transmat
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = m.max(axis=0)
            mx = np.where(np.isfinite(mx), mx, 0.0)
            la = mx + np.log(np.exp(m - mx).sum(axis=0))
    top = la.max()
    if not math.isfinite(top):
        raise ValueError("predict_step: no reachable state")
    la -= top + math.log(np.exp(la - top).sum())
    return la


def _filter_step(log_alpha_prev: np.ndarray | None, row: Sequence[float], params: FilterParams) -> np.ndarray:
    """``forward_step`` for a finite row, ``predict_step`` for a bad one."""
    x = np.array(row, dtype=np.float64)
    if np.isfinite(x).all():
        return forward_step(log_alpha_prev, x, params)
    return predict_step(log_alpha_prev, params)


def forward_filter(X: np.ndarray, params: FilterParams, log_alpha0: np.ndarray | None = None) -> np.ndarray:
    """Run ``forward_step`` over rows of ``X`` (bit-identical to stepping one
    row at a time), ``predict_step`` for a row with a non-finite entry (a
    missing observation), as ``HmmRegimeModel`` does.

    Args:
        X: (T, D) feature rows.
        params: the fit's FilterParams.
        log_alpha0: (K,) log posterior before ``X[0]``, or None to start from
            ``startprob``.

    Returns:
        (T, K) log posteriors, row t = ``log P(state | x_1..x_t)``.

    Raises:
        ValueError: as ``forward_step``.
    """
    out = np.empty((len(X), params.n_states))
    la = log_alpha0
    for t, row in enumerate(np.asarray(X, dtype=np.float64)):
        la = _filter_step(la, row, params)
        out[t] = la
    return out


def policy_target(
    posterior: Sequence[float] | np.ndarray,
    means_ret: Sequence[float] | np.ndarray,
    vols: Sequence[float] | np.ndarray,
    threshold: float,
    max_fraction: float,
    exit_threshold: float | None = None,
    long: bool = False,
    baseline: float = 0.0,
) -> Decimal:
    """The policy: target fraction of the budget from a posterior.

    ``mu = sum_k p_k * means_ret[k]`` (expected log return per bar) and
    ``sigma = sum_k p_k * vols[k]`` (expected return volatility per bar);
    long ``max_fraction`` when ``mu / sigma > threshold``, else flat.

    Args:
        posterior: (K,) state probabilities (sum 1).
        means_ret: (K,) expected log return per bar of each state.
        vols: (K,) return standard deviation per bar of each state (> 0).
        threshold: per-bar return/volatility ratio above which to be long.
        max_fraction: fraction when long, in [0, 1].
        exit_threshold: when ``long`` (the previous target was long), stay
            long while ``mu / sigma > exit_threshold``; None means
            ``threshold`` (no hysteresis).
        long: whether the previous target was long.
        baseline: subtracted from ``mu / sigma`` before the comparison (see
            ``HmmConfig.relative`` and ``stationary_baseline``).

    Returns:
        ``Decimal(repr(max_fraction))`` or 0, quantized (down) to 0.0001.

    Raises:
        ValueError: if the shapes differ or sigma is not positive and finite.
    """
    p = np.asarray(posterior, dtype=np.float64)
    mr = np.asarray(means_ret, dtype=np.float64)
    vr = np.asarray(vols, dtype=np.float64)
    if not (p.shape == mr.shape == vr.shape and p.ndim == 1):
        raise ValueError(f"policy_target: shapes differ: {p.shape}, {mr.shape}, {vr.shape}")
    mu = float(p @ mr)
    sigma = float(p @ vr)
    if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"policy_target: undefined ratio mu={mu!r} sigma={sigma!r}")
    bar = threshold if not long or exit_threshold is None else exit_threshold
    frac = float(max_fraction) if mu / sigma - baseline > bar else 0.0
    return Decimal(repr(frac)).quantize(FRACTION_QUANTUM, rounding=ROUND_DOWN)


#: once fitted, the feature history is trimmed to ``warmup`` rows when it
#: exceeds this many windows (the filter itself needs no history; a refit
#: needs the last ``warmup`` rows)
_HISTORY_CAP_WINDOWS = 20


def _enc_floats(values: np.ndarray) -> list[float | str]:
    """Floats for JSON; non-finite as their repr string (strict JSON has no -inf)."""
    return [v if math.isfinite(v) else repr(v) for v in values.tolist()]


def _enc_rows(rows: Sequence[Sequence[float]], d: int) -> dict[str, Any]:
    """Feature rows for JSON, compact and exact: the little-endian float64
    bytes, base64 (a 500 x 2 window is 10.7 kB and encodes in ~0.1 ms;
    as a JSON list of floats it is 37 kB and ~1.2 ms of ``json.dumps``,
    paid at every engine checkpoint). NaN rows round-trip too."""
    arr = np.array(rows, dtype="<f8").reshape(len(rows), d)
    return {"dtype": "<f8", "shape": [len(rows), d], "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def _enc_times(times: Sequence[int | None]) -> dict[str, Any]:
    """Row bar times for JSON as base64 little-endian int64 (None as -1)."""
    arr = np.array([-1 if t is None else t for t in times], dtype="<i8")
    return {"dtype": "<i8", "shape": [len(times)], "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def _dec_times(obj: Any, who: str) -> list[int | None]:
    if isinstance(obj, list):
        return [None if t is None else int(t) for t in obj]
    if obj.get("dtype") != "<i8" or len(obj.get("shape", ())) != 1:
        raise ValueError(f"{who}: state row times have an unknown encoding: {obj.get('dtype')!r}")
    raw = base64.b64decode(obj["b64"], validate=True)
    if len(raw) != 8 * int(obj["shape"][0]):
        raise ValueError(f"{who}: state row times have {len(raw)} bytes for {obj['shape'][0]} int64")
    return [None if t < 0 else t for t in np.frombuffer(raw, dtype="<i8").tolist()]


def _dec_rows(obj: Any, d: int, who: str) -> list[tuple[float, ...]]:
    """Inverse of ``_enc_rows``; a list of rows (v1 states) is taken as is."""
    if isinstance(obj, list):
        rows = [tuple(float(v) for v in row) for row in obj]
    else:
        if obj.get("dtype") != "<f8" or len(obj.get("shape", ())) != 2:
            raise ValueError(f"{who}: state history has an unknown encoding: {obj.get('dtype')!r} {obj.get('shape')!r}")
        n, cols = (int(v) for v in obj["shape"])
        raw = base64.b64decode(obj["b64"], validate=True)
        if len(raw) != 8 * n * cols:
            raise ValueError(f"{who}: state history has {len(raw)} bytes for {n} x {cols} float64")
        rows = [tuple(r) for r in np.frombuffer(raw, dtype="<f8").reshape(n, cols).tolist()]
    if any(len(row) != d for row in rows):
        raise ValueError(f"{who}: state has feature rows not of {d} features")
    return rows


def _dec_floats(values: Sequence[float | str]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def _fit_info(
    fit: FitResult, first_ts: int | None, last_ts: int | None, rows: int, matched: bool, previous_id: str | None
) -> dict[str, Any]:
    return {
        "window_first_ts_ns": first_ts,
        "window_last_ts_ns": last_ts,
        "window_rows": rows,
        "n_iter": fit.n_iter,
        "converged": fit.converged,
        "log_likelihood": float(fit.log_likelihood[-1]) if fit.log_likelihood else None,
        "n_samples": fit.n_samples,
        "n_dropped": fit.n_dropped,
        "state_order": "matched" if matched else "variance",
        "previous_model_id": previous_id,
    }


class HmmRegimeModel:
    """A Gaussian HMM regime model of one instrument; implements
    ``core.ports.RegimeModel``.

    Life cycle: ``observe`` bars; once ``cfg.warmup`` feature rows exist
    ``fit_due()`` is true; ``fit_job()`` takes the last ``warmup`` rows as
    the fit window (its first row is the "fit window start") and marks the
    fit pending; the engine runs the job on a FitExecutor and passes the
    result to ``apply_fit``, which runs the forward filter over every row
    since the fit window start (so the posterior is the filter over the same
    history as ``predict_proba`` on those rows) and from then on one
    ``forward_step`` per new row (``predict_step`` for a non-finite row).
    One fit per model instance: a refit is a new instance (a new version).

    Retraining: with ``cfg.refit_every_bars`` set, ``refit_due()`` turns true
    that many bars after the installed fit's window end; ``spawn(new_id)``
    then returns a new model holding the trailing ``warmup`` rows and the
    feature buffers, with ``fit_due()`` true; its ``apply_fit`` orders the
    states to match this model's fit (``canonicalize(fit, previous)``), and
    this model's schedule restarts at the spawn.

    The feature rows since the fit window start are kept in memory (up to
    20 windows, then trimmed to the last ``warmup``); before ``fit_job``
    only the last ``warmup`` rows. A saved state keeps at most the last
    ``warmup`` rows once fitted (the refit window survives a restart).

    No hidden global state: two instances never share anything.

    Args:
        model_id: e.g. ``"hmm_v1"`` (a name; the stage is not parsed from it).
        instrument_id: the instrument whose bars this model takes.
        cfg: the configuration.

    Raises:
        ValueError: if ``model_id`` is empty.
    """

    def __init__(self, model_id: str, instrument_id: InstrumentId, cfg: HmmConfig) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id: expected a non-empty str, got {model_id!r}")
        self.model_id = model_id
        self.instrument_id = instrument_id
        self.cfg = cfg
        self._feat = _Features(cfg.vol_window, cfg.features)
        self._last_ts: int | None = None
        self._n_bars = 0
        self._n_rows = 0  # feature rows ever produced
        self._history: list[tuple[float, ...]] = []
        self._history_ts: list[int | None] = []  # ts_event of each history row's bar
        self._history_start = 0  # absolute row index of _history[0]
        self._window_chosen = False  # fit window fixed (persisted "pending")
        self._in_flight = False  # a fit_job was handed out in this process
        self._fit: FitResult | None = None
        self._fp: FilterParams | None = None
        self._log_alpha: np.ndarray | None = None
        self._long = False
        self._target: Decimal | None = None
        self._baseline = 0.0
        self._cfg_dict = cfg.to_dict()
        self._fit_info: dict[str, Any] = {}
        self._refit_anchor: int | None = None  # absolute row index refit_every_bars counts from
        self._previous_fit: FitResult | None = None  # the parent's fit (spawned versions)
        self._previous_id: str | None = None

    # -- RegimeModel -------------------------------------------------------------

    def observe(self, bar: Bar) -> None:
        """Take one bar (in time order): update the features and, once a fit
        is installed, the posterior with one forward-filter step (a
        prediction-only step when the row is not finite).

        A bar whose ``ts_event`` is not after the last observed one is
        ignored (idempotent re-delivery after a restart).

        Raises:
            ValueError: if the bar is of another instrument, its close is
                not a finite positive number, or (with ``"volume_z"``) its
                volume is negative.
        """
        if bar.instrument_id != self.instrument_id:
            raise ValueError(f"{self.model_id}: bar of {bar.instrument_id}, model trades {self.instrument_id}")
        if self._last_ts is not None and bar.ts_event <= self._last_ts:
            return
        close = _close_float(bar.close)
        volume = _volume_float(bar.volume) if self._feat.use_volume else None
        self._last_ts = bar.ts_event
        self._n_bars += 1
        row = self._feat.push(close, volume)
        if row is None:
            return
        self._history.append(row)
        self._history_ts.append(bar.ts_event)
        self._n_rows += 1
        w = self.cfg.warmup
        if not self._window_chosen and self._fit is None and len(self._history) > w:
            self._trim(len(self._history) - w)
        if self._fp is not None:
            self._log_alpha = _filter_step(self._log_alpha, row, self._fp)
            self._update_target()
            if len(self._history) > _HISTORY_CAP_WINDOWS * w:
                # bounded memory on long runs: keep the trailing window only
                self._trim(len(self._history) - w)

    def _trim(self, n: int) -> None:
        """Drop the ``n`` oldest history rows."""
        if n > 0:
            del self._history[:n]
            del self._history_ts[:n]
            self._history_start += n

    def _update_target(self) -> None:
        """Recompute the cached target after the posterior moved (once per
        bar), carrying the long/flat state the hysteresis needs."""
        if self._fp is None or self._log_alpha is None:
            self._target = None
            return
        self._target = policy_target(
            np.exp(self._log_alpha), self._fp.means_ret, self._fp.vol_ret, self.cfg.threshold,
            self.cfg.max_fraction, self.cfg.exit_threshold, self._long, self._baseline,
        )
        self._long = self._target > 0

    def fit_due(self) -> bool:
        """True once ``warmup`` feature rows exist and no fit is installed or
        in flight. After ``load_state_dict`` of a state saved while a fit was
        pending, true again: ``fit_job`` then returns the same window."""
        if self._fit is not None or self._in_flight:
            return False
        return len(self._history) >= self.cfg.warmup

    def fit_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """``(fit_hmm, (window, cfg))``: window is the (warmup, D) float64
        array of the fit window's feature rows (non-finite rows included;
        ``fit_hmm`` drops them). Marks the fit pending.

        Raises:
            RuntimeError: if ``fit_due()`` is false.
        """
        if not self.fit_due():
            raise RuntimeError(f"{self.model_id}: fit_job() called while no fit is due")
        self._window_chosen = True
        self._in_flight = True
        window = np.array(self._history[: self.cfg.warmup], dtype=np.float64)
        return fit_hmm, (window, self.cfg)

    def apply_fit(self, result: Any) -> None:
        """Install a fit (``FitResult`` or its ``to_dict()``), put in
        canonical order (matched to the parent's fit for a spawned model,
        see ``canonicalize``), and run the forward filter over every feature
        row since the fit window start, so the posterior equals the filter
        over that history; later bars step it incrementally. Records
        ``last_fit_info()``; ``refit_due()`` counts from the window end.

        Raises:
            RuntimeError: if no fit is pending.
            ValueError: if the result has another number of states or
                features, or unusable parameters (see ``prepare_filter``), or
                the filter fails; the model is then unchanged and the fit
                stays pending.
        """
        if not self._window_chosen or self._fit is not None:
            raise RuntimeError(f"{self.model_id}: apply_fit() without a pending fit")
        fit = result if isinstance(result, FitResult) else FitResult.from_dict(result)
        d = self.cfg.n_features
        _arrays(fit)
        if fit.n_states != self.cfg.n_states or len(fit.means[0]) != d:
            raise ValueError(
                f"{self.model_id}: fit has {fit.n_states} states x {len(fit.means[0])} features, "
                f"expected {self.cfg.n_states} x {d}"
            )
        prev = self._previous_fit
        matched = (
            prev is not None
            and prev.n_states == fit.n_states
            and len(prev.means[0]) == d
            and _match_order(fit, prev) is not None
        )
        fit = canonicalize(fit, prev if matched else None)
        fp = prepare_filter(fit)
        la = None
        for row in self._history:
            la = _filter_step(la, row, fp)
        w = self.cfg.warmup
        self._fit, self._fp, self._log_alpha = fit, fp, la
        self._in_flight = False
        self._baseline = stationary_baseline(fit) if self.cfg.relative else 0.0
        self._fit_info = _fit_info(
            fit, self._history_ts[0], self._history_ts[w - 1], w, matched, self._previous_id if matched else None
        )
        self._refit_anchor = self._history_start + w - 1
        self._previous_fit = None
        self._update_target()

    def abandon_fit(self) -> None:
        """Forget a pending fit (e.g. its job raised ``HmmFitError``): the
        history is trimmed back to the last ``warmup`` rows and ``fit_due()``
        turns true again, so the next job fits a newer window. Not part of
        the RegimeModel Protocol (yet). No effect once a fit is installed."""
        if self._fit is not None:
            return
        self._window_chosen = False
        self._in_flight = False
        self._trim(len(self._history) - self.cfg.warmup)

    def is_ready(self) -> bool:
        """True once a fit is installed and a posterior exists."""
        return self._fp is not None and self._log_alpha is not None

    def target_fraction(self) -> Decimal | None:
        """Target position as a fraction of the budget in [0, 1]:
        ``max_fraction`` when the posterior-weighted expected return per unit
        of posterior-weighted volatility exceeds ``cfg.threshold``, else 0
        (see ``policy_target``); None while not ready."""
        if self._fp is None or self._log_alpha is None:
            return None
        return self._target

    def regime(self) -> tuple[int, float] | None:
        """(most likely canonical state, 0 = lowest return variance or the
        state matched to the parent's; its posterior probability) or None
        while not ready."""
        if self._log_alpha is None:
            return None
        k = int(np.argmax(self._log_alpha))
        return k, math.exp(float(self._log_alpha[k]))

    # -- retraining ----------------------------------------------------------------

    def refit_due(self) -> bool:
        """True when a fit is installed, ``cfg.refit_every_bars`` is set, at
        least ``refit_every_bars`` feature rows (one per bar once warmed up)
        were observed after the installed fit's window end (or after the
        last ``spawn``), and the last ``warmup`` rows are at hand. Counted on
        observed bars, so a replay is deterministic. After loading a v1
        state (which kept no rows) it counts from the load and also waits
        for ``warmup`` new rows."""
        every = self.cfg.refit_every_bars
        if every is None or self._fit is None or self._refit_anchor is None:
            return False
        if len(self._history) < self.cfg.warmup:
            return False
        return self._n_rows - 1 - self._refit_anchor >= every

    def spawn(self, new_model_id: str) -> "HmmRegimeModel":
        """A new model instance (same config and instrument) for a refit: it
        holds this model's last ``warmup`` feature rows (and their bar
        times), the last close, the return and volume buffers, the bar and
        row counters and the last bar time, so it observes the next bars
        seamlessly; ``fit_due()`` is true and its ``fit_job()`` is the
        trailing window. Its ``apply_fit`` matches its states to this
        model's fit. This model's ``refit_due()`` restarts counting here.
        Neither model shares mutable state with the other.

        Args:
            new_model_id: the new version's id (not this model's).

        Returns:
            The new HmmRegimeModel (no fit, not pending).

        Raises:
            ValueError: if ``new_model_id`` is empty or equals this id.
            RuntimeError: if fewer than ``warmup`` feature rows are at hand.
        """
        if new_model_id == self.model_id:
            raise ValueError(f"spawn: new_model_id must differ from {self.model_id!r}")
        w = self.cfg.warmup
        if len(self._history) < w:
            raise RuntimeError(
                f"{self.model_id}: spawn needs the last {w} feature rows, {len(self._history)} at hand"
            )
        child = HmmRegimeModel(new_model_id, self.instrument_id, self.cfg)
        child._feat = self._feat.copy()
        child._last_ts = self._last_ts
        child._n_bars = self._n_bars
        child._n_rows = self._n_rows
        child._history = self._history[-w:]
        child._history_ts = self._history_ts[-w:]
        child._history_start = self._n_rows - w
        child._previous_fit = self._fit
        child._previous_id = self.model_id if self._fit is not None else None
        self._refit_anchor = self._n_rows - 1
        return child

    def last_fit_info(self) -> dict[str, Any]:
        """Facts of the installed fit for the registry ({} while none):
        ``window_first_ts_ns`` / ``window_last_ts_ns`` (``ts_event`` of the
        first and last bar of the training window, UTC ns; None for a fit
        loaded from a v1 state), ``window_rows`` (warmup), ``n_iter``,
        ``converged``, ``log_likelihood`` (final, nats, feature units),
        ``n_samples`` (finite rows fitted), ``n_dropped`` (bad rows dropped),
        ``state_order`` (``"matched"`` to the parent or ``"variance"``),
        ``previous_model_id`` (the parent matched to, or None). A copy."""
        return dict(self._fit_info)

    # -- state -----------------------------------------------------------------------

    def _fit_dict(self) -> dict[str, Any]:
        """The installed fit as a dict, computed once per fit (the state is
        saved with every order commit)."""
        cached = getattr(self, "_fit_dict_cache", None)
        if cached is None or cached[0] is not self._fit:
            cached = (self._fit, self._fit.to_dict() if self._fit is not None else None)
            self._fit_dict_cache = cached
        return cached[1]  # type: ignore[return-value]

    def _saved_skip(self) -> int:
        """Rows a saved state leaves out: once a fit is installed the filter
        continues from ``log_alpha`` alone, so the saved state keeps only the
        last ``warmup`` rows, the window of the next refit (it is written
        with every order commit and must stay small)."""
        if self._fit is None:
            return 0
        return max(0, len(self._history) - self.cfg.warmup)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state, format v2 (strict JSON: non-finite floats
        are written as their repr string, e.g. ``"-inf"``, ``"nan"``):
        config, fit parameters, log posterior, the last close, the
        ``vol_window`` returns (and volumes), the feature rows since the fit
        window start (once fitted: the last ``warmup``; as base64 of their
        little-endian float64 bytes, ``{"dtype", "shape", "b64"}``) with
        their bar times (int64 the same way, -1 for unknown),
        counters, whether a fit is pending, the fit info, the refit anchor
        and, for a spawned model not yet fitted, the parent's fit.
        ``load_state_dict`` of it into a fresh model continues
        bit-identically."""
        skip = self._saved_skip()
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "model_id": self.model_id,
            "instrument_id": str(self.instrument_id),
            "config": self._cfg_dict,
            "n_bars": self._n_bars,
            "n_rows": self._n_rows,
            "last_ts": self._last_ts,
            "last_close": self._feat.last_close,
            "returns": list(self._feat.returns),
            "volumes": list(self._feat.volumes),
            "history_start": self._history_start + skip,
            "history": _enc_rows(self._history[skip:], self.cfg.n_features),
            "history_ts": _enc_times(self._history_ts[skip:]),
            "pending": self._window_chosen and self._fit is None,
            "long": self._long,
            "target": None if self._target is None else format(self._target, "f"),
            "fit": None if self._fit is None else self._fit_dict(),
            "log_alpha": None if self._log_alpha is None else _enc_floats(self._log_alpha),
            "fit_info": dict(self._fit_info) if self._fit_info else None,
            "refit_anchor": self._refit_anchor,
            "previous_fit": None if self._previous_fit is None else self._previous_fit.to_dict(),
            "previous_model_id": self._previous_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (also after a JSON round
        trip), format v2 or v1 (migrated: v1 kept no rows after a fit, so a
        refit waits for ``warmup`` new rows, the schedule counts from the
        load, and the fit info has no window times). A fit that was pending
        when the state was saved is pending again but not in flight:
        ``fit_due()`` is true and ``fit_job()`` returns the same window, so
        the same (deterministic) fit follows. The saved config must equal
        this model's except for ``refit_every_bars`` (this model's applies).

        Raises:
            ValueError: if the state is of another format/version, model,
                instrument or configuration, or is inconsistent.
        """
        version = state.get("version")
        if state.get("format") != _STATE_FORMAT or version not in _STATE_VERSIONS_READ:
            raise ValueError(
                f"{self.model_id}: not a {_STATE_FORMAT} v{'/v'.join(map(str, _STATE_VERSIONS_READ))} state: "
                f"{state.get('format')!r} v{version!r}"
            )
        if state["model_id"] != self.model_id or state["instrument_id"] != str(self.instrument_id):
            raise ValueError(
                f"{self.model_id}: state is of {state['model_id']} on {state['instrument_id']}, "
                f"not {self.model_id} on {self.instrument_id}"
            )
        if HmmConfig.from_dict(state["config"]).identity() != self.cfg.identity():
            raise ValueError(f"{self.model_id}: state has another configuration: {state['config']}")
        d = self.cfg.n_features
        returns = [float(r) for r in state["returns"]]
        volumes = [float(v) for v in state.get("volumes") or []]
        history = _dec_rows(state["history"], d, self.model_id)
        if version >= 2:
            history_ts = _dec_times(state["history_ts"], self.model_id)
        else:
            history_ts = [None] * len(history)
        if len(history_ts) != len(history):
            raise ValueError(f"{self.model_id}: state has {len(history)} rows but {len(history_ts)} row times")
        if len(returns) > self.cfg.vol_window or len(volumes) > self.cfg.vol_window:
            raise ValueError(f"{self.model_id}: state has more than vol_window={self.cfg.vol_window} returns or volumes")
        fit = None if state["fit"] is None else FitResult.from_dict(state["fit"])
        fp = None if fit is None else prepare_filter(fit)
        la = None if state["log_alpha"] is None else _dec_floats(state["log_alpha"])
        if (fit is None) != (la is None) or (la is not None and la.shape != (self.cfg.n_states,)):
            raise ValueError(f"{self.model_id}: state has a fit without a posterior or vice versa")
        pending = bool(state["pending"])
        if pending and len(history) < self.cfg.warmup:
            raise ValueError(f"{self.model_id}: state has a pending fit but {len(history)} < warmup rows")
        n_rows = int(state["n_rows"])
        feat = _Features(self.cfg.vol_window, self.cfg.features)
        feat.returns.extend(returns)
        feat.volumes.extend(volumes)
        feat.last_close = None if state["last_close"] is None else float(state["last_close"])
        previous = state.get("previous_fit")
        if version >= 2:
            info = dict(state["fit_info"] or {})
            anchor = state["refit_anchor"]
            anchor = None if anchor is None else int(anchor)
        else:
            info = {} if fit is None else _fit_info(fit, None, None, self.cfg.warmup, False, None)
            anchor = None if fit is None else n_rows - 1
        if (fit is None) != (not info):
            raise ValueError(f"{self.model_id}: state has a fit without its fit info or vice versa")
        self._feat = feat
        self._last_ts = None if state["last_ts"] is None else int(state["last_ts"])
        self._n_bars = int(state["n_bars"])
        self._n_rows = n_rows
        self._history = history
        self._history_ts = history_ts
        self._history_start = int(state["history_start"])
        self._window_chosen = pending or fit is not None
        self._in_flight = False
        self._fit, self._fp, self._log_alpha = fit, fp, la
        self._long = bool(state.get("long", False))
        self._baseline = stationary_baseline(fit) if (self.cfg.relative and fit is not None) else 0.0
        target = state.get("target")
        self._target = None if target is None or fp is None else Decimal(target)
        self._fit_info = info
        self._refit_anchor = anchor
        self._previous_fit = None if previous is None else FitResult.from_dict(previous)
        self._previous_id = state.get("previous_model_id")

    # -- read-only views (UI, tests, benches) ----------------------------------

    @property
    def fit_result(self) -> FitResult | None:
        """The installed fit (canonical or matched order), or None."""
        return self._fit

    @property
    def filter_params(self) -> FilterParams | None:
        """The installed fit's precomputed filter constants, or None."""
        return self._fp

    @property
    def fit_pending(self) -> bool:
        """True between ``fit_job`` (or loading a state saved then) and
        ``apply_fit``/``abandon_fit``."""
        return self._window_chosen and self._fit is None

    @property
    def n_bars(self) -> int:
        """Bars observed (ignored re-deliveries not counted)."""
        return self._n_bars

    @property
    def n_feature_rows(self) -> int:
        """Feature rows produced since the first bar."""
        return self._n_rows

    def posterior(self) -> np.ndarray | None:
        """(K,) copy of ``P(state | x_1..x_t)`` over the rows since the fit
        window start, canonical order; None while not ready."""
        return None if self._log_alpha is None else np.exp(self._log_alpha)

    def log_posterior(self) -> np.ndarray | None:
        """(K,) copy of the log posterior; None while not ready."""
        return None if self._log_alpha is None else self._log_alpha.copy()

    def moments(self) -> tuple[float, float] | None:
        """(mu, sigma): posterior-weighted expected log return and return
        volatility per bar, the policy's inputs; None while not ready."""
        if self._fp is None or self._log_alpha is None:
            return None
        p = np.exp(self._log_alpha)
        return float(p @ self._fp.means_ret), float(p @ self._fp.vol_ret)

    def long_states(self) -> np.ndarray | None:
        """(K,) bool: the states whose own per-bar ratio
        ``means_ret[k] / vol_ret[k]`` (minus the stationary baseline when
        ``cfg.relative``) is strictly above ``cfg.threshold``, i.e. the
        states in which the policy would be long with certainty (hysteresis
        not applied); None while no fit is installed."""
        if self._fp is None:
            return None
        return self._fp.means_ret / self._fp.vol_ret - self._baseline > self.cfg.threshold

    def long_probability(self) -> float | None:
        """Posterior mass of ``long_states()``, in [0, 1] (the model's
        posterior-implied probability of being in a regime worth being long
        in; what ``models.ensemble`` combines); None while not ready."""
        if self._fp is None or self._log_alpha is None:
            return None
        mask = self.long_states()
        return min(1.0, float(np.exp(self._log_alpha)[mask].sum()))

    def feature_history(self) -> np.ndarray:
        """(n, D) float64 copy of the kept feature rows: since the fit window
        start once ``fit_job`` was called (at most the trailing 20 windows),
        else the last ``warmup`` rows."""
        d = self.cfg.n_features
        return np.array(self._history, dtype=np.float64).reshape(len(self._history), d)

    def feature_times(self) -> list[int | None]:
        """``ts_event`` (UTC ns) of the bar of each ``feature_history`` row
        (None for rows loaded from a v1 state)."""
        return list(self._history_ts)
