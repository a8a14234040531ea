"""Ensemble of HMM regime models on one instrument (DESIGN.md section 5:
"An ensemble combines several models' posteriors").

``EnsembleModel`` wraps several member ``HmmRegimeModel`` s (each with its
own ``HmmConfig``: states, covariance type, features, window) and implements
the same interface as ``HmmRegimeModel`` (``core.ports.RegimeModel`` plus
``abandon_fit``, ``refit_due``, ``spawn``, ``last_fit_info``,
``fit_result``, ``posterior``, ``moments``), so the engine drives it the
same way.

The combination, precisely. Each member m gives its long probability
``q_m`` = the posterior mass of its long states (``HmmRegimeModel.
long_probability``: states whose own per-bar ratio ``mu_k / sigma_k``
(minus the member's baseline when ``relative``) is above the member's
threshold). With weights ``w_m > 0`` (default all 1):

* ``method="mean"``: the score is the weighted mean long probability
  ``S = sum_m w_m q_m / sum_m w_m``.
* ``method="vote"``: each member votes long when ``q_m > 1/2`` (majority by
  probability; exactly 1/2 is no vote); the score is the weighted share of
  long votes ``S = sum_m w_m [q_m > 1/2] / sum_m w_m``.

The target is ``max_fraction`` when ``S > threshold`` (default 1/2: a strict
weighted majority for "vote"), else 0, as a Decimal quantized down to
0.0001 like ``policy_target``. (Weighted averaging of member posteriors:
model averaging in the sense of Hoeting et al. 1999, "Bayesian Model
Averaging: A Tutorial", Statistical Science 14(4), with fixed weights; the
vote is the weighted majority vote of Littlestone & Warmuth 1994.)

Fits: ``fit_job`` returns ONE picklable job, ``fit_ensemble(windows,
configs)``, that fits every member's window in one call (one worker round
trip) and returns an ``EnsembleFitResult``; a member that cannot be fitted
fails the whole job with ``HmmFitError`` naming it, and nothing is
installed. ``apply_fit`` installs all members' fits or none.

Nothing here imports hmmlearn at module level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Sequence

import numpy as np

from core.data import Bar
from core.identifiers import InstrumentId
from models.hmm import FRACTION_QUANTUM, FitResult, HmmConfig, HmmFitError, HmmRegimeModel, fit_hmm

__all__ = ["EnsembleConfig", "EnsembleFitResult", "EnsembleModel", "combine", "fit_ensemble"]

METHODS = ("mean", "vote")

_STATE_FORMAT = "ensemble_regime_model"
_STATE_VERSION = 1


def combine(long_probs: Sequence[float], weights: Sequence[float], method: str) -> float:
    """The ensemble score from the members' long probabilities.

    Args:
        long_probs: (M,) each member's long probability ``q_m`` in [0, 1].
        weights: (M,) positive weights.
        method: ``"mean"``: ``sum w q / sum w``; ``"vote"``:
            ``sum w [q > 1/2] / sum w`` (see the module docstring).

    Returns:
        The score in [0, 1].

    Raises:
        ValueError: on a length mismatch, an unknown method, a probability
            outside [0, 1] or not finite, or a weight that is not positive.
    """
    q = [float(v) for v in long_probs]
    w = [float(v) for v in weights]
    if len(q) != len(w) or not q:
        raise ValueError(f"combine: {len(q)} long probabilities for {len(w)} weights")
    if method not in METHODS:
        raise ValueError(f"combine: method must be one of {METHODS}, got {method!r}")
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in q):
        raise ValueError(f"combine: long probabilities must be in [0, 1], got {q}")
    if not all(math.isfinite(v) and v > 0 for v in w):
        raise ValueError(f"combine: weights must be positive, got {w}")
    total = math.fsum(w)
    if method == "mean":
        return min(1.0, math.fsum(wi * qi for wi, qi in zip(w, q)) / total)
    return math.fsum(wi for wi, qi in zip(w, q) if qi > 0.5) / total


@dataclass(frozen=True)
class EnsembleConfig:
    """Configuration of an ensemble (immutable, picklable).

    Attributes:
        members: the members' ``HmmConfig`` s (at least one; dicts are
            accepted and converted).
        weights: one positive weight per member, or None for all 1.
        method: ``"mean"`` (default) or ``"vote"``; see ``combine``.
        threshold: long when the score is strictly above this, in [0, 1)
            (default 0.5).
        max_fraction: target fraction of the budget when long, in [0, 1]
            (default 1.0).

    Raises:
        ValueError: naming the field when a value is out of range.
    """

    members: tuple[HmmConfig, ...]
    weights: tuple[float, ...] | None = None
    method: str = "mean"
    threshold: float = 0.5
    max_fraction: float = 1.0

    def __post_init__(self) -> None:
        ms = self.members
        if isinstance(ms, (HmmConfig, dict)) or not isinstance(ms, (tuple, list)) or not ms:
            raise ValueError(f"EnsembleConfig.members: expected a non-empty list of HmmConfig, got {ms!r}")
        ms = tuple(HmmConfig.from_dict(m) if isinstance(m, dict) else m for m in ms)
        if not all(isinstance(m, HmmConfig) for m in ms):
            raise ValueError(f"EnsembleConfig.members: expected HmmConfig entries, got {ms!r}")
        object.__setattr__(self, "members", ms)
        if self.weights is not None:
            w = self.weights
            if not isinstance(w, (tuple, list)) or len(w) != len(ms) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in w
            ):
                raise ValueError(
                    f"EnsembleConfig.weights: expected {len(ms)} positive numbers or None, got {w!r}"
                )
            object.__setattr__(self, "weights", tuple(float(v) for v in w))
        if self.method not in METHODS:
            raise ValueError(f"EnsembleConfig.method: expected one of {METHODS}, got {self.method!r}")
        for name, lo, hi, hi_open in (("threshold", 0.0, 1.0, True), ("max_fraction", 0.0, 1.0, False)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v
            ok = ok and (v < hi if hi_open else v <= hi)
            if not ok:
                raise ValueError(f"EnsembleConfig.{name}: expected a number in [{lo}, {hi}{')' if hi_open else ']'}, got {v!r}")

    @property
    def member_weights(self) -> tuple[float, ...]:
        """The weights, 1.0 each when none were given."""
        return self.weights if self.weights is not None else (1.0,) * len(self.members)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict."""
        return {
            "members": [m.to_dict() for m in self.members],
            "weights": None if self.weights is None else list(self.weights),
            "method": self.method,
            "threshold": self.threshold,
            "max_fraction": self.max_fraction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EnsembleConfig":
        """Build from ``to_dict()`` output.

        Raises:
            ValueError: on unknown fields or invalid values.
        """
        unknown = set(data) - {"members", "weights", "method", "threshold", "max_fraction"}
        if unknown:
            raise ValueError(f"EnsembleConfig: unknown fields {sorted(unknown)}")
        d = dict(data)
        if isinstance(d.get("weights"), list):
            d["weights"] = tuple(d["weights"])
        return cls(**d)


@dataclass
class EnsembleFitResult:
    """The members' fits, in member order (picklable; ``to_dict`` is JSON;
    ``EnsembleFitResult(**dataclasses.asdict(r))`` rebuilds it, as the
    engine's checkpoint does).

    Attributes:
        members: one ``FitResult`` per member (dicts are converted).
    """

    members: list[FitResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = [m if isinstance(m, FitResult) else FitResult.from_dict(m) for m in self.members]

    @property
    def n_iter(self) -> int:
        """The most EM iterations any member took."""
        return max((m.n_iter for m in self.members), default=0)

    @property
    def converged(self) -> bool:
        """True when every member converged."""
        return all(m.converged for m in self.members)

    @property
    def log_likelihood(self) -> list[float]:
        """One value: the sum of the members' final log-likelihoods (nats;
        each on its own features, so only comparable between fits of the
        same ensemble); empty when a member has none."""
        finals = [m.log_likelihood[-1] for m in self.members if m.log_likelihood]
        return [math.fsum(finals)] if len(finals) == len(self.members) and finals else []

    @property
    def n_samples(self) -> int:
        """Rows fitted, summed over the members."""
        return sum(m.n_samples for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict ``{"members": [FitResult.to_dict(), ...]}``."""
        return {"members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EnsembleFitResult":
        """Build from ``to_dict()`` output.

        Raises:
            ValueError: on unknown fields or a bad member.
        """
        if set(data) != {"members"}:
            raise ValueError(f"EnsembleFitResult: expected only 'members', got {sorted(data)}")
        return cls(members=list(data["members"]))


def fit_ensemble(windows: Sequence[np.ndarray], configs: Sequence[HmmConfig]) -> EnsembleFitResult:
    """Fit every member's window (``models.hmm.fit_hmm``) in one call.

    Top-level and picklable, for ``FitExecutor.submit(fit_ensemble, windows,
    configs)``.

    Args:
        windows: one (warmup_m, D_m) feature window per member.
        configs: the members' configs, same order.

    Returns:
        EnsembleFitResult, members in order, each canonical.

    Raises:
        ValueError: on a length mismatch, or as ``fit_hmm``.
        HmmFitError: ``"member i: <cause>"`` for the first member that
            cannot be fitted (see ``fit_hmm``).
    """
    if len(windows) != len(configs):
        raise ValueError(f"fit_ensemble: {len(windows)} windows for {len(configs)} configs")
    out = []
    for i, (w, c) in enumerate(zip(windows, configs)):
        try:
            out.append(fit_hmm(w, c))
        except HmmFitError as exc:
            raise HmmFitError(f"member {i}: {exc}") from exc
    return EnsembleFitResult(members=out)


class EnsembleModel:
    """Several HMM regime models on one instrument, combined into one target
    (see the module docstring for the rule). Implements
    ``core.ports.RegimeModel`` and the rest of ``HmmRegimeModel``'s
    interface used by the engine.

    Members are ``HmmRegimeModel`` s named ``"<model_id>#<i>"``; they see
    every bar. The ensemble is due for its fit when every member has its
    warm-up window; it is ready when every member is.

    Args:
        model_id: e.g. ``"ens_v1"``.
        instrument_id: the instrument.
        cfg: the ``EnsembleConfig``.

    Raises:
        ValueError: if ``model_id`` is empty.
    """

    def __init__(self, model_id: str, instrument_id: InstrumentId, cfg: EnsembleConfig) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id: expected a non-empty str, got {model_id!r}")
        self.model_id = model_id
        self.instrument_id = instrument_id
        self.cfg = cfg
        self.members = [HmmRegimeModel(f"{model_id}#{i}", instrument_id, c) for i, c in enumerate(cfg.members)]
        self._weights = cfg.member_weights
        self._in_flight = False
        self._score: float | None = None
        self._mean_q: float | None = None
        self._target: Decimal | None = None

    # -- RegimeModel -------------------------------------------------------------

    def observe(self, bar: Bar) -> None:
        """Take one bar: every member observes it, then the score and target
        are recomputed once.

        Raises:
            ValueError: as ``HmmRegimeModel.observe`` (another instrument, a
                bad close or volume).
        """
        if bar.instrument_id != self.instrument_id:
            raise ValueError(f"{self.model_id}: bar of {bar.instrument_id}, model trades {self.instrument_id}")
        for m in self.members:
            m.observe(bar)
        self._update()

    def _update(self) -> None:
        qs = [m.long_probability() for m in self.members]
        if any(q is None for q in qs):
            self._score = self._mean_q = self._target = None
            return
        self._score = combine(qs, self._weights, self.cfg.method)  # type: ignore[arg-type]
        self._mean_q = self._score if self.cfg.method == "mean" else combine(qs, self._weights, "mean")  # type: ignore[arg-type]
        frac = float(self.cfg.max_fraction) if self._score > self.cfg.threshold else 0.0
        self._target = Decimal(repr(frac)).quantize(FRACTION_QUANTUM, rounding=ROUND_DOWN)

    def fit_due(self) -> bool:
        """True when no fit is installed or in flight and every member has
        its warm-up window (``HmmRegimeModel.fit_due``)."""
        if self._in_flight or self.is_ready():
            return False
        return all(m.fit_due() for m in self.members)

    def fit_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """``(fit_ensemble, (windows, configs))``: one job for all members.
        Marks every member's fit pending.

        Raises:
            RuntimeError: if ``fit_due()`` is false.
        """
        if not self.fit_due():
            raise RuntimeError(f"{self.model_id}: fit_job() called while no fit is due")
        windows, configs = [], []
        for m in self.members:
            _, (w, c) = m.fit_job()
            windows.append(w)
            configs.append(c)
        self._in_flight = True
        return fit_ensemble, (tuple(windows), tuple(configs))

    def apply_fit(self, result: Any) -> None:
        """Install every member's fit (``EnsembleFitResult`` or its
        ``to_dict()``/``asdict``), all or none.

        Raises:
            RuntimeError: if no fit is pending.
            ValueError: on another number of members, or a member fit that
                ``HmmRegimeModel.apply_fit`` refuses; the model is then
                unchanged and the fit stays pending.
        """
        if self.is_ready() or not all(m.fit_pending for m in self.members):
            raise RuntimeError(f"{self.model_id}: apply_fit() without a pending fit")
        res = result if isinstance(result, EnsembleFitResult) else EnsembleFitResult.from_dict(result)
        if len(res.members) != len(self.members):
            raise ValueError(f"{self.model_id}: fit has {len(res.members)} members, expected {len(self.members)}")
        saved = [m.state_dict() for m in self.members]
        try:
            for m, fit in zip(self.members, res.members):
                m.apply_fit(fit)
        except Exception:
            for m, st in zip(self.members, saved):  # all or none: back to pending
                m.load_state_dict(st)
            raise
        self._in_flight = False
        self._update()

    def abandon_fit(self) -> None:
        """Forget a pending fit (its job failed): every member abandons its
        window, and ``fit_due()`` turns true again once all have one."""
        for m in self.members:
            m.abandon_fit()
        self._in_flight = False

    def is_ready(self) -> bool:
        """True once every member is ready."""
        return all(m.is_ready() for m in self.members)

    def target_fraction(self) -> Decimal | None:
        """``max_fraction`` when the score is above ``cfg.threshold``, else 0
        (Decimal, quantized down to 0.0001); None while not ready."""
        return self._target

    def regime(self) -> tuple[int, float] | None:
        """A two-regime view: ``(1, Q)`` when the weighted mean long
        probability Q is at least 1/2, else ``(0, 1 - Q)`` (1 = long
        regime); None while not ready."""
        q = self._mean_q
        if q is None:
            return None
        return (1, q) if q >= 0.5 else (0, 1.0 - q)

    # -- retraining ----------------------------------------------------------------

    def refit_due(self) -> bool:
        """True when the ensemble is ready and some member's
        ``refit_due()`` is (the fastest member schedule drives them all:
        ``spawn`` refits every member)."""
        return self.is_ready() and any(m.refit_due() for m in self.members)

    def spawn(self, new_model_id: str) -> "EnsembleModel":
        """A new ensemble (same config and instrument) whose members are the
        members' ``spawn`` s (trailing windows, buffers, states matched to
        this version's members); ``fit_due()`` is true. Every member's
        schedule restarts here.

        Raises:
            ValueError: if ``new_model_id`` is empty or equals this id.
            RuntimeError: if a member lacks its trailing window.
        """
        if new_model_id == self.model_id:
            raise ValueError(f"spawn: new_model_id must differ from {self.model_id!r}")
        child = EnsembleModel(new_model_id, self.instrument_id, self.cfg)
        for m in self.members:
            if len(m.feature_history()) < m.cfg.warmup:
                raise RuntimeError(f"{m.model_id}: spawn needs the last {m.cfg.warmup} feature rows")
        child.members = [m.spawn(f"{new_model_id}#{i}") for i, m in enumerate(self.members)]
        return child

    def last_fit_info(self) -> dict[str, Any]:
        """The installed fits' facts ({} while not ready): the training
        window from the earliest member window start to the latest end
        (``window_first_ts_ns``, ``window_last_ts_ns``, UTC ns or None),
        ``n_iter`` (max), ``converged`` (all), ``log_likelihood`` (sum of
        the finals), ``n_samples`` and ``n_dropped`` (sums), and
        ``members``: each member's ``last_fit_info()``."""
        if not self.is_ready():
            return {}
        infos = [m.last_fit_info() for m in self.members]
        firsts = [i["window_first_ts_ns"] for i in infos]
        lasts = [i["window_last_ts_ns"] for i in infos]
        lls = [i["log_likelihood"] for i in infos]
        return {
            "window_first_ts_ns": None if None in firsts else min(firsts),
            "window_last_ts_ns": None if None in lasts else max(lasts),
            "n_iter": max(i["n_iter"] for i in infos),
            "converged": all(i["converged"] for i in infos),
            "log_likelihood": None if None in lls else math.fsum(lls),
            "n_samples": sum(i["n_samples"] for i in infos),
            "n_dropped": sum(i["n_dropped"] for i in infos),
            "members": infos,
        }

    # -- state ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: config and every member's
        ``state_dict``. ``load_state_dict`` into a fresh ensemble continues
        bit-identically; a fit pending at save is due again."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "model_id": self.model_id,
            "instrument_id": str(self.instrument_id),
            "config": self.cfg.to_dict(),
            "members": [m.state_dict() for m in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (also after a JSON round
        trip).

        Raises:
            ValueError: if the state is of another format/version, model,
                instrument, method, weights or member configuration, or a
                member refuses its state.
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
        cfg = EnsembleConfig.from_dict(state["config"])
        same = (
            len(cfg.members) == len(self.cfg.members)
            and (cfg.method, cfg.threshold, cfg.max_fraction, cfg.member_weights)
            == (self.cfg.method, self.cfg.threshold, self.cfg.max_fraction, self.cfg.member_weights)
        )
        if not same:
            raise ValueError(f"{self.model_id}: state has another ensemble configuration: {state['config']}")
        fresh = [HmmRegimeModel(m.model_id, self.instrument_id, m.cfg) for m in self.members]
        for m, st in zip(fresh, state["members"]):
            m.load_state_dict(st)
        self.members = fresh
        self._in_flight = False
        self._update()

    # -- read-only views -------------------------------------------------------------

    @property
    def fit_result(self) -> EnsembleFitResult | None:
        """The members' installed fits, or None while not ready."""
        if not self.is_ready():
            return None
        return EnsembleFitResult(members=[m.fit_result for m in self.members])  # type: ignore[misc]

    def score(self) -> float | None:
        """The combined score S (see the module docstring); None while not
        ready."""
        return self._score

    def long_probability(self) -> float | None:
        """The weighted mean of the members' long probabilities; None while
        not ready."""
        return self._mean_q

    def posterior(self) -> np.ndarray | None:
        """(2,) ``[1 - Q, Q]`` with Q the weighted mean long probability
        (the two-regime view of ``regime``); None while not ready."""
        q = self._mean_q
        return None if q is None else np.array([1.0 - q, q])

    def moments(self) -> tuple[float, float] | None:
        """(mu, sigma): the weighted means of the members' ``moments()``
        (expected log return and return volatility per bar); None while not
        ready."""
        ms = [m.moments() for m in self.members]
        if any(v is None for v in ms):
            return None
        total = math.fsum(self._weights)
        mu = math.fsum(w * v[0] for w, v in zip(self._weights, ms)) / total  # type: ignore[index]
        sigma = math.fsum(w * v[1] for w, v in zip(self._weights, ms)) / total  # type: ignore[index]
        return mu, sigma
