"""Several venues under one engine (issue 6, "Isolation"): each order goes to
its instrument's venue; a venue that disconnects, fails or disagrees at
reconciliation is isolated (DEGRADED / DISCONNECTED in the header, its
working orders unknown until reconciled, a difference halts only it) while
the other venue keeps trading. Two paper venues, ``VA`` (ETHUSDT) and ``VB``
(BTCUSDT), driven by the engine clock through the paper venue's fault plan
(``core.faults.PaperFaults``): nothing sleeps."""

import asyncio
import json
from decimal import Decimal

from core.audit import AuditLog
from core.clock import TestClock
from core.data import Bar
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderSide, OrderStatus, TradingState
from core.faults import PaperFaults
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from core.venue_hub import SessionGroup, VenueHub
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from venues.feeds import ReplayFeed
from venues.klines import KlineFile
from venues.paper import PaperConfig, PaperVenue

D = Decimal
A = InstrumentId("ETHUSDT", "VA")
B = InstrumentId("BTCUSDT", "VB")
ETH = Instrument(A, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))
BTC = Instrument(B, "BTC", "USDT", D("0.01"), D("0.00001"), D("0.00001"), min_notional=D("5"))
MIN = 60_000_000_000


def kline_file(iid: InstrumentId, close: str, n: int) -> KlineFile:
    c = D(close)
    bars = [Bar(iid, c, c + 1, c - 1, c, D("100"), k * MIN, (k + 1) * MIN, k + 2) for k in range(n)]
    return KlineFile(f"{iid.symbol}.csv", iid, iid.symbol, MIN, bars, [])


def build(tmp_path, n=40, targets_a=("1", "0"), targets_b=("1", "0")):
    """An engine over a hub of two paper venues; each model target flips
    between ``targets`` every ready bar so there is always an order to send."""
    clock = TestClock()
    faults = {"VA": PaperFaults(), "VB": PaperFaults()}
    feed = ReplayFeed([kline_file(A, "2000", n), kline_file(B, "50000", n)])
    models = {"m0": {A: ScriptedModel("m0", A, list(targets_a), warmup=2),
                     B: ScriptedModel("m0", B, list(targets_b), warmup=2)}}

    def hub(cb):
        return VenueHub([
            PaperVenue(tmp_path / "va.sqlite", "VA", "USDT", {A: ETH}, clock, PaperConfig(), cb, faults=faults["VA"]),
            PaperVenue(tmp_path / "vb.sqlite", "VB", "USDT", {B: BTC}, clock, PaperConfig(), cb, faults=faults["VB"]),
        ])

    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock, store=Store(tmp_path / "desk.sqlite"),
        audit=AuditLog(tmp_path / "audit" / "orders.jsonl"), feed=feed, instruments={A: ETH, B: BTC}, models=models,
        specs=[ModelSpec("m0", D("1"))], risk=RiskEngine(RiskConfig()), executor=InlineExecutor(), venue_factory=hub,
    )
    return eng, faults


def orders_on(eng, iid, since_step=0):
    return [o for o in eng.orders.values() if o.instrument_id == iid and o.step >= since_step]


def test_each_order_goes_to_its_own_venue_and_both_books_agree(tmp_path):
    eng, _ = build(tmp_path, n=12)
    assert isinstance(eng.session, SessionGroup) and list(eng.session.sessions) == ["VA", "VB"]

    async def go():
        await eng.warm_up()
        await eng.run()
    asyncio.run(go())
    va, vb = eng.venue.members["VA"], eng.venue.members["VB"]
    on_a, on_b = orders_on(eng, A), orders_on(eng, B)
    assert on_a and on_b
    # every order reached its own venue and only that one
    assert set(va.order_ids()) == {o.client_order_id for o in on_a if o.venue_order_id}
    assert set(vb.order_ids()) == {o.client_order_id for o in on_b if o.venue_order_id}
    assert any(o.status == OrderStatus.FILLED for o in on_a) and any(o.status == OrderStatus.FILLED for o in on_b)
    # each venue's base balance is exactly the book's position there (10,000 USDT each to start, no baseline)
    assert va.balance("ETH") == eng.portfolio.quantity(A)
    assert vb.balance("BTC") == eng.portfolio.quantity(B)
    assert va.balance("BTC") == 0 and vb.balance("ETH") == 0
    # periodic reconciliation ran against each venue and found nothing
    assert eng.session.sessions["VA"].reconciles > 0 and eng.session.sessions["VB"].reconciles > 0
    assert eng.unreconciled == [] and eng.trading_state == TradingState.ACTIVE
    assert eng.session.status() == "VA OK; VB OK"


