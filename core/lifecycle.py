"""The model lifecycle: registry, refits, canary analysis, capital allocator
(issue 7; DESIGN.md sections 3 and 5).

Words (Flagger / Argo Rollouts, MLflow-style aliases): a **family** is a
slot of the strategy (``hmm``); its **versions** are named models
(``hmm_v1``, ``hmm_v2_canary``, ``hmm_v3``; the id is a name, the stage a
field) in one of the **stages** ``live``, ``canary``, ``paused``,
``retired``. One live version and at most one canary per family.

**Budgets** (DESIGN.md section 3): a version's budget is the allocator's
family budget × its stage weight (1 for the live version, the canary's step
weight for the canary, 0 when retired), nothing else. The engine keeps it as
``engine.weights[model_id]`` = family weight × stage weight (fraction of the
desk's trading capital); the router turns it into a quote budget per
instrument. A manual weight (keys, ``POST /strategy/weights``) pins the stage
weight, pauses canary stepping for that family, shows as "manual", and holds
until cleared.

**Refits**: a live version whose model says ``refit_due()`` (every N bars of
its instrument, counted on observed bars, so replay is deterministic) spawns a
candidate version per instrument holding the trailing window; the candidate
observes bars like any model, its fit runs on the FitExecutor off the event
loop and is applied at a bar fixed by the engine clock. Once every
instrument's fit is installed the candidate is registered as the family's
canary (replacing the canary under analysis, whose analysis restarts; the
replaced one is retired and its position unwound). A failed fit discards the
candidate with an alert; the live version is untouched. The live version
changes only by promotion.

**Canary analysis** (:class:`core.analysis.CanaryAnalysis`): every
``analysis_interval_ns`` of engine clock each canary's interval return (its
PnL change over the interval divided by its budget at the interval start) is
compared with the live version's on the same bars; passing intervals step the
weight up the ladder, failures count toward the threshold, promotion logs
``[CANARY] PROMOTED <id>``, rollback ``[CANARY] ROLLED BACK <id>`` with the
figures; every verdict is journaled (``CanaryAnalysed``) and audited.

**Allocator**: every ``allocation_period_ns`` of engine clock (default 30 s;
in a replay of 1-minute bars that is once per bar) each family's return over
the period (its PnL change, realized + unrealized over all its versions,
divided by its budget at the period start; 0 when it did not trade) joins a
trailing window; :func:`core.analysis.allocate` sets the weights
(proportional to positive Sharpe, within floors and caps). A change of any
weight by at least ``rebalance_threshold`` (or the first allocation) is
emitted as ``AllocationChanged``, stored in the ``allocations`` table and
written to ``capital_allocations.json``; smaller moves are not applied, so the
router does not churn on noise.

Every decision, automatic or manual, is an event in the journal (and so in
the audit log) with who, why and the figures, and the registry's rows are
materialized in the store's ``models`` table.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.events import (
    AllocationChanged,
    CanaryAnalysed,
    CanaryPromoted,
    CanaryRolledBack,
    ModelStageChanged,
    ModelVersionRegistered,
)
from core.identifiers import InstrumentId
from core.router import target_quantity

if TYPE_CHECKING:
    from core.analysis import CanaryAnalysis, CanaryPolicy
    from core.engine import Engine
    from core.ports import RegimeModel

log = logging.getLogger("desk.canary")

NS = 1_000_000_000
ZERO = Decimal("0")
ONE = Decimal("1")
STAGES = ("live", "canary", "paused", "retired")
#: weights and stage weights are fractions kept to this quantum
WEIGHT_QUANTUM = Decimal("0.00001")

#: builds a model version for one instrument from its registry params:
#: ``factory(model_id, instrument_id, params) -> RegimeModel``
ModelFactory = Callable[[str, InstrumentId, dict[str, Any]], "RegimeModel"]


class LifecycleError(Exception):
    """A lifecycle command that cannot apply (unknown model, wrong stage,
    bad weight); the message names the model and the reason."""


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """A family and its allocator bounds (fractions of the desk's capital).

    Raises:
        ValueError: naming the field when floor/cap are outside [0, 1] or
            floor > cap.
    """

    family: str
    floor: Decimal = Decimal("0.25")
    cap: Decimal = ONE
    #: the weight before the first allocation (None: ``min(cap, max(floor, 1 / n))``)
    initial: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("floor", "cap") + (("initial",) if self.initial is not None else ()):
            v = getattr(self, name)
            if not isinstance(v, Decimal) or not v.is_finite() or not ZERO <= v <= ONE:
                raise ValueError(f"family {self.family}: {name}: expected a fraction in [0, 1], got {v!r}")
        if self.floor > self.cap:
            raise ValueError(f"family {self.family}: floor {self.floor} > cap {self.cap}")


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """Lifecycle settings (engine clock).

    Attributes:
        families: the families and their floors/caps.
        analysis_interval_ns: one canary analysis interval (default 30 min).
        allocation_period_ns: the allocator's period (default 30 s).
        allocation_window: trailing allocator periods in each family's
            Sharpe (default 1440: one day of 1-minute bars).
        allocation_min_periods: periods of record before the first
            allocation (until then the families keep their initial weights,
            ``min(cap, max(floor, 1 / n))``).
        rebalance_threshold: a weight change smaller than this (fraction of
            capital) is not applied.
        canary: the analysis policy (ladder, warm-up, thresholds); None:
            ``core.analysis.CanaryPolicy()``.
    """

    families: tuple[FamilySpec, ...]
    analysis_interval_ns: int = 30 * 60 * NS
    allocation_period_ns: int = 30 * NS
    allocation_window: int = 1440
    allocation_min_periods: int = 60
    rebalance_threshold: Decimal = Decimal("0.01")
    canary: "CanaryPolicy | None" = None
    #: False: budgets stay at the families' initial weights (no allocator)
    allocate: bool = True

    def __post_init__(self) -> None:
        if not self.families:
            raise ValueError("lifecycle: families: at least one family is needed")
        names = [f.family for f in self.families]
        if len(set(names)) != len(names):
            raise ValueError(f"lifecycle: families: duplicate names in {names}")
        floors = sum((f.floor for f in self.families), ZERO)
        if floors > ONE:
            raise ValueError(f"lifecycle: families: floors sum to {floors} > 1")
        for name in ("analysis_interval_ns", "allocation_period_ns", "allocation_window", "allocation_min_periods"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"lifecycle: {name}: expected an int >= 1, got {v!r}")


@dataclass(slots=True)
class VersionRecord:
    """One model version in the registry.

    Attributes:
        model_id: the version's name (``hmm_v3``).
        family: its family (``hmm``).
        version: integer, increasing within the family.
        stage: ``live``/``canary``/``paused``/``retired``.
        weight: the stage weight (fraction 0..1: 1 live, the step weight for
            a canary, 0 retired).
        manual: True when an operator pinned ``weight``.
        parent: the version it was refit from ("" for a seed).
        params: the model's configuration (JSON).
        diagnostics: fit figures (JSON: iterations, log-likelihood, ...).
        train_start_ns / train_end_ns: the training window (bar times).
        created_ns: engine clock at registration.
        paused_from: the stage to return to on resume (when paused).
        history: append-only list of ``{ts, stage, weight, who, reason}``.
    """

    model_id: str
    family: str
    version: int
    stage: str
    weight: Decimal
    manual: bool = False
    parent: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    train_start_ns: int = 0
    train_end_ns: int = 0
    created_ns: int = 0
    paused_from: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (Decimal as a string)."""
        return {
            "model_id": self.model_id, "family": self.family, "version": self.version, "stage": self.stage,
            "weight": format(self.weight, "f"), "manual": self.manual, "parent": self.parent,
            "params": self.params, "diagnostics": self.diagnostics, "train_start_ns": self.train_start_ns,
            "train_end_ns": self.train_end_ns, "created_ns": self.created_ns, "paused_from": self.paused_from,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VersionRecord":
        """Rebuild from :meth:`to_dict` output."""
        d = dict(d)
        d["weight"] = Decimal(d["weight"])
        return cls(**d)


def _pack(values: "deque[float]") -> str:
    """Floats as base64 of little-endian float64 (exact, and ~20x faster to
    write into the checkpoint than a JSON list of 1,440 float reprs)."""
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode("ascii")


def _unpack(data: "str | list[float]") -> list[float]:
    """:func:`_pack`'s inverse (a JSON list of floats is read as well)."""
    if isinstance(data, list):
        return [float(x) for x in data]
    import base64
    import struct

    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 8}d", raw))


def _q(x: Decimal) -> Decimal:
    return x.quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN)


