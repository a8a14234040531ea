"""Gaussian HMM regime model: features, fit, canonical order, forward filter, policy.

The model follows DESIGN.md section 5 ("Models") and section 7:

* Features per bar (float64, model input only, never accounting): the log
  return of the close, ``log(c_t / c_{t-1})``, and the rolling realized
  volatility ``sqrt(mean(r^2))`` over the last ``vol_window`` log returns. A
  feature row exists once ``vol_window`` returns are available, i.e. from the
  ``vol_window + 1``-th bar on.
* The fit is hmmlearn's ``GaussianHMM`` (Baum-Welch / EM) on the last
  ``warmup`` feature rows, run off the event loop through a ``FitExecutor``
  (``fit_hmm`` is a picklable top-level function). The parametrization
  (``startprob_``, ``transmat_``, ``means_``, ``covars_`` as full matrices)
  is hmmlearn's (https://hmmlearn.readthedocs.io, version 0.3.3).
* After every fit the states are put in a canonical order: ascending variance
  of the return feature (``covars[k][0][0]``), so labels do not depend on the
  fit's random initialisation.
* Per bar the posterior ``P(state_t | x_1..t)`` is updated with one step of
  the forward recursion (Rabiner 1989, "A Tutorial on Hidden Markov Models
  and Selected Applications in Speech Recognition", Proc. IEEE 77(2),
  eqs. 19-20), in log space and normalized at every step. hmmlearn has no
  public one-step API; ``predict_proba`` over the same history gives the
  same posterior (tested to 1e-9).
* The policy reads the posterior-weighted expected return and volatility,
  never a bare state index.

Nothing here imports hmmlearn at module level (its import costs ~1.2 s):
only ``fit_hmm`` imports it, inside the worker that runs the fit.
"""

from __future__ import annotations

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
    "features_from_closes",
    "fit_hmm",
    "forward_filter",
    "forward_step",
    "policy_target",
    "prepare_filter",
]

#: number of features per row: [log return, realized volatility]
N_FEATURES = 2

#: quantum of a target fraction
FRACTION_QUANTUM = Decimal("0.0001")

_COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")

#: transition probabilities at or below this make a step take the guarded
#: log-space path (a column of zeros makes a state unreachable: -inf).
_TINY_TRANSITION = 1e-280

_LOG_2PI = math.log(2.0 * math.pi)

_STATE_FORMAT = "hmm_regime_model"
_STATE_VERSION = 1


class HmmFitError(RuntimeError):
    """A fit that cannot be used: EM did not converge within ``n_iter``
    iterations, hmmlearn failed, a feature has zero variance in the window,
    or the parameters are not finite / not positive definite.

    The message names the cause and the figures (iterations, last change of
    the log-likelihood). Picklable, so it crosses the process boundary of a
    ``ProcessFitExecutor`` future unchanged.
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

    def __post_init__(self) -> None:
        def _int(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"HmmConfig.{name}: expected an int >= {minimum}, got {v!r}")

        _int("n_states", 1)
        _int("vol_window", 1)
        _int("n_iter", 1)
        _int("random_state", 0)
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

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)

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
        means: (K, D) emission means in feature units (D = 2: log return per
            bar, realized volatility per bar).
        covars: (K, D, D) full emission covariance matrices, feature units
            squared, symmetric positive definite.
        n_iter: EM iterations run.
        converged: True when EM stopped because the log-likelihood improved by
            less than ``tol`` (not because it ran out of iterations).
        log_likelihood: per-iteration log-likelihood of the fit window (nats,
            feature units), as hmmlearn's ConvergenceMonitor reported it.
        n_samples: rows in the fit window.
    """

    startprob: list[float]
    transmat: list[list[float]]
    means: list[list[float]]
    covars: list[list[list[float]]]
    n_iter: int = 0
    converged: bool = True
    log_likelihood: list[float] = field(default_factory=list)
    n_samples: int = 0

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


