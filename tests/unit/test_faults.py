"""Fault injection in the paper venue and what the engine makes of it
(issue 5): unknown submit outcomes resolved by lookup and never retried
blindly, cancel timeouts, disconnects and reconnect reconciliation,
HTTP-429 throttling with queued cancels, venue-side cancels and fills the
engine did not ask for, a fill arriving twice, a store that fails.

Hand-worked setting, shared by most tests (see ``make``): ETHUSDT, tick
0.01, step 0.0001, min notional 5; capital 10000 USDT; one scripted model
``m0`` of weight 0.06, so a budget of 600 USDT; warm-up 2 bars, then
target 1 from bar 3 on; bars one minute apart (bar k closes at k*60 s), all
closing at 2000. At bar 3 the router buys ``floor(600 / 2000, 0.0001) =
0.3000`` ETH, LIMIT 2000.00 (600 USDT notional) or MARKET. With every low at
2000 a buy limit at 2000 never fills (the low must be strictly below);
with a low of 1999 it fills at ``min(2000, open 2000) = 2000``. Fees 0.1 %
in the asset received: a buy of 0.3 ETH keeps 0.2997.
"""

import asyncio
import dataclasses
import json
from decimal import Decimal

import pytest

from core.audit import AuditLog
from core.clock import TestClock
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderSide, OrderStatus, OrderType, TradingState
from core.faults import PaperFaults
from core.recovery import SessionConfig, reconcile
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store, StoreError
from core.venue_errors import TransientVenueError, VenueThrottled
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from tests.unit.test_engine import ETH, IID, MIN, bars
from venues.feeds import ReplayFeed
from venues.klines import KlineFile
from venues.paper import PaperConfig, PaperVenue

D = Decimal
S = 1_000_000_000
T3 = 3 * MIN  # the close of bar 3, when the first order is sent


def make(tmp_path, *, lows=None, targets=("1",), order_type=OrderType.LIMIT, paper=None, faults=None, n=8,
         restore=False):
    """An engine on ``n`` bars closing at 2000 (lows 2000 unless given), its
    paper venue carrying the fault plan ``faults`` (a fresh one by default,
    so every request is counted). ``restore``: continue from the store's
    checkpoint (a restart)."""
    clock = TestClock()
    faults = PaperFaults() if faults is None else faults
    store = Store(tmp_path / "desk.sqlite")
    closes = ["2000"] * n
    lows = lows or ["2000"] * n
    feed = ReplayFeed([KlineFile("x.csv", IID, "ETHUSDT", MIN, bars(closes, lows), [])])
    models = {"m0": {IID: ScriptedModel("m0", IID, list(targets), warmup=2)}}
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"), order_type=order_type)), clock=clock,
        store=store, audit=AuditLog(tmp_path / "audit" / "orders.jsonl"), feed=feed, instruments={IID: ETH},
        models=models, specs=[ModelSpec("m0", D("0.06"))], risk=RiskEngine(RiskConfig()),
        executor=InlineExecutor(),
        venue_factory=lambda cb: PaperVenue(tmp_path / "venue.sqlite", "BINANCE", "USDT", {IID: ETH}, clock,
                                            paper or PaperConfig(), cb, faults=faults),
    )
    if restore:
        cp = store.load_checkpoint()
        assert cp is not None
        eng.restore(cp[1])
    alerts = []
    eng.bus.subscribe("AlertRaised", lambda ev: alerts.append(ev.code))
    eng.alerts = alerts  # what the UI would have shown, by code
    return eng


def journal_types(eng, coid):
    eng.flush()
    rows = eng.store.conn.execute("SELECT payload FROM journal ORDER BY seq")
    return [p["type"] for p in (json.loads(r[0]) for r in rows) if p.get("client_order_id") == coid]


def first_order(eng):
    return next(iter(eng.orders.values()))


