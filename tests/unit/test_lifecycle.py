"""The model lifecycle's registry and operator commands (issue 7), on an
engine driven over hand-made bars (``core.lifecycle``, ``core.governance``).

The scaffolding (``build``, ``LcModel``, ``mkbars``) is shared with
``test_lifecycle_engine.py``. Setting, unless a test says otherwise:
ETHUSDT (tick 0.01, step 0.0001, min notional 5), capital 10000 USDT, no
fees, bars one minute apart; bar ``k`` opens at the previous close, its low
is one below min(open, close) and its high one above max(open, close), so a
LIMIT order at a close (buy or sell) fills on the next bar at exactly that
close. Models are scripted (warm-up 2 bars, the fit applied before the 3rd
bar, so the first target is set at bar index 2).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.analysis import CanaryPolicy
from core.audit import AuditLog
from core.clock import TestClock
from core.data import Bar
from core.engine import Engine, EngineConfig, ModelSpec
from core.governance import GovernanceError
from core.identifiers import InstrumentId
from core.lifecycle import FamilySpec, LifecycleConfig, LifecycleError
from core.rebuild import rebuild
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.helpers.scripted import ScriptedModel, ScriptFit
from tests.unit.test_engine import ETH, IID, MIN
from venues.feeds import ReplayFeed
from venues.klines import KlineFile
from venues.paper import PaperConfig, PaperVenue

D = Decimal
FAM = "hmm"


# ------------------------------------------------------------------ scaffolding
def mkbars(closes: list[str], iid: InstrumentId = IID) -> list[Bar]:
    """Bar k: open = close of bar k-1 (bar 0 opens at its close), high =
    max(open, close) + 1, low = min(open, close) - 1, close = closes[k];
    ts_open k min, ts_event (k+1) min."""
    out, prev = [], D(closes[0])
    for k, c in enumerate(closes):
        c = D(c)
        out.append(Bar(iid, prev, max(prev, c) + 1, min(prev, c) - 1, c, D("100"), k * MIN, (k + 1) * MIN, k + 2))
        prev = c
    return out


def _fail_fit(n: int) -> ScriptFit:
    raise RuntimeError(f"no convergence at bar {n}")


class LcModel(ScriptedModel):
    """A scripted model with a refit schedule (``core.lifecycle`` reads
    ``refit_due()``, ``spawn(new_id)`` and ``last_fit_info()``).

    Ready after ``warmup`` bars (the fit applied through the executor); its
    target at its i-th ready bar is ``targets[(i-1) % len]``.
    ``refit_every``: ``refit_due()`` once the model has observed that many
    bars since its fit was installed (or its last spawn). ``spawn`` returns a
    fresh model with ``child_targets`` (default: the same targets), whose
    ``fit_due()`` is true at once; the first ``fail_children`` children have a
    fit job that raises."""

    def __init__(self, model_id: str, instrument_id: InstrumentId, targets: list[str], warmup: int = 2,
                 refit_every: int | None = None, child_targets: list[str] | None = None,
                 fail_children: int = 0, fail: bool = False) -> None:
        super().__init__(model_id, instrument_id, targets, warmup=warmup)
        self.refit_every = refit_every
        self.child_targets = child_targets
        self.fail_children = fail_children
        self.fail = fail
        self.anchor: int | None = None
        self.last_ts = 0
        self.window = (0, 0)
        self.abandoned = 0

    def observe(self, bar: Bar) -> None:
        super().observe(bar)
        self.last_ts = bar.ts_event

    def fit_job(self):
        self.pending = True
        self.window = (self.last_ts - 2 * MIN, self.last_ts)
        return (_fail_fit if self.fail else _ok_fit), (self.n,)

    def apply_fit(self, result: Any) -> None:
        super().apply_fit(result)
        self.anchor = self.n

    def abandon_fit(self) -> None:
        self.pending = False
        self.abandoned += 1

    def refit_due(self) -> bool:
        return self.refit_every is not None and self.anchor is not None and self.n - self.anchor >= self.refit_every

    def spawn(self, new_id: str) -> "LcModel":
        assert new_id != self.model_id
        self.anchor = self.n
        fail = self.fail_children > 0
        self.fail_children = max(0, self.fail_children - 1)
        child = LcModel(new_id, self.instrument_id, [str(t) for t in (self.child_targets or self.targets)],
                        warmup=0, refit_every=self.refit_every, fail=fail)
        child.n = self.n
        child.last_ts = self.last_ts
        return child

    def last_fit_info(self) -> dict[str, Any]:
        return {"window_first_ts_ns": self.window[0], "window_last_ts_ns": self.window[1], "n_iter": 1,
                "converged": True}

    def state_dict(self) -> dict[str, Any]:
        s = super().state_dict()
        s.update(targets=[str(t) for t in self.targets], warmup=self.warmup, refit_every=self.refit_every,
                 child_targets=self.child_targets, fail_children=self.fail_children, fail=self.fail,
                 anchor=self.anchor, last_ts=self.last_ts, window=list(self.window))
        return s

    def load_state_dict(self, s: dict[str, Any]) -> None:
        super().load_state_dict(s)
        self.targets = [D(t) for t in s["targets"]]
        self.warmup, self.refit_every, self.child_targets = s["warmup"], s["refit_every"], s["child_targets"]
        self.fail_children, self.fail, self.anchor = s["fail_children"], s["fail"], s["anchor"]
        self.last_ts, self.window = s["last_ts"], tuple(s["window"])


def _ok_fit(n: int) -> ScriptFit:
    return ScriptFit(n, [0.0])


def make_model(model_id: str, iid: InstrumentId, params: dict[str, Any]) -> LcModel:
    """The model factory (``Engine(model_factory=...)``): params are
    ``LcModel`` keyword arguments (``targets`` required)."""
    return LcModel(model_id, iid, list(params["targets"]), **{k: v for k, v in params.items() if k != "targets"})


class Executor:
    """Runs each job at once in the caller; a job that raises gives a
    future holding the exception (as a process pool does). Records what ran."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, tuple[Any, ...]]] = []

    def submit(self, fn, /, *args):
        self.jobs.append((fn.__name__, args))
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the engine like a worker's failure
            f.set_exception(exc)
        return f

    def shutdown(self) -> None:
        pass


