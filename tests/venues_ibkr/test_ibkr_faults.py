"""IBKR faults at the wrapper callbacks: the gateway's daily restart
(``disconnectedEvent``, reconnect with back-off, ib_async's re-synchronisation
read by ``orderRef``), pacing violations (error 100), IB losing its own
connectivity (1100/1102). Times are engine-clock nanoseconds; nothing sleeps.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from ib_async.order import Order as IbOrder
from ib_async.order import OrderState

from core.events import AlertRaised, OrderAccepted, OrderCanceled, OrderFilled, OrderRejected, VenueStateChanged
from core.venue_errors import TransientVenueError
from tests.venues_ibkr.conftest import (
    CLIENT_ID,
    NANOS,
    T0,
    commission,
    execution,
)

D = Decimal


async def _until_idle(venue) -> None:
    """Run the reconnect task (if any) to its end: zero-delay yields only."""
    for _ in range(500):
        task = venue.reconnecting
        if task is None or task.done():
            break
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)


def _states(h) -> list[tuple[str, str]]:
    return [(e.previous, e.state) for e in h.of(VenueStateChanged)]


async def test_gateway_daily_restart_reconnects_and_reconciles(harness):
    h = harness
    venue, gw = h.venue, h.gw
    a = h.order("NHD-1-0-0")
    await venue.submit_order(a)
    a_id, contract, _ = gw.placed[0]
    gw.status(a_id, "Submitted", 0.0, 100.0, 9001)
    b = h.order("NHD-1-0-1", price="187.00")
    await venue.submit_order(b)  # sent, never acknowledged: IB never got it
    # 23:45 New York: IB Gateway's daily restart closes the socket
    gw.up = False
    gw.drop()
    assert not venue.is_connected()
    assert _states(h)[-1] == ("CONNECTED", "DISCONNECTED")
    with pytest.raises(TransientVenueError) as err:
        await venue.submit_order(h.order("NHD-1-0-2"))
    assert err.value.kind == "disconnected"
    with pytest.raises(TransientVenueError):
        venue.lookup("NHD-1-0-0")
    # back-off on the engine clock: attempt 1 after 1 s, attempt 2 2 s after it, attempt 3 4 s after that
    h.clock.advance(NANOS - 1)
    venue.pump()
    assert venue.reconnecting is None and gw.refused == 0
    h.clock.advance(1)
    venue.pump()
    await _until_idle(venue)
    assert gw.refused == 1 and venue.next_attempt_ns == T0 + 3 * NANOS
    h.clock.set_time(T0 + 3 * NANOS)
    venue.pump()
    await _until_idle(venue)
    assert gw.refused == 2 and venue.next_attempt_ns == T0 + 7 * NANOS
    # the gateway is back; while it was away 60 of A's 100 shares traded
    gw.up = True
    state = OrderState(status="Submitted")
    ib_a = IbOrder(orderId=a_id, clientId=CLIENT_ID, permId=9001, action="BUY", totalQuantity=100.0,
                   orderType="LMT", lmtPrice=187.25, tif="GTC", orderRef="NHD-1-0-0", account=gw.account)
    gw.open_orders = [(a_id, contract, ib_a, state,
                       (a_id, "Submitted", 60.0, 40.0, 187.25, 9001, 0, 187.25, CLIENT_ID, "", 0.0))]
    ex = execution("e-away", a_id, 9001, "BOT", 60.0, 187.25, "NHD-1-0-0", 60.0, 187.25, at_ns=T0 + NANOS)
    gw.executions = [(contract, ex, commission("e-away", 1.0))]
    requests_before = len(gw.requests)
    h.clock.set_time(T0 + 7 * NANOS - 1)
    venue.pump()
    assert venue.reconnecting is None or venue.reconnecting.done()
    assert gw.connects == 1
    h.clock.advance(1)
    assert not venue.is_connected()  # the attempt starts; not connected until it is synchronised
    await _until_idle(venue)
    assert gw.connects == 2 and venue.is_connected()
    assert _states(h)[-1] == ("DISCONNECTED", "CONNECTED")
    assert {"reqOpenOrders", "reqExecutions", "reqCompletedOrders"} <= set(gw.requests[requests_before:])
    fills = h.of(OrderFilled)
    assert [(f.client_order_id, f.trade_id, f.last_qty, f.commission, f.ts_event) for f in fills] == [
        ("NHD-1-0-0", "e-away", D("60"), D("1.00000000"), T0 + NANOS)]
    report = venue.lookup("NHD-1-0-0")
    assert report is not None and (report.status, report.filled_qty) == ("OPEN", D("60"))
    assert venue.lookup("NHD-1-0-1") is None  # never reached IB: reconciliation may resend or close it
    assert venue.open_orders() == {"NHD-1-0-0": D("60")}
    # IB re-sends the execution live: applied once
    gw.exec(contract, ex)
    gw.commission(commission("e-away", 1.0))
    assert len(h.of(OrderFilled)) == 1
    assert h.book(a).filled_qty == D("60")
    assert "IBKR_RECONNECTED" in [x.code for x in h.of(AlertRaised)]


async def test_orders_waiting_for_pacing_are_rejected_on_disconnect(harness):
    h = harness
    h.venue.pacing.slow_down()
    await h.venue.submit_order(h.order("NHD-1-0-0"))
    assert h.gw.placed == []
    h.gw.drop()
    assert [e.reason for e in h.of(OrderRejected)] == [
        "VENUE_DISCONNECTED: the connection to IB dropped before it was sent"]


async def test_pacing_violation_slows_down(harness):
    h = harness
    venue, gw = h.venue, h.gw
    order = h.order("NHD-1-0-0")
    await venue.submit_order(order)
    oid = gw.placed[0][0]
    # TWS: "Max rate of messages per second has been exceeded" for that order: it was not processed
    gw.error(oid, 100, "Max rate of messages per second has been exceeded:max=50 rec=51 (1)")
    assert [e.reason for e in h.of(OrderRejected)] == [
        "IB error 100: Max rate of messages per second has been exceeded:max=50 rec=51 (1)"]
    throttled = h.of(VenueStateChanged)[-1]
    assert (throttled.state, throttled.until_ns) == ("THROTTLED", T0 + 60 * NANOS)
    assert venue.pacing.rate == 25  # 50 halved
    # 30 orders at once: the bucket was emptied, so none goes out now
    for i in range(30):
        await venue.submit_order(h.order(f"NHD-2-0-{i}"))
    assert len(gw.placed) == 1
    h.clock.advance(NANOS)  # 1 s at 25/s: 25 tokens (the burst is one second's worth)
    venue.pump()
    assert len(gw.placed) == 1 + 25
    h.clock.advance(200_000_000)  # 0.2 s at 25/s: 5 more
    venue.pump()
    assert [p[2].orderRef for p in gw.placed[1:]] == [f"NHD-2-0-{i}" for i in range(30)]  # in order
    h.clock.set_time(T0 + 60 * NANOS)  # the hold is over: the full rate again
    venue.pump()
    assert venue.pacing.rate == 50 and h.of(VenueStateChanged)[-1].state == "CONNECTED"
    assert "IBKR_PACING" in [a.code for a in h.of(AlertRaised)]


async def test_burst_above_50_per_second_waits_for_tokens(harness):
    h = harness
    h.clock.advance(NANOS)  # a full bucket: 50 tokens
    for i in range(60):
        await h.venue.submit_order(h.order(f"NHD-1-0-{i}"))
    assert len(h.gw.placed) == 50
    h.clock.advance(100_000_000)  # 0.1 s at 50/s = 5 tokens
    h.venue.pump()
    assert len(h.gw.placed) == 55
    h.clock.advance(100_000_000)
    h.venue.pump()
    assert len(h.gw.placed) == 60
    assert h.of(OrderRejected) == []


async def test_ib_connectivity_lost_reports_disconnected_until_restored(harness):
    h = harness
    h.gw.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    assert not h.venue.is_connected() and h.of(VenueStateChanged)[-1].state == "DISCONNECTED"
    with pytest.raises(TransientVenueError):
        await h.venue.submit_order(h.order("NHD-1-0-0"))
    h.gw.error(-1, 1102, "Connectivity between IB and Trader Workstation has been restored - data maintained.")
    assert h.venue.is_connected() and h.of(VenueStateChanged)[-1].state == "CONNECTED"
    await h.venue.submit_order(h.order("NHD-1-0-1"))
    assert len(h.gw.placed) == 1
    assert h.of(OrderAccepted) == []


async def test_desk_restart_finds_its_orders_by_order_ref(tmp_path):
    from ib_async import IB

    from core.clock import TestClock
    from venues.ibkr import IbkrVenue
    from tests.venues_ibkr.conftest import FakeGateway, Harness, es_details, make_config, stock_details

    ledger = str(tmp_path / "venue-ibkr.sqlite")

    async def session(setup=None):
        ib = IB()
        gw = FakeGateway(ib)
        gw.add(stock_details())
        gw.add(es_details(), last_trade="202612")
        if setup is not None:
            setup(gw)
        events: list = []
        venue = IbkrVenue(make_config(ledger_path=ledger), TestClock(T0), events.append, ib=ib,
                          schedule=lambda d, cb: None)
        await venue.start()
        return Harness(venue, gw, venue.clock, events)  # type: ignore[arg-type]

    first = await session()
    a = first.order("NHD-1-0-0")
    await first.venue.submit_order(a)
    a_id, contract, _ = first.gw.placed[0]
    first.gw.status(a_id, "Submitted", 0.0, 100.0, 9001)
    first.gw.exec(contract, execution("e-1", a_id, 9001, "BOT", 40.0, 187.25, "NHD-1-0-0", 40.0, 187.25))
    first.gw.commission(commission("e-1", 1.0))
    await first.venue.submit_order(first.order("NHD-1-0-1", price="187.00"))  # IB never got this one
    first.venue.close()  # the desk process ends; the orders stay at IB

    def at_ib(gw):
        ib_a = IbOrder(orderId=a_id, clientId=CLIENT_ID, permId=9001, action="BUY", totalQuantity=100.0,
                       orderType="LMT", lmtPrice=187.25, tif="GTC", orderRef="NHD-1-0-0")
        gw.open_orders = [(a_id, contract, ib_a, OrderState(status="Submitted"),
                           (a_id, "Submitted", 60.0, 40.0, 187.25, 9001, 0, 187.25, CLIENT_ID, "", 0.0))]
        gw.executions = [
            (contract, execution("e-1", a_id, 9001, "BOT", 40.0, 187.25, "NHD-1-0-0", 40.0, 187.25),
             commission("e-1", 1.0)),
            (contract, execution("e-2", a_id, 9001, "BOT", 20.0, 187.20, "NHD-1-0-0", 60.0, 187.2333),
             commission("e-2", 0.5)),
        ]

    second = await session(at_ib)
    report = second.venue.lookup("NHD-1-0-0")
    assert report is not None and (report.status, report.filled_qty, report.venue_order_id) == ("OPEN", D("60"),
                                                                                                   "9001")
    assert [(f.trade_id, f.last_qty, f.model_id, f.commission) for f in report.fills] == [
        ("e-1", D("40"), "hmm_v1", D("1.00000000")), ("e-2", D("20"), "hmm_v1", D("0.50000000"))]
    assert second.venue.lookup("NHD-1-0-1") is None
    codes = [x.code for x in second.of(AlertRaised)]
    assert "IBKR_ORDER_NOT_FOUND" in codes and "IBKR_UNKNOWN_MODEL" not in codes
    assert second.venue.order_ids() == ["NHD-1-0-0"]
    # the desk can cancel it: by IB's order id of the earlier session
    await second.venue.cancel_order(a, "HALT")
    assert second.gw.canceled == [a_id]
    second.venue.close()


async def test_the_venue_asks_to_be_woken_when_something_falls_due(harness):
    h = harness
    asked: list[tuple[float, object]] = []
    h.venue.schedule = lambda delay, cb: asked.append((delay, cb))
    order = h.order("NHD-1-0-0")
    await h.venue.submit_order(order)
    oid = h.gw.placed[0][0]
    h.gw.status(oid, "Submitted", 0.0, 100.0, 9001)
    await h.venue.cancel_order(order, "HALT")
    h.gw.status(oid, "Cancelled", 0.0, 100.0, 9001)
    assert [d for d, _ in asked] == [1.0]  # the cancel settles 1 s later
    h.clock.advance(NANOS)  # a live clock would have moved by then; the callback runs pump
    asked[-1][1]()
    assert [e.reason for e in h.of(OrderCanceled)] == ["HALT"]
    # disconnected with a cancel waiting: a reconnect attempt in 1 s, never a busy wake-up at 0 s
    asked.clear()
    h.gw.up = False
    h.gw.drop()
    assert [d for d, _ in asked] == [1.0]