# ------------------------------------------------------------------ unknown submit outcomes
def test_a_timeout_the_venue_accepted_11s_later_ends_accepted_with_one_order_and_600_reserved_once(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults
    f.timeout_submit(accepted=True, accept_after_ns=11 * S)

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)  # bar 3: the buy is written, sent, and times out
        o = first_order(eng)
        assert o.quantity == D("0.3000") and o.price == D("2000.00")  # 600 USDT notional
        assert o.status == OrderStatus.SUBMITTED and o.client_order_id in eng.session.unknown
        assert eng.session.unknown[o.client_order_id].deadline_ns == T3 + 15 * S  # + recvWindow 5 s + backend 10 s
        eng.clock.advance(6 * S)  # 6 s: not found, and the request may still be accepted: no resend
        await eng.session.tick()
        assert o.status == OrderStatus.SUBMITTED and o.client_order_id in eng.session.unknown
        assert eng.venue.order_ids() == [] and eng.venue.free("USDT") == D("10000")
        eng.clock.advance(6 * S)  # 12 s: the venue accepted it at 11 s; the lookup finds it
        await eng.session.tick()
        assert o.status == OrderStatus.ACCEPTED and o.venue_order_id == "P-1"
        assert not eng.session.unknown
        eng.clock.advance(10 * S)  # past the deadline: nothing more happens
        await eng.session.tick()
        await eng.run(max_bars=3)  # bars 4-6: the order rests (lows at 2000), nothing is sent again
        return o

    o = asyncio.run(scenario())
    assert o.status == OrderStatus.ACCEPTED and o.venue_order_id == "P-1"
    v = eng.venue
    assert v.order_ids() == [o.client_order_id] and v.working_orders() == [o.client_order_id]
    assert v._locked["USDT"] == D("600.00") and v.free("USDT") == D("9400.00")  # reserved once
    assert f.calls["submit"] == 1 and f.requests[("submit", o.client_order_id)] == 1  # no second submit, ever
    assert journal_types(eng, o.client_order_id).count("OrderAccepted") == 1
    assert "SUBMIT_UNKNOWN" in eng.alerts and "SUBMIT_RESENT" not in eng.alerts
    assert eng.trading_state == TradingState.ACTIVE and not eng.unreconciled


def test_b_a_market_order_that_timed_out_is_found_filled_with_its_trades_and_never_sent_again(tmp_path):
    # MARKET buy 0.3 sent at bar 3; the venue accepts it (every report withheld) and fills it at
    # bar 4's open plus 1 bp: 2000 * 1.0001 = 2000.20; cost 600.06 USDT, fee 0.0003 ETH
    eng = make(tmp_path, order_type=OrderType.MARKET)
    f = eng.venue.faults
    f.timeout_submit(accepted=True, withhold="all")

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)
        o = first_order(eng)
        assert o.status == OrderStatus.SUBMITTED and o.order_type == OrderType.MARKET
        await eng.run(max_bars=1)  # bar 4: filled at the venue; the step's tick looks it up
        assert o.status == OrderStatus.FILLED
        eng.clock.advance(20 * S)  # past the deadline: the lookup already settled it
        await eng.session.tick()
        await eng.run(max_bars=3)
        return o

    o = asyncio.run(scenario())
    assert o.status == OrderStatus.FILLED and o.venue_order_id == "P-1" and o.trade_ids == {"T-1"}
    assert o.avg_px == D("2000.20") and o.filled_qty == D("0.3000")
    assert eng.portfolio.quantity(IID) == D("0.2997") == eng.venue.balance("ETH")
    assert eng.venue.balance("USDT") == D("9399.94")
    assert f.requests[("submit", o.client_order_id)] == 1  # the resend a filled id would allow never happens
    assert eng.venue.order_ids() == [o.client_order_id]
    assert eng.store.conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == 1
    assert eng.trading_state == TradingState.ACTIVE and not eng.unreconciled


def test_a_timeout_not_accepted_stays_unknown_until_the_deadline_then_is_sent_once_more_same_id(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults
    f.timeout_submit(accepted=False)

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)
        o = first_order(eng)
        eng.clock.advance(14 * S)  # 14 s < 15 s: may still be accepted
        await eng.session.tick()
        assert o.status == OrderStatus.SUBMITTED and f.calls["submit"] == 1
        eng.clock.advance(2 * S)  # 16 s: can no longer be accepted; 16 s old < 30 s: sent once more
        await eng.session.tick()
        return o

    o = asyncio.run(scenario())
    assert o.status == OrderStatus.ACCEPTED and o.venue_order_id == "P-1"
    assert f.requests[("submit", o.client_order_id)] == 2 and eng.venue.order_ids() == [o.client_order_id]
    assert "SUBMIT_RESENT" in eng.alerts