def seed(model_id: str, stage: str, weight: str, targets: list[str], family: str = FAM, **kw: Any) -> ModelSpec:
    """A seed spec whose params build its ``LcModel`` (see ``make_model``)."""
    return ModelSpec(model_id, D(weight), stage, family, {"targets": targets, **kw})


def lc_config(*families: FamilySpec, **kw: Any) -> LifecycleConfig:
    """One family ``hmm`` at a fixed family weight 0.5, no allocator, unless told."""
    fams = families or (FamilySpec(FAM, floor=D("0"), initial=D("0.5")),)
    kw.setdefault("allocate", False)
    return LifecycleConfig(families=fams, **kw)


def build(path: Path, closes: list[str], specs: list[ModelSpec], lifecycle: LifecycleConfig | None = None,
          capital: str = "10000", executor: Executor | None = None) -> Engine:
    """An engine over ``mkbars(closes)`` with one ``LcModel`` per seed spec,
    a paper venue without fees, and ``make_model`` as the model factory."""
    path.mkdir(parents=True, exist_ok=True)
    clock = TestClock()
    feed = ReplayFeed([KlineFile("x.csv", IID, "ETHUSDT", MIN, mkbars(closes), [])])
    models = {s.model_id: {IID: make_model(s.model_id, IID, s.params)} for s in specs}
    paper = PaperConfig(maker_fee=D("0"), taker_fee=D("0"))
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D(capital)), lifecycle=lifecycle or lc_config()),
        clock=clock, store=Store(path / "desk.sqlite"), audit=AuditLog(path / "audit" / "orders.jsonl"),
        feed=feed, instruments={IID: ETH}, models=models, specs=specs, risk=RiskEngine(RiskConfig()),
        executor=executor or Executor(),
        venue_factory=lambda cb: PaperVenue(path / "venue.sqlite", "BINANCE", "USDT", {IID: ETH}, clock, paper, cb),
        model_factory=make_model,
    )
    eng.alerts_seen = []  # type: ignore[attr-defined]
    eng.bus.subscribe("AlertRaised", lambda ev: eng.alerts_seen.append((ev.code, ev.message)))
    return eng


