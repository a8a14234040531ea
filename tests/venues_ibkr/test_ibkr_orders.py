"""The IBKR adapter's order flow, driven at ib_async's wrapper callbacks.

Each test is one case from IB's API documentation (TWS API reference:
"Order Management", "Possible Order States", "Executions and Commissions",
"Bracket Orders", "OCA Groups", "Message Codes"), written as the sequence
of callbacks TWS would cause, with the argument shapes of ib_async's
decoder. Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async.util import UNSET_DOUBLE

from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import (
    AlertRaised,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from core.orders import ContingencyType, TrailingOffsetType
from core.venue_errors import DuplicateClientOrderId
from tests.venues_ibkr.conftest import (
    ES_ID,
    NANOS,
    T0,
    commission,
    execution,
)

D = Decimal


async def _accepted(h, coid: str, perm: int, **kw):
    """Submit a desk order and let IB acknowledge it (``Submitted``)."""
    order = h.order(coid, **kw)
    await h.venue.submit_order(order)
    oid = h.gw.placed[-1][0]
    h.gw.status(oid, "Submitted", 0.0, float(order.quantity), perm)
    return order, oid


async def test_partial_fill_then_fill_commission_after_exec(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    contract = h.gw.placed[-1][1]
    assert [type(e) for e in h.of(OrderAccepted)] == [OrderAccepted]
    assert h.of(OrderAccepted)[0].venue_order_id == "9001"  # IB's permId
    # 40 shares execute (added liquidity); TWS sends execDetails, then the status, then the commission
    h.gw.exec(contract, execution("0000e0d5.6583f1a1.01.01", oid, 9001, "BOT", 40.0, 187.25, "NHD-1-0-0",
                                  40.0, 187.25, liquidity=1))
    h.gw.status(oid, "Submitted", 40.0, 60.0, 9001, avg_fill=187.25, last_fill=187.25)
    assert h.of(OrderFilled) == []  # held until its commission report arrives
    h.gw.commission(commission("0000e0d5.6583f1a1.01.01", 1.0))
    # the remaining 60 execute (removed liquidity) at 187.24
    h.gw.exec(contract, execution("0000e0d5.6583f1a2.01.01", oid, 9001, "BOT", 60.0, 187.24, "NHD-1-0-0",
                                  100.0, 187.244, liquidity=2))
    h.gw.status(oid, "Filled", 100.0, 0.0, 9001, avg_fill=187.244, last_fill=187.24)
    assert len(h.of(OrderFilled)) == 1
    h.gw.commission(commission("0000e0d5.6583f1a2.01.01", 0.3))
    fills = h.of(OrderFilled)
    assert [(f.trade_id, f.last_qty, f.last_px, f.commission, f.commission_currency, f.liquidity_side)
            for f in fills] == [
        ("0000e0d5.6583f1a1.01.01", D("40"), D("187.25"), D("1.00000000"), "USD", "MAKER"),
        ("0000e0d5.6583f1a2.01.01", D("60"), D("187.24"), D("0.30000000"), "USD", "TAKER"),
    ]
    h.book(order)
    assert order.status == OrderStatus.FILLED and order.filled_qty == D("100")
    # (40 x 187.25 + 60 x 187.24) / 100 = (7490 + 11234.4) / 100 = 187.244
    assert order.avg_px == D("187.244")
    report = h.venue.lookup("NHD-1-0-0")
    assert report is not None and report.status == "FILLED" and report.filled_qty == D("100")


async def test_opening_fill_realized_pnl_is_none(harness):
    h = harness
    buy, oid = await _accepted(h, "NHD-1-0-0", 9001)
    contract = h.gw.placed[-1][1]
    h.gw.exec(contract, execution("e-open", oid, 9001, "BOT", 100.0, 187.25, "NHD-1-0-0", 100.0, 187.25))
    h.gw.commission(commission("e-open", 1.0, realized=UNSET_DOUBLE))  # 1.7976931348623157e308: opening fill
    sell, sid = await _accepted(h, "NHD-2-0-0", 9002, side=OrderSide.SELL, price="190.00")
    h.gw.exec(contract, execution("e-close", sid, 9002, "SLD", 100.0, 190.0, "NHD-2-0-0", 100.0, 190.0))
    # IB's realized PnL is net of both commissions: (190.00 - 187.25) x 100 - 1.00 - 1.00 = 273.00
    h.gw.commission(commission("e-close", 1.0, realized=273.0))
    ex = h.venue.executions
    assert ex["e-open"].realized_pnl is None
    assert ex["e-close"].realized_pnl == D("273.0")
    rows = {r["exec_id"]: r for r in h.venue.ledger.executions()}
    assert rows["e-open"]["realized_pnl"] is None  # stored as no value (SQL NULL), not "0"
    assert D(rows["e-close"]["realized_pnl"]) == D("273")
    # ib_async itself turns the unset value into 0.0: the adapter must read the report before it does
    assert h.venue.ib.wrapper.fills["e-open"].commissionReport.realizedPNL == 0.0


async def test_error_201_on_a_working_order_is_canceled(harness):
    h = harness
    order = h.order("NHD-1-0-0", order_type=OrderType.STOP_MARKET, price=None, trigger_price=D("190.00"))
    await h.venue.submit_order(order)
    oid = h.gw.placed[0][0]
    h.gw.status(oid, "PreSubmitted", 0.0, 100.0, 9001)  # accepted, waiting for its trigger
    h.gw.error(oid, 201, "Order rejected - reason:Margin requirement not met at trigger")
    h.gw.status(oid, "Inactive", 0.0, 100.0, 9001)
    assert h.of(OrderRejected) == []  # REJECTED only before IB accepted the order
    h.clock.advance(NANOS)
    h.venue.pump()
    assert [e.reason for e in h.of(OrderCanceled)] == [
        "IB error 201: Order rejected - reason:Margin requirement not met at trigger"]
    assert h.book(order).status == OrderStatus.CANCELED


async def test_error_201_rejects_within_a_second_no_resubmit(harness):
    h = harness
    order = h.order("NHD-1-0-0")
    await h.venue.submit_order(order)
    oid = h.gw.placed[0][0]
    # straight from PendingSubmit: "Order rejected - reason: ..." (ib_async marks the trade Cancelled with code 201)
    h.gw.error(oid, 201, "Order rejected - reason:The contract is not available for short sale")
    h.gw.status(oid, "Inactive", 0.0, 100.0, 0)
    rejected = h.of(OrderRejected, "NHD-1-0-0")
    assert len(rejected) == 1 and rejected[0].ts_event == T0  # the same instant: well within a second
    assert rejected[0].reason.startswith("IB error 201: Order rejected")
    assert h.of(OrderCanceled) == []
    h.book(order)
    assert order.status == OrderStatus.REJECTED
    h.clock.advance(30 * NANOS)
    h.venue.pump()
    assert len(h.gw.placed) == 1 and h.gw.canceled == []
    report = h.venue.lookup("NHD-1-0-0")
    assert report is not None and report.status == "REJECTED"
    with pytest.raises(DuplicateClientOrderId):  # the id is spent: a resend is refused, never a second order
        await h.venue.submit_order(h.order("NHD-1-0-0"))


async def test_inactive_with_error_202_is_canceled(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    # the status arrives before its error code: the adapter waits for the code
    h.gw.status(oid, "Inactive", 0.0, 100.0, 9001)
    assert h.of(OrderCanceled) == [] and h.of(OrderRejected) == []
    h.gw.error(oid, 202, "Order Canceled - reason:Exchange closed")
    h.clock.advance(NANOS)  # the settle time, in case a fill races it
    h.venue.pump()
    canceled = h.of(OrderCanceled, "NHD-1-0-0")
    assert len(canceled) == 1 and canceled[0].reason == "IB error 202: Order Canceled - reason:Exchange closed"
    assert canceled[0].executed_qty == D("0")
    assert h.of(OrderRejected) == []
    assert h.book(order).status == OrderStatus.CANCELED


async def test_inactive_without_error_code_is_rejected_after_the_grace(harness):
    h = harness
    order = h.order("NHD-1-0-0")
    await h.venue.submit_order(order)
    oid = h.gw.placed[0][0]
    h.gw.status(oid, "Inactive", 0.0, 100.0, 0)
    h.clock.advance(NANOS - 1)
    h.venue.pump()
    assert h.of(OrderRejected) == []  # still waiting for the code (1 s)
    h.clock.advance(1)
    h.venue.pump()
    assert [e.reason for e in h.of(OrderRejected)] == ["IB: Inactive without an error code"]


async def test_cancel_then_fill_race_ends_filled_once(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    contract = h.gw.placed[-1][1]
    await h.venue.cancel_order(order, "REPRICE")
    assert h.gw.canceled == [oid]
    # IB confirms the cancel ... but the order had traded at the exchange: the fill follows
    h.gw.status(oid, "Cancelled", 0.0, 100.0, 9001)
    h.gw.error(oid, 202, "Order Canceled - reason:")
    h.gw.exec(contract, execution("e-race", oid, 9001, "BOT", 100.0, 187.25, "NHD-1-0-0", 100.0, 187.25))
    h.gw.commission(commission("e-race", 1.0))
    h.gw.status(oid, "Filled", 100.0, 0.0, 9001, avg_fill=187.25)
    h.gw.exec(contract, execution("e-race", oid, 9001, "BOT", 100.0, 187.25, "NHD-1-0-0", 100.0, 187.25))  # re-sent
    h.clock.advance(5 * NANOS)
    h.venue.pump()
    assert [(f.trade_id, f.last_qty) for f in h.of(OrderFilled)] == [("e-race", D("100"))]
    assert h.of(OrderCanceled) == []
    assert h.book(order).status == OrderStatus.FILLED and order.filled_qty == D("100")
    report = h.venue.lookup("NHD-1-0-0")
    assert report is not None and report.status == "FILLED" and len(report.fills) == 1


async def test_cancel_confirmed_after_the_settle_time(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    await h.venue.cancel_order(order, "HALT")
    h.gw.status(oid, "Cancelled", 0.0, 100.0, 9001)
    h.clock.advance(NANOS - 1)
    h.venue.pump()
    assert h.of(OrderCanceled) == []
    h.clock.advance(1)
    h.venue.pump()
    assert [(e.reason, e.executed_qty) for e in h.of(OrderCanceled)] == [("HALT", D("0"))]


async def test_ioc_remainder_canceled_by_ib_is_expired(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001, tif=TimeInForce.IOC)
    contract = h.gw.placed[-1][1]
    h.gw.exec(contract, execution("e-ioc", oid, 9001, "BOT", 30.0, 187.25, "NHD-1-0-0", 30.0, 187.25))
    h.gw.commission(commission("e-ioc", 1.0))
    h.gw.status(oid, "Cancelled", 30.0, 70.0, 9001)  # the unfilled 70 are canceled at once
    h.clock.advance(NANOS)
    h.venue.pump()
    expired = h.of(OrderExpired)
    assert [(e.reason, e.executed_qty) for e in expired] == [("IOC", D("30"))]
    assert h.book(order).status == OrderStatus.EXPIRED and order.filled_qty == D("30")


async def test_validation_error_keeps_status_and_alerts(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    h.gw.error(oid, 399, "Order Message: Warning: your order will not be placed at the exchange until 09:30")
    assert [a.code for a in h.of(AlertRaised)] == ["IBKR_VALIDATION"]
    h.gw.status(oid, "Submitted", 0.0, 100.0, 9001)
    assert h.book(order).status == OrderStatus.ACCEPTED
    assert h.of(OrderCanceled) == [] and h.of(OrderRejected) == []


async def test_oca_group_for_oco(harness):
    h = harness
    tp = h.order("NHD-1-0-0", side=OrderSide.SELL, price="195.00", contingency=ContingencyType.OCO,
                 linked_order_ids=("NHD-1-0-1",))
    sl = h.order("NHD-1-0-1", side=OrderSide.SELL, price=None, order_type=OrderType.STOP_MARKET,
                 trigger_price=D("180.00"), contingency=ContingencyType.OCO, linked_order_ids=("NHD-1-0-0",))
    await h.venue.submit_order(tp)
    await h.venue.submit_order(sl)
    (_, _, o1), (_, _, o2) = h.gw.placed
    assert (o1.ocaGroup, o1.ocaType, o1.orderType, o1.lmtPrice) == ("OCA-NHD-1-0-0", 1, "LMT", 195.0)
    assert (o2.ocaGroup, o2.ocaType, o2.orderType, o2.auxPrice) == ("OCA-NHD-1-0-0", 1, "STP", 180.0)
    # on the wire (ib_async Client.placeOrder): ... orderType [18], lmtPrice [19], auxPrice [20], tif [21],
    # ocaGroup [22], account [23], openClose, origin, orderRef [26], transmit [27], parentId [28]
    wire = [f for f in h.gw.sent if f[0] == "3"]
    assert [(f[18], f[22], f[23], f[26]) for f in wire] == [
        ("LMT", "OCA-NHD-1-0-0", "DU0000000", "NHD-1-0-0"), ("STP", "OCA-NHD-1-0-0", "DU0000000", "NHD-1-0-1")]


async def test_bracket_parent_child_transmit(harness):
    h = harness
    entry = h.order("NHD-1-0-0")
    tp = h.order("NHD-1-0-0.TP", side=OrderSide.SELL, price="190.00", parent_order_id="NHD-1-0-0")
    sl = h.order("NHD-1-0-0.SL", side=OrderSide.SELL, price=None, order_type=OrderType.STOP_MARKET,
                 trigger_price=D("185.00"), parent_order_id="NHD-1-0-0")
    await h.venue.submit_bracket(entry, [tp, sl])
    ids = [p[0] for p in h.gw.placed]
    orders = [p[2] for p in h.gw.placed]
    assert [o.orderRef for o in orders] == ["NHD-1-0-0", "NHD-1-0-0.TP", "NHD-1-0-0.SL"]
    assert [o.transmit for o in orders] == [False, False, True]  # IB activates all three with the last
    assert [o.parentId for o in orders] == [0, ids[0], ids[0]]
    assert [o.orderType for o in orders] == ["LMT", "LMT", "STP"]
    wire = [f for f in h.gw.sent if f[0] == "3"]
    assert [(f[1], f[27], f[28]) for f in wire] == [
        (str(ids[0]), "0", "0"), (str(ids[1]), "0", str(ids[0])), (str(ids[2]), "1", str(ids[0]))]


async def test_closed_market_no_order_sent(harness):
    h = harness
    # 22:00 UTC = 17:00 in New York (liquid hours 09:30-16:00) and 16:00 in Chicago, where ES pauses until 17:00
    h.clock.set_time(T0 + 7 * 3600 * NANOS)
    await h.venue.submit_order(h.order("NHD-1-0-0"))
    await h.venue.submit_order(h.order("NHD-1-0-1", instrument=ES_ID, price="4800.00", qty="1"))
    assert h.gw.placed == []
    reasons = [e.reason for e in h.of(OrderRejected)]
    assert reasons == [
        "MARKET_CLOSED: AAPL.IBKR (liquidHours, US/Eastern) is closed at 2024-01-02 22:00 UTC; "
        "next session opens 2024-01-03 14:30 UTC; not sent",
        "MARKET_CLOSED: ES-202612.IBKR (tradingHours, US/Central) is closed at 2024-01-02 22:00 UTC; "
        "next session opens 2024-01-02 23:00 UTC; not sent",
    ]
    h.clock.set_time(T0 + 8 * 3600 * NANOS)  # 23:00 UTC = 17:00 in Chicago: ES trades again
    await h.venue.submit_order(h.order("NHD-1-0-2", instrument=ES_ID, price="4800.00", qty="1"))
    assert [p[2].orderRef for p in h.gw.placed] == ["NHD-1-0-2"]


async def test_off_tick_price_and_post_only_are_refused_locally(harness):
    h = harness
    await h.venue.submit_order(h.order("NHD-1-0-0", instrument=ES_ID, price="4800.10", qty="1"))
    await h.venue.submit_order(h.order("NHD-1-0-1", post_only=True))
    assert h.gw.placed == []
    assert [e.reason for e in h.of(OrderRejected)] == [
        "price 4800.10 is not a multiple of the tick 0.25",
        "post_only: IB has no post-only flag for this contract; not sent",
    ]


async def test_order_fields_sent_to_ib(harness):
    h = harness
    await h.venue.submit_order(h.order("NHD-1-0-0", order_type=OrderType.STOP_LIMIT, price="186.50",
                                       trigger_price=D("186.00"), side=OrderSide.SELL, qty="10"))
    await h.venue.submit_order(h.order("NHD-1-0-1", order_type=OrderType.MARKET, price=None, qty="5",
                                       tif=TimeInForce.IOC))
    await h.venue.submit_order(h.order("NHD-1-0-2", order_type=OrderType.TRAILING_STOP_MARKET, price=None,
                                       side=OrderSide.SELL, qty="5", trailing_offset=D("50"),
                                       trailing_offset_type=TrailingOffsetType.BASIS_POINTS))
    a, b, c = (p[2] for p in h.gw.placed)
    assert (a.action, a.totalQuantity, a.orderType, a.lmtPrice, a.auxPrice, a.tif) == \
        ("SELL", 10.0, "STP LMT", 186.5, 186.0, "GTC")
    assert (b.action, b.totalQuantity, b.orderType, b.tif) == ("BUY", 5.0, "MKT", "IOC")
    assert (c.orderType, c.trailingPercent) == ("TRAIL", 0.5)  # 50 bp = 0.5 %
    assert {p[1].conId for p in h.gw.placed} == {265598}


async def test_fill_without_commission_report_is_reported_after_the_wait(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    h.gw.exec(h.gw.placed[-1][1], execution("e-1", oid, 9001, "BOT", 100.0, 187.25, "NHD-1-0-0", 100.0, 187.25))
    h.clock.advance(10 * NANOS - 1)
    h.venue.pump()
    assert h.of(OrderFilled) == []
    h.clock.advance(1)
    h.venue.pump()
    assert [(f.trade_id, f.commission) for f in h.of(OrderFilled)] == [("e-1", D("0"))]
    assert "IBKR_COMMISSION_MISSING" in [a.code for a in h.of(AlertRaised)]
    h.gw.commission(commission("e-1", 1.0))  # late: kept in the ledger, the operator told
    assert h.venue.executions["e-1"].commission == D("1.00000000")
    assert "IBKR_COMMISSION_LATE" in [a.code for a in h.of(AlertRaised)]
    assert len(h.of(OrderFilled)) == 1


async def test_queued_order_is_canceled_without_reaching_ib(harness):
    h = harness
    h.venue.pacing.slow_down()  # no tokens: the order waits
    order = h.order("NHD-1-0-0")
    await h.venue.submit_order(order)
    assert h.gw.placed == [] and h.venue.open_orders() == {"NHD-1-0-0": D("0")}
    await h.venue.cancel_order(order, "HALT")
    h.clock.advance(10 * NANOS)
    h.venue.pump()
    assert h.gw.placed == [] and h.gw.canceled == []
    assert [(e.reason, e.executed_qty) for e in h.of(OrderCanceled)] == [("HALT", D("0"))]


async def test_gtd_expiry_is_sent_in_utc(harness):
    h = harness
    # expires 3 h after T0 (15:00 UTC): 18:00 UTC on 2 January 2024
    await h.venue.submit_order(h.order("NHD-1-0-0", tif=TimeInForce.GTD, expire_time_ns=T0 + 3 * 3600 * NANOS))
    o = h.gw.placed[0][2]
    assert (o.tif, o.goodTillDate) == ("GTD", "20240102 18:00:00 UTC")


async def test_hours_beyond_what_ib_listed_are_closed_and_asked_again(harness):
    import asyncio

    h = harness
    h.clock.set_time(T0 + 3 * 24 * 3600 * NANOS)  # 5 January: IB listed 2 and 3 January only
    before = h.gw.requests.count("reqContractDetails")
    await h.venue.submit_order(h.order("NHD-1-0-0"))
    assert h.gw.placed == []
    (rej,) = h.of(OrderRejected)
    assert rej.reason == ("MARKET_CLOSED: AAPL.IBKR (liquidHours, US/Eastern) has no known session at 2024-01-05 "
                          "15:00 UTC (IB listed hours to 2024-01-04 05:00 UTC); not sent")
    for _ in range(20):
        await asyncio.sleep(0)
    assert h.gw.requests.count("reqContractDetails") == before + 2  # both contracts asked again


async def test_cancel_refused_10148_leaves_the_order_working(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    await h.venue.cancel_order(order, "REPRICE")
    # TWS refuses the cancel; ib_async marks its trade Cancelled anyway (any non-warning code)
    h.gw.error(oid, 10148, "OrderId 5 that needs to be cancelled cannot be cancelled, state: PendingCancel.")
    assert h.venue.ib.wrapper.trades[(17, oid)].orderStatus.status == "Cancelled"
    h.clock.advance(5 * NANOS)
    h.venue.pump()
    assert h.of(OrderCanceled) == []  # IB did not cancel it
    assert "IBKR_CANCEL_REJECTED" in [a.code for a in h.of(AlertRaised)]
    assert h.venue.open_orders() == {"NHD-1-0-0": D("0")}
    report = h.venue.lookup("NHD-1-0-0")
    assert report is not None and report.status == "OPEN"


async def test_cancel_dropped_by_pacing_is_sent_again(harness):
    h = harness
    order, oid = await _accepted(h, "NHD-1-0-0", 9001)
    await h.venue.cancel_order(order, "HALT")
    assert h.gw.canceled == [oid]
    h.gw.error(oid, 100, "Max rate of messages per second has been exceeded:max=50 rec=52 (2)")
    assert h.of(OrderRejected) == [] and h.of(OrderCanceled) == []  # the order itself is still working
    assert h.gw.canceled == [oid]  # the bucket is empty at the halved rate: 1 token in 1/25 s
    h.clock.advance(40_000_000)
    h.venue.pump()
    assert h.gw.canceled == [oid, oid]
    h.gw.status(oid, "Cancelled", 0.0, 100.0, 9001)
    h.clock.advance(NANOS)
    h.venue.pump()
    assert [e.reason for e in h.of(OrderCanceled)] == ["HALT"]