def test_a_timeout_not_accepted_and_too_old_to_resend_is_rejected_not_placed(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults
    f.timeout_submit(accepted=False)

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)
        await eng.run(max_bars=1)  # the next bar is 60 s later: past the deadline and older than 30 s
        return first_order(eng)

    o = asyncio.run(scenario())
    assert o.status == OrderStatus.REJECTED and o.reason.startswith("NOT_PLACED")
    assert f.requests[("submit", o.client_order_id)] == 1 and eng.venue.order_ids() == []
    assert ("m0", IID) not in eng.working  # the router may decide again


def test_a_second_timeout_after_the_one_resend_is_not_sent_a_third_time(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults
    f.timeout_submit(accepted=False)
    f.timeout_submit(accepted=False)

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)
        eng.clock.advance(16 * S)
        await eng.session.tick()  # resent once: times out again
        eng.clock.advance(16 * S)
        await eng.session.tick()
        return first_order(eng)

    o = asyncio.run(scenario())
    assert f.requests[("submit", o.client_order_id)] == 2
    assert o.status == OrderStatus.REJECTED and "already sent twice" in o.reason


def test_a_duplicate_id_reply_means_look_it_up_not_rejected(tmp_path):
    eng = make(tmp_path)

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)
        o = first_order(eng)
        assert o.status == OrderStatus.ACCEPTED
        # the same id sent again (as a resend would be): the venue answers "already exists"
        o.status, o.venue_order_id = OrderStatus.SUBMITTED, None
        await eng.session.submit(o)
        return o

    o = asyncio.run(scenario())
    assert o.status == OrderStatus.ACCEPTED and o.venue_order_id == "P-1"
    assert eng.venue.order_ids() == [o.client_order_id] and eng.venue._locked["USDT"] == D("600.00")


def test_a_cancel_asked_while_the_submit_is_unknown_waits_for_the_lookup(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults
    f.timeout_submit(accepted=True, accept_after_ns=3 * S)

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=3)
        o = first_order(eng)
        await eng.governance.halt("test", "kill")  # cancels every working order, this one included
        assert f.calls["cancel"] == 0  # not sent: nothing is known to cancel yet
        eng.clock.advance(4 * S)
        await eng.session.tick()  # found (accepted at 3 s), then canceled
        return o

    o = asyncio.run(scenario())
    assert o.status == OrderStatus.CANCELED and f.calls["cancel"] == 1
    assert eng.venue.working_orders() == [] and eng.venue.free("USDT") == D("10000")


# ------------------------------------------------------------------ a fill twice
def test_c_a_fill_arriving_twice_live_then_in_reconciliation_is_applied_once(tmp_path):
    # volume 100 x share 0.001 = 0.1 ETH per bar: bar 4 fills 0.1 of the 0.3 at 2000 (low 1999)
    eng = make(tmp_path, lows=["1999"] * 8, paper=PaperConfig(max_volume_share=D("0.001")))

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=4)
        o = first_order(eng)
        assert o.trade_ids == {"T-1"} and o.status == OrderStatus.PARTIALLY_FILLED
        report = await reconcile(eng, 5 * S)  # looks every working order up: T-1 comes again
        return o, report

    o, report = asyncio.run(scenario())
    assert report.fills_applied == [] and not report.differences
    assert o.filled_qty == D("0.1000") and eng.portfolio.quantity(IID) == D("0.0999")
    assert eng.store.conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == 1