def journal(eng: Engine, type_: str | None = None) -> list[dict[str, Any]]:
    """The committed journal (flushed first), optionally of one event type."""
    eng.flush()
    rows = [json.loads(p) for (p,) in eng.store.conn.execute("SELECT payload FROM journal ORDER BY seq")]
    return [r for r in rows if type_ is None or r["type"] == type_]


def gov_rows(eng: Engine) -> list[tuple[str, str, str]]:
    eng.flush()
    return [tuple(r) for r in eng.store.conn.execute("SELECT who, action, reason FROM governance_actions ORDER BY seq")]


def registry_view(eng: Engine) -> dict[str, tuple[str, Decimal, bool]]:
    return {m: (r.stage, r.weight, r.manual) for m, r in eng.lifecycle.registry.items()}


def run(eng: Engine, bars: int | None = None) -> None:
    asyncio.run(eng.run(max_bars=bars))


FLAT = ["2000"] * 8


# ------------------------------------------------------------------ 1. seeds
def test_seeds_enter_the_registry_with_stage_weights_and_budgets_family_weight_times_stage_weight(tmp_path):
    eng = build(tmp_path, FLAT, [seed("c", "canary", "0.10", ["1"]), seed("l", "live", "1", ["1"])])
    eng.register_seeds()
    lc = eng.lifecycle
    # the live seed is registered first (version 1), whatever the spec order; the canary second
    assert {m: (r.stage, r.weight, r.version, r.parent) for m, r in lc.registry.items()} == {
        "l": ("live", D("1"), 1, ""), "c": ("canary", D("0.10"), 2, "")}
    assert lc.version_in(FAM, "live") == "l" and lc.version_in(FAM, "canary") == "c"
    # engine.weights = family weight 0.5 x stage weight: live 0.5 x 1 = 0.5, canary 0.5 x 0.10 = 0.05
    assert eng.weights == {"l": D("0.5"), "c": D("0.05")}
    # a canary analysis runs for the family from the first step of the ladder (10 %)
    assert lc.analyses[FAM].weight == D("0.10") and lc.analyses[FAM].n_intervals == 0
    ev = journal(eng, "ModelVersionRegistered")
    assert [(e["model_id"], e["family"], e["model_version"], e["stage"], e["parent"], e["who"]) for e in ev] == [
        ("l", FAM, 1, "live", "", "setup"), ("c", FAM, 2, "canary", "", "setup")]
    assert ev[0]["params"] == {"targets": ["1"]}
    seqs = {m: s for s, m in eng.store.conn.execute(
        "SELECT seq, json_extract(payload, '$.model_id') FROM journal WHERE type='ModelVersionRegistered'")}
    rows = list(eng.store.conn.execute(
        "SELECT model_id, family, instrument_id, version, stage, weight, params, created_seq, updated_seq "
        "FROM models ORDER BY version"))
    assert rows == [
        ("l", FAM, "ETHUSDT.BINANCE", 1, "live", "1", '{"targets": ["1"]}', seqs["l"], seqs["l"]),
        ("c", FAM, "ETHUSDT.BINANCE", 2, "canary", "0.10", '{"targets": ["1"]}', seqs["c"], seqs["c"]),
    ]
    eng.register_seeds()  # idempotent: a registry that has versions is not seeded again
    assert len(journal(eng, "ModelVersionRegistered")) == 2


def test_a_live_seed_has_stage_weight_one_whatever_its_spec_weight(tmp_path):
    # the family weight (0.5) carries the budget; a live version's stage weight is 1: 0.5 x 1 = 0.5, not 0.5 x 0.7
    eng = build(tmp_path, FLAT, [seed("l", "live", "0.7", ["1"])])
    eng.register_seeds()
    assert registry_view(eng) == {"l": ("live", D("1"), False)} and eng.weights == {"l": D("0.5")}


def test_a_second_live_seed_in_a_family_is_refused_naming_it(tmp_path):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("l2", "live", "1", ["1"])])
    with pytest.raises(LifecycleError, match=r"model l2: family hmm already has a live version \(l\)"):
        eng.register_seeds()