def test_a_disconnected_venue_is_isolated_and_the_other_keeps_trading(tmp_path):
    eng, faults = build(tmp_path, n=40)

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=6)
        working_a = [o.client_order_id for o in eng.working_orders() if o.instrument_id == A]
        faults["VA"].disconnect(10 * MIN)  # VA drops for 10 minutes of engine clock; its reports are lost
        cut = eng.stats.bars
        await eng.run(max_bars=4)
        status = eng.session.status()
        suspect = eng.session.suspect_venues()
        end = eng.stats.bars
        await eng.run()  # past the outage
        return working_a, (cut, end), status, suspect
    working_a, (cut, end), status, suspect = asyncio.run(go())
    assert len(working_a) == 1  # an ETH order was working at VA when it dropped
    assert "VA DISCONNECTED since" in status and "VB OK" in status
    assert suspect == {"VA"}  # its working order is unknown until reconciled
    assert eng.trading_state == TradingState.ACTIVE and eng.halted_venues == set()
    # during the outage VB traded: orders created then were sent there and filled
    b_during = [o for o in orders_on(eng, B, cut) if o.step < end]
    assert b_during and all(o.venue_order_id for o in b_during)
    assert all(o.status == OrderStatus.FILLED for o in b_during)
    # nothing new went to VA while it was down
    assert [o for o in orders_on(eng, A, cut) if o.step < end] == []
    # the fill VA made during the outage (its report lost) was found by the reconnect reconciliation, once
    alerts = eng.store.conn.execute("SELECT code, message FROM alerts ORDER BY seq").fetchall()
    codes = [c for c, _ in alerts]
    assert codes.count("VENUE_DISCONNECTED") == 1 and codes.count("VENUE_RECONNECTED") == 1
    down_msg = next(m for c, m in alerts if c == "VENUE_DISCONNECTED")
    assert down_msg.startswith("VA: ") and working_a[0] in down_msg
    assert any(c == "RECONCILED" and f"fills applied: {working_a[0]}/" in m for c, m in alerts)
    assert eng.orders[working_a[0]].status == OrderStatus.FILLED
    # after it: reconciled, trading again at VA, the header says OK, the books agree
    assert eng.session.suspect_venues() == set()
    assert eng.session.status() == "VA OK; VB OK"
    assert any(o.status == OrderStatus.FILLED for o in orders_on(eng, A, end))
    assert eng.venue.members["VA"].balance("ETH") == eng.portfolio.quantity(A)
    assert eng.unreconciled == []


def test_a_reconciliation_difference_halts_only_its_venue(tmp_path):
    eng, _ = build(tmp_path, n=30)

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=5)
        # someone else's order fills on the VA account: 0.5 ETH the store cannot explain
        eng.venue.members["VA"].inject_foreign_order("OTHER-1", A, OrderSide.BUY, D("0.5"), D("2000"))
        cut = eng.stats.bars
        await eng.run()
        return cut
    cut = asyncio.run(go())
    assert eng.halted_venues == {"VA"}
    assert eng.trading_state == TradingState.ACTIVE  # the desk is not halted, only VA
    # the first difference names the instrument and the 0.5 ETH (less the 0.1 % taker fee: 0.4995) more at VA
    import re

    m = re.fullmatch(r"ETHUSDT\.VA: the venue holds ([0-9.]+) ETH, the store ([0-9.]+)", eng.unreconciled[0])
    assert m and D(m.group(1)) - D(m.group(2)) == D("0.5") * (1 - D("0.001"))
    assert all(d.startswith(("ETHUSDT.VA:", "cash at VA:")) for d in eng.unreconciled)
    gov = eng.store.conn.execute("SELECT action, who FROM governance_actions").fetchall()
    assert ("VENUE_HALTED", "reconciliation") in [(a, w) for a, w in gov]
    # after the halt, the router sends VA nothing (no denial flood: one order per bar denied, before), VB trades on
    later_a = orders_on(eng, A, cut + 2)
    later_b = orders_on(eng, B, cut + 2)
    assert later_a == []
    assert eng.store.conn.execute("SELECT COUNT(*) FROM alerts WHERE code LIKE 'DENIED%'").fetchone()[0] == 0
    assert any(o.status == OrderStatus.FILLED for o in later_b)