def test_c_a_fill_found_by_reconciliation_then_delivered_late_is_applied_once(tmp_path):
    eng = make(tmp_path, lows=["1999"] * 8, paper=PaperConfig(max_volume_share=D("0.001")))

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=4)  # T-1 live
        o = first_order(eng)
        eng.venue.faults.mute(o.client_order_id, frozenset({"OrderFilled"}))
        await eng.run(max_bars=1)  # bar 5: T-2 withheld; the periodic check (60 s) finds it
        assert o.trade_ids == {"T-1", "T-2"}
        assert eng.venue.release_withheld(o.client_order_id) == 1  # the live report, late
        return o

    o = asyncio.run(scenario())
    assert o.filled_qty == D("0.2000") and eng.portfolio.quantity(IID) == D("0.1998") == eng.venue.balance("ETH")
    assert journal_types(eng, o.client_order_id).count("OrderFilled") == 2
    assert "RECONCILED" in eng.alerts and eng.trading_state == TradingState.ACTIVE


# ------------------------------------------------------------------ written, never sent (restart)
class Killed(Exception):
    pass


def kill_after_order_written(eng):
    def crash_point(name):
        if name == "after_order_written":
            raise Killed(name)
    eng.crash_point = crash_point


def write_then_die(tmp_path):
    """Run to bar 3, die after the order is committed and before it is
    sent; close the stores as a dead process leaves them."""
    eng = make(tmp_path)
    kill_after_order_written(eng)

    async def go():
        await eng.warm_up()
        with pytest.raises(Killed):
            await eng.run(max_bars=3)

    asyncio.run(go())
    coid = first_order(eng).client_order_id
    eng.venue.close()
    eng.store.close()
    return coid


def test_d_killed_after_writing_before_sending_is_looked_up_and_sent_once_under_the_same_id(tmp_path):
    coid = write_then_die(tmp_path)
    eng = make(tmp_path, restore=True)
    assert eng.clock.timestamp_ns() == T3  # the replay clock did not move while the process was dead
    o = eng.orders[coid]
    assert o.status == OrderStatus.SUBMITTED

    lines = asyncio.run(eng.recover())
    assert any(line.startswith("resent: " + coid) for line in lines)
    assert o.status == OrderStatus.ACCEPTED and o.venue_order_id == "P-1"
    f = eng.venue.faults
    assert f.requests[("lookup", coid)] == 1 and f.requests[("submit", coid)] == 1
    assert eng.venue.order_ids() == [coid]


def test_d_beyond_max_resend_age_it_is_rejected_stale_after_restart(tmp_path):
    coid = write_then_die(tmp_path)
    eng = make(tmp_path, restore=True)
    eng.clock.advance(5 * S + 1)  # a fake clock: 1 ns beyond max_resend_age

    report = asyncio.run(reconcile(eng, 5 * S))
    o = eng.orders[coid]
    assert report.rejected_stale == [coid] and not report.resent and not report.differences
    assert o.status == OrderStatus.REJECTED and o.reason == "STALE_AFTER_RESTART"
    assert eng.venue.faults.calls["submit"] == 0 and eng.venue.order_ids() == []


def test_an_unknown_submit_survives_a_restart_and_is_not_resent_before_its_deadline(tmp_path):
    f = PaperFaults()  # the venue and its backend outlive the engine: one plan for both processes
    eng = make(tmp_path, faults=f)
    f.timeout_submit(accepted=True, accept_after_ns=8 * S)

    async def first():
        await eng.warm_up()
        await eng.run(max_bars=3)

    asyncio.run(first())
    coid = first_order(eng).client_order_id
    eng.venue.close()
    eng.store.close()  # dies; the unknown record was committed right after the timeout

    eng = make(tmp_path, faults=f, restore=True)
    assert coid in eng.session.unknown and eng.clock.timestamp_ns() == T3
    lines = asyncio.run(eng.recover())  # within max_resend_age, but it was sent: not found stays unknown
    assert any(line == f"still unknown: {coid}" for line in lines) or not lines
    assert eng.orders[coid].status == OrderStatus.SUBMITTED and f.requests[("submit", coid)] == 1
    eng.clock.advance(9 * S)
    asyncio.run(eng.session.tick())
    assert eng.orders[coid].status == OrderStatus.ACCEPTED and f.requests[("submit", coid)] == 1
    assert eng.venue.order_ids() == [coid]


# ------------------------------------------------------------------ cancels, throttle, disconnect
def resting(tmp_path, **kw):
    """An engine with the 0.3 ETH buy resting at the venue after bar 4."""
    eng = make(tmp_path, **kw)

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=4)

    asyncio.run(go())
    o = first_order(eng)
    assert o.status == OrderStatus.ACCEPTED
    return eng, o