class Lifecycle:
    """Registry, refits, canary analysis and allocator of one engine.

    Created by the engine (``engine.lifecycle``) from the seed specs; the
    engine calls :meth:`on_model_step` after each model observed a bar,
    :meth:`on_step` once per step, :meth:`on_fit_failed` when a fit job
    raised; governance calls :meth:`promote`, :meth:`rollback`,
    :meth:`set_weight`, :meth:`set_paused`.
    """

    def __init__(self, engine: "Engine", config: LifecycleConfig,
                 model_factory: ModelFactory | None = None) -> None:
        self.engine = engine
        self.config = config
        self._policy = config.canary
        self.factory = model_factory
        self.families = {f.family: f for f in config.families}
        self.registry: dict[str, VersionRecord] = {}
        n = len(config.families)
        self.family_weights: dict[str, Decimal] = {
            f.family: _q(f.initial if f.initial is not None else min(f.cap, max(f.floor, ONE / n)))
            for f in config.families
        }
        self.sharpe: dict[str, float] = {f.family: 0.0 for f in config.families}
        self.idle = _q(max(ZERO, ONE - sum(self.family_weights.values(), ZERO)))
        self.analyses: dict[str, CanaryAnalysis] = {}
        #: family -> {"start_ns", "pnl": {mid: str}, "fills": {mid: int}, "budget": {mid: str}, "n": int}
        self.intervals: dict[str, dict[str, Any]] = {}
        from core.analysis import RollingSharpe

        #: family -> trailing allocator period returns, with their running Sharpe
        self.period_returns: dict[str, RollingSharpe] = {
            f.family: RollingSharpe(max(2, config.allocation_window)) for f in config.families
        }
        self.period_start: dict[str, Any] = {}
        self.next_allocation_ns: int | None = None
        self.last_verdict: dict[str, dict[str, Any]] = {}
        #: candidate version id -> parent version id (refits being fitted)
        self.candidates: dict[str, str] = {}
        self.allocations_path: Path | None = None
        self.inconclusive_alerted: set[str] = set()
        self.allocation_count = 0
        self.refits = 0

    @property
    def policy(self) -> "CanaryPolicy":
        """The canary analysis policy (``core.analysis.CanaryPolicy()`` when
        the config gives none)."""
        if self._policy is None:
            from core.analysis import CanaryPolicy

            self._policy = CanaryPolicy()
        return self._policy

    # ------------------------------------------------------------ registry
    def register_seed(self, model_id: str, family: str, stage: str, weight: Decimal, params: dict[str, Any]) -> None:
        """Register a seed version (from the setup) unless the registry has it.

        Raises:
            LifecycleError: unknown family or stage, or a second live version
                or canary in the family.
        """
        if model_id in self.registry:
            return
        if family not in self.families:
            raise LifecycleError(f"model {model_id}: family {family!r} is not configured")
        if stage not in ("live", "canary"):
            raise LifecycleError(f"model {model_id}: a seed's stage must be live or canary, got {stage!r}")
        if self.version_in(family, stage) is not None:
            raise LifecycleError(f"model {model_id}: family {family} already has a {stage} version "
                                 f"({self.version_in(family, stage)})")
        version = 1 + max((r.version for r in self.registry.values() if r.family == family), default=0)
        weight = ONE if stage == "live" else weight
        rec = VersionRecord(model_id, family, version, stage, weight, params=params,
                            created_ns=self.engine.clock.timestamp_ns())
        self._add(rec, parent="", who="setup", reason="seed version")
        if stage == "canary":
            self._start_analysis(family)

    def _add(self, rec: VersionRecord, parent: str, who: str, reason: str) -> None:
        e = self.engine
        now = e.clock.timestamp_ns()
        rec.history.append({"ts": now, "stage": rec.stage, "weight": format(rec.weight, "f"), "who": who,
                            "reason": reason})
        self.registry[rec.model_id] = rec
        seq = e.emit(ModelVersionRegistered(
            ts_event=now, ts_init=now, model_id=rec.model_id, family=rec.family, model_version=rec.version,
            stage=rec.stage, parent=parent, who=who, reason=reason, train_start_ns=rec.train_start_ns,
            train_end_ns=rec.train_end_ns, params=rec.params, diagnostics=rec.diagnostics,
        ))
        self._store_row(rec, seq, created=True)
        self._apply_weights()

    def _store_row(self, rec: VersionRecord, seq: int, created: bool = False) -> None:
        e = self.engine
        instruments = ",".join(str(i) for i in sorted(e.models.get(rec.model_id, {}), key=str))
        e.store.upsert_model({
            "model_id": rec.model_id, "family": rec.family, "instrument_id": instruments, "version": rec.version,
            "stage": rec.stage, "weight": format(rec.weight, "f"), "params": json.dumps(rec.params, sort_keys=True),
            "diagnostics": json.dumps(rec.diagnostics, sort_keys=True), "train_start_ns": rec.train_start_ns,
            "train_end_ns": rec.train_end_ns, "created_seq": seq if created else None, "updated_seq": seq,
        })

    def version_in(self, family: str, stage: str) -> str | None:
        """The id of ``family``'s version in ``stage`` (live/canary; a paused
        version counts in the stage it was paused from), or None."""
        for r in self.registry.values():
            if r.family == family and (r.stage == stage or (r.stage == "paused" and r.paused_from == stage)):
                return r.model_id
        return None

    def record(self, model_id: str) -> VersionRecord:
        """The registry record of ``model_id``.

        Raises:
            LifecycleError: for an unknown id (the message lists the known ones).
        """
        rec = self.registry.get(model_id)
        if rec is None:
            raise LifecycleError(f"model: unknown {model_id!r}; known: {', '.join(sorted(self.registry))}")
        return rec

    def rows(self) -> list[dict[str, Any]]:
        """Registry rows for the UI and the API: id, family, version, stage,
        stage weight, manual, budget (quote), the last verdict of a canary."""
        e = self.engine
        out = []
        order = self.engine.model_index  # the order versions entered the engine: seeds as set up, then refits
        for r in sorted(self.registry.values(), key=lambda r: (order.get(r.model_id, len(order)), r.family, r.version)):
            v = self.last_verdict.get(r.model_id, {})
            a = self.analyses.get(r.family) if self.version_in(r.family, "canary") == r.model_id else None
            out.append({
                "model_id": r.model_id, "family": r.family, "version": r.version, "stage": r.stage,
                "weight": format(r.weight, "f"), "manual": r.manual, "parent": r.parent,
                "budget": format(e.weights.get(r.model_id, ZERO) * e.config.router.capital, "f"),
                "intervals": a.n_intervals if a is not None else None,
                "failures": a.failures if a is not None else None,
                "action": v.get("action", ""), "psr": v.get("figures", {}).get("psr"),
                "reason": v.get("reason", ""),
            })
        return out

    # ------------------------------------------------------------ weights
    def _apply_weights(self) -> None:
        """Recompute ``engine.weights`` (family weight × stage weight) and
        re-size the targets of every model whose budget changed, at the last
        mark of its instrument."""
        e = self.engine
        changed = []
        for mid in e.models:
            rec = self.registry.get(mid)
            if rec is None:  # a candidate being fitted: no budget
                w = ZERO
            elif rec.stage in ("retired",):
                w = ZERO
            else:
                w = _q(self.family_weights.get(rec.family, ZERO) * rec.weight)
            if e.weights.get(mid) != w:
                e.weights[mid] = w
                changed.append(mid)
        for mid in changed:
            per_inst = e.models[mid]
            for iid in per_inst:
                key = (mid, iid)
                target = e.targets.get(key)
                mark = e.portfolio.marks.get(iid)
                if target is None or mark is None:
                    continue
                budget = e.weights[mid] * e.config.router.capital / len(per_inst)
                e.target_qty[key] = target_quantity(target, budget, mark, e.instruments[iid])
                e.step_backoff.pop(key, None)

    def _set_stage(self, rec: VersionRecord, stage: str, weight: Decimal, who: str, reason: str,
                   manual: bool | None = None) -> None:
        e = self.engine
        prev = rec.stage
        rec.stage, rec.weight = stage, weight
        if manual is not None:
            rec.manual = manual
        now = e.clock.timestamp_ns()
        rec.history.append({"ts": now, "stage": stage, "weight": format(weight, "f"), "who": who, "reason": reason})
        seq = e.emit(ModelStageChanged(ts_event=now, ts_init=now, model_id=rec.model_id, family=rec.family,
                                       stage=stage, previous=prev, weight=weight, who=who, reason=reason,
                                       manual=rec.manual))
        if "paused" not in (stage, prev):  # a pause/resume is recorded once, as MODEL_PAUSED/MODEL_ACTIVE
            e.store.record_governance(seq, now, who, f"MODEL_STAGE_{stage.upper()}", reason,
                                      {"model_id": rec.model_id, "weight": format(weight, "f"), "previous": prev})
        self._store_row(rec, seq)
        if stage == "retired":
            e.paused.discard(rec.model_id)  # retired versions must be free to unwind
        self._apply_weights()

    # ------------------------------------------------------------ refits
    def on_model_step(self, model_id: str, iid: InstrumentId, model: "RegimeModel") -> None:
        """After ``model`` observed a bar: a live version whose model wants
        a refit spawns a candidate version (all instruments at once)."""
        rec = self.registry.get(model_id)
        if rec is None or rec.stage != "live" or model_id in self.candidates.values():
            return
        due = getattr(model, "refit_due", None)
        if due is None or not due():
            return
        spawn = getattr(model, "spawn", None)
        if spawn is None:
            return
        e = self.engine
        version = 1 + max((r.version for r in self.registry.values() if r.family == rec.family), default=0)
        version = max(version, 1 + max((int(c.rsplit("_v", 1)[-1]) for c in self.candidates
                                        if c.startswith(rec.family + "_v") and c.rsplit("_v", 1)[-1].isdigit()),
                                       default=0))
        new_id = f"{rec.family}_v{version}"
        per: dict[InstrumentId, Any] = {}
        for i, m in e.models[model_id].items():
            if i == iid:
                per[i] = spawn(new_id)
            else:
                other_due = getattr(m, "refit_due", None)
                try:
                    per[i] = m.spawn(new_id) if other_due is not None else None
                except RuntimeError:  # that instrument has no trailing window yet: retry at the next schedule
                    per[i] = None
        if any(v is None for v in per.values()):
            return
        e.models[new_id] = per
        e.weights[new_id] = ZERO
        e.model_index.setdefault(new_id, len(e.model_index))
        retry = getattr(e, "fit_retry_at", None)
        for key in [k for k in (retry or {}) if k[0] == new_id]:
            del retry[key]  # a rejected candidate's retry pause is not this new candidate's (same name)
        self.candidates[new_id] = model_id
        self.refits += 1
        log.info("[CANARY] REFIT %s from %s: fitting on the trailing window", new_id, model_id)

    def on_fit_failed(self, model_id: str, iid: InstrumentId, message: str) -> None:
        """A candidate's fit failed: the candidate is discarded (alert), the
        live version and the canary are kept."""
        if model_id not in self.candidates:
            return
        self._discard_candidate(model_id, f"fit failed on {iid}: {message}")

    def _discard_candidate(self, model_id: str, reason: str) -> None:
        e = self.engine
        parent = self.candidates.pop(model_id)
        e.models.pop(model_id, None)
        e.weights.pop(model_id, None)
        for key in [k for k in e.pending_fits if k[0] == model_id]:
            del e.pending_fits[key]
        for d in (e.targets, e.target_qty, e.model_bars, e.regimes, e.step_backoff):
            for key in [k for k in d if k[0] == model_id]:
                del d[key]
        e.alert("WARNING", "REFIT_REJECTED", f"refit {model_id} of {parent} rejected, {parent} kept: {reason}")

    def _promote_candidates(self) -> None:
        e = self.engine
        for mid in list(self.candidates):
            per = e.models.get(mid, {})
            if not per or not all(m.is_ready() for m in per.values()):
                continue
            parent = self.candidates.pop(mid)
            prec = self.registry[parent]
            family = prec.family
            info: dict[str, Any] = {}
            first = next(iter(per.values()))
            getter = getattr(first, "last_fit_info", None)
            if getter is not None:
                info = dict(getter())
            old = self.version_in(family, "canary")
            if old is not None:
                orec = self.registry[old]
                self._set_stage(orec, "retired", ZERO, "lifecycle", f"replaced by refit {mid}")
                self.analyses.pop(family, None)
                self.intervals.pop(family, None)
            version = int(mid.rsplit("_v", 1)[-1]) if mid.rsplit("_v", 1)[-1].isdigit() else 0
            params = dict(prec.params)  # a refit keeps its parent's configuration
            rec = VersionRecord(
                mid, family, version, "canary", self.policy.step_weights[0], parent=parent,
                params=params,
                diagnostics={k: v for k, v in info.items() if k not in ("window_first_ts_ns", "window_last_ts_ns")},
                train_start_ns=int(info.get("window_first_ts_ns") or 0),
                train_end_ns=int(info.get("window_last_ts_ns") or 0), created_ns=e.clock.timestamp_ns(),
            )
            self._add(rec, parent=parent, who="lifecycle",
                      reason=f"refit of {parent}" + (f", replaces canary {old} (analysis restarted)" if old else ""))
            log.info("[CANARY] STARTED %s (refit of %s)%s at %s%%", mid, parent,
                     f", replacing {old}" if old else "", rec.weight * 100)
            self._start_analysis(family)

    # ------------------------------------------------------------ analysis
    def _pnl(self, model_id: str) -> Decimal:
        pf = self.engine.portfolio
        return pf.realized(model_id) + pf.unrealized(model_id)

    def _start_analysis(self, family: str) -> None:
        canary = self.version_in(family, "canary")
        if canary is None:
            return
        from core.analysis import CanaryAnalysis

        w = self.registry[canary].weight
        # a seed canary off the ladder starts the analysis at the first step
        self.analyses[family] = CanaryAnalysis(self.policy, w if w in self.policy.step_weights else None)
        self.inconclusive_alerted.discard(canary)
        self._open_interval(family)

    def _open_interval(self, family: str) -> None:
        e = self.engine
        canary, live = self.version_in(family, "canary"), self.version_in(family, "live")
        ids = [m for m in (canary, live) if m is not None]
        self.intervals[family] = {
            "start_ns": e.clock.timestamp_ns(),
            "pnl": {m: format(self._pnl(m), "f") for m in ids},
            "fills": {m: e.portfolio.fills(m) for m in ids},
            "budget": {m: format(e.weights.get(m, ZERO) * e.config.router.capital, "f") for m in ids},
        }

    def _interval_return(self, iv: dict[str, Any], mid: str | None) -> tuple[float, int]:
        if mid is None or mid not in iv["pnl"]:
            return 0.0, 0
        budget = Decimal(iv["budget"][mid])
        change = self._pnl(mid) - Decimal(iv["pnl"][mid])
        fills = self.engine.portfolio.fills(mid) - int(iv["fills"][mid])
        return (float(change / budget) if budget > 0 else 0.0), fills

    def _analyse(self, now: int) -> None:
        for family, iv in list(self.intervals.items()):
            if now - iv["start_ns"] < self.config.analysis_interval_ns:
                continue
            canary, live = self.version_in(family, "canary"), self.version_in(family, "live")
            analysis = self.analyses.get(family)
            if canary is None or analysis is None:
                self.intervals.pop(family, None)
                continue
            crec = self.registry[canary]
            c_ret, c_fills = self._interval_return(iv, canary)
            l_ret, l_fills = self._interval_return(iv, live)
            if crec.manual or crec.stage == "paused":
                self._open_interval(family)
                continue  # a pinned or paused canary is not stepped (DESIGN.md section 3)
            from core.analysis import IntervalResult

            verdict = analysis.observe(IntervalResult(c_ret, l_ret, c_fills, l_fills))
            figures = {k: (v if isinstance(v, (int, str)) else repr(v)) for k, v in verdict.figures.items()}
            self.last_verdict[canary] = {"action": verdict.action, "figures": figures, "reason": verdict.reason}
            e = self.engine
            e.emit(CanaryAnalysed(ts_event=now, ts_init=now, model_id=canary, family=family,
                                  live_model_id=live or "", interval=analysis.n_intervals, action=verdict.action,
                                  weight=verdict.weight, reason=verdict.reason, figures=figures))
            if verdict.action == "step":
                log.info("[CANARY] STEP %s: %s", canary, verdict.reason)
                self._set_stage(crec, "canary", verdict.weight, "canary-analysis", verdict.reason)
            elif verdict.action == "promote":
                self._promote(canary, "canary-analysis", verdict.reason, figures)
            elif verdict.action == "rollback":
                self._rollback(canary, "canary-analysis", verdict.reason, figures)
            if family in self.analyses:  # still under analysis: the next interval at the new step weight
                self._open_interval(family)
            if verdict.action == "inconclusive" and canary not in self.inconclusive_alerted:
                self.inconclusive_alerted.add(canary)
                e.alert("WARNING", "CANARY_INCONCLUSIVE",
                        f"{canary}: no decision after {analysis.n_intervals} intervals, holding at "
                        f"{verdict.weight * 100:.0f}%: promote or roll back by hand ({verdict.reason})")

    def _promote(self, model_id: str, who: str, reason: str, figures: dict[str, Any]) -> None:
        e = self.engine
        rec = self.registry[model_id]
        family = rec.family
        old = self.version_in(family, "live")
        if old is not None and old != model_id:
            self._set_stage(self.registry[old], "retired", ZERO, who, f"superseded by {model_id}")
        self._set_stage(rec, "live", ONE, who, reason, manual=False)
        e.paused.discard(model_id)
        self.analyses.pop(family, None)
        self.intervals.pop(family, None)
        now = e.clock.timestamp_ns()
        seq = e.emit(CanaryPromoted(ts_event=now, ts_init=now, model_id=model_id, family=family,
                                    previous_live=old or "", who=who, reason=reason, figures=figures))
        e.store.record_governance(seq, now, who, "CANARY_PROMOTED", reason, {"model_id": model_id, **figures})
        log.warning("[CANARY] PROMOTED %s (replaces %s): %s", model_id, old or "-", reason)
        e.alert("INFO", "CANARY_PROMOTED", f"[CANARY] PROMOTED {model_id} (replaces {old or '-'}): {reason}")

    def _rollback(self, model_id: str, who: str, reason: str, figures: dict[str, Any]) -> None:
        e = self.engine
        rec = self.registry[model_id]
        self._set_stage(rec, "retired", ZERO, who, f"rolled back: {reason}", manual=False)
        self.analyses.pop(rec.family, None)
        self.intervals.pop(rec.family, None)
        now = e.clock.timestamp_ns()
        seq = e.emit(CanaryRolledBack(ts_event=now, ts_init=now, model_id=model_id, family=rec.family, who=who,
                                      reason=reason, figures=figures))
        e.store.record_governance(seq, now, who, "CANARY_ROLLED_BACK", reason, {"model_id": model_id, **figures})
        log.warning("[CANARY] ROLLED BACK %s: %s", model_id, reason)
        e.alert("WARNING", "CANARY_ROLLED_BACK", f"[CANARY] ROLLED BACK {model_id}: {reason}")

    # ------------------------------------------------------------ operator commands
    def decide_by_hand(self, action: str, model_id: str, who: str, reason: str) -> None:
        """``promote`` a canary (or a paused canary) to live, or ``rollback``
        it (retired, its position unwound), by an operator.

        Raises:
            LifecycleError: unknown id, the version is not a canary, or an
                unknown action.
        """
        if action not in ("promote", "rollback"):
            raise LifecycleError(f"action: expected promote or rollback, got {action!r}")
        rec = self.record(model_id)
        if not (rec.stage == "canary" or (rec.stage == "paused" and rec.paused_from == "canary")):
            verb = "promoted" if action == "promote" else "rolled back"
            raise LifecycleError(f"model {model_id}: only a canary can be {verb}; it is {rec.stage}")
        a = self.analyses.get(rec.family)
        figures = {"intervals": a.n_intervals if a else 0, "by": "hand"}
        (self._promote if action == "promote" else self._rollback)(model_id, who, reason, figures)

    def promote(self, model_id: str, who: str, reason: str) -> None:
        """Promote a canary by hand (:meth:`decide_by_hand`)."""
        self.decide_by_hand("promote", model_id, who, reason)

    def rollback(self, model_id: str, who: str, reason: str) -> None:
        """Roll a canary back by hand (:meth:`decide_by_hand`)."""
        self.decide_by_hand("rollback", model_id, who, reason)

    def set_weight(self, model_id: str, weight: Decimal | None, who: str, reason: str) -> None:
        """Pin ``model_id``'s stage weight (fraction 0..1) by hand, pausing
        canary stepping for it; ``None`` clears the pin (a canary returns to
        its analysis's step weight, a live version to 1).

        Raises:
            LifecycleError: unknown id, a retired version, or a weight
                outside [0, 1].
        """
        rec = self.record(model_id)
        if rec.stage == "retired":
            raise LifecycleError(f"model {model_id}: retired; its weight cannot be set")
        if weight is None:
            if not rec.manual:
                return
            stage = rec.paused_from if rec.stage == "paused" else rec.stage
            a = self.analyses.get(rec.family)
            w = ONE if stage == "live" else (a.weight if a is not None else rec.weight)
            self._set_stage(rec, rec.stage, w, who, f"manual weight cleared: {reason}", manual=False)
            return
        if not isinstance(weight, Decimal) or not weight.is_finite() or not ZERO <= weight <= ONE:
            raise LifecycleError(f"model {model_id}: weight: expected a fraction in [0, 1], got {weight!r}")
        self._set_stage(rec, rec.stage, weight, who, f"manual weight {weight}: {reason}", manual=True)

    def set_paused(self, model_id: str, paused: bool, who: str, reason: str) -> None:
        """Mirror a model pause/resume into the registry stage (``paused``
        and back). Unknown ids (e.g. the netting pseudo-model) are ignored."""
        rec = self.registry.get(model_id)
        if rec is None or rec.stage == "retired":
            return
        if paused and rec.stage != "paused":
            rec.paused_from = rec.stage
            self._set_stage(rec, "paused", rec.weight, who, reason)
        elif not paused and rec.stage == "paused":
            back, rec.paused_from = rec.paused_from or "live", ""
            self._set_stage(rec, back, rec.weight, who, reason)

    # ------------------------------------------------------------ allocator
    def _family_pnls(self) -> dict[str, Decimal]:
        """Realized + unrealized PnL (quote) per family, over all its
        versions, in one pass over the portfolio's positions."""
        pf = self.engine.portfolio
        fam_of = {m: r.family for m, r in self.registry.items()}
        out = {f: ZERO for f in self.families}
        for (mid, iid), pos in pf.positions.items():
            fam = fam_of.get(mid)
            if fam in out:
                out[fam] += pos.realized + pos.unrealized(pf.mark_value(iid))
        return out

    def _allocate(self, now: int) -> None:
        e = self.engine
        capital = e.config.router.capital
        pnls = self._family_pnls()
        for fam in self.families:
            start = self.period_start.get(fam)
            pnl = pnls[fam]
            if start is not None:
                budget = Decimal(start[1])
                self.period_returns[fam].append(float((pnl - Decimal(start[0])) / budget) if budget > 0 else 0.0)
            self.period_start[fam] = (format(pnl, "f"), format(self.family_weights[fam] * capital, "f"))
        n = min(len(q) for q in self.period_returns.values())
        if n < self.config.allocation_min_periods:
            if self.allocation_count == 0 and n == 0:
                self._emit_allocation(now, capital)
            return
        from core.analysis import allocate

        res = allocate({f: () for f in self.period_returns}, capital,
                       floors={f: s.floor for f, s in self.families.items()},
                       caps={f: s.cap for f, s in self.families.items()},
                       sharpes={f: q.sharpe() for f, q in self.period_returns.items()})
        self.sharpe = dict(res.sharpe)
        moved = any(abs(res.weights[f] - self.family_weights[f]) >= self.config.rebalance_threshold
                    for f in self.families)
        if not moved:
            return
        self.family_weights = {f: _q(res.weights[f]) for f in self.families}
        self.idle = _q(res.idle)
        self._apply_weights()
        for fam in self.families:  # the next period's return is measured against the new budget
            pnl = self.period_start[fam][0]
            self.period_start[fam] = (pnl, format(self.family_weights[fam] * capital, "f"))
        self._emit_allocation(now, capital)

    def _emit_allocation(self, now: int, capital: Decimal) -> None:
        e = self.engine
        budgets = {f: (w * capital).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
                   for f, w in self.family_weights.items()}
        seq = e.emit(AllocationChanged(
            ts_event=now, ts_init=now, weights={f: format(w, "f") for f, w in self.family_weights.items()},
            budgets={f: format(b, "f") for f, b in budgets.items()},
            sharpe={f: repr(float(s)) for f, s in self.sharpe.items()}, idle=self.idle, capital=capital,
        ))
        for f, w in self.family_weights.items():
            e.store.record_allocation(seq, f, now, format(w, "f"), format(budgets[f], "f"))
        self.allocation_count += 1
        self.write_allocations_file(now)

    def allocation_rows(self) -> list[dict[str, Any]]:
        """Per family: weight, budget (quote), trailing Sharpe, floor, cap,
        and its versions with stage, stage weight and budget."""
        e = self.engine
        capital = e.config.router.capital
        out = []
        for fam, spec in self.families.items():
            w = self.family_weights[fam]
            out.append({
                "family": fam, "weight": format(w, "f"), "budget": format(w * capital, "f"),
                "sharpe": repr(float(self.sharpe.get(fam, 0.0))), "floor": format(spec.floor, "f"),
                "cap": format(spec.cap, "f"),
                "models": {m: {"stage": r.stage, "stage_weight": format(r.weight, "f"), "manual": r.manual,
                               "budget": format(e.weights.get(m, ZERO) * capital, "f")}
                           for m, r in self.registry.items() if r.family == fam and r.stage != "retired"},
            })
        return out

    def committed(self) -> Decimal:
        """The sum of every version's budget as a fraction of the capital:
        Σ family weight × stage weight. Above 1 while canaries trade on top
        of their live versions (DESIGN.md section 3 adds a canary's budget to
        its family's); the router's cash check keeps the desk's buys within
        its cash."""
        return sum((w for w in self.engine.weights.values()), ZERO)

    def write_allocations_file(self, now: int) -> None:
        """Write ``capital_allocations.json`` atomically (temp file + rename)
        when a path is set: ``{"ts_ns", "capital", "idle", "committed",
        "families": [...]}`` (fractions of the capital; budgets in quote)."""
        if self.allocations_path is None:
            return
        e = self.engine
        doc = {"ts_ns": now, "capital": format(e.config.router.capital, "f"), "idle": format(self.idle, "f"),
               "committed": format(self.committed(), "f"), "families": self.allocation_rows()}
        tmp = self.allocations_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.allocations_path)

    # ------------------------------------------------------------ per step
    def on_step(self) -> None:
        """Once per engine step: register fitted candidates, run the canary
        analysis intervals that are due, retire flat retired versions, and
        the allocator when its period is due (all on the engine clock)."""
        now = self.engine.clock.timestamp_ns()
        if self.candidates:
            self._promote_candidates()
        if self.intervals:
            self._analyse(now)
        if self.next_allocation_ns is None:
            self.next_allocation_ns = now
        if self.config.allocate and now >= self.next_allocation_ns:
            self._allocate(now)
            period = self.config.allocation_period_ns
            self.next_allocation_ns = now - (now - self.next_allocation_ns) % period + period
        self._drop_flat_retired()

    def _drop_flat_retired(self) -> None:
        """A retired version leaves the models once its positions are flat
        (or unsellable dust) and it has no working order; its PnL and any
        dust stay in the portfolio."""
        e = self.engine
        for mid, rec in self.registry.items():
            if rec.stage != "retired" or mid not in e.models:
                continue
            if not all(e.unsellable(mid, i) for i in e.models[mid]):
                continue
            if any(k[0] == mid for k in e.working) or any(k[0] == mid for k in e.pending_fits):
                continue
            del e.models[mid]
            e.weights.pop(mid, None)
            for d in (e.targets, e.target_qty, e.model_bars, e.regimes, e.step_backoff):
                for key in [k for k in d if k[0] == mid]:
                    del d[key]

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state for the engine checkpoint."""
        return {
            "registry": {m: r.to_dict() for m, r in self.registry.items()},
            "family_weights": {f: format(w, "f") for f, w in self.family_weights.items()},
            "sharpe": {f: repr(float(s)) for f, s in self.sharpe.items()},
            "idle": format(self.idle, "f"),
            "analyses": {f: a.state_dict() for f, a in self.analyses.items()},
            "intervals": self.intervals,
            "period_returns": {f: {"values": _pack(q.values), "sums": q.state()["sums"]}
                               for f, q in self.period_returns.items()},
            "period_start": self.period_start,
            "next_allocation_ns": self.next_allocation_ns,
            "last_verdict": self.last_verdict,
            "candidates": self.candidates,
            "inconclusive_alerted": sorted(self.inconclusive_alerted),
            "allocation_count": self.allocation_count,
            "refits": self.refits,
            "models": {m: {"params": r.params} for m, r in self.registry.items()},
            # client order ids carry the model's index: a restart keeps every version's (dropped ones too)
            "model_index": dict(self.engine.model_index),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (before the engine restores the
        models' own states: versions that are not seeds are rebuilt here
        through the model factory)."""
        e = self.engine
        self.registry = {m: VersionRecord.from_dict(r) for m, r in d["registry"].items()}
        self.family_weights = {f: Decimal(w) for f, w in d["family_weights"].items()}
        self.sharpe = {f: float(s) for f, s in d.get("sharpe", {}).items()}
        self.idle = Decimal(d.get("idle", "0"))
        from core.analysis import CanaryAnalysis

        self.analyses = {f: CanaryAnalysis.from_state_dict(self.policy, a) for f, a in d["analyses"].items()}
        self.intervals = d.get("intervals", {})
        from core.analysis import RollingSharpe

        for f, q in d.get("period_returns", {}).items():
            st = {"values": _unpack(q["values"]), "sums": q["sums"]} if isinstance(q, dict) else _unpack(q)
            self.period_returns[f] = RollingSharpe.from_state(max(2, self.config.allocation_window), st)
        self.period_start = {f: tuple(v) for f, v in d.get("period_start", {}).items()}
        self.next_allocation_ns = d.get("next_allocation_ns")
        self.last_verdict = d.get("last_verdict", {})
        self.candidates = dict(d.get("candidates", {}))
        self.inconclusive_alerted = set(d.get("inconclusive_alerted", []))
        self.allocation_count = int(d.get("allocation_count", 0))
        self.refits = int(d.get("refits", 0))
        used = set(e.model_index.values())
        for mid, idx in sorted(d.get("model_index", {}).items(), key=lambda kv: kv[1]):
            if mid in e.model_index:
                continue  # a seed of the setup keeps its place
            idx = int(idx) if int(idx) not in used else max(used, default=-1) + 1
            e.model_index[mid] = idx
            used.add(idx)

    def ensure_models(self, model_ids: list[str], params_of: Callable[[str], dict[str, Any]]) -> None:
        """Create (through the factory) the per-instrument models of versions
        that the checkpoint holds but the setup does not (refits, candidates).

        Raises:
            LifecycleError: when a version must be rebuilt and no factory exists.
        """
        e = self.engine
        instruments = sorted(e.instruments, key=str)
        for mid in model_ids:
            if mid in e.models:
                continue
            if self.factory is None:
                raise LifecycleError(f"model {mid}: in the checkpoint but no model factory to rebuild it")
            params = params_of(mid)
            e.models[mid] = {i: self.factory(mid, i, params) for i in instruments}
            e.model_index.setdefault(mid, len(e.model_index))