def canonicalize(params: FitResult) -> FitResult:
    """Put the states of ``params`` in the canonical order.

    The order is ascending variance of the return feature
    (``covars[k][0][0]``); ties are broken by ascending mean return, then by
    the original index (stable). The same permutation ``p`` is applied to
    every parameter: ``startprob[p]``, ``transmat[p][:, p]`` (rows AND
    columns), ``means[p]``, ``covars[p]``. Pure function; idempotent.

    Args:
        params: a FitResult with K states and D features.

    Returns:
        A new FitResult with the same fit metadata (n_iter, converged,
        log_likelihood, n_samples).

    Raises:
        ValueError: on inconsistent shapes.
    """
    sp, tm, mu, cv = _arrays(params)
    order = np.lexsort((np.arange(sp.shape[0]), mu[:, 0], cv[:, 0, 0]))
    return FitResult(
        startprob=sp[order].tolist(),
        transmat=tm[np.ix_(order, order)].tolist(),
        means=mu[order].tolist(),
        covars=cv[order].tolist(),
        n_iter=params.n_iter,
        converged=params.converged,
        log_likelihood=list(params.log_likelihood),
        n_samples=params.n_samples,
    )


def features_from_closes(closes: Sequence[Any], vol_window: int) -> np.ndarray:
    """Feature rows of a close series, exactly as ``HmmRegimeModel.observe``
    computes them one bar at a time (bit-identical).

    Args:
        closes: N closes (Decimal, str, int or float), positive, in time
            order; each is converted with ``float(str(c))``.
        vol_window: returns per realized-volatility window (>= 1).

    Returns:
        (max(0, N - vol_window), 2) float64 array: column 0 the log return
        ``log(c_t / c_t-1)``, column 1 ``sqrt(mean(r^2))`` over the last
        ``vol_window`` returns (both per bar, dimensionless).

    Raises:
        ValueError: on a close that is not a finite positive number.
    """
    buf: deque[float] = deque(maxlen=vol_window)
    rows: list[tuple[float, float]] = []
    prev: float | None = None
    for c in closes:
        x = _close_float(c)
        if prev is not None:
            r = math.log(x / prev)
            buf.append(r)
            if len(buf) == vol_window:
                rows.append((r, _realized_vol(buf, vol_window)))
        prev = x
    return np.array(rows, dtype=np.float64).reshape(len(rows), N_FEATURES)


def _close_float(c: Any) -> float:
    x = float(str(c))
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"close: expected a finite positive price, got {c!r}")
    return x


def _realized_vol(returns: deque[float], window: int) -> float:
    # fsum: exactly rounded, so the value depends only on the window's contents
    return math.sqrt(math.fsum(r * r for r in returns) / window)