@pytest.mark.parametrize("applied", [True, False])
def test_a_cancel_that_times_out_is_retried_after_a_lookup(tmp_path, applied):
    eng, o = resting(tmp_path)
    f = eng.venue.faults
    f.timeout_cancel(applied=applied)

    async def scenario():
        await eng.cancel(o, "TEST")
        assert o.status == OrderStatus.PENDING_CANCEL and o.client_order_id in eng.session.cancels
        await eng.session.tick()  # the backoff (1 s) has not passed
        assert f.calls["cancel"] == 1
        eng.clock.advance(1 * S)
        await eng.session.tick()

    asyncio.run(scenario())
    assert o.status == OrderStatus.CANCELED
    # applied: the lookup finds it canceled, no second cancel; not applied: canceled by the second
    assert f.calls["cancel"] == (1 if applied else 2)
    assert eng.venue.working_orders() == [] and eng.venue.free("USDT") == D("10000")


def test_while_throttled_cancels_queue_and_go_when_the_retry_after_passes(tmp_path):
    eng, o = resting(tmp_path)
    f = eng.venue.faults
    t4 = 4 * MIN
    f.throttle(30 * S)

    async def scenario():
        await eng.cancel(o, "TEST")  # HTTP 429: nothing canceled, the venue blocked for 30 s
        assert o.status == OrderStatus.PENDING_CANCEL and eng.venue_blocked_until_ns == t4 + 30 * S
        assert f.calls["cancel"] == 1 and "THROTTLED" in eng.session.status()
        # a new order while throttled is not sent at all
        late = eng.submit("m0", IID, OrderSide.BUY, D("0.0100"), D("1990.00"), D("2000"), OrderType.LIMIT)
        await eng.send_pending()
        assert late.status == OrderStatus.REJECTED and late.reason.startswith("VENUE_THROTTLED")
        eng.clock.advance(29 * S)
        await eng.session.tick()
        assert f.calls["cancel"] == 1 and f.calls["submit"] == 1 and f.calls["lookup"] == 0  # silence
        eng.clock.advance(1 * S)
        await eng.session.tick()  # the retry-after has passed: the queued cancel goes

    asyncio.run(scenario())
    assert o.status == OrderStatus.CANCELED and f.calls["cancel"] == 2
    assert eng.venue_blocked_until_ns is None and "VENUE_THROTTLED" in eng.alerts


def test_a_submit_answered_429_is_rejected_since_nothing_was_executed(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=2)
        f.throttle(70 * S)  # from bar 2 (120 s) to 190 s
        await eng.run(max_bars=1)  # bar 3 (180 s): the step's check meets the 429 first

    asyncio.run(scenario())
    o = first_order(eng)
    assert o.status == OrderStatus.REJECTED and o.reason.startswith("VENUE_THROTTLED")
    assert eng.venue_blocked_until_ns == T3 + 10 * S and eng.venue.working_orders() == []
    assert f.calls["submit"] == 0  # the venue was known to be throttled: the order never left


def test_a_disconnect_loses_a_fill_and_the_reconnect_reconciliation_applies_it(tmp_path):
    # bar 5 (300 s) has a low of 1990: the resting buy fills at 2000 while the engine is cut off
    lows = ["2000"] * 4 + ["1990"] + ["2000"] * 3
    eng, o = resting(tmp_path, lows=lows)
    f = eng.venue.faults
    f.disconnect(150 * S)  # from 240 s to 390 s

    async def scenario():
        await eng.run(max_bars=2)  # bars 5, 6: filled at the venue, report lost; the engine sees the venue down
        assert o.status == OrderStatus.ACCEPTED and eng.session.down and "DISCONNECTED" in eng.session.status()
        with pytest.raises(TransientVenueError):
            eng.venue.lookup(o.client_order_id)  # every call fails until 390 s
        await eng.run(max_bars=1)  # bar 7 (420 s): back; reconciled at once

    asyncio.run(scenario())
    assert o.status == OrderStatus.FILLED and o.trade_ids == {"T-1"}
    assert eng.portfolio.quantity(IID) == D("0.2997") == eng.venue.balance("ETH")
    assert eng.session.reconnects == 1 and not eng.session.down
    assert eng.session.last_report is not None and eng.session.last_report.mode == "reconnect"
    assert ["VENUE_DISCONNECTED", "VENUE_RECONNECTED", "RECONCILED"] == [
        a for a in eng.alerts if a in ("VENUE_DISCONNECTED", "VENUE_RECONNECTED", "RECONCILED")]
    assert eng.trading_state == TradingState.ACTIVE and not eng.unreconciled


