"""The governance policy inside the engine (issue 7): a rule over a live
figure fires once, is journaled as PolicyTriggered, and its action goes
through governance with who = policy:<rule>; a halt it pulls stays."""

import asyncio
import json
from decimal import Decimal

from core.enums import TradingState
from core.policy import parse_policy
from core.policy_runtime import PolicyRuntime
from tests.unit.test_engine import IID, build

D = Decimal


def journal(eng, kind):
    return [json.loads(p) for (p,) in eng.store.conn.execute(
        "SELECT payload FROM journal WHERE type=? ORDER BY seq", (kind,))]


def test_drawdown_rule_halts_once_and_stays_halted(tmp_path):
    # Bars 1-2 warm up; the fit lands before bar 3; target 1 from bar 3: buy floor(10000/2000, 0.0001)
    # = 5 ETH limit 2000, filled on bar 4 (low 1990) at 2000 with a 0.005 ETH fee: 4.995 ETH held,
    # cash 0, equity at a mark m = 4.995 m. Peak equity: 10000 (the start; 4.995 x 2000 = 9990 < 10000).
    # Bar 5 closes at 1900: equity 4.995 x 1900 = 9490.5, drawdown 1 - 9490.5/10000 = 0.05095 > 0.05 -> halt.
    closes = ["2000", "2000", "2000", "2000", "1900", "1900", "1900"]
    lows = ["1999", "1999", "1999", "1990", "1899", "1899", "1899"]
    eng = build(tmp_path, closes, ["1"], lows=lows)
    policy = parse_policy({"rules": [{"name": "dd", "figure": "drawdown", "op": ">", "threshold": "0.05",
                                      "action": "halt"}]}, "policy.yaml")
    eng.policy_runtime = PolicyRuntime(eng, policy)
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    assert eng.trading_state == TradingState.HALTED
    fired = journal(eng, "PolicyTriggered")
    assert len(fired) == 1  # the halt is in force: not fired again on bars 6 and 7
    assert fired[0]["rule"] == "dd" and fired[0]["action"] == "halt" and fired[0]["figure"] == "drawdown"
    assert D(fired[0]["value"]).quantize(D("0.00001")) == D("0.05095")
    states = journal(eng, "TradingStateChanged")
    assert [(s["state"], s["who"]) for s in states] == [("HALTED", "policy:dd")]
    gov = eng.store.conn.execute("SELECT who, action FROM governance_actions").fetchall()
    assert ("policy:dd", "HALTED") in gov
    # the position is still held (a halt cancels orders, it does not sell)
    assert eng.portfolio.position("m0", IID).quantity == D("4.995")


def test_alert_rule_on_daily_loss_raises_one_alert_per_cooldown(tmp_path):
    # Same fill; bar 5 at 1900: day loss = day start equity 10000 - 9490.5 = 509.5 >= 500 -> alert.
    closes = ["2000", "2000", "2000", "2000", "1900", "1900", "1900"]
    lows = ["1999", "1999", "1999", "1990", "1899", "1899", "1899"]
    eng = build(tmp_path, closes, ["1"], lows=lows)
    policy = parse_policy({"rules": [{"name": "loss", "figure": "daily_loss", "op": ">=", "threshold": "500",
                                      "action": "alert", "severity": "WARNING"}]}, "policy.yaml")
    eng.policy_runtime = PolicyRuntime(eng, policy)
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    assert eng.trading_state == TradingState.ACTIVE
    alerts = [a for a in journal(eng, "AlertRaised") if a["code"] == "POLICY"]
    assert len(alerts) == 1  # bars 5, 6, 7 are within the 300 s cooldown (1-minute bars)
    assert "policy:loss" in alerts[0]["message"] and "509.5" in alerts[0]["message"]


def test_policy_state_survives_the_checkpoint(tmp_path):
    closes = ["2000", "2000", "2000", "2000", "1900", "1900", "1900"]
    lows = ["1999", "1999", "1999", "1990", "1899", "1899", "1899"]
    eng = build(tmp_path, closes, ["1"], lows=lows)
    policy = parse_policy({"rules": [{"name": "loss", "figure": "daily_loss", "op": ">=", "threshold": "500",
                                      "action": "alert"}]}, "policy.yaml")
    eng.policy_runtime = PolicyRuntime(eng, policy)
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    snap = json.loads(json.dumps(eng.snapshot_state()))
    again = PolicyRuntime(eng, policy)
    again.load_state_dict(snap["policy"])
    assert again.state_dict() == eng.policy_runtime.state_dict()
    assert again.peak_equity == D("10000") and again.firings == 1


def test_a_canary_still_warming_up_has_no_psr_for_the_rules(tmp_path):
    # the analysis judges no PSR before its warm-up (10 intervals, 20 fills): neither may a policy rule
    from core.lifecycle import VersionRecord

    eng = build(tmp_path, ["2000"] * 3, ["0"])
    eng.register_seeds()
    eng.policy_runtime = PolicyRuntime(eng, parse_policy({"rules": [
        {"name": "psr", "figure": "model_psr", "op": "<", "threshold": "0.05", "action": "rollback"}]}, "p.yaml"))
    eng.lifecycle.registry["c"] = VersionRecord("c", "m0", 2, "canary", D("0.10"))
    eng.lifecycle.last_verdict["c"] = {"action": "warming", "figures": {"psr": "0.001"}, "reason": "warming up"}
    assert eng.policy_runtime.figures().model_psr == {}
    eng.lifecycle.last_verdict["c"] = {"action": "hold", "figures": {"psr": "0.001"}, "reason": "hold"}
    assert eng.policy_runtime.figures().model_psr == {"c": 0.001}


def test_a_flatten_rule_is_not_repeated_over_unsellable_dust(tmp_path):
    # after a flatten only dust is left (below ETH's step 0.0001 and its 5 USDT min notional): the rule's
    # action is in force (HALTED, nothing sellable), so it does not fire again after its cooldown
    from core.events import OrderFilled

    eng = build(tmp_path, ["2000"] * 12, ["0"])
    eng.register_seeds()
    eng.portfolio.mark(IID, D("2000"))
    eng.portfolio.apply_fill(OrderFilled(
        ts_event=1, ts_init=1, client_order_id="NHD-0-0-0", instrument_id=IID, model_id="m0", venue_order_id="V",
        trade_id="T-1", side="BUY", last_qty=D("0.00005"), last_px=D("2000"), commission=D("0"),
        commission_currency="ETH", liquidity_side="TAKER"))
    assert eng.unsellable("m0", IID)  # 0.00005 < step 0.0001 (and 0.10 USDT < 5)
    rt = PolicyRuntime(eng, parse_policy({"rules": [{"name": "f", "figure": "drawdown", "op": ">=",
                                                     "threshold": "0", "action": "flatten",
                                                     "cooldown_s": 60}]}, "p.yaml"))
    assert rt.figures().open_positions == 0
    eng.policy_runtime = rt
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())  # 12 one-minute bars: cooldown 60 s would allow ~10 firings
    assert len(journal(eng, "PolicyTriggered")) == 1