def fit_hmm(features: np.ndarray, cfg: HmmConfig) -> FitResult:
    """Fit a Gaussian HMM to a feature window and return canonical parameters.

    Top-level and picklable, for ``FitExecutor.submit(fit_hmm, features, cfg)``.
    Imports hmmlearn lazily (only the process that fits pays for it).

    The fit is ``hmmlearn.hmm.GaussianHMM(n_components=cfg.n_states,
    covariance_type=cfg.covariance_type, n_iter=cfg.n_iter, tol=cfg.tol,
    random_state=cfg.random_state)`` (Baum-Welch EM, hmmlearn 0.3.3) on the
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

    Args:
        features: (T, D) float64 feature rows (D = 2 for the desk), finite,
            T >= 2 * n_states.
        cfg: the model configuration.

    Returns:
        FitResult in canonical state order (see ``canonicalize``), with the
        log-likelihood history in feature units.

    Raises:
        ValueError: if ``features`` is not a finite (T, D) array with enough
            rows.
        HmmFitError: if EM did not converge within ``cfg.n_iter`` iterations,
            hmmlearn raised, a feature has zero variance in the window, or the
            fitted parameters are non-finite or not positive definite.
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 1:
        raise ValueError(f"fit_hmm: features must be a (T, D) array, got shape {X.shape}")
    n, d = X.shape
    if n < 2 * cfg.n_states:
        raise ValueError(f"fit_hmm: need at least {2 * cfg.n_states} rows, got {n}")
    if not np.isfinite(X).all():
        raise ValueError("fit_hmm: features contain NaN or infinity")
    center = X.mean(axis=0)
    scale = X.std(axis=0)
    if not ((scale > 0) & (scale > 1e-9 * np.abs(center))).all():
        raise HmmFitError(
            f"fit_hmm: a feature has zero variance over the {n}-row window (std {scale.tolist()})"
        )
    Z = (X - center) / scale

    from hmmlearn.hmm import GaussianHMM  # lazy: ~1.2 s import

    model = GaussianHMM(
        n_components=cfg.n_states,
        covariance_type=cfg.covariance_type,
        n_iter=cfg.n_iter,
        tol=cfg.tol,
        random_state=cfg.random_state,
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
    converged = len(history_z) >= 2 and history_z[-1] - history_z[-2] < cfg.tol
    if not converged:
        last = history_z[-1] - history_z[-2] if len(history_z) >= 2 else float("nan")
        raise HmmFitError(
            f"fit_hmm: EM did not converge in {n_iter} iterations on {n} rows "
            f"(last log-likelihood change {last:.3g} >= tol {cfg.tol:g})"
        )
    # log L(x) = log L(z) - n * sum(log std): the Jacobian of the standardization
    jac = n * float(np.log(scale).sum())
    means = center + model.means_ * scale
    covars = model.covars_ * np.outer(scale, scale)
    startprob = np.asarray(model.startprob_, dtype=np.float64)
    transmat = np.asarray(model.transmat_, dtype=np.float64)
    for name, arr in (("startprob", startprob), ("transmat", transmat), ("means", means), ("covars", covars)):
        if not np.isfinite(arr).all():
            raise HmmFitError(f"fit_hmm: fitted {name} is not finite: {arr.tolist()}")
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
        )
    )
    try:
        prepare_filter(result)
    except ValueError as exc:
        raise HmmFitError(f"fit_hmm: unusable parameters: {exc}") from exc
    return result


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


def forward_filter(X: np.ndarray, params: FilterParams, log_alpha0: np.ndarray | None = None) -> np.ndarray:
    """Run ``forward_step`` over rows of ``X`` (bit-identical to stepping one
    row at a time).

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
        la = forward_step(la, row, params)
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
#: exceeds this many windows (the filter itself needs no history)
_HISTORY_CAP_WINDOWS = 20


def _enc_floats(values: np.ndarray) -> list[float | str]:
    """Floats for JSON; non-finite as their repr string (strict JSON has no -inf)."""
    return [v if math.isfinite(v) else repr(v) for v in values.tolist()]


