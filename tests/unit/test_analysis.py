"""core.analysis: Sharpe, PSR, drawdown, the canary analysis and the
capital allocator (issue 7). Right values are worked by hand in the
comments; the canary's statistical properties are measured on 400 seeded
synthetic canaries per case."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.analysis import (
    CanaryAnalysis,
    CanaryPolicy,
    IntervalResult,
    allocate,
    max_drawdown,
    probabilistic_sharpe_ratio,
    psr_of,
    sample_sharpe,
)

D = Decimal


# --------------------------------------------------------------------------- Sharpe, PSR, drawdown


def test_sample_sharpe_by_hand():
    # [1, -1, 2, 0, 1]: mean 3/5 = 0.6; deviations 0.4 -1.6 1.4 -0.6 0.4,
    # squares 0.16 + 2.56 + 1.96 + 0.36 + 0.16 = 5.2, sample variance
    # 5.2 / 4 = 1.3 -> Sharpe 0.6 / sqrt(1.3) = 0.6 / 1.140175 = 0.526235
    assert sample_sharpe([1, -1, 2, 0, 1]) == pytest.approx(0.526235, abs=1e-6)
    # B = [1, 1, 1, 2, 1]: mean 1.2, squares 4 * 0.04 + 0.64 = 0.8, var 0.2
    # -> 1.2 / 0.447214 = 2.683282
    assert sample_sharpe([1, 1, 1, 2, 1]) == pytest.approx(2.683282, abs=1e-6)


def test_sample_sharpe_zero_variance_and_short_series_get_zero():
    assert sample_sharpe([0, 0, 0, 0, 0]) == 0.0
    assert sample_sharpe([0.02, 0.02, 0.02]) == 0.0          # constant positive: zero, not infinity
    assert sample_sharpe([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]) == 0.0  # float noise of the mean is not variance
    assert sample_sharpe([0.5]) == 0.0
    assert sample_sharpe([]) == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_returns_are_refused_naming_the_index(bad):
    for fn in (sample_sharpe, psr_of, max_drawdown):
        with pytest.raises(ValueError, match=r"returns\[2\]"):
            fn([0.1, 0.2, bad, 0.3])


def test_psr_right_value_from_the_issue_and_the_excess_kurtosis_mistake():
    # SR = 0.5 per period, n = 60, g3 = -0.5, g4 = 4 (not excess), SR* = 0:
    #   denominator 1 - g3*SR + (g4-1)/4*SR^2 = 1 + 0.25 + 0.75*0.25 = 1.4375,
    #   sqrt = 1.198958; numerator 0.5 * sqrt(59) = 0.5 * 7.681146 = 3.840573
    #   z = 3.840573 / 1.198958 = 3.20326 -> Phi(3.20326) = 0.99932
    assert probabilistic_sharpe_ratio(0.5, 60, -0.5, 4.0) == pytest.approx(0.99932, abs=5e-6)
    # excess kurtosis 1 by mistake: 1 + 0.25 + 0 = 1.25, sqrt 1.118034,
    # z = 3.43511 -> 0.99970: the fatter tails are ignored, the PSR too high
    assert probabilistic_sharpe_ratio(0.5, 60, -0.5, 1.0) == pytest.approx(0.99970, abs=5e-6)
    # at the benchmark itself the PSR is one half whatever the moments
    assert probabilistic_sharpe_ratio(0.3, 100, 1.0, 9.0, benchmark=0.3) == pytest.approx(0.5)


def test_psr_refuses_bad_arguments_naming_them():
    with pytest.raises(ValueError, match="n:"):
        probabilistic_sharpe_ratio(0.5, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="kurtosis"):
        probabilistic_sharpe_ratio(0.5, 60, 0.0, math.nan)
    with pytest.raises(ValueError, match="skewness/kurtosis"):
        # 1 - 4*1 + (1-1)/4 = -3: moments no sample can have
        probabilistic_sharpe_ratio(1.0, 60, 4.0, 1.0)


def test_psr_of_by_hand():
    # [1, -1, 2, 0, 1] (population moments, as in the paper):
    #   m2 = 5.2/5 = 1.04; cubes of the deviations 0.064 - 4.096 + 2.744
    #   - 0.216 + 0.064 = -1.44 -> m3 = -0.288, g3 = -0.288 / 1.04^1.5 = -0.271545
    #   fourth powers 0.0256 + 6.5536 + 3.8416 + 0.1296 + 0.0256 = 10.576
    #   -> m4 = 2.1152, g4 = 2.1152 / 1.0816 = 1.955621
    #   SR (ddof 1) = 0.526235; den = 1 + 0.271545*0.526235
    #   + 0.955621/4 * 0.276923 = 1 + 0.142898 + 0.066157 = 1.209055
    #   z = 0.526235 * sqrt(4) / sqrt(1.209055) = 1.052470 / 1.099570 = 0.957164
    #   Phi(0.957164) = 0.83076
    assert psr_of([1, -1, 2, 0, 1]) == pytest.approx(0.83076, abs=2e-5)


def test_psr_of_without_evidence_is_one_half():
    assert psr_of([0.01, 0.02]) == 0.5               # fewer than 3 points
    assert psr_of([0, 0, 0, 0]) == 0.5               # zero variance (nobody traded)
    assert psr_of([0.01, 0.01, 0.01], benchmark=0.2) == 0.5


def test_max_drawdown_by_hand():
    # cumulative 1, 0, 2, 2, 3: peak 1 then 0 -> 1
    assert max_drawdown([1, -1, 2, 0, 1]) == 1
    # cumulative from 0: -1, -3, 0, -4: from the start (peak 0) down to -4 -> 4
    assert max_drawdown([-1, -2, 3, -4]) == 4
    assert max_drawdown([1, 2, 3]) == 0
    assert max_drawdown([]) == 0


# --------------------------------------------------------------------------- canary analysis: mechanics

POS = [0.010, 0.012, 0.011, 0.013, 0.009, 0.012, 0.010, 0.011, 0.013, 0.010,
       0.012, 0.011, 0.010, 0.013, 0.012]


def run(analysis, canary, live=None, trades=3):
    live = live or [0.0] * len(canary)
    return [analysis.observe(IntervalResult(c, lv, trades, trades)) for c, lv in zip(canary, live)]


def test_ladder_steps_exactly_and_promotes():
    # a canary that earns 1.0-1.3 % every interval: Sharpe per interval ~10,
    # where the PSR's z tends to 2*sqrt(n-1)/sqrt(g4-1) (~7 after 10
    # intervals for this pattern, g4 ~ 1.8), far above the boundary (4.0 at
    # n = 10); min_trades 20 at 3 fills per interval is reached at interval
    # 7, so interval 10 (min_intervals) is the first judged.
    a = CanaryAnalysis(CanaryPolicy())
    assert a.weight == D("0.10")
    vs = run(a, POS[:13])
    assert [v.action for v in vs] == ["warming"] * 9 + ["step", "step", "step", "promote"]
    assert [v.weight for v in vs[9:]] == [D("0.25"), D("0.50"), D("1"), D("1")]
    assert a.decided and a.passes == 4 and a.failures == 0 and a.n_intervals == 13
    assert "step 10% -> 25%" in vs[9].reason and "after 10 intervals" in vs[9].reason
    assert vs[-1].reason.endswith("at 100%: promote")
    f = vs[-1].figures
    assert f["n"] == 13 and f["canary_trades"] == 39 and f["passes"] == 4
    assert f["canary_pnl"] == pytest.approx(sum(POS[:13]))
    assert f["psr"] >= f["psr_needed"] > 0.999
    with pytest.raises(RuntimeError, match="already decided"):
        a.observe(IntervalResult(0.01, 0.0, 3, 3))


def test_failures_accumulate_to_rollback():
    a = CanaryAnalysis(CanaryPolicy())
    vs = run(a, [-x for x in POS[:12]])           # the mirror image: surely worse
    assert [v.action for v in vs] == ["warming"] * 9 + ["fail", "fail", "rollback"]
    assert [v.figures["failures"] for v in vs[9:]] == [1, 2, 3]
    assert all(v.weight == D("0.10") for v in vs)
    assert "failed check 1/3" in vs[9].reason and "PSR" in vs[9].reason
    assert vs[-1].reason.endswith("failed check 3/3, roll back")
    assert a.decided


def test_drawdown_breach_is_a_failure_even_when_the_canary_beats_live():
    # the canary loses 3 % per interval, the live version 6 % (+/- noise):
    # the excess is clearly positive, but the canary's drawdown after 10
    # intervals is 0.30 of its budget > 0.25
    canary = [-0.03] * 12
    live = [-0.06 - x / 10 for x in POS[:12]]
    a = CanaryAnalysis(CanaryPolicy())
    vs = run(a, canary, live)
    assert [v.action for v in vs[9:]] == ["fail", "fail", "rollback"]
    assert vs[9].figures["drawdown"] == pytest.approx(0.30)
    assert vs[9].figures["psr"] >= vs[9].figures["psr_needed"]   # would have passed
    assert "drawdown 0.3000 > 0.25" in vs[9].reason
    assert a.weight == D("0.10") and a.passes == 0


def test_hold_without_evidence_and_warming_until_enough_trades():
    a = CanaryAnalysis(CanaryPolicy())
    vs = run(a, [0.01, -0.01] * 10, trades=1)      # 1 fill per interval: 20 fills at interval 20
    assert [v.action for v in vs] == ["warming"] * 19 + ["hold"]
    assert vs[18].reason == "warming up: 19 intervals (min 10), 19 canary trades (min 20)"
    assert vs[-1].figures["psr"] == pytest.approx(0.5)   # mean excess exactly 0


def test_inconclusive_at_the_horizon_holds_the_weight_but_still_rolls_back_on_failures():
    pol = CanaryPolicy(max_intervals=20)
    a = CanaryAnalysis(pol, weight=D("0.25"))
    vs = run(a, [0.01, -0.01] * 11)
    assert [v.action for v in vs[9:19]] == ["hold"] * 10
    assert [v.action for v in vs[19:]] == ["inconclusive"] * 3
    assert all(v.weight == D("0.25") for v in vs) and not a.decided
    assert "inconclusive" in vs[19].reason and "operator" in vs[19].reason
    # a canary that keeps losing after the horizon is still rolled back
    # (a drawdown of 0.31 > 0.25 from the first loss on: three failed checks)
    vs = run(a, [-0.3, -0.3, -0.3])
    assert [v.action for v in vs] == ["inconclusive", "inconclusive", "rollback"]
    assert [v.figures["failures"] for v in vs] == [1, 2, 3]
    assert a.decided


def test_a_pass_at_the_horizon_does_not_step_and_a_warm_up_never_over_is_inconclusive():
    pol = CanaryPolicy(max_intervals=10)
    a = CanaryAnalysis(pol)
    vs = run(a, POS[:11])
    assert [v.action for v in vs] == ["warming"] * 9 + ["inconclusive", "inconclusive"]
    assert a.weight == D("0.10")
    b = CanaryAnalysis(pol)
    vs = run(b, POS[:10], trades=0)
    assert vs[-1].action == "inconclusive" and "warm-up not over" in vs[-1].reason


def test_the_running_moments_agree_with_the_two_pass_functions():
    rng = np.random.default_rng(7)
    c = (rng.standard_normal(150) * 0.01 + 0.001).tolist()
    lv = (rng.standard_normal(150) * 0.005).tolist()
    a = CanaryAnalysis(CanaryPolicy(boundary_z=50.0))   # never decides
    vs = run(a, c, lv)
    ex = [x - y for x, y in zip(c, lv)]
    for k in (3, 10, 57, 150):
        f = vs[k - 1].figures
        assert f["sharpe"] == pytest.approx(sample_sharpe(ex[:k]), rel=1e-9)
        assert f["psr"] == pytest.approx(psr_of(ex[:k]), abs=1e-9)
        assert f["drawdown"] == pytest.approx(max_drawdown(c[:k]), abs=1e-12)
        assert f["live_pnl"] == pytest.approx(sum(lv[:k]), abs=1e-12)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    c = (rng.standard_normal(160) * 0.01 + 0.005).tolist()
    lv = (rng.standard_normal(160) * 0.01).tolist()
    pol = CanaryPolicy()
    a = CanaryAnalysis(pol)
    run(a, c[:40], lv[:40])
    b = CanaryAnalysis.from_state_dict(pol, json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    va, vb = [], []
    for x, y in zip(c[40:], lv[40:]):
        va.append(a.observe(IntervalResult(x, y, 3, 2)))
        vb.append(b.observe(IntervalResult(x, y, 3, 2)))
        if a.decided:
            break
    assert va == vb and len({v.action for v in va}) > 1


def test_state_dict_refuses_bad_fields():
    pol = CanaryPolicy()
    d = CanaryAnalysis(pol).state_dict()
    with pytest.raises(ValueError, match="failures: missing"):
        CanaryAnalysis.from_state_dict(pol, {k: v for k, v in d.items() if k != "failures"})
    with pytest.raises(ValueError, match="weight"):
        CanaryAnalysis.from_state_dict(pol, {**d, "weight": "0.3"})
    with pytest.raises(ValueError, match="step"):
        CanaryAnalysis.from_state_dict(pol, {**d, "weight": "0.50"})
    with pytest.raises(ValueError, match="m2: not a finite"):
        CanaryAnalysis.from_state_dict(pol, {**d, "m2": "nan"})


def test_constructor_weight_must_be_a_step():
    assert CanaryAnalysis(CanaryPolicy(), D("0.5")).weight == D("0.50")
    with pytest.raises(ValueError, match="weight: 0.3 is not one of the step weights"):
        CanaryAnalysis(CanaryPolicy(), D("0.3"))


@pytest.mark.parametrize("kwargs, field", [
    ({"step_weights": ()}, "step_weights"),
    ({"step_weights": (D("0.5"), D("0.25"), D("1"))}, r"step_weights\[1\]"),
    ({"step_weights": (D("0.1"), D("0.5"))}, "step_weights"),
    ({"step_weights": (0.1, D("1"))}, r"step_weights\[0\]"),
    ({"min_intervals": 1}, "min_intervals"),
    ({"min_trades": -1}, "min_trades"),
    ({"failure_threshold": 0}, "failure_threshold"),
    ({"max_intervals": 5}, "max_intervals"),
    ({"max_drawdown": 0.0}, "max_drawdown"),
    ({"max_drawdown": math.nan}, "max_drawdown"),
    ({"boundary_z": -1.0}, "boundary_z"),
    ({"boundary_delta": 0.7}, "boundary_delta"),
    ({"benchmark": math.inf}, "benchmark"),
    ({"min_intervals": 2.5}, "min_intervals"),
])
def test_invalid_policy_fields_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        CanaryPolicy(**kwargs)


@pytest.mark.parametrize("args, field", [
    ((math.nan, 0.0, 1, 1), "canary_return"),
    ((0.0, math.inf, 1, 1), "live_return"),
    ((0.0, 0.0, -1, 1), "canary_trades"),
    ((0.0, 0.0, 1, 1.5), "live_trades"),
])
def test_invalid_interval_results_raise_naming_the_field(args, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        IntervalResult(*args)


def test_interval_results_take_decimal_and_numpy_numbers_as_float_and_int():
    r = IntervalResult(D("0.0125"), np.float64(-0.5), np.int64(3), 0)
    assert r == IntervalResult(0.0125, -0.5, 3, 0)
    assert type(r.canary_return) is float and type(r.canary_trades) is int


# --------------------------------------------------------------------------- canary analysis: statistics
#
# 400 seeds, excess returns i.i.d. N(mu, sigma), sigma = 0.01 (live return
# 0), 3 fills per interval, horizon 200 intervals, default policy.
#
# The brief asked for "mu = 0.25 sigma promoted within 120 intervals in at
# least 90 % of seeds" together with "mu = 0 promoted in at most 5 %". No
# rule can do both: "promoted by 120" is an event of the first 120 returns
# whose probability under mu = 0 is at most 5 %, so by the Neyman-Pearson
# lemma its probability under mu = 0.25 sigma is at most that of the best
# fixed-sample test, Phi(0.25*sqrt(120) - 1.645) = Phi(1.094) = 0.863 (known
# sigma; a sequential rule that also watches intervals 121-200 does worse).
# Pinned instead, from `bench/decisions.py --calibrate --alpha 0.03` (40 000
# independent paths per case, expectations: null promoted 3.0 %; +0.25:
# 91.8 % within 200, 62.7 % within 120; +0.35: 91.1 % within 120; -0.25:
# 98.5 % rolled back, < 0.01 % promoted), each threshold at least 2.5
# binomial standard deviations of a 400-seed rate away from its expectation:

SIGMA = 0.01


def outcomes(mu_over_sigma: float, seeds: int = 400, horizon: int = 200) -> list[tuple[str, int]]:
    pol = CanaryPolicy()
    out = []
    for seed in range(seeds):
        x = (np.random.default_rng(seed).standard_normal(horizon) * SIGMA + mu_over_sigma * SIGMA).tolist()
        a = CanaryAnalysis(pol)
        last = ("none", horizon)
        for i, r in enumerate(x):
            v = a.observe(IntervalResult(r, 0.0, 3, 3))
            if v.action in ("promote", "rollback", "inconclusive"):
                last = (v.action, i + 1)
                break
        out.append(last)
    return out


def rate(outs, action, within=10 ** 9):
    return sum(a == action and n <= within for a, n in outs) / len(outs)


def test_an_equal_canary_is_rarely_promoted():
    outs = outcomes(0.0)
    assert rate(outs, "promote") <= 0.05
    # and it does not stay in limbo forever: everything ends by the horizon
    assert all(a in ("promote", "rollback", "inconclusive") for a, _ in outs)


def test_a_better_canary_is_promoted():
    outs = outcomes(0.25)
    assert rate(outs, "promote") >= 0.88            # within the 200-interval horizon
    assert rate(outs, "promote", within=120) >= 0.55
    assert rate(outs, "rollback") <= 0.01
    faster = outcomes(0.35)
    assert rate(faster, "promote", within=120) >= 0.87


def test_a_worse_canary_is_rolled_back_and_almost_never_promoted():
    outs = outcomes(-0.25)
    assert rate(outs, "rollback") >= 0.95
    assert rate(outs, "promote") <= 0.005


def test_a_fixed_psr_gate_looked_at_every_interval_promotes_an_equal_canary_too_often():
    # the reason for the boundary: PSR >= 0.95 at every look (a constant
    # boundary z = 1.645) with the same ladder, 200 seeds of the null
    pol = CanaryPolicy(boundary_delta=0.5, boundary_z=1.6449)
    promoted = 0
    for seed in range(200):
        a = CanaryAnalysis(pol)
        for r in (np.random.default_rng(seed).standard_normal(200) * SIGMA).tolist():
            v = a.observe(IntervalResult(r, 0.0, 3, 3))
            if v.action in ("promote", "rollback", "inconclusive"):
                promoted += v.action == "promote"
                break
    assert promoted / 200 > 0.15


# --------------------------------------------------------------------------- allocator


def test_allocate_right_value_from_the_issue():
    # Sharpe A = 0.6/sqrt(1.3) = 0.526235, B = 1.2/sqrt(0.2) = 2.683282,
    # C = 0 (zero variance). A/B = 0.5*sqrt(0.2/1.3) = 0.5*0.392232 = 0.196116
    # -> A = 0.196116/1.196116 = 0.1639608, B = 1/1.196116 = 0.8360392.
    # Quantized down to 1e-5: 0.16396 + 0.83603 = 0.99999; the lost quantum
    # goes to the largest remainder (B: 0.92 of a quantum vs A: 0.08)
    # -> B = 0.83604, sum exactly 1.
    r = allocate({"A": [1, -1, 2, 0, 1], "B": [1, 1, 1, 2, 1], "C": [0, 0, 0, 0, 0]}, D("10000"))
    assert r.weights == {"A": D("0.16396"), "B": D("0.83604"), "C": D("0")}
    assert r.budgets == {"A": D("1639.6"), "B": D("8360.4"), "C": D("0")}
    assert r.idle == 0
    assert r.sharpe["A"] == pytest.approx(0.526235, abs=1e-6) and r.sharpe["C"] == 0.0


# X = [0, 2], Y = [1, 3], Z = [2, 4]: sd sqrt(2) each, means 1, 2, 3, so the
# Sharpes are 1 : 2 : 3 (0.7071, 1.4142, 2.1213) and the uncapped shares
# 1/6, 2/6, 3/6.
XYZ = {"X": [0, 2], "Y": [1, 3], "Z": [2, 4]}


def test_allocate_cap_with_redistribution():
    # Z capped at 0.4 (it wanted 0.5): the 0.6 left goes to X and Y 1 : 2
    # -> X 0.2, Y 0.4
    r = allocate(XYZ, D("1000"), caps={"Z": D("0.4")})
    assert r.weights == {"X": D("0.2"), "Y": D("0.4"), "Z": D("0.4")}
    assert r.idle == 0
    # Y capped at 0.35 as well: first round Z is over (0.5 > 0.4), Y not
    # (0.333 < 0.35); second round Y gets 0.6 * 2/3 = 0.4 > 0.35, so it is
    # capped too and X takes the rest: 1 - 0.4 - 0.35 = 0.25
    r = allocate(XYZ, D("1000"), caps={"Z": D("0.4"), "Y": D("0.35")})
    assert r.weights == {"X": D("0.25"), "Y": D("0.35"), "Z": D("0.4")}
    assert r.budgets == {"X": D("250"), "Y": D("350"), "Z": D("400")}


def test_allocate_cap_with_nobody_to_take_the_excess_leaves_it_idle():
    # only Z has a positive Sharpe; X and Y lose: Z is capped at 0.3 and the
    # remaining 0.7 has nobody to go to
    r = allocate({"X": [0, -2], "Y": [-1, -3], "Z": [2, 4]}, D("1000"), caps={"Z": D("0.3")})
    assert r.weights == {"X": D("0"), "Y": D("0"), "Z": D("0.3")}
    assert r.idle == D("0.7")
    # everyone capped at 0.2: 0.4 idle
    r = allocate(XYZ, D("1000"), caps={k: D("0.2") for k in XYZ})
    assert r.weights == {k: D("0.2") for k in XYZ} and r.idle == D("0.4")


def test_allocate_floors_first_then_shares():
    # floors 0.1 each: 0.7 left, shared 1 : 2 : 3 -> X 0.1 + 0.7/6 =
    # 0.216667, Y 0.1 + 1.4/6 = 0.333333, Z 0.1 + 2.1/6 = 0.45. Down to 1e-5:
    # 0.21666 + 0.33333 + 0.45 = 0.99999; the lost quantum goes to the
    # largest remainder, X (0.67 of a quantum vs Y 0.33, Z 0) -> X 0.21667
    r = allocate(XYZ, D("1000"), floors={k: D("0.1") for k in XYZ})
    assert r.weights == {"X": D("0.21667"), "Y": D("0.33333"), "Z": D("0.45")}
    assert r.idle == 0
    assert r.budgets == {"X": D("216.67"), "Y": D("333.33"), "Z": D("450")}
    # a losing family keeps its floor; the others share what is left
    r = allocate({"L": [0, -2], "X": [0, 2], "Y": [1, 3]}, D("1000"), floors={"L": D("0.25")})
    # 0.75 shared 1 : 2 -> X 0.25, Y 0.5
    assert r.weights == {"L": D("0.25"), "X": D("0.25"), "Y": D("0.5")}


def test_allocate_all_negative_gets_the_floors_and_the_rest_is_idle():
    r = allocate({"X": [0, -2], "Y": [-1, -3]}, D("500"), floors={"X": D("0.1")})
    assert r.weights == {"X": D("0.1"), "Y": D("0")}
    assert r.idle == D("0.9")
    assert r.budgets == {"X": D("50"), "Y": D("0")}
    r = allocate({"X": [0, 0, 0], "Y": [0.01, 0.01, 0.01]}, D("500"))   # zero variance: zero Sharpe
    assert r.weights == {"X": 0, "Y": 0} and r.idle == 1


def test_allocate_budgets_round_down_to_the_quote_quantum():
    # 1/3 each (equal Sharpe) of 100.00000001: weight 0.33333 + 1 quantum to
    # the first by name on a tie -> 0.33334, 0.33333, 0.33333;
    # 0.33333 * 100.00000001 = 33.3330000033333 -> 33.33300000 (down, 1e-8)
    r = allocate({"a": [0, 2], "b": [0, 2], "c": [0, 2]}, D("100.00000001"))
    assert r.weights == {"a": D("0.33334"), "b": D("0.33333"), "c": D("0.33333")}
    assert r.budgets["b"] == D("33.33300000")
    assert r.budgets["a"] == D("33.33400000")


@pytest.mark.parametrize("kwargs, match", [
    ({"floors": {"X": D("0.6"), "Y": D("0.6")}}, "floors: sum to 1.2"),
    ({"floors": {"X": D("0.5")}, "caps": {"X": D("0.4")}}, r"floors\['X'\]: 0.5 is above caps\['X'\]"),
    ({"caps": {"X": D("1.5")}}, r"caps\['X'\]: need a fraction"),
    ({"floors": {"X": D("-0.1")}}, r"floors\['X'\]"),
    ({"caps": {"Q": D("0.5")}}, r"caps\['Q'\]: unknown family"),
    ({"quantum": D("0")}, "quantum"),
])
def test_allocate_refuses_bad_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        allocate(XYZ, D("1000"), **kwargs)


def test_allocate_refuses_bad_capital_and_returns():
    with pytest.raises(ValueError, match="capital"):
        allocate(XYZ, D("-1"))
    with pytest.raises(ValueError, match=r"returns\['Y'\]\[1\]"):
        allocate({"X": [0, 1], "Y": [0, math.nan]}, D("1"))


_fraction = st.decimals(min_value=0, max_value=1, places=3)


@settings(max_examples=60, deadline=None)
@given(
    rets=st.lists(st.lists(st.floats(-0.05, 0.05), min_size=0, max_size=8), min_size=1, max_size=5),
    bounds=st.lists(st.tuples(_fraction, _fraction), min_size=5, max_size=5),
    capital=st.decimals(min_value=0, max_value=10 ** 9, places=8),
)
def test_allocate_properties(rets, bounds, capital):
    names = [f"f{i}" for i in range(len(rets))]
    floors, caps = {}, {}
    for k, (a, b) in zip(names, bounds):
        lo, hi = min(a, b), max(a, b)
        floors[k], caps[k] = lo / 5, hi          # floors sum to <= 1
    r = allocate(dict(zip(names, rets)), capital, floors=floors, caps=caps)
    assert sum(r.weights.values()) + r.idle == 1
    assert r.idle >= 0
    for k in names:
        w = r.weights[k]
        assert floors[k] <= w <= caps[k]              # bounds are multiples of the quantum here
        assert w % D("0.00001") == 0
        assert 0 <= r.budgets[k] <= w * capital
        assert w * capital - r.budgets[k] < D("0.00000001")
        if r.sharpe[k] <= 0:
            assert w == floors[k]


def test_rolling_sharpe_equals_sample_sharpe_and_feeds_allocate():
    """The allocator's numpy Sharpe (engine path) agrees with the exact
    two-pass one, and ``allocate(sharpes=...)`` gives the issue's weights."""
    from core.analysis import allocate, rolling_sharpe, sample_sharpe

    a, b, c = [1, -1, 2, 0, 1], [1, 1, 1, 2, 1], [0, 0, 0, 0, 0]
    for xs in (a, b, c, [0.1] * 7, [0.003, -0.001, 0.0, 0.002]):
        assert rolling_sharpe(xs) == pytest.approx(sample_sharpe(xs), rel=1e-12, abs=1e-15)
    res = allocate({"A": (), "B": (), "C": ()}, Decimal("1000"),
                   sharpes={"A": rolling_sharpe(a), "B": rolling_sharpe(b), "C": rolling_sharpe(c)})
    assert res.weights == {"A": Decimal("0.16396"), "B": Decimal("0.83604"), "C": Decimal("0")}


def test_rolling_sharpe_matches_the_two_pass_formula_over_a_sliding_window():
    """The allocator's O(1) Sharpe equals sample_sharpe of the same trailing
    window after every addition (10,000 returns through a window of 50,
    so it wraps and re-sums many times), and a constant window gives 0."""
    from core.analysis import RollingSharpe, sample_sharpe

    rng = np.random.default_rng(3)
    xs = rng.normal(0.0002, 0.01, 10_000)
    rs = RollingSharpe(50)
    for k, x in enumerate(xs):
        rs.append(float(x))
        if k % 97 == 0 or k > 9990:
            assert rs.sharpe() == pytest.approx(sample_sharpe(list(xs[max(0, k - 49):k + 1])), rel=1e-9, abs=1e-12)
    flat = RollingSharpe(5, [0.1] * 7)
    assert len(flat) == 5 and flat.sharpe() == 0.0
    assert RollingSharpe(5, [1, -1, 2, 0, 1]).sharpe() == pytest.approx(0.526235, abs=1e-6)