def test_a_failing_task_group_marks_its_venue_degraded_until_reconciled(tmp_path):
    eng, _ = build(tmp_path, n=20, targets_a=("1",), targets_b=("1",))

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=3)
        eng.session.mark_fault("VA", "bar feed failed: ConnectionResetError")
        s1 = eng.session.status()
        sus1 = eng.session.suspect_venues()
        await eng.run(max_bars=2)
        sus2 = eng.session.suspect_venues()  # still faulted: reconciliation alone does not clear it
        eng.session.clear_fault("VA")
        await eng.run(max_bars=1)
        return s1, sus1, sus2
    s1, sus1, sus2 = asyncio.run(go())
    assert "VA DEGRADED since" in s1 and "VB OK" in s1
    assert sus1 == {"VA"} and sus2 == {"VA"}
    assert eng.session.suspect_venues() == set()  # reconciled after the fault cleared
    msgs = [m for (m,) in eng.store.conn.execute("SELECT message FROM alerts WHERE code='VENUE_DEGRADED'")]
    assert len(msgs) == 1 and msgs[0].startswith("VA: bar feed failed: ConnectionResetError; ")
    assert eng.trading_state == TradingState.ACTIVE


def test_a_venue_unreachable_at_start_is_deferred_and_the_other_is_reconciled(tmp_path):
    eng, faults = build(tmp_path, n=10)
    faults["VA"].disconnect(3 * MIN)

    async def go():
        return await eng.recover()
    lines = asyncio.run(go())
    assert len(lines) == 1 and lines[0].startswith("VA: venue unavailable at start")
    assert eng.session.sessions["VA"].down and not eng.session.sessions["VB"].down
    assert eng.session.sessions["VB"].last_reconcile_ns is not None
    assert eng.trading_state == TradingState.ACTIVE


def test_each_venue_keeps_its_own_unknown_submits_in_the_store(tmp_path):
    eng, faults = build(tmp_path, n=10)

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=3)
    asyncio.run(go())
    from core.recovery import UnknownSubmit

    eng.session.sessions["VB"].unknown["NHD-1-0-0"] = UnknownSubmit("NHD-1-0-0", 1, 2, 1, "timeout")
    eng.session.sessions["VB"]._persist_unknown()
    assert eng.store.meta_get("unknown_submits:VB") is not None
    assert eng.store.meta_get("unknown_submits:VA") in (None, "{}")
    assert set(eng.session.unknown) == {"NHD-1-0-0"}


def test_hub_refuses_two_venues_of_one_name_and_an_instrument_at_two(tmp_path):
    import pytest

    clock = TestClock()
    va = PaperVenue(tmp_path / "a.sqlite", "VA", "USDT", {A: ETH}, clock, PaperConfig(), lambda e: None)
    va2 = PaperVenue(tmp_path / "b.sqlite", "VA", "USDT", {B: BTC}, clock, PaperConfig(), lambda e: None)
    with pytest.raises(ValueError, match="two venues are named 'VA'"):
        VenueHub([va, va2])