def test_a_second_canary_seed_an_unknown_family_or_a_retired_seed_is_refused(tmp_path):
    eng = build(tmp_path / "a", FLAT, [seed("l", "live", "1", ["1"]), seed("c1", "canary", "0.1", ["1"]),
                                      seed("c2", "canary", "0.1", ["1"])])
    with pytest.raises(LifecycleError, match=r"model c2: family hmm already has a canary version \(c1\)"):
        eng.register_seeds()
    eng = build(tmp_path / "b", FLAT, [seed("x", "live", "1", ["1"], family="nope")])
    with pytest.raises(LifecycleError, match="model x: family 'nope' is not configured"):
        eng.register_seeds()
    eng = build(tmp_path / "c", FLAT, [seed("x", "retired", "1", ["1"])])
    with pytest.raises(LifecycleError, match="model x: a seed's stage must be live or canary, got 'retired'"):
        eng.register_seeds()


def test_lifecycle_config_refuses_bad_families_and_periods_naming_the_field():
    with pytest.raises(ValueError, match="family a: floor 0.6 > cap 0.5"):
        FamilySpec("a", floor=D("0.6"), cap=D("0.5"))
    with pytest.raises(ValueError, match="family a: cap: expected a fraction in \\[0, 1\\], got Decimal\\('1.5'\\)"):
        FamilySpec("a", cap=D("1.5"))
    with pytest.raises(ValueError, match="floors sum to 1.2 > 1"):
        LifecycleConfig(families=(FamilySpec("a", floor=D("0.6")), FamilySpec("b", floor=D("0.6"))))
    with pytest.raises(ValueError, match="duplicate names"):
        LifecycleConfig(families=(FamilySpec("a"), FamilySpec("a")))
    with pytest.raises(ValueError, match="analysis_interval_ns: expected an int >= 1, got 0"):
        LifecycleConfig(families=(FamilySpec("a"),), analysis_interval_ns=0)
    with pytest.raises(ValueError, match="at least one family"):
        LifecycleConfig(families=())


def test_initial_family_weights_are_one_over_n_within_floor_and_cap(tmp_path):
    # 3 families: a and b (default floor 0.25, cap 1) get 1/3 -> 0.33333 (quantized down to 1e-5); c, capped
    # at 0.2 (floor 0), gets min(0.2, max(0, 1/3)) = 0.2; idle = 1 - 0.33333 x 2 - 0.2 = 0.13334
    cfg = LifecycleConfig(families=(FamilySpec("a"), FamilySpec("b"), FamilySpec("c", floor=D("0"), cap=D("0.2"))))
    eng = build(tmp_path, FLAT, [seed("x", "live", "1", ["1"], family="a")], lifecycle=cfg)
    assert eng.lifecycle.family_weights == {"a": D("0.33333"), "b": D("0.33333"), "c": D("0.2")}
    assert eng.lifecycle.idle == D("0.13334")


# ------------------------------------------------------------------ 3/4. command errors change nothing
def _snapshot_of(eng: Engine) -> tuple[Any, ...]:
    n = len(journal(eng))
    return (n, registry_view(eng), dict(eng.weights), dict(eng.target_qty), gov_rows(eng))


def test_promoting_or_rolling_back_a_live_version_or_an_unknown_id_raises_naming_it_and_changes_nothing(tmp_path):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 4)
    before = _snapshot_of(eng)
    with pytest.raises(GovernanceError, match="model l: only a canary can be promoted; it is live"):
        asyncio.run(eng.governance.promote("l", "ops", "why"))
    with pytest.raises(GovernanceError, match="model: unknown 'zz'; known: c, l"):
        asyncio.run(eng.governance.promote("zz", "ops", "why"))
    with pytest.raises(GovernanceError, match="model l: only a canary can be rolled back; it is live"):
        asyncio.run(eng.governance.rollback("l", "ops", "why"))
    with pytest.raises(GovernanceError, match="model: unknown 'zz'"):
        asyncio.run(eng.governance.rollback("zz", "ops", "why"))
    assert _snapshot_of(eng) == before