def _dec_floats(values: Sequence[float | str]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


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
    ``forward_step`` per new row. One fit per model instance (refits are a
    later issue).

    The feature rows since the fit window start are kept (one row per bar,
    two floats; ~1 MB of Python floats per 60k bars). Before ``fit_job`` only
    the last ``warmup`` rows are kept.

    No hidden global state: two instances never share anything.

    Args:
        model_id: e.g. ``"hmm_v1"`` (a name; the stage is not parsed from it).
        instrument_id: the instrument whose bars this model takes.
        cfg: the configuration.
    """

    def __init__(self, model_id: str, instrument_id: InstrumentId, cfg: HmmConfig) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id: expected a non-empty str, got {model_id!r}")
        self.model_id = model_id
        self.instrument_id = instrument_id
        self.cfg = cfg
        self._returns: deque[float] = deque(maxlen=cfg.vol_window)
        self._last_close: float | None = None
        self._last_ts: int | None = None
        self._n_bars = 0
        self._n_rows = 0  # feature rows ever produced
        self._history: list[tuple[float, float]] = []
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

    # -- RegimeModel -------------------------------------------------------------

    def observe(self, bar: Bar) -> None:
        """Take one bar (in time order): update the features and, once a fit
        is installed, the posterior with one forward-filter step.

        A bar whose ``ts_event`` is not after the last observed one is
        ignored (idempotent re-delivery after a restart).

        Raises:
            ValueError: if the bar is of another instrument or its close is
                not a finite positive number.
        """
        if bar.instrument_id != self.instrument_id:
            raise ValueError(f"{self.model_id}: bar of {bar.instrument_id}, model trades {self.instrument_id}")
        if self._last_ts is not None and bar.ts_event <= self._last_ts:
            return
        close = _close_float(bar.close)
        self._last_ts = bar.ts_event
        self._n_bars += 1
        prev, self._last_close = self._last_close, close
        if prev is None:
            return
        r = math.log(close / prev)
        self._returns.append(r)
        w = self.cfg.vol_window
        if len(self._returns) < w:
            return
        row = (r, _realized_vol(self._returns, w))
        self._history.append(row)
        self._n_rows += 1
        if not self._window_chosen and self._fit is None and len(self._history) > self.cfg.warmup:
            del self._history[0]
            self._history_start += 1
        if self._fp is not None:
            self._log_alpha = forward_step(self._log_alpha, np.array(row), self._fp)
            self._update_target()
            if len(self._history) > _HISTORY_CAP_WINDOWS * self.cfg.warmup:
                # bounded memory on long runs: keep the trailing windows only
                drop = len(self._history) - self.cfg.warmup
                del self._history[:drop]
                self._history_start += drop

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
        """``(fit_hmm, (window, cfg))``: window is the (warmup, 2) float64
        array of the fit window's feature rows. Marks the fit pending.

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
        """Install a fit (``FitResult`` or its ``to_dict()``), canonicalized,
        and run the forward filter over every feature row since the fit window
        start, so the posterior equals the filter over that history; later
        bars step it incrementally.

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
        fit = canonicalize(fit)
        if fit.n_states != self.cfg.n_states or len(fit.means[0]) != N_FEATURES:
            raise ValueError(
                f"{self.model_id}: fit has {fit.n_states} states x {len(fit.means[0])} features, "
                f"expected {self.cfg.n_states} x {N_FEATURES}"
            )
        fp = prepare_filter(fit)
        la = None
        for row in self._history:
            la = forward_step(la, np.array(row), fp)
        self._fit, self._fp, self._log_alpha = fit, fp, la
        self._in_flight = False
        self._baseline = stationary_baseline(fit) if self.cfg.relative else 0.0
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
        excess = len(self._history) - self.cfg.warmup
        if excess > 0:
            del self._history[:excess]
            self._history_start += excess

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
        """(most likely canonical state, 0 = lowest return variance; its
        posterior probability) or None while not ready."""
        if self._log_alpha is None:
            return None
        k = int(np.argmax(self._log_alpha))
        return k, math.exp(float(self._log_alpha[k]))

    def _fit_dict(self) -> dict[str, Any]:
        """The installed fit as a dict, computed once per fit (the state is
        saved with every order commit)."""
        cached = getattr(self, "_fit_dict_cache", None)
        if cached is None or cached[0] is not self._fit:
            cached = (self._fit, self._fit.to_dict() if self._fit is not None else None)
            self._fit_dict_cache = cached
        return cached[1]  # type: ignore[return-value]

    def _dropped_on_save(self) -> int:
        """Rows a saved state leaves out: once a fit is installed the filter
        continues from ``log_alpha`` alone, so the saved state keeps no
        feature history (it is written with every order commit and must stay
        small; a refit schedule would rebuild its window from stored bars)."""
        if self._fit is None:
            return 0
        return len(self._history)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state (strict JSON: -inf is written as the string
        ``"-inf"``): config, fit parameters, log posterior, the last close and
        ``vol_window`` returns, the feature rows since the fit window start,
        counters, and whether a fit is pending. ``load_state_dict`` of it into
        a fresh model continues bit-identically."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "model_id": self.model_id,
            "instrument_id": str(self.instrument_id),
            "config": self._cfg_dict,
            "n_bars": self._n_bars,
            "n_rows": self._n_rows,
            "last_ts": self._last_ts,
            "last_close": self._last_close,
            "returns": list(self._returns),
            "history_start": self._history_start + self._dropped_on_save(),
            "history": [list(r) for r in self._history[self._dropped_on_save():]],
            "pending": self._window_chosen and self._fit is None,
            "long": self._long,
            "target": None if self._target is None else format(self._target, "f"),
            "fit": None if self._fit is None else self._fit_dict(),
            "log_alpha": None if self._log_alpha is None else _enc_floats(self._log_alpha),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (also after a JSON round
        trip). A fit that was pending when the state was saved is pending
        again but not in flight: ``fit_due()`` is true and ``fit_job()``
        returns the same window, so the same (deterministic) fit follows.

        Raises:
            ValueError: if the state is of another format/version, model,
                instrument or configuration, or is inconsistent.
        """
        if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"{self.model_id}: not a {_STATE_FORMAT} v{_STATE_VERSION} state: "
                f"{state.get('format')!r} v{state.get('version')!r}"
            )
        if state["model_id"] != self.model_id or state["instrument_id"] != str(self.instrument_id):
            raise ValueError(
                f"{self.model_id}: state is of {state['model_id']} on {state['instrument_id']}, "
                f"not {self.model_id} on {self.instrument_id}"
            )
        if HmmConfig.from_dict(state["config"]) != self.cfg:
            raise ValueError(f"{self.model_id}: state has another configuration: {state['config']}")
        returns = [float(r) for r in state["returns"]]
        history = [(float(r), float(v)) for r, v in state["history"]]
        if len(returns) > self.cfg.vol_window:
            raise ValueError(f"{self.model_id}: state has {len(returns)} returns > vol_window")
        fit = None if state["fit"] is None else FitResult.from_dict(state["fit"])
        fp = None if fit is None else prepare_filter(fit)
        la = None if state["log_alpha"] is None else _dec_floats(state["log_alpha"])
        if (fit is None) != (la is None) or (la is not None and la.shape != (self.cfg.n_states,)):
            raise ValueError(f"{self.model_id}: state has a fit without a posterior or vice versa")
        self._returns = deque(returns, maxlen=self.cfg.vol_window)
        self._last_close = None if state["last_close"] is None else float(state["last_close"])
        self._last_ts = None if state["last_ts"] is None else int(state["last_ts"])
        self._n_bars = int(state["n_bars"])
        self._n_rows = int(state["n_rows"])
        self._history = history
        self._history_start = int(state["history_start"])
        self._window_chosen = bool(state["pending"]) or fit is not None
        self._in_flight = False
        self._fit, self._fp, self._log_alpha = fit, fp, la
        self._long = bool(state.get("long", False))
        self._baseline = stationary_baseline(fit) if (self.cfg.relative and fit is not None) else 0.0
        target = state.get("target")
        self._target = None if target is None or fp is None else Decimal(target)

    # -- read-only views (UI, tests, benches) ----------------------------------

    @property
    def fit_result(self) -> FitResult | None:
        """The installed fit (canonical order), or None."""
        return self._fit

    @property
    def filter_params(self) -> FilterParams | None:
        """The installed fit's precomputed filter constants, or None."""
        return self._fp

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

    def feature_history(self) -> np.ndarray:
        """(n, 2) float64 copy of the kept feature rows: since the fit window
        start once ``fit_job`` was called, else the last ``warmup`` rows."""
        return np.array(self._history, dtype=np.float64).reshape(len(self._history), N_FEATURES)
