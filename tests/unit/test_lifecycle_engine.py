"""The model lifecycle inside the engine's bar loop (issue 7): budgets in
the router, promotion and rollback unwinding through the router (crossed
internally where they overlap), the automatic canary analysis per interval
of engine clock, refits registered as canaries, the Sharpe allocator, and a
restart from the checkpoint.

Setting (see ``tests/unit/test_lifecycle.py``): ETHUSDT (step 0.0001),
capital 10000 USDT, no fees; bar k opens at the close of bar k-1 with a low
below and a high above both, so a LIMIT order at a close fills on the next
bar at exactly that close. Scripted models set their first target at bar
index 2 (warm-up 2 bars, the fit applied before the 3rd). ``run(eng, n)``
processes n bars; "step k" is the bar with index k (its close at (k+1) min),
whose orders fill at step k+1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from decimal import Decimal

import pytest

from core.analysis import CanaryPolicy
from core.lifecycle import FamilySpec
from core.rebuild import rebuild
from tests.unit.test_engine import IID, MIN
from tests.unit.test_lifecycle import (
    FAM,
    Executor,
    build,
    gov_rows,
    journal,
    lc_config,
    registry_view,
    run,
    seed,
)

D = Decimal
#: a permissive analysis: judged from the 2nd interval and the 1st canary fill, a constant boundary
#: (Wang-Tsiatis delta 0.5 = Pocock) of z = 0.01, so any positive excess Sharpe passes and any
#: negative one fails once the excess has a variance
EAGER = CanaryPolicy(min_intervals=2, min_trades=1, failure_threshold=2, boundary_z=0.01, boundary_delta=0.5)


def orders(eng):
    eng.flush()
    return list(eng.store.conn.execute(
        "SELECT model_id, side, quantity, price, status, step FROM orders ORDER BY ts_init, client_order_id"))


def fills(eng, like="%"):
    eng.flush()
    return list(eng.store.conn.execute(
        "SELECT trade_id, model_id, side, last_qty, last_px FROM fills WHERE trade_id LIKE ? ORDER BY seq", (like,)))


# ------------------------------------------------------------------ 2. budgets in the router
def test_the_router_sizes_live_and_canary_orders_from_family_weight_times_stage_weight(tmp_path):
    # family weight 0.5, capital 10000, every close 2003.
    # live l (stage weight 1): budget 0.5 x 1 x 10000 = 5000; its target 1 at step 2 ->
    #   floor(5000 / 2003, 0.0001) = floor(2.496255...) = 2.4962 ETH, LIMIT 2003.00
    # canary c (stage weight 0.10): budget 0.5 x 0.10 x 10000 = 500; target 0 at step 2, 1 at step 3 ->
    #   floor(500 / 2003, 0.0001) = floor(0.2496255...) = 0.2496 ETH (l's order filled at step 3 first,
    #   so the two are not netted)
    eng = build(tmp_path, ["2003"] * 6, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["0"] + ["1"] * 5)])
    run(eng)
    assert eng.weights == {"l": D("0.5"), "c": D("0.05")}
    assert orders(eng) == [("l", "BUY", "2.4962", "2003.00", "FILLED", 2), ("c", "BUY", "0.2496", "2003.00", "FILLED", 3)]
    assert eng.portfolio.position("l", IID).quantity == D("2.4962")
    assert eng.portfolio.position("c", IID).quantity == D("0.2496")
    # the budgets the registry rows show: weight x capital
    rows = {r["model_id"]: r for r in eng.lifecycle.rows()}
    assert D(rows["l"]["budget"]) == D("5000") and D(rows["c"]["budget"]) == D("500")


def test_both_targets_at_once_are_netted_into_one_order_split_by_budget(tmp_path):
    # step 2: l wants floor(5000 / 2000) = 2.5, c floor(500 / 2000) = 0.25: one NET order of 2.75 whose
    # fill at step 3 is split back 2.5 / 0.25
    eng = build(tmp_path, ["2000"] * 5, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng)
    assert orders(eng) == [("NET", "BUY", "2.7500", "2000.00", "FILLED", 2)]
    assert eng.portfolio.position("l", IID).quantity == D("2.5")
    assert eng.portfolio.position("c", IID).quantity == D("0.25")


# ------------------------------------------------------------------ 3. manual promote
def test_manual_promote_retires_the_live_version_and_unwinds_it_crossed_with_the_new_live(tmp_path, caplog):
    # family weight 0.5, closes 2000. After step 3: l holds 2.5, c 0.25 (netted buy at step 2, filled step 3).
    # promote c: c live (stage weight 1) -> weight 0.5, target floor(5000 / 2000) = 2.5; l retired -> weight 0,
    # target 0. Step 4: l sells 2.5 (flat exit), c buys 2.5 - 0.25 = 2.25 (cash 10000 - 2.75 x 2000 = 4500
    # covers 2.25 x 2000 = 4500): 2.25 crosses internally at the close 2000 (X-4-1 l SELL, X-4-2 c BUY), the
    # remaining 0.25 of l goes to the venue as a LIMIT SELL at 2000, filled at step 5. l is then flat and
    # leaves the models.
    eng = build(tmp_path, ["2000"] * 7, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 4)
    assert eng.portfolio.position("l", IID).quantity == D("2.5")
    assert eng.portfolio.position("c", IID).quantity == D("0.25")
    with caplog.at_level(logging.INFO, logger="desk.canary"):
        asyncio.run(eng.governance.promote("c", "ops", "why"))
    assert registry_view(eng) == {"l": ("retired", D("0"), False), "c": ("live", D("1"), False)}
    assert eng.weights == {"l": D("0"), "c": D("0.5")}
    assert eng.target_qty[("l", IID)] == D("0") and eng.target_qty[("c", IID)] == D("2.5")
    assert eng.lifecycle.version_in(FAM, "live") == "c" and eng.lifecycle.version_in(FAM, "canary") is None
    assert "[CANARY] PROMOTED c (replaces l): why" in caplog.text

    promoted = journal(eng, "CanaryPromoted")
    assert [(e["model_id"], e["previous_live"], e["who"], e["reason"]) for e in promoted] == [("c", "l", "ops", "why")]
    stages = [(e["model_id"], e["stage"], e["previous"], e["weight"]) for e in journal(eng, "ModelStageChanged")]
    assert stages == [("l", "retired", "live", "0"), ("c", "live", "canary", "1")]
    assert gov_rows(eng) == [("ops", "MODEL_STAGE_RETIRED", "superseded by c"), ("ops", "MODEL_STAGE_LIVE", "why"),
                             ("ops", "CANARY_PROMOTED", "why")]
    assert ("CANARY_PROMOTED", "[CANARY] PROMOTED c (replaces l): why") in eng.alerts_seen
    assert eng.store.conn.execute("SELECT level, code FROM alerts").fetchall() == [("INFO", "CANARY_PROMOTED")]
    assert dict(eng.store.conn.execute("SELECT model_id, stage FROM models")) == {"l": "retired", "c": "live"}

    run(eng)
    assert fills(eng, "X-%") == [("X-4-1", "l", "SELL", "2.2500", "2000.00"), ("X-4-2", "c", "BUY", "2.2500", "2000.00")]
    assert orders(eng)[1:] == [("l", "SELL", "0.2500", "2000.00", "FILLED", 4)]
    assert eng.portfolio.position("l", IID).quantity == 0
    assert eng.portfolio.position("c", IID).quantity == D("2.5")
    assert "l" not in eng.models and "l" not in eng.weights  # flat and retired: out of the bar loop
    assert eng.lifecycle.record("l").stage == "retired"  # still in the registry (and its PnL in the portfolio)


# ------------------------------------------------------------------ 4. manual rollback
def test_manual_rollback_retires_the_canary_and_unwinds_it(tmp_path, caplog):
    # as above; rollback c after step 3: c weight 0, target 0 -> step 4 sells its 0.25 at 2000 (filled step 5);
    # l keeps 2.5 and its weight 0.5
    eng = build(tmp_path, ["2000"] * 7, [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])])
    run(eng, 4)
    with caplog.at_level(logging.INFO, logger="desk.canary"):
        asyncio.run(eng.governance.rollback("c", "ops", "too risky"))
    assert registry_view(eng) == {"l": ("live", D("1"), False), "c": ("retired", D("0"), False)}
    assert eng.weights == {"l": D("0.5"), "c": D("0")}
    assert FAM not in eng.lifecycle.analyses
    assert "[CANARY] ROLLED BACK c: too risky" in caplog.text
    rb = journal(eng, "CanaryRolledBack")
    assert [(e["model_id"], e["who"], e["reason"]) for e in rb] == [("c", "ops", "too risky")]
    assert gov_rows(eng) == [("ops", "MODEL_STAGE_RETIRED", "rolled back: too risky"),
                             ("ops", "CANARY_ROLLED_BACK", "too risky")]
    assert eng.store.conn.execute("SELECT level, code FROM alerts").fetchall() == [("WARNING", "CANARY_ROLLED_BACK")]
    run(eng)
    assert orders(eng)[1:] == [("c", "SELL", "0.2500", "2000.00", "FILLED", 4)]
    assert eng.portfolio.position("c", IID).quantity == 0
    assert eng.portfolio.position("l", IID).quantity == D("2.5")
    assert "c" not in eng.models


def test_the_lifecycle_governance_rows_can_be_rebuilt_from_the_journal(tmp_path):
    # a manual weight pin, a promotion (retiring the live version) and, on a second store, a rollback: every
    # governance row the lifecycle wrote must follow from the journal (core.rebuild, the store check)
    specs = [seed("l", "live", "1", ["1"]), seed("c", "canary", "0.10", ["1"])]
    eng = build(tmp_path / "p", ["2000"] * 7, specs)
    run(eng, 4)
    eng.governance.set_weights({"c": D("0.2")}, "ops", "pin")
    asyncio.run(eng.governance.promote("c", "ops", "why"))
    run(eng)
    eng.flush()
    assert len(gov_rows(eng)) == 4  # MODEL_STAGE_CANARY (pin), MODEL_STAGE_RETIRED, MODEL_STAGE_LIVE, CANARY_PROMOTED
    assert rebuild(tmp_path / "p" / "desk.sqlite").differences == []
    eng = build(tmp_path / "r", ["2000"] * 7, specs)
    run(eng, 4)
    asyncio.run(eng.governance.rollback("c", "ops", "no"))
    run(eng)
    eng.flush()
    assert rebuild(tmp_path / "r" / "desk.sqlite").differences == []


# ------------------------------------------------------------------ 6. automatic analysis
RISING = ["1000", "1000", "1000", "1010", "1020", "1040", "1050", "1060"]


def analysed(eng):
    return [(e["interval"], e["action"], D(e["weight"])) for e in journal(eng, "CanaryAnalysed")]


def test_a_canary_beating_the_live_version_steps_up_the_ladder_and_is_promoted(tmp_path, caplog):
    # family weight 1, one analysis interval per bar; live l flat (target 0), canary c long (target 1).
    # Intervals 1-3 (steps 0-2): no canary fill yet -> warming.
    # Step 2: c buys floor(0.10 x 10000 / 1000) = 1.0 at 1000, filled at step 3.
    # Interval 4 (step 3): c's PnL 1 x (1010 - 1000) = 10 over its budget at the interval start, 1000:
    #   return 0.01; live 0. Excess [0, 0, 0, 0.01]: positive Sharpe with a variance -> pass: step 10 -> 25 %.
    #   c's target becomes floor(2500 / 1010) = 2.4752, bought (+1.4752) at step 4 at 1020, filled step 5.
    # Each interval is measured against the budget the canary has from its start, i.e. after the
    # previous verdict's step (on 30-bar intervals the new weight applies for 29 of the 30 bars).
    # Interval 5 (step 4): c still holds 1.0: 1 x (1020 - 1010) = 10 over the 25 % budget 2500 = 0.004 -> 50 %.
    #   target floor(5000 / 1020) = 4.9019 (+2.4267 at 1040, filled step 6).
    # Interval 6 (step 5): 2.4752 x (1040 - 1020) = 49.504 (the 1.4752 bought at 1020), budget 5000:
    #   0.0099008 -> 100 %.
    # Interval 7 (step 6): 4.9019 x (1050 - 1040) = 49.019, budget 10000: 0.0049019; at the last step -> promote.
    eng = build(tmp_path, RISING, [seed("l", "live", "1", ["0"]), seed("c", "canary", "0.10", ["1"])],
                lifecycle=lc_config(FamilySpec(FAM, floor=D("0"), initial=D("1")), analysis_interval_ns=MIN,
                                    canary=EAGER))
    with caplog.at_level(logging.INFO, logger="desk.canary"):
        run(eng)
    assert analysed(eng) == [(1, "warming", D("0.1")), (2, "warming", D("0.1")), (3, "warming", D("0.1")),
                             (4, "step", D("0.25")), (5, "step", D("0.5")), (6, "step", D("1")),
                             (7, "promote", D("1"))]
    figs = [e["figures"] for e in journal(eng, "CanaryAnalysed")]
    cum = [float(f["canary_pnl"]) for f in figs]  # running sums of the canary's interval returns
    assert cum[:3] == [0.0, 0.0, 0.0]
    assert cum[3] == pytest.approx(0.01, rel=1e-12)
    assert cum[4] - cum[3] == pytest.approx(10 / 2500, rel=1e-9)
    assert cum[5] - cum[4] == pytest.approx(49.504 / 5000, rel=1e-9)
    assert cum[6] - cum[5] == pytest.approx(49.019 / 10000, rel=1e-9)
    assert all(float(f["live_pnl"]) == 0.0 for f in figs)
    assert [int(f["canary_trades"]) for f in figs] == [0, 0, 0, 1, 1, 2, 3]
    steps = [(e["model_id"], e["weight"], e["who"]) for e in journal(eng, "ModelStageChanged")]
    assert steps == [("c", "0.25", "canary-analysis"), ("c", "0.50", "canary-analysis"), ("c", "1", "canary-analysis"),
                     ("l", "0", "canary-analysis"), ("c", "1", "canary-analysis")]
    assert registry_view(eng) == {"l": ("retired", D("0"), False), "c": ("live", D("1"), False)}
    p = journal(eng, "CanaryPromoted")
    assert [(e["model_id"], e["previous_live"], e["who"]) for e in p] == [("c", "l", "canary-analysis")]
    assert "[CANARY] PROMOTED c (replaces l)" in caplog.text
    assert ("canary-analysis", "CANARY_PROMOTED") in [(w, a) for w, a, _ in gov_rows(eng)]
    assert "l" not in eng.models  # flat, retired: gone from the bar loop at once


FALLING = ["1000", "1000", "1000", "990", "980", "970", "960", "950"]


def test_a_canary_losing_to_the_live_version_fails_twice_and_is_rolled_back(tmp_path, caplog):
    # the mirror: c buys 1.0 at 1000 (step 2, filled step 3); interval 4: 1 x (990 - 1000) / 1000 = -0.01,
    # excess [0, 0, 0, -0.01] -> failed check 1/2 (weight held at 10 %); interval 5: -10 / 1000 = -0.01 ->
    # failed check 2/2 -> rollback at step 4. Step 5 sells the 1.0 at 970, filled at step 6: realized
    # 970 - 1000 = -30.
    eng = build(tmp_path, FALLING, [seed("l", "live", "1", ["0"]), seed("c", "canary", "0.10", ["1"])],
                lifecycle=lc_config(FamilySpec(FAM, floor=D("0"), initial=D("1")), analysis_interval_ns=MIN,
                                    canary=EAGER))
    with caplog.at_level(logging.INFO, logger="desk.canary"):
        run(eng)
    assert analysed(eng) == [(1, "warming", D("0.1")), (2, "warming", D("0.1")), (3, "warming", D("0.1")),
                             (4, "fail", D("0.1")), (5, "rollback", D("0.1"))]
    figs = [e["figures"] for e in journal(eng, "CanaryAnalysed")]
    assert float(figs[3]["canary_pnl"]) == pytest.approx(-0.01, rel=1e-12)
    assert float(figs[4]["canary_pnl"]) == pytest.approx(-0.02, rel=1e-12)
    assert [int(f["failures"]) for f in figs] == [0, 0, 0, 1, 2]
    assert float(figs[4]["drawdown"]) == pytest.approx(0.02, rel=1e-12)
    assert registry_view(eng) == {"l": ("live", D("1"), False), "c": ("retired", D("0"), False)}
    rb = journal(eng, "CanaryRolledBack")
    assert [(e["model_id"], e["who"]) for e in rb] == [("c", "canary-analysis")]
    assert "[CANARY] ROLLED BACK c" in caplog.text
    assert orders(eng) == [("c", "BUY", "1.0000", "1000.00", "FILLED", 2), ("c", "SELL", "1.0000", "970.00", "FILLED", 5)]
    assert eng.portfolio.realized("c") == D("-30")
    assert "c" not in eng.models


def test_an_undecided_canary_at_the_horizon_is_inconclusive_held_and_alerted_once(tmp_path):
    # flat prices, both versions flat: every excess return 0 (zero variance: z 0). Interval 1 warming (1 < 2
    # intervals); 2: hold; 3 = max_intervals: inconclusive, weight held at 10 %, one alert; 4, 5: inconclusive,
    # no second alert
    pol = CanaryPolicy(min_intervals=2, min_trades=0, max_intervals=3)
    eng = build(tmp_path, ["2000"] * 5, [seed("l", "live", "1", ["0"]), seed("c", "canary", "0.10", ["0"])],
                lifecycle=lc_config(analysis_interval_ns=MIN, canary=pol))
    run(eng)
    assert analysed(eng) == [(1, "warming", D("0.1")), (2, "hold", D("0.1")), (3, "inconclusive", D("0.1")),
                             (4, "inconclusive", D("0.1")), (5, "inconclusive", D("0.1"))]
    alerts = [m for c, m in eng.alerts_seen if c == "CANARY_INCONCLUSIVE"]
    assert len(alerts) == 1 and alerts[0].startswith("c: no decision after 3 intervals, holding at 10%")
    assert registry_view(eng)["c"] == ("canary", D("0.10"), False)


# ------------------------------------------------------------------ 7. refits
def _refit_setup(tmp_path, closes, fail_children=0):
    # family weight 1; live l flat with a refit every 4 observed bars, its refits long; canary c long at 10 %.
    # l's fit is installed at step 2 (after 2 bars): refit_due at its 6th bar (step 5) -> candidate hmm_v3
    # (versions: l 1, c 2). The candidate observes from step 6: its fit is asked at its 1st bar (step 6)
    # and applied before its 2nd (step 7, fit_apply_lag 1): ready -> registered as the canary at step 7.
    ex = Executor()
    eng = build(tmp_path, closes,
                [seed("l", "live", "1", ["0"], refit_every=4, child_targets=["1"], fail_children=fail_children),
                 seed("c", "canary", "0.10", ["1"])],
                lifecycle=lc_config(FamilySpec(FAM, floor=D("0"), initial=D("1")), analysis_interval_ns=MIN),
                executor=ex)
    return eng, ex


def test_a_refit_becomes_the_canary_replacing_the_one_under_analysis(tmp_path, caplog):
    # closes 2000: c bought floor(1000 / 2000) = 0.5 at step 2 (filled step 3).
    # step 7: hmm_v3 registered at 10 % (target 1 -> 0.5); c retired (target 0). Step 8: c sells 0.5 and
    # hmm_v3 buys 0.5: crossed internally (X-8-1 c SELL, X-8-2 hmm_v3 BUY), nothing sent; c flat -> dropped.
    # step 9: l's next refit is due (4 bars after the spawn at its 6th): candidate hmm_v4.
    eng, ex = _refit_setup(tmp_path, ["2000"] * 10)
    with caplog.at_level(logging.INFO, logger="desk.canary"):
        run(eng, 7)  # steps 0-6: the candidate exists, its fit was run by the executor, not yet applied
    assert eng.lifecycle.candidates == {"hmm_v3": "l"}
    assert "hmm_v3" in eng.models and eng.weights["hmm_v3"] == 0 and "hmm_v3" not in eng.lifecycle.registry
    assert ("_ok_fit", (7,)) in ex.jobs  # the candidate's fit job, asked at its first bar (its 7th observed)
    assert "[CANARY] REFIT hmm_v3 from l" in caplog.text
    old_analysis = eng.lifecycle.analyses[FAM]
    assert old_analysis.n_intervals == 7

    run(eng, 1)  # step 7: the fit is applied (engine clock 8 min), the candidate is registered
    fitted = [e for e in journal(eng, "ModelFitted") if e["model_id"] == "hmm_v3"]
    assert [e["ts_event"] for e in fitted] == [8 * MIN]
    assert eng.lifecycle.candidates == {}
    assert registry_view(eng) == {"l": ("live", D("1"), False), "c": ("retired", D("0"), False),
                                  "hmm_v3": ("canary", D("0.10"), False)}
    assert eng.weights["hmm_v3"] == D("0.1") and eng.target_qty[("hmm_v3", IID)] == D("0.5")
    reg = journal(eng, "ModelVersionRegistered")[-1]
    assert (reg["model_id"], reg["model_version"], reg["stage"], reg["parent"], reg["who"]) == \
        ("hmm_v3", 3, "canary", "l", "lifecycle")
    assert reg["reason"] == "refit of l, replaces canary c (analysis restarted)"
    assert (reg["train_start_ns"], reg["train_end_ns"]) == (5 * MIN, 7 * MIN)  # the window the job was cut at
    assert reg["diagnostics"] == {"n_iter": 1, "converged": True}
    assert reg["params"] == eng.lifecycle.record("l").params  # a refit keeps its parent's configuration
    st = journal(eng, "ModelStageChanged")[-1]
    assert (st["model_id"], st["stage"], st["previous"], st["who"]) == ("c", "retired", "canary", "lifecycle")
    assert "refit hmm_v3" in st["reason"]
    new_analysis = eng.lifecycle.analyses[FAM]
    assert new_analysis is not old_analysis and new_analysis.n_intervals == 0 and new_analysis.weight == D("0.10")
    row = eng.store.conn.execute("SELECT version, stage, weight, train_start_ns, train_end_ns FROM models "
                                 "WHERE model_id='hmm_v3'").fetchone()
    assert row == (3, "canary", "0.10", 5 * MIN, 7 * MIN)

    run(eng)  # steps 8-9
    assert fills(eng, "X-%") == [("X-8-1", "c", "SELL", "0.5000", "2000.00"),
                                 ("X-8-2", "hmm_v3", "BUY", "0.5000", "2000.00")]
    assert eng.portfolio.position("hmm_v3", IID).quantity == D("0.5") and eng.portfolio.position("c", IID).quantity == 0
    assert "c" not in eng.models
    assert eng.lifecycle.analyses[FAM].n_intervals == 2  # the new canary's intervals: steps 8 and 9
    assert [e["interval"] for e in journal(eng, "CanaryAnalysed") if e["model_id"] == "hmm_v3"] == [1, 2]
    assert eng.lifecycle.candidates == {"hmm_v4": "l"}


def test_a_refit_whose_fit_raises_is_rejected_and_the_live_and_canary_are_untouched(tmp_path):
    eng, ex = _refit_setup(tmp_path, ["2000"] * 8, fail_children=1)
    run(eng, 7)
    cand = eng.models["hmm_v3"][IID]
    before = (registry_view(eng), {m: w for m, w in eng.weights.items() if m != "hmm_v3"})
    assert ("_fail_fit", (7,)) in ex.jobs
    run(eng, 1)  # step 7: the fit's failure surfaces when it is due
    assert eng.lifecycle.candidates == {}
    assert "hmm_v3" not in eng.models and "hmm_v3" not in eng.weights and "hmm_v3" not in eng.lifecycle.registry
    assert not any(k[0] == "hmm_v3" for k in eng.pending_fits)
    assert cand.abandoned == 1
    assert (registry_view(eng), dict(eng.weights)) == before
    codes = [c for c, _ in eng.alerts_seen]
    assert codes[-2:] == ["FIT_FAILED", "REFIT_REJECTED"]
    msg = dict(eng.alerts_seen)["REFIT_REJECTED"]
    assert msg == "refit hmm_v3 of l rejected, l kept: fit failed on ETHUSDT.BINANCE: no convergence at bar 7"
    assert eng.lifecycle.analyses[FAM].n_intervals == 8  # c's analysis goes on
    assert not [e for e in journal(eng, "ModelVersionRegistered") if e["model_id"] == "hmm_v3"]


def test_the_next_refit_after_a_rejected_one_is_fitted_on_schedule(tmp_path):
    # after the rejection at step 7, l's next refit is due 4 bars after the spawn at its 6th bar: its 10th
    # (step 9) -> a new candidate (hmm_v3 again: the rejected one never entered the registry), fit asked at
    # step 10, applied and registered at step 11 -- not 60 bars later (the failed fit's retry pause belongs
    # to the rejected candidate, not to a new one that reuses its name)
    eng, ex = _refit_setup(tmp_path, ["2000"] * 12, fail_children=1)
    run(eng)
    assert [j for j in ex.jobs if j[0] != "_ok_fit" or j[1] != (2,)] == [("_fail_fit", (7,)), ("_ok_fit", (11,))]
    assert registry_view(eng)["hmm_v3"] == ("canary", D("0.10"), False)
    assert registry_view(eng)["c"] == ("retired", D("0"), False)
    assert eng.lifecycle.candidates == {}


# ------------------------------------------------------------------ 8. allocator
def _alloc_engine(tmp_path, threshold="0.01"):
    # families A and B, floors 0.25, caps 1, so the initial weights are 1/2 each; one allocator period per
    # bar; the first allocation from Sharpe after 3 periods. a (family A) stays flat; b (family B) is long.
    cfg = lc_config(FamilySpec("A", floor=D("0.25")), FamilySpec("B", floor=D("0.25")), allocate=True,
                    allocation_period_ns=MIN, allocation_min_periods=3, rebalance_threshold=D(threshold))
    eng = build(tmp_path, RISING, [seed("a", "live", "1", ["0"], family="A"), seed("b", "live", "1", ["1"], family="B")],
                lifecycle=cfg)
    eng.lifecycle.allocations_path = tmp_path / "capital_allocations.json"
    return eng


def test_the_allocator_gives_the_floors_then_the_remainder_to_the_positive_sharpe(tmp_path):
    # step 0: the initial allocation is journaled: 0.5 / 0.5 (budgets 5000 / 5000).
    # b buys floor(5000 / 1000) = 5 at step 2 (filled step 3 at 1000). Family returns per period (PnL change
    # over the budget at the period start, 5000): A 0, 0, 0; B 0, 0, 5 x (1010 - 1000) / 5000 = 0.01.
    # At step 3 (3 periods): Sharpe A = 0 (zero variance); B = mean/sd of [0, 0, 0.01] = (0.01/3) /
    # sqrt(((0.01/3)^2 x 2 + (0.02/3)^2) / 2) = 1/sqrt(3). Floors 0.25 each, the remainder 0.5 all to B
    # (the only positive Sharpe): A 0.25, B 0.75; budgets 2500 / 7500. Later periods: B stays positive, A 0:
    # the same weights, nothing emitted.
    eng = _alloc_engine(tmp_path)
    run(eng, 3)
    ev = journal(eng, "AllocationChanged")
    assert [({f: D(w) for f, w in e["weights"].items()}, {f: D(b) for f, b in e["budgets"].items()}) for e in ev] == [
        ({"A": D("0.5"), "B": D("0.5")}, {"A": D("5000"), "B": D("5000")})]
    run(eng)
    ev = journal(eng, "AllocationChanged")
    assert len(ev) == 2
    last = ev[-1]
    assert {f: D(w) for f, w in last["weights"].items()} == {"A": D("0.25"), "B": D("0.75")}
    assert {f: D(b) for f, b in last["budgets"].items()} == {"A": D("2500"), "B": D("7500")}
    assert last["ts_event"] == 4 * MIN  # step 3's close
    assert float(last["sharpe"]["A"]) == 0.0
    assert float(last["sharpe"]["B"]) == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert D(last["idle"]) == 0
    # the router's budgets follow: a 0.25 x 1, b 0.75 x 1; b's target re-sized at the mark 1010:
    # floor(7500 / 1010) = 7.4257 (bought +2.4257 at step 4)
    assert eng.weights == {"a": D("0.25"), "b": D("0.75")}
    assert orders(eng)[:2] == [("b", "BUY", "5.0000", "1000.00", "FILLED", 2), ("b", "BUY", "2.4257", "1020.00", "FILLED", 4)]
    rows = list(eng.store.conn.execute("SELECT family, ts, weight, budget FROM allocations ORDER BY seq, family"))
    assert [(f, t, D(w), D(b)) for f, t, w, b in rows] == [
        ("A", MIN, D("0.5"), D("5000")), ("B", MIN, D("0.5"), D("5000")),
        ("A", 4 * MIN, D("0.25"), D("2500")), ("B", 4 * MIN, D("0.75"), D("7500"))]
    doc = json.loads((tmp_path / "capital_allocations.json").read_text())
    assert doc["ts_ns"] == 4 * MIN and D(doc["capital"]) == D("10000") and D(doc["idle"]) == 0
    fam = {f["family"]: f for f in doc["families"]}
    assert {f: (D(r["weight"]), D(r["budget"]), D(r["floor"]), D(r["cap"])) for f, r in fam.items()} == {
        "A": (D("0.25"), D("2500"), D("0.25"), D("1")), "B": (D("0.75"), D("7500"), D("0.25"), D("1"))}
    assert {m: (r["stage"], D(r["budget"])) for m, r in fam["B"]["models"].items()} == {"b": ("live", D("7500"))}
    assert not (tmp_path / "capital_allocations.json.tmp").exists()


@pytest.mark.parametrize("threshold, applied", [("0.25", True), ("0.25001", False)])
def test_a_move_smaller_than_the_rebalance_threshold_is_not_applied(tmp_path, threshold, applied):
    # the allocator's move is 0.5 -> 0.25 / 0.75, 0.25 for both families: applied at a threshold of 0.25
    # (at least the threshold), not at 0.25001
    eng = _alloc_engine(tmp_path, threshold)
    run(eng)
    ev = journal(eng, "AllocationChanged")
    want = {"A": D("0.25"), "B": D("0.75")} if applied else {"A": D("0.5"), "B": D("0.5")}
    assert eng.lifecycle.family_weights == want
    assert len(ev) == (2 if applied else 1)
    assert eng.weights == {"a": want["A"], "b": want["B"]}
    assert float(eng.lifecycle.sharpe["B"]) > 0  # the Sharpe was computed either way


# ------------------------------------------------------------------ 9. restart
RESTART_CLOSES = [str(1000 + 10 * max(0, k - 2) + (7 if k % 3 == 0 else 0)) for k in range(18)]


def _restart_engine(path):
    # live l long with refits every 4 bars (refits long), canary c flat; analysis every bar (failures: c's
    # excess is minus l's positive return), failure threshold 5; the allocator on one family (floor 0.5).
    pol = CanaryPolicy(min_intervals=2, min_trades=0, failure_threshold=5, boundary_z=0.01, boundary_delta=0.5)
    cfg = lc_config(FamilySpec(FAM, floor=D("0.5"), cap=D("0.6")), allocate=True, allocation_period_ns=MIN,
                    allocation_min_periods=3, analysis_interval_ns=MIN, canary=pol)
    return build(path, RESTART_CLOSES, [seed("l", "live", "1", ["1"], refit_every=4, child_targets=["1"]),
                                        seed("c", "canary", "0.10", ["0"])], lifecycle=cfg)


def _journal_keys(eng):
    return [(e["type"], e.get("client_order_id") or e.get("model_id") or "", e.get("trade_id", ""))
            for e in journal(eng)]


@pytest.mark.parametrize("cut", [7, 14])
def test_a_restart_from_the_checkpoint_continues_like_an_uninterrupted_run(tmp_path, cut):
    whole = _restart_engine(tmp_path / "whole")
    run(whole)

    first = _restart_engine(tmp_path / "cut")
    run(first, cut)
    snap = json.loads(json.dumps(first.snapshot_state()))
    lc1 = first.lifecycle
    state1 = json.loads(json.dumps(lc1.state_dict()))
    reg1, weights1 = registry_view(first), dict(first.weights)
    first.flush()
    first.venue.close()
    first.store.close()
    first.audit.close()

    second = _restart_engine(tmp_path / "cut")  # a new process on the same state
    second.restore(snap)
    lc2 = second.lifecycle
    assert registry_view(second) == reg1 and dict(second.weights) == weights1
    assert json.loads(json.dumps(lc2.state_dict())) == state1
    assert lc2.candidates == lc1.candidates and lc2.family_weights == lc1.family_weights
    a1, a2 = lc1.analyses.get(FAM), lc2.analyses.get(FAM)
    assert (a2.n_intervals, a2.failures, a2.weight) == (a1.n_intervals, a1.failures, a1.weight)
    assert set(second.models) == set(first.models)
    if cut == 7:
        # hand: c's intervals at steps 0-6; l's first fill at step 3 -> c's excess is -l's return from
        # interval 4 on: failed checks at intervals 4, 5, 6, 7 (of 5 allowed); l's refit hmm_v3 was spawned
        # at step 5 and its fit is pending (applied at step 7)
        assert (a2.n_intervals, a2.failures) == (7, 4)
        assert lc2.candidates == {"hmm_v3": "l"}
        assert ("hmm_v3", IID) in second.pending_fits
    run(second)

    assert _journal_keys(second) == _journal_keys(whole)
    assert registry_view(second) == registry_view(whole)
    assert dict(second.weights) == dict(whole.weights)
    assert json.loads(json.dumps(second.lifecycle.state_dict())) == json.loads(json.dumps(whole.lifecycle.state_dict()))
    assert orders(second) == orders(whole)
    # the scenario exercised what it should
    assert {"hmm_v3", "hmm_v4"} <= set(whole.lifecycle.registry)