def test_reconciliation_runs_every_60s_of_engine_clock(tmp_path):
    eng, o = resting(tmp_path)
    eng.session.config = SessionConfig(reconcile_interval_ns=60 * S)

    async def scenario():
        n = eng.session.reconciles
        eng.clock.advance(30 * S)
        await eng.session.tick()
        assert eng.session.reconciles == n
        eng.clock.advance(30 * S)
        await eng.session.tick()
        assert eng.session.reconciles == n + 1

    asyncio.run(scenario())


# ------------------------------------------------------------------ unsolicited venue actions
def test_a_venue_side_cancel_reported_live_closes_the_order(tmp_path):
    eng, o = resting(tmp_path)
    eng.venue.inject_cancel(o.client_order_id, "VENUE_MAINTENANCE")
    assert o.status == OrderStatus.CANCELED and o.reason == "VENUE_MAINTENANCE"
    assert ("m0", IID) not in eng.working and eng.venue.free("USDT") == D("10000")


def test_a_silent_venue_side_cancel_is_found_by_the_periodic_check(tmp_path):
    eng, o = resting(tmp_path)
    eng.venue.inject_cancel(o.client_order_id, report=False)
    assert o.status == OrderStatus.ACCEPTED  # the engine did not hear of it
    eng.clock.advance(60 * S)
    asyncio.run(eng.session.tick())
    assert o.status == OrderStatus.CANCELED and eng.trading_state == TradingState.ACTIVE
    assert eng.session.last_report.canceled == [o.client_order_id]


def test_a_silent_venue_side_fill_is_applied_by_the_periodic_check(tmp_path):
    # filled 0.1 at 1995.00 outside any bar: 0.0999 ETH kept, 199.50 USDT paid
    eng, o = resting(tmp_path)
    eng.venue.inject_fill(o.client_order_id, D("0.1000"), D("1995.00"), report=False)
    eng.clock.advance(60 * S)
    asyncio.run(eng.session.tick())
    assert o.status == OrderStatus.PARTIALLY_FILLED and o.filled_qty == D("0.1000")
    assert eng.portfolio.quantity(IID) == D("0.0999") == eng.venue.balance("ETH")
    assert eng.venue.balance("USDT") == D("9800.50") and eng.trading_state == TradingState.ACTIVE


def test_a_fill_the_engine_did_not_ask_for_raises_an_alert_and_halts(tmp_path):
    # someone traded 0.1 ETH at 2000 on the account under a desk-looking id
    eng, o = resting(tmp_path)
    eng.venue.inject_foreign_order("NHD-fff-9-0", IID, OrderSide.BUY, D("0.1000"), D("2000.00"))
    assert "UNKNOWN_ORDER" in eng.alerts
    eng.clock.advance(60 * S)
    asyncio.run(eng.session.tick())
    assert eng.trading_state == TradingState.HALTED
    assert any("the venue holds 0.09990000 ETH, the store 0" in d for d in eng.unreconciled)
    assert any("cash: the venue holds 9800.00000000 USDT, the store 10000" in d for d in eng.unreconciled)
    assert o.status == OrderStatus.CANCELED  # halting cancels the desk's working orders


# ------------------------------------------------------------------ the store fails
def arm_store_failure(eng):
    real = eng.store.flush

    def failing():
        raise StoreError("disk full (simulated)")

    eng.store.flush = failing
    return real