def test_short_selling_per_venue_survives_a_restore(tmp_path):
    # VB is a margin venue (futures-like: may go short), VA spot: after a checkpoint and a restore the
    # portfolio still lets BTCUSDT.VB go short and keeps ETHUSDT.VA long-only
    eng, _ = build(tmp_path, n=10)
    eng.venue.members["VB"].config = type("Cfg", (), {"margin_account": True})()
    from core.engine import Engine  # the per-venue rule is read at construction: build a second engine

    eng2 = Engine(config=eng.config, clock=eng.clock, store=eng.store, audit=eng.audit, feed=eng.feed,
                  instruments=eng.instruments, models=eng.models, specs=list(eng.specs.values()), risk=eng.risk,
                  executor=eng.executor, venue_factory=lambda cb: eng.venue)
    assert eng2.can_short(B) and not eng2.can_short(A) and not eng2.margin
    assert eng2.portfolio.shorts_allowed(B) and not eng2.portfolio.shorts_allowed(A)
    eng2.restore(eng2.snapshot_state())
    assert eng2.portfolio.shorts_allowed(B) and not eng2.portfolio.shorts_allowed(A)


def test_a_venue_whose_requests_hang_does_not_hold_the_other_venues_orders(tmp_path):
    eng, _ = build(tmp_path, n=40)
    eng.session.step_budget_s = 0.01  # wall seconds a step waits for a venue (default 1 s)
    vb = eng.venue.members["VB"]
    gate = None
    held = []

    async def hanging_submit(order, _real=vb.submit_order):
        held.append(order.client_order_id)
        await gate.wait()  # the venue does not answer until released
        await _real(order)

    async def go():
        nonlocal gate
        gate = asyncio.Event()
        await eng.warm_up()
        await eng.run(max_bars=6)
        vb.submit_order = hanging_submit
        cut = eng.stats.bars
        await eng.run(max_bars=8)
        status = eng.session.status()
        end = eng.stats.bars
        gate.set()  # VB answers again
        await eng.run(max_bars=6)
        return cut, end, status
    cut, end, status = asyncio.run(go())
    assert "VB DEGRADED (slow) since" in status and "VA OK" in status
    assert len(held) >= 1  # VB's submit hung...
    # ... while VA's orders of those steps were sent and filled
    a_during = [o for o in orders_on(eng, A, cut) if o.step < end]
    assert a_during and all(o.venue_order_id for o in a_during)
    assert any(o.status == OrderStatus.FILLED for o in a_during)
    # once VB answered, the held order was sent exactly once and VB is not slow any more
    first = eng.orders[held[0]]
    assert first.venue_order_id and held.count(held[0]) == 1
    assert "slow" not in eng.session.status()
    assert eng.venue.members["VB"].balance("BTC") == eng.portfolio.quantity(B)


def test_a_policy_rule_on_one_venue_state_fires_for_that_venue_only(tmp_path):
    # the example policy's "venue down -> pause it" on a desk of two venues: VA drops (DISCONNECTED), the rule
    # fires for VA (a per-venue halt, who policy:va-down), VB keeps trading; a DEGRADED rule reads the fault
    from core.policy import parse_policy
    from core.policy_runtime import PolicyRuntime, venue_states

    eng, faults = build(tmp_path, n=30)
    eng.policy_runtime = PolicyRuntime(eng, parse_policy({"rules": [
        {"name": "va-down", "figure": "venue_state", "op": "==", "threshold": "DISCONNECTED",
         "action": "pause_venue"},
        {"name": "vb-degraded", "figure": "venue_state", "op": "==", "threshold": "DEGRADED",
         "action": "alert", "scope": {"venue": "VB"}, "severity": "WARNING"}]}, "policy.yaml"))

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=4)
        assert venue_states(eng) == {"VA": "CONNECTED", "VB": "CONNECTED"}
        faults["VA"].disconnect(5 * MIN)
        eng.session.mark_fault("VB", "bar feed failed: test")
        await eng.run(max_bars=4)
        return venue_states(eng)
    states = asyncio.run(go())
    assert states["VB"] == "DEGRADED"
    fired = [(json.loads(p)["rule"], json.loads(p)["action"]) for (p,) in eng.store.conn.execute(
        "SELECT payload FROM journal WHERE type='PolicyTriggered' ORDER BY seq")]
    assert ("va-down", "pause_venue") in fired and ("vb-degraded", "alert") in fired
    assert eng.halted_venues == {"VA"} and eng.trading_state == TradingState.ACTIVE