# ------------------------------------------------------------------ 5. manual weights
def test_set_weights_pins_the_stage_weight_stops_the_analysis_and_none_clears_it(tmp_path):
    # family weight 0.5; analysis every bar, warm-up 2 intervals and 1 canary fill; flat prices.
    # Both buy at bar index 2: l floor(0.5 x 10000 / 2000) = 2.5, c floor(0.05 x 10000 / 2000) = 0.25,
    # one netted order of 2.75 filled at bar 3 at 2000.
    pol = CanaryPolicy(min_intervals=2, min_trades=1)
    eng = build(tmp_path, ["2000"] * 10, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])],
                lifecycle=lc_config(analysis_interval_ns=MIN, canary=pol))
    run(eng, 4)  # bars 0-3: 4 intervals analysed (the 4th after c's fill: flat prices, hold)
    a = eng.lifecycle.analyses[FAM]
    assert a.n_intervals == 4
    assert eng.portfolio.position("c", IID).quantity == D("0.25")
    n_analysed = len(journal(eng, "CanaryAnalysed"))
    assert n_analysed == 4

    eng.governance.set_weights({"c": D("0.3")}, "ops", "more canary")
    rec = eng.lifecycle.record("c")
    assert (rec.stage, rec.weight, rec.manual) == ("canary", D("0.3"), True)
    # budget 0.5 x 0.3 x 10000 = 1500 -> target floor(1500 / 2000, 0.0001) = 0.75
    assert eng.weights["c"] == D("0.15") and eng.target_qty[("c", IID)] == D("0.75")
    st = journal(eng, "ModelStageChanged")[-1]
    assert (st["model_id"], st["stage"], st["weight"], st["manual"], st["who"]) == ("c", "canary", "0.3", True, "ops")
    assert gov_rows(eng)[-1] == ("ops", "MODEL_STAGE_CANARY", "manual weight 0.3: more canary")

    run(eng, 3)  # bars 4-6: pinned, the analysis does not step (no verdict, no interval counted)
    assert a.n_intervals == 4 and len(journal(eng, "CanaryAnalysed")) == n_analysed
    assert eng.portfolio.position("c", IID).quantity == D("0.75")  # bought 0.5 at bar 4, filled at bar 5

    eng.governance.set_weights({"c": None}, "ops", "back to the analysis")
    rec = eng.lifecycle.record("c")
    assert (rec.weight, rec.manual) == (D("0.10"), False)  # the analysis's step weight
    assert eng.weights["c"] == D("0.05") and eng.target_qty[("c", IID)] == D("0.25")
    run(eng, 2)  # the analysis runs again
    assert a.n_intervals > 4 and len(journal(eng, "CanaryAnalysed")) > n_analysed


def test_set_weights_is_all_or_nothing_and_names_the_bad_model_or_value(tmp_path):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 4)
    before = _snapshot_of(eng)
    g = eng.governance
    cases = [
        ({"c": D("0.2"), "l": D("1.5")}, r"weights.l: expected a fraction in \[0, 1\] or null, got Decimal\('1.5'\)"),
        ({"c": D("0.2"), "l": D("NaN")}, r"weights.l: .* got Decimal\('NaN'\)"),
        ({"c": D("0.2"), "l": D("-0.1")}, r"weights.l: .* got Decimal\('-0.1'\)"),
        ({"c": D("0.2"), "l": 0.3}, r"weights.l: .* got 0.3"),  # a float is not a weight
        ({"c": D("0.2"), "zz": D("0.1")}, r"model: unknown 'zz'"),
    ]
    for weights, msg in cases:
        with pytest.raises(GovernanceError, match=msg):
            g.set_weights(weights, "ops", "bad")
        assert _snapshot_of(eng) == before, weights
    # the lifecycle itself refuses the same (LifecycleError names the model)
    with pytest.raises(LifecycleError, match=r"model c: weight: expected a fraction in \[0, 1\], got Decimal\('1.5'\)"):
        eng.lifecycle.set_weight("c", D("1.5"), "ops", "bad")
    assert _snapshot_of(eng) == before


def test_rolled_back_versions_cannot_be_weighted_and_nothing_changes(tmp_path):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 4)
    asyncio.run(eng.governance.rollback("c", "ops", "bad canary"))
    before = _snapshot_of(eng)
    with pytest.raises(GovernanceError, match="model c: retired; its weight cannot be set"):
        eng.governance.set_weights({"l": D("0.5"), "c": D("0.2")}, "ops", "x")
    assert _snapshot_of(eng) == before
    with pytest.raises(GovernanceError, match="model c: only a canary can be promoted; it is retired"):
        asyncio.run(eng.governance.promote("c", "ops", "x"))