def test_a_store_failure_before_an_order_leaves_halts_and_sends_nothing(tmp_path):
    eng = make(tmp_path)
    f = eng.venue.faults

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=2)
        arm_store_failure(eng)
        with pytest.raises(StoreError):
            await eng.run(max_bars=1)  # bar 3: the buy cannot be committed, so it is never sent
        o = first_order(eng)
        other = dataclasses.replace(o, client_order_id="NHD-ff-0-0", status=OrderStatus.SUBMITTED, reason="")
        eng.orders[other.client_order_id] = other
        await eng.session.submit(other)  # even asked directly, the session refuses
        return o, other

    o, other = asyncio.run(scenario())
    assert eng.trading_state == TradingState.HALTED and "STORE_FAILED" in eng.alerts
    assert f.calls["submit"] == 0 and f.calls["cancel"] == 0 and eng.venue.order_ids() == []
    assert o.status == OrderStatus.REJECTED and o.reason.startswith("STORE_FAILED")  # closed, never sent
    assert other.status == OrderStatus.REJECTED and other.reason.startswith("STORE_FAILED")
    assert "STORE FAILED" in eng.session.status()


def test_a_store_failure_while_an_order_rests_halts_cancels_it_and_sends_nothing_new(tmp_path):
    # target 1 for two ready bars, then 0: bar 5's signal must be committed, and cannot be
    eng = make(tmp_path, targets=("1", "1", "0"))
    eng.halt_file = tmp_path / "HALT"
    f = eng.venue.faults

    async def scenario():
        await eng.warm_up()
        await eng.run(max_bars=4)
        o = first_order(eng)
        assert o.status == OrderStatus.ACCEPTED
        arm_store_failure(eng)
        with pytest.raises(StoreError):
            await eng.run(max_bars=3)
        return o

    o = asyncio.run(scenario())
    assert eng.trading_state == TradingState.HALTED and "STORE_FAILED" in eng.alerts
    assert o.status == OrderStatus.CANCELED and o.reason == "STORE_FAILED"
    assert f.calls["submit"] == 1 and eng.venue.order_ids() == [o.client_order_id]
    assert eng.venue.working_orders() == []
    assert (tmp_path / "HALT").read_text().startswith("store failed")  # a restart stays halted


def test_faults_plan_refuses_an_acceptance_later_than_the_window(tmp_path):
    f = PaperFaults()
    with pytest.raises(ValueError, match="recvWindow"):
        f.timeout_submit(accepted=True, accept_after_ns=16 * S)
    v = PaperVenue(tmp_path / "v.sqlite", "BINANCE", "USDT", {IID: ETH}, TestClock(0), PaperConfig(),
                   lambda ev: None, faults=f)
    f.throttle(5 * S)
    with pytest.raises(VenueThrottled) as e:
        v.order_ids()
    assert e.value.retry_after_ns == 5 * S and f.calls["order_ids"] == 1


# ------------------------------------------------------------------ cancel on disconnect (issue 4)
@pytest.mark.parametrize("offers", [True, False])
def test_cancel_on_disconnect_and_what_the_operator_is_told(tmp_path, offers):
    eng, o = resting(tmp_path, paper=PaperConfig(cancel_on_disconnect=offers))
    messages = []
    eng.bus.subscribe("AlertRaised", lambda ev: messages.append(ev.message) if ev.code == "VENUE_DISCONNECTED"
                      else None)
    canceled = eng.venue.disconnect(150 * S)
    assert canceled == ([o.client_order_id] if offers else [])

    async def scenario():
        await eng.run(max_bars=1)  # the engine meets the dead connection and tells the operator
        assert messages, "no VENUE_DISCONNECTED alert"
        if offers:
            assert f"the venue cancels on disconnect: {o.client_order_id} canceled there" in messages[0]
        else:
            assert f"may still be working at the venue: {o.client_order_id}" in messages[0]
        await eng.run(max_bars=3)  # back after 150 s: reconciliation learns the venue's cancel

    asyncio.run(scenario())
    if offers:
        assert o.status == OrderStatus.CANCELED  # learned by the reconnect reconciliation
        # the router bought again after the reconnect: one open order at the venue, its 600 USDT reserved once
        assert len(eng.venue.open_orders()) == 1 and eng.venue.free("USDT") == D("9400")
