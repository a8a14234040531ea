"""The governance policy (core.policy, desk.policy_config): validation errors
that name the rule and the field, "for" windows on hand-driven engine
timestamps, rates from RateWindow counts worked out by hand, cooldowns,
per-venue / per-model targets, no resume and no de-escalation, reload and
checkpoint state, and the example file."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.policy import (ACTIONS, FIGURES, NS, Figures, Policy, PolicyEngine, PolicyError, RateWindow, Rule,
                         parse_policy)
from desk.policy_config import load_policy_file, reload_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policy.yaml"
T0 = 1_700_000_000 * NS  # 2023-11-14T22:13:20Z
S = NS


def at(s: float) -> int:
    """Engine time ``s`` seconds after T0."""
    return T0 + int(s * NS)


def pol(*rules: dict, source: str = "policy.yaml") -> Policy:
    return parse_policy({"rules": list(rules)}, source)


def rule(**kw) -> dict:
    base = {"name": "r", "figure": "drawdown", "op": ">", "threshold": "0.05", "action": "halt"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


OK = rule(name="ok")

# ------------------------------------------------------------------ validation
# (the bad rule, the exact message); the bad rule always sits at rules[1]
BAD: list[tuple[dict, str]] = [
    (rule(name="dd-halt", threshold="abc"),
     "policy.yaml: rules[1] (name 'dd-halt'): threshold: expected a number, got 'abc'"),
    (rule(threshold=True), "policy.yaml: rules[1] (name 'r'): threshold: expected a number, got True"),
    (rule(threshold=5),
     "policy.yaml: rules[1] (name 'r'): threshold: drawdown is a fraction of peak equity from 0 to 1 "
     "(0.05 = 5 %), got 5"),
    (rule(figure="reject_rate", threshold=-0.1, action="alert"),
     "policy.yaml: rules[1] (name 'r'): threshold: reject_rate is a fraction from 0 to 1 (0.2 = 20 %), got -0.1"),
    (rule(figure="pnl"), "policy.yaml: rules[1] (name 'r'): figure: unknown figure 'pnl'; known: daily_loss, "
                         "data_staleness_s, drawdown, error_rate, model_psr, reject_rate, venue_state"),
    (rule(op="=>"), "policy.yaml: rules[1] (name 'r'): op: expected one of > >= < <= == != "
                    "(or gt ge lt le eq ne), got '=>'"),
    (rule(op=""), "policy.yaml: rules[1] (name 'r'): op: expected one of > >= < <= == != "
                  "(or gt ge lt le eq ne), got '' (quote > and >= in YAML: '>')"),
    (rule(action="resume"), "policy.yaml: rules[1] (name 'r'): action: a policy never resumes: only an operator "
                            "does (keys, CLI or API); known: alert, flatten, halt, pause_model, pause_venue, "
                            "reduce_only, rollback"),
    (rule(action="explode"), "policy.yaml: rules[1] (name 'r'): action: unknown action 'explode'; known: alert, "
                             "flatten, halt, pause_model, pause_venue, reduce_only, rollback"),
    (rule(window_s=-5), "policy.yaml: rules[1] (name 'r'): window_s: expected whole seconds >= 0, got -5"),
    (rule(window_s=1.5), "policy.yaml: rules[1] (name 'r'): window_s: expected whole seconds >= 0, got 1.5"),
    (rule(cooldown_s="soon"), "policy.yaml: rules[1] (name 'r'): cooldown_s: expected whole seconds >= 0, "
                              "got 'soon'"),
    (rule(thresold=1), "policy.yaml: rules[1] (name 'r'): thresold: unknown field; known: name, figure, op, "
                       "threshold, window_s, action, target, scope, cooldown_s, severity, over_s, min_count"),
    (rule(name=None), "policy.yaml: rules[1]: name: required"),
    (rule(name="has space"), "policy.yaml: rules[1] (name 'has space'): name: expected 1-64 letters, digits or _ . : - (starting "
                                                    "with a letter or digit), got 'has space'"),
    (rule(action=None), "policy.yaml: rules[1] (name 'r'): action: required"),
    (rule(figure="venue_state", op=">", threshold="DISCONNECTED", action="alert"),
     "policy.yaml: rules[1] (name 'r'): op: venue_state compares with == or != only, got '>'"),
    (rule(figure="venue_state", op="==", threshold="DOWN", action="alert"),
     "policy.yaml: rules[1] (name 'r'): threshold: expected a venue state (CONNECTED, DEGRADED, DISCONNECTED, "
     "THROTTLED, BANNED), got 'DOWN'"),
    (rule(action="pause_model"),
     "policy.yaml: rules[1] (name 'r'): target: pause_model needs a model id (drawdown does not name one)"),
    (rule(figure="model_psr", op="<", action="pause_venue"),
     "policy.yaml: rules[1] (name 'r'): target: pause_venue needs a venue name (model_psr does not name one)"),
    (rule(target="BINANCE"),
     "policy.yaml: rules[1] (name 'r'): target: halt is desk-wide and takes no target (got 'BINANCE'); "
     "use pause_venue or pause_model to act on one"),
    (rule(figure="venue_state", op="==", threshold="DISCONNECTED", action="pause_venue", target="BINANCE"),
     "policy.yaml: rules[1] (name 'r'): target: venue_state is per venue: the rule targets the venue that "
     "crossed; restrict it with scope.venue instead (got 'BINANCE')"),
    (rule(scope={"venue": "BINANCE"}), "policy.yaml: rules[1] (name 'r'): scope.venue: drawdown is desk-wide"),
    (rule(figure="reject_rate", threshold="0.2", scope={"model": "hmm_v1"}),
     "policy.yaml: rules[1] (name 'r'): scope.model: reject_rate is per venue; it takes scope.venue"),
    (rule(figure="model_psr", scope={"model": []}),
     "policy.yaml: rules[1] (name 'r'): scope.model: expected a name or a list of names, got []"),
    (rule(over_s=300), "policy.yaml: rules[1] (name 'r'): over_s: only for reject_rate and error_rate "
                       "(a rate's window), not drawdown"),
    (rule(figure="error_rate", threshold="0.2", over_s=7200),
     "policy.yaml: rules[1] (name 'r'): over_s: expected whole seconds from 1 to 3600, got 7200"),
    (rule(figure="error_rate", threshold="0.2", min_count=0),
     "policy.yaml: rules[1] (name 'r'): min_count: expected a whole number >= 1, got 0"),
    (rule(severity="CRITICAL"),
     "policy.yaml: rules[1] (name 'r'): severity: expected one of INFO, WARNING, ERROR, got 'CRITICAL'"),
    (rule(name="ok"), "policy.yaml: rules[1] (name 'ok'): name: duplicate of rules[0]"),
    ("halt", "policy.yaml: rules[1]: expected a mapping of rule fields, got 'halt'"),
]


@pytest.mark.parametrize("bad,message", BAD, ids=[m.split(": ")[2] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_every_validation_error_names_the_rule_and_the_field(bad, message):
    with pytest.raises(PolicyError) as ei:
        parse_policy({"rules": [OK, bad]}, "policy.yaml")
    assert str(ei.value) == message
    assert ei.value.source == "policy.yaml"


@pytest.mark.parametrize("data,message", [
    (None, "policy.yaml: empty: expected a mapping with a 'rules' list (rules: [] for none)"),
    ([OK], "policy.yaml: expected a mapping with a 'rules' list, got list"),
    ({"rule": [OK]}, "policy.yaml: rule: unknown key; known: rules"),
    ({"rules": {"name": "x"}}, "policy.yaml: rules: expected a list of rules, got {'name': 'x'}"),
    ({}, "policy.yaml: rules: required (rules: [] for none)"),
])
def test_top_level_errors(data, message):
    with pytest.raises(PolicyError) as ei:
        parse_policy(data, "policy.yaml")
    assert str(ei.value) == message


def test_parsed_values_and_defaults():
    p = pol(rule(name="a", threshold=0.05),
            rule(name="b", figure="reject_rate", op="gt", threshold="0.2", action="reduce_only"),
            rule(name="c", figure="venue_state", op="!=", threshold="CONNECTED", action="alert",
                 scope={"venue": ["BINANCE", "IBKR"]}, cooldown_s=60.0))
    a, b, c = p.rules
    assert a.threshold == Decimal("0.05") and isinstance(a.threshold, Decimal)  # float through its repr
    assert (a.window_s, a.cooldown_s, a.severity, a.over_s, a.min_count, a.target) == (0, 300, "ERROR", 0, 0, None)
    assert (b.op, b.over_s, b.min_count) == (">", 300, 1)
    assert (c.threshold, c.scope_venue, c.cooldown_s, c.severity) == ("CONNECTED", ("BINANCE", "IBKR"), 60, "WARNING")
    assert parse_policy({"rules": []}, "x").rules == ()
    # the digest is over the text when given: sha256("rules: []\n")
    assert parse_policy({"rules": []}, "x", text="rules: []\n").digest == hashlib.sha256(b"rules: []\n").hexdigest()


# ------------------------------------------------------------------ windows
def test_window_holds_59_of_60_seconds_no_firing_60_fires():
    eng = PolicyEngine(pol(rule(name="venue-down", figure="venue_state", op="==", threshold="DISCONNECTED",
                                window_s=60, action="pause_venue")))
    down = {"BINANCE": "DISCONNECTED", "SIM": "CONNECTED"}
    for s in (0, 30, 59):
        assert eng.evaluate(Figures(at(s), venue_state=down)) == []
    [f] = eng.evaluate(Figures(at(60), venue_state=down))
    assert (f.action, f.target, f.key, f.value, f.ts_ns) == ("pause_venue", "BINANCE", "BINANCE", "DISCONNECTED", at(60))
    assert f.reason == "venue-down: venue_state[BINANCE] DISCONNECTED == DISCONNECTED for 60 s -> pause_venue BINANCE"


def test_a_break_restarts_the_window_and_keys_have_their_own():
    eng = PolicyEngine(pol(rule(name="down", figure="venue_state", op="==", threshold="DISCONNECTED",
                                window_s=60, action="pause_venue", cooldown_s=0)))
    D, C = "DISCONNECTED", "CONNECTED"
    assert eng.evaluate(Figures(at(0), venue_state={"BINANCE": D, "IBKR": C})) == []
    assert eng.evaluate(Figures(at(30), venue_state={"BINANCE": C, "IBKR": D})) == []   # BINANCE breaks
    assert eng.evaluate(Figures(at(31), venue_state={"BINANCE": D, "IBKR": D})) == []   # restarts at 31
    assert eng.evaluate(Figures(at(89), venue_state={"BINANCE": D})) == []              # IBKR missing: restarts
    assert [f.target for f in eng.evaluate(Figures(at(90), venue_state={"BINANCE": D, "IBKR": D}))] == []  # 59 s
    assert [f.target for f in eng.evaluate(Figures(at(91), venue_state={"BINANCE": D, "IBKR": D}))] == ["BINANCE"]
    assert [f.target for f in eng.evaluate(Figures(at(150), venue_state={"BINANCE": D, "IBKR": D}))] == [
        "BINANCE", "IBKR"]  # IBKR since 90: 60 s; BINANCE again (cooldown 0)


def test_zero_window_fires_at_once_and_figures_compare_exactly():
    # 0.2 (a float) is not above 0.2: floats compare through their shortest repr
    eng = PolicyEngine(pol(rule(name="gt", figure="reject_rate", threshold="0.2", action="alert"),
                           rule(name="ge", figure="reject_rate", op=">=", threshold="0.2", action="alert")))
    fired = eng.evaluate(Figures(at(0), reject_rate={"BINANCE": 0.2}))
    assert [f.rule.name for f in fired] == ["ge"]
    eng = PolicyEngine(pol(rule(name="dd", threshold="0.05")))
    assert eng.evaluate(Figures(at(0), drawdown=Decimal("0.05"))) == []
    [f] = eng.evaluate(Figures(at(1), drawdown=Decimal("0.0500001")))
    assert (f.value, f.target, f.reason) == ("0.0500001", None, "dd: drawdown 0.0500001 > 0.05 -> halt")
    # NaN PSR (too few returns) is never judged
    eng = PolicyEngine(pol(rule(name="psr", figure="model_psr", op="<", threshold="0.05", action="rollback")))
    assert eng.evaluate(Figures(at(0), model_psr={"c1": float("nan")})) == []


# ------------------------------------------------------------------ cooldown, no resume
def test_cooldown_per_subject():
    eng = PolicyEngine(pol(rule(name="stale", figure="data_staleness_s", threshold=180, action="alert",
                                severity="WARNING", cooldown_s=300)))
    st = {"BTCUSDT.SIM": 200.0, "ETHUSDT.SIM": 10.0}
    [f] = eng.evaluate(Figures(at(0), data_staleness_s=st))
    assert (f.key, f.target, f.severity) == ("BTCUSDT.SIM", None, "WARNING")
    assert eng.evaluate(Figures(at(100), data_staleness_s={"BTCUSDT.SIM": 1.0})) == []   # recovered
    assert eng.evaluate(Figures(at(150), data_staleness_s=st)) == []                     # stale again: cooling
    # another instrument is another subject: not held back by BTC's cooldown
    [g] = eng.evaluate(Figures(at(299), data_staleness_s={"BTCUSDT.SIM": 500.0, "ETHUSDT.SIM": 181.0}))
    assert g.key == "ETHUSDT.SIM"
    [h] = eng.evaluate(Figures(at(300), data_staleness_s={"BTCUSDT.SIM": 500.0, "ETHUSDT.SIM": 181.0}))
    assert h.key == "BTCUSDT.SIM"   # 300 s after its firing at 0


def test_halt_while_halted_is_a_no_op_and_nothing_ever_resumes():
    eng = PolicyEngine(pol(rule(name="dd-halt", cooldown_s=300),
                           rule(name="rej", figure="reject_rate", threshold="0.2", action="reduce_only",
                                cooldown_s=0),
                           rule(name="loss", figure="daily_loss", op=">=", threshold=500, action="flatten",
                                cooldown_s=0)))
    dd = Decimal("0.08")
    fired = eng.evaluate(Figures(at(0), drawdown=dd, reject_rate={"BINANCE": 0.5}, daily_loss=Decimal(600)))
    assert [f.action for f in fired] == ["halt", "reduce_only", "flatten"]
    # the engine halted (and flattened): no repeat, however long the figures stay bad
    for s in (1, 300, 10_000):
        got = eng.evaluate(Figures(at(s), drawdown=dd, reject_rate={"BINANCE": 0.5}, daily_loss=Decimal(600),
                                   trading_state="HALTED", open_positions=0))
        assert got == []   # reduce_only would lift HALTED to REDUCING: never
    assert eng.describe()[0]["status"] == "in effect"
    # a flatten that left positions (dust below the minimums, or a new fill) is asked again
    got = eng.evaluate(Figures(at(10_001), drawdown=dd, daily_loss=Decimal(600), trading_state="HALTED",
                               open_positions=1))
    assert [f.action for f in got] == ["flatten"]
    # REDUCING: reduce_only is in effect, a halt still escalates
    got = eng.evaluate(Figures(at(10_002), drawdown=dd, reject_rate={"BINANCE": 0.5}, trading_state="REDUCING"))
    assert [f.action for f in got] == ["halt"]
    # a human resumed within the halt's cooldown: the halt waits out its 300 s, then trips again
    assert [f.action for f in eng.evaluate(Figures(at(10_003), drawdown=dd))] == []
    assert [f.action for f in eng.evaluate(Figures(at(10_302), drawdown=dd))] == ["halt"]


def test_halt_from_per_venue_figures_fires_once_per_evaluation():
    eng = PolicyEngine(pol(rule(name="errors", figure="error_rate", threshold="0.5", cooldown_s=0)))
    fired = eng.evaluate(Figures(at(0), error_rate={"BINANCE": 0.9, "IBKR": 0.8}))
    assert [(f.action, f.target, f.key) for f in fired] == [("halt", None, "BINANCE")]


FIG = st.fixed_dictionaries({
    "drawdown": st.decimals(min_value=0, max_value=1, places=3),
    "daily_loss": st.decimals(min_value=0, max_value=2000, places=2),
    "reject_rate": st.dictionaries(st.sampled_from(["BINANCE", "SIM"]), st.floats(0, 1)),
    "data_staleness_s": st.dictionaries(st.sampled_from(["BTCUSDT.BINANCE", "X.SIM"]), st.floats(0, 1000)),
    "venue_state": st.dictionaries(st.sampled_from(["BINANCE", "SIM"]),
                                   st.sampled_from(["CONNECTED", "DISCONNECTED", "BANNED"])),
    "model_psr": st.dictionaries(st.sampled_from(["c1", "c2"]), st.floats(0, 1)),
    "trading_state": st.sampled_from(["ACTIVE", "REDUCING", "HALTED"]),
    "step": st.integers(0, 400),
})


@settings(max_examples=40, deadline=None)
@given(st.lists(FIG, min_size=1, max_size=12))
def test_property_only_policy_actions_and_no_de_escalation(seq):
    eng = PolicyEngine(load_policy_file(EXAMPLE))
    t = T0
    for d in seq:
        d = dict(d)
        t += d.pop("step") * S
        state = d["trading_state"]
        for f in eng.evaluate(Figures(t, **d)):
            assert f.action in ACTIONS and f.action != "resume"
            if state == "HALTED":
                assert f.action not in ("halt", "reduce_only")
            if state == "REDUCING":
                assert f.action != "reduce_only"


# ------------------------------------------------------------------ targets
def test_per_model_and_per_venue_targets():
    p = pol(rule(name="psr", figure="model_psr", op="<", threshold="0.05", action="rollback", cooldown_s=0),
            rule(name="stale-pause", figure="data_staleness_s", threshold=180, action="pause_venue",
                 scope={"venue": "BINANCE"}, cooldown_s=0),
            rule(name="down-pause-model", figure="venue_state", op="==", threshold="DISCONNECTED",
                 action="pause_model", target="hmm_v1", cooldown_s=0))
    eng = PolicyEngine(p)
    fired = eng.evaluate(Figures(at(0), model_psr={"hmm_v2_canary": 0.03, "ens_v3_canary": 0.5},
                                 data_staleness_s={"BTCUSDT.BINANCE": 200.0, "AAPL.IBKR": 900.0},
                                 venue_state={"IBKR": "DISCONNECTED"}))
    assert [(f.rule.name, f.action, f.target, f.key) for f in fired] == [
        ("psr", "rollback", "hmm_v2_canary", "hmm_v2_canary"),
        ("stale-pause", "pause_venue", "BINANCE", "BTCUSDT.BINANCE"),   # IBKR is out of scope
        ("down-pause-model", "pause_model", "hmm_v1", "IBKR"),
    ]
    # the model already paused / the venue already halted: in effect, no firing
    fired = eng.evaluate(Figures(at(1), data_staleness_s={"BTCUSDT.BINANCE": 200.0},
                                 venue_state={"IBKR": "DISCONNECTED"}, halted_venues=frozenset({"BINANCE"}),
                                 paused_models=frozenset({"hmm_v1"})))
    assert fired == []


# ------------------------------------------------------------------ rates
def test_rate_window_exact_fractions_by_hand():
    w = RateWindow()
    for s, failed in ((0, False), (1, True), (2, False), (3, True), (299, False)):
        w.record("BINANCE", at(s), failed)
    w.record("SIM", at(5), True)
    # window 300 s at t=299: buckets 0..299 -> 5 outcomes, 2 failures
    assert w.counts("BINANCE", at(299), 300 * S) == (5, 2) and w.rate("BINANCE", at(299), 300 * S) == 2 / 5
    # at t=300 bucket 0 left the window: 1,2,3,299 -> 2/4
    assert w.rate("BINANCE", at(300), 300 * S) == 1 / 2
    # at t=301.9 buckets 2..301: 2,3,299 -> 1/3
    assert w.rate("BINANCE", at(301.9), 300 * S) == 1 / 3
    # a 10 s window at t=12: buckets 3..12 -> 1 outcome, failed
    assert w.counts("BINANCE", at(12), 10 * S) == (1, 1)
    assert w.rate("BINANCE", at(1000), 300 * S) == 0.0 and w.rate("NOPE", at(0), S) == 0.0
    # same second: one bucket; out of order: its own bucket
    w.record("SIM", at(5.5), False, n=3)
    w.record("SIM", at(4), True)
    assert w.counts("SIM", at(5), 2 * S) == (5, 2)
    assert w.counts("SIM", at(5), S) == (4, 1)
    assert w.keys() == ["BINANCE", "SIM"]
    with pytest.raises(ValueError, match="window_ns"):
        w.counts("SIM", at(5), 3601 * S)
    with pytest.raises(ValueError, match="window_ns"):
        w.counts("SIM", at(5), S // 2)


def test_rate_window_memory_is_bounded_and_state_round_trips():
    w = RateWindow(horizon_ns=60 * S)
    for s in range(10_000):
        w.record("BINANCE", at(s), s % 4 == 0)
    state = w.state_dict()
    assert len(state["buckets"]["BINANCE"]) == 60   # one per second of the horizon
    # the last 60 s: 9940..9999, failures at multiples of 4: 9940, 9944, ..., 9996 -> 15
    assert w.counts("BINANCE", at(9999), 60 * S) == (60, 15)
    w.record("BINANCE", at(100), True)  # older than the horizon: dropped
    w2 = RateWindow(horizon_ns=60 * S)
    w2.load_state_dict(json.loads(json.dumps(state)))
    assert w2.counts("BINANCE", at(9999), 60 * S) == (60, 15)
    with pytest.raises(ValueError, match="bucket_ns"):
        RateWindow().load_state_dict(state)


def test_reject_rate_rule_over_its_window_with_min_count():
    eng = PolicyEngine(pol(rule(name="rej", figure="reject_rate", threshold="0.2", over_s=300, min_count=10,
                                action="reduce_only")))
    w = RateWindow()
    for i in range(5):
        w.record("BINANCE", at(i), True)
    # 5 of 5 rejected, but only 5 outcomes: not judged
    assert eng.evaluate(Figures(at(10), counts={"reject_rate": w})) == []
    assert eng.describe()[0]["last_value"] == "5/5 (< min 10) (BINANCE)"
    for i in range(5, 25):
        w.record("BINANCE", at(i), False)
    # 5 / 25 = 0.2: not above
    assert eng.evaluate(Figures(at(30), counts={"reject_rate": w})) == []
    w.record("BINANCE", at(31), True)
    [f] = eng.evaluate(Figures(at(40), counts={"reject_rate": w}))   # 6 / 26
    assert (f.action, f.target, f.key, f.value) == ("reduce_only", None, "BINANCE", "0.230769")
    assert f.reason == "rej: reject_rate[BINANCE] 0.230769 (6/26 over 300 s) > 0.2 -> reduce_only"
    # at t=304 the five rejects of t=0..4 have left the 300 s window: 1 / 21
    eng2 = PolicyEngine(eng.policy)
    assert eng2.evaluate(Figures(at(304), counts={"reject_rate": w})) == []
    assert eng2.describe()[0]["last_value"] == "0.047619 (1/21 over 300 s) (BINANCE)"


# ------------------------------------------------------------------ reload, checkpoint, describe
DOWN = rule(name="venue-down", figure="venue_state", op="==", threshold="DISCONNECTED", window_s=60,
            action="pause_venue")
D = {"BINANCE": "DISCONNECTED"}


def test_reload_keeps_state_of_unchanged_rules_only():
    eng = PolicyEngine(pol(DOWN, rule(name="dd")))
    eng.evaluate(Figures(at(0), venue_state=D))
    assert eng.evaluate(Figures(at(10), drawdown=Decimal("0.1"), venue_state=D))[0].rule.name == "dd"
    kept, fresh, removed = eng.reload(pol(DOWN, rule(name="dd"), rule(name="new", figure="daily_loss",
                                                                       threshold=100, action="alert")))
    assert (kept, fresh, removed) == (["venue-down", "dd"], ["new"], [])
    # dd's cooldown and venue-down's window survived
    fired = eng.evaluate(Figures(at(60), drawdown=Decimal("0.1"), venue_state=D))
    assert [f.rule.name for f in fired] == ["venue-down"]
    # a changed definition starts afresh: window 90 from the next evaluation
    eng = PolicyEngine(pol(DOWN))
    eng.evaluate(Figures(at(0), venue_state=D))
    kept, fresh, removed = eng.reload(pol(dict(DOWN, window_s=90)))
    assert (kept, fresh, removed) == ([], ["venue-down"], [])
    assert eng.evaluate(Figures(at(60), venue_state=D)) == []
    assert eng.evaluate(Figures(at(149), venue_state=D)) == []
    assert len(eng.evaluate(Figures(at(150), venue_state=D))) == 1


def test_state_dict_round_trip_through_json():
    eng = PolicyEngine(pol(DOWN))
    eng.evaluate(Figures(at(0), venue_state=D))
    state = json.loads(json.dumps(eng.state_dict()))
    again = PolicyEngine(pol(DOWN))
    again.load_state_dict(state)
    assert len(again.evaluate(Figures(at(60), venue_state=D))) == 1   # the window went on
    edited = PolicyEngine(pol(dict(DOWN, window_s=61)))
    edited.load_state_dict(state)  # another definition: not restored
    assert edited.evaluate(Figures(at(61), venue_state=D)) == []
    with pytest.raises(ValueError, match="policy state"):
        again.load_state_dict({"rules": {}})


def test_describe_rows():
    eng = PolicyEngine(pol(DOWN, rule(name="rej", figure="reject_rate", threshold="0.2", action="reduce_only",
                                      scope={"venue": "BINANCE"})))
    eng.evaluate(Figures(at(0), venue_state=D, reject_rate={"BINANCE": 0.1}))
    eng.evaluate(Figures(at(30), venue_state=D, reject_rate={"BINANCE": 0.1}))
    down, rej = eng.describe()
    assert down == {"name": "venue-down", "figure": "venue_state", "op": "==", "threshold": "DISCONNECTED",
                    "comparison": "== DISCONNECTED", "window": "60 s", "over": "", "scope": "",
                    "action": "pause_venue", "target": "each", "cooldown": "300 s", "severity": "ERROR",
                    "last_value": "DISCONNECTED (BINANCE)", "status": "holding 30/60 s", "last_fired": "",
                    "fired_count": "0"}
    assert (rej["scope"], rej["over"], rej["target"], rej["last_value"], rej["status"]) == (
        "venue=BINANCE", "300 s", "", "0.1 (BINANCE)", "")
    eng.evaluate(Figures(at(60), venue_state=D))
    assert {k: eng.describe()[0][k] for k in ("status", "last_fired", "fired_count")} == {
        "status": "fired", "last_fired": "2023-11-14T22:14:20Z", "fired_count": "1"}
    eng.evaluate(Figures(at(61), venue_state=D))
    assert eng.describe()[0]["status"] == "cooldown"
    assert eng.summary().startswith("policy.yaml: 2 rules, sha256 ")


# ------------------------------------------------------------------ the file
def test_the_example_policy_loads_and_acts():
    p = load_policy_file(EXAMPLE)
    assert p.source == str(EXAMPLE)
    got = [(r.name, r.figure, r.op, r.threshold, r.window_s, r.action, r.over_s) for r in p.rules]
    assert got == [
        ("dd-halt", "drawdown", ">", Decimal("0.05"), 0, "halt", 0),
        ("daily-loss-flatten", "daily_loss", ">=", Decimal("500"), 0, "flatten", 0),
        ("rejects-reduce", "reject_rate", ">", Decimal("0.2"), 0, "reduce_only", 300),
        ("stale-data", "data_staleness_s", ">", Decimal("180"), 0, "alert", 0),
        ("venue-down", "venue_state", "==", "DISCONNECTED", 60, "pause_venue", 0),
        ("canary-psr-rollback", "model_psr", "<", Decimal("0.01"), 7200, "rollback", 0),
    ]
    assert {r.figure for r in p.rules} <= FIGURES
    eng = PolicyEngine(p)
    calm = dict(drawdown=Decimal("0.05"), daily_loss=Decimal("499.99"),
                data_staleness_s={"BTCUSDT.SIM": 180.0}, venue_state={"SIM": "CONNECTED"},
                model_psr={"hmm_v2_canary": 0.01})
    assert eng.evaluate(Figures(at(0), **calm)) == []
    w = RateWindow()
    for i in range(10):
        w.record("SIM", at(i), i < 3)   # 3 / 10 rejected
    bad = dict(drawdown=Decimal("0.0501"), daily_loss=Decimal(500), data_staleness_s={"BTCUSDT.SIM": 181.0},
               venue_state={"SIM": "DISCONNECTED"}, model_psr={"hmm_v2_canary": 0.009}, counts={"reject_rate": w})
    fired = eng.evaluate(Figures(at(20), **bad))
    assert [(f.rule.name, f.action, f.target) for f in fired] == [
        ("dd-halt", "halt", None), ("daily-loss-flatten", "flatten", None), ("rejects-reduce", "reduce_only", None),
        ("stale-data", "alert", None)]
    fired = eng.evaluate(Figures(at(80), **bad))
    assert [(f.rule.name, f.target) for f in fired] == [("venue-down", "SIM")]
    # the PSR has been under 0.01 since 20 s: at 7219 s not yet 2 hours, at 7220 s the canary is rolled back
    assert "canary-psr-rollback" not in [f.rule.name for f in eng.evaluate(Figures(at(7219), **bad))]
    assert ("canary-psr-rollback", "rollback", "hmm_v2_canary") in [
        (f.rule.name, f.action, f.target) for f in eng.evaluate(Figures(at(7220), **bad))]


def test_load_errors_name_the_file_line_rule_and_field(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the policy: No such file or directory"):
        load_policy_file(missing)
    f = tmp_path / "policy.yaml"
    f.write_text("rules:\n  - name: a\n    figure: drawdown\n    op: >=\n    threshold: 1\n")
    with pytest.raises(ConfigError) as ei:
        load_policy_file(f)
    # line 4, column 10: the '=' after the '>' that opened a folded block scalar
    assert str(ei.value).startswith(f"{f}:4:10: not valid YAML: ") and "quote comparison operators" in str(ei.value)
    f.write_text("rules:\n  - name: a\n    figure: drawdown\n    op: '>'\n    threshold: 0.1\n"
                 "    action: halt\n    threshold: 0.2\n")
    with pytest.raises(ConfigError) as ei:
        load_policy_file(f)
    assert str(ei.value) == f"{f}:7:5: not valid YAML: found duplicate key 'threshold' (first at line 5)"
    f.write_text("rules:\n  - {name: a, figure: drawdown, op: '>', threshold: 0.1, action: halt}\n"
                 "  - {name: dd-halt, figure: drawdown, op: '>', threshold: abc, action: halt}\n")
    with pytest.raises(ConfigError) as ei:
        load_policy_file(f)
    assert str(ei.value) == f"{f}: rules[1] (name 'dd-halt'): threshold: expected a number, got 'abc'"


def test_reload_policy_applies_a_good_file_and_keeps_the_old_on_a_bad_one(tmp_path):
    f = tmp_path / "policy.yaml"
    good = ("rules:\n  - {name: venue-down, figure: venue_state, op: '==', threshold: DISCONNECTED,"
            " window_s: 60, action: pause_venue}\n")
    f.write_text(good)
    eng = PolicyEngine(load_policy_file(f))
    eng.evaluate(Figures(at(0), venue_state=D))
    old = eng.policy
    f.write_text(good + "  - {name: dd, figure: drawdown, op: '>', threshold: 5 %, action: halt}\n")
    applied, msg = reload_policy(eng, f)
    assert not applied and eng.policy is old
    assert msg.startswith(f"{f} not reloaded, the policy in force stays ({f}: 1 rule, sha256 ")
    assert msg.endswith(f"{f}: rules[1] (name 'dd'): threshold: expected a number, got '5 %'")
    applied, msg = reload_policy(eng, f.with_name("gone.yaml"))
    assert not applied and eng.policy is old and "cannot read the policy" in msg
    f.write_text(good)
    applied, msg = reload_policy(eng, f)
    assert applied and msg.startswith(f"{f} unchanged: ")
    f.write_text(good + "  - {name: dd, figure: drawdown, op: '>', threshold: 0.05, action: halt}\n")
    applied, msg = reload_policy(eng, f)
    assert applied and msg == f"{f} reloaded: {eng.summary()}; 1 kept their state; changed or new: dd"
    # the old rule's window went on through both reload attempts
    fired = eng.evaluate(Figures(at(60), venue_state=D))
    assert [f_.target for f_ in fired] == ["BINANCE"]


def test_rule_is_frozen_and_fingerprint_tracks_every_field():
    a, b = pol(rule(name="x")).rules[0], pol(rule(name="x", cooldown_s=301)).rules[0]
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == pol(rule(name="x", threshold=0.05)).rules[0].fingerprint()
    with pytest.raises(Exception):
        a.threshold = Decimal(1)  # type: ignore[misc]
    assert isinstance(a, Rule)