def test_a_pinned_live_version_has_its_own_budget_and_clearing_returns_it_to_one(tmp_path):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 3)  # targets set at bar index 2: l 2.5, c 0.25
    eng.governance.set_weights({"l": D("0.4"), "c": D("0.2")}, "ops", "both")
    # l: 0.5 x 0.4 = 0.2 -> 2000 USDT -> 1.0 ETH; c: 0.5 x 0.2 = 0.1 -> 1000 USDT -> 0.5 ETH
    assert eng.weights == {"l": D("0.2"), "c": D("0.1")}
    assert eng.target_qty[("l", IID)] == D("1.0000") and eng.target_qty[("c", IID)] == D("0.5000")
    eng.governance.set_weights({"l": None}, "ops", "unpin")
    assert registry_view(eng)["l"] == ("live", D("1"), False) and eng.weights["l"] == D("0.5")
    eng.governance.set_weights({"l": None}, "ops", "again")  # not pinned: nothing to do, nothing journaled
    assert registry_view(eng)["l"] == ("live", D("1"), False)


# ------------------------------------------------------------------ 10. pause / resume mirror
def test_pause_and_resume_mirror_into_the_registry_with_one_governance_row_each(tmp_path):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 3)
    n_gov = len(gov_rows(eng))
    eng.governance.pause_model("c", "ops", "look at it")
    rec = eng.lifecycle.record("c")
    assert (rec.stage, rec.paused_from, rec.weight) == ("paused", "canary", D("0.10"))
    assert "c" in eng.paused
    assert eng.lifecycle.version_in(FAM, "canary") == "c"  # still the family's canary
    assert gov_rows(eng)[n_gov:] == [("ops", "MODEL_PAUSED", "look at it")]  # once, not also as a stage change
    st = journal(eng, "ModelStageChanged")[-1]
    assert (st["model_id"], st["stage"], st["previous"]) == ("c", "paused", "canary")
    assert eng.store.conn.execute("SELECT stage FROM models WHERE model_id='c'").fetchone() == ("paused",)
    eng.governance.pause_model("c", "ops", "again")  # already paused: nothing
    assert len(gov_rows(eng)) == n_gov + 1

    eng.governance.resume_model("c", "ops", "fine")
    rec = eng.lifecycle.record("c")
    assert (rec.stage, rec.paused_from) == ("canary", "")
    assert "c" not in eng.paused
    assert gov_rows(eng)[n_gov:] == [("ops", "MODEL_PAUSED", "look at it"), ("ops", "MODEL_ACTIVE", "fine")]
    assert eng.store.conn.execute("SELECT stage FROM models WHERE model_id='c'").fetchone() == ("canary",)
    assert [h["stage"] for h in rec.history] == ["canary", "paused", "canary"]
    assert rebuild(tmp_path / "desk.sqlite").differences == []  # the governance rows follow from the journal


def test_a_paused_canary_can_be_promoted_and_leaves_the_paused_set(tmp_path, caplog):
    eng = build(tmp_path, FLAT, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 3)
    eng.governance.pause_model("c", "ops", "hold")
    with caplog.at_level(logging.WARNING, logger="desk.canary"):
        asyncio.run(eng.governance.promote("c", "ops", "good anyway"))
    assert registry_view(eng)["c"] == ("live", D("1"), False)
    assert "c" not in eng.paused
    assert "[CANARY] PROMOTED c" in caplog.text


def test_the_registration_event_round_trips_with_its_schema_version():
    """``ModelVersionRegistered.model_version`` is the model's number; the
    event's schema version ``v`` stays 1, so journal readers accept it."""
    from core.events import ModelVersionRegistered, event_from_dict

    ev = ModelVersionRegistered(ts_event=1, ts_init=1, model_id="hmm_v3", family="hmm", model_version=3,
                                stage="canary", parent="hmm_v1", who="lifecycle", reason="refit")
    d = ev.to_dict()
    assert d["v"] == 1 and d["model_version"] == 3
    assert event_from_dict(d) == ev
    # a row written before the rename: "version" was the model's number and "v" carried it by mistake
    old = {k: v for k, v in d.items() if k != "model_version"} | {"version": 3, "v": 3}
    assert event_from_dict(old) == ev
