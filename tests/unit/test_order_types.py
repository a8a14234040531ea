"""Order types, time in force and the extended state machine (issue 4),
with values worked out by hand in the comments.

Paper venue defaults: fees 0.1 % maker and taker, slippage 1 bp on
market-priced fills rounded to the tick against the trader, full fills
(``max_volume_share`` None) unless a test says otherwise.
"""

import asyncio
import dataclasses
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import TestClock
from core.data import Bar
from core.emulator import Trailing, trailing_trigger, walk_stop
from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import (
    EVENT_TYPES,
    ORDER_EVENT_TYPES,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderRejected,
    OrderSubmitted,
    OrderTriggered,
    OrderUpdated,
    event_from_dict,
)
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import TRANSITIONS, InvalidTransition, Order, TrailingOffsetType, initialized_event
from venues.paper import PaperConfig, PaperVenue

D = Decimal
IID = InstrumentId("ETHUSDT", "BINANCE")
ETH = Instrument(IID, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))
C = dict(ts_event=1, ts_init=1, client_order_id="NHD-1-0-0", instrument_id=IID, model_id="m")


def ns(text: str) -> int:
    """UTC ISO time -> integer nanoseconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * 1_000_000_000


def bar(ts, o, h, low, c, v="10"):
    return Bar(IID, D(o), D(h), D(low), D(c), D(v), ts - 60, ts)


def make(tmp_path, start=100, **cfg):
    clock = TestClock(start)
    events = []
    v = PaperVenue(tmp_path / "v.sqlite", "BINANCE", "USDT", {IID: ETH}, clock, PaperConfig(**cfg), events.append)
    return v, clock, events


def order(coid, side, qty, price=None, otype=OrderType.LIMIT, tif=TimeInForce.GTC, **kw):
    return Order(coid, "m", IID, side, otype, D(qty), None if price is None else D(price), tif, 0, 0, **kw)


def run(coro):
    asyncio.run(coro)


def types(events):
    return [e.type for e in events]


def hold_eth(v, clock, qty="2.0000"):
    """Buy ``qty`` ETH at 2000.00 (a LIMIT filled at once on the next bar)."""
    run(v.submit_order(order("NHD-0-0-0", OrderSide.BUY, qty, "2000.00")))
    clock.set_time(clock.timestamp_ns() + 1)
    v.on_bar(bar(clock.timestamp_ns(), "2000", "2001", "1990", "2000"))


def working(otype=OrderType.LIMIT, qty="1", price="100", **kw):
    o = Order("NHD-1-0-0", "m", IID, OrderSide.BUY, otype, D(qty), None if price is None else D(price),
              TimeInForce.GTC, 1, 1, **kw)
    o.apply(OrderSubmitted(**C))
    o.apply(OrderAccepted(**C, venue_order_id="P-1"))
    return o


def fill(tid, qty, px="100"):
    return OrderFilled(**C, venue_order_id="P-1", trade_id=tid, side="BUY", last_qty=D(qty), last_px=D(px),
                       commission=D("0"), commission_currency="ETH", liquidity_side="MAKER")


# ------------------------------------------------------------------ state machine
def test_pending_update_then_updated_or_rejected_goes_back_where_it_was():
    o = working()
    assert o.apply(OrderPendingUpdate(**C, price=D("101")))
    assert o.status == OrderStatus.PENDING_UPDATE and o.status_before_update == OrderStatus.ACCEPTED
    assert not o.apply(OrderPendingUpdate(**C, price=D("101")))  # repeat
    assert o.apply(OrderModifyRejected(**C, reason="no"))
    assert o.status == OrderStatus.ACCEPTED and o.price == D("100")
    assert not o.apply(OrderModifyRejected(**C, reason="no"))  # repeat: nothing pending any more
    o.apply(fill("t1", "0.4"))
    o.apply(OrderPendingUpdate(**C, price=D("101")))
    upd = OrderUpdated(**C, venue_order_id="P-1", quantity=D("1"), price=D("101"))
    assert o.apply(upd)
    # back to PARTIALLY_FILLED (0.4 of 1 filled), total quantity kept: leaves 1 - 0.4 = 0.6
    assert o.status == OrderStatus.PARTIALLY_FILLED and o.price == D("101") and o.leaves_qty == D("0.6")
    assert not o.apply(upd)  # the same update twice changes nothing


def test_a_fill_during_a_pending_update_is_honored_and_the_update_applies_after():
    o = working()
    o.apply(OrderPendingUpdate(**C, quantity=D("0.8")))
    o.apply(fill("t1", "0.3"))
    assert o.status == OrderStatus.PARTIALLY_FILLED
    o.apply(OrderUpdated(**C, venue_order_id="P-1", quantity=D("0.8"), price=D("100")))
    assert o.status == OrderStatus.PARTIALLY_FILLED and o.quantity == D("0.8") and o.leaves_qty == D("0.5")
    with pytest.raises(InvalidTransition):  # below what has filled
        o.apply(OrderUpdated(**C, venue_order_id="P-1", quantity=D("0.2"), price=D("100")))


def test_triggered_stop_and_illegal_transitions():
    o = working(OrderType.STOP_MARKET, price=None, trigger_price=D("110"))
    trig = OrderTriggered(**C, venue_order_id="P-1", trigger_price=D("110"))
    assert o.apply(trig) and o.status == OrderStatus.TRIGGERED and o.ts_triggered == 1
    assert not o.apply(trig)
    o.apply(fill("t1", "1", "110.01"))
    assert o.status == OrderStatus.FILLED
    assert not o.apply(trig)  # a late duplicate
    lim = working()
    with pytest.raises(InvalidTransition):
        lim.apply(OrderTriggered(**C, venue_order_id="P-1", trigger_price=D("1")))  # not a stop
    new = Order("NHD-2-0-0", "m", IID, OrderSide.BUY, OrderType.LIMIT, D("1"), D("1"), TimeInForce.GTC, 1, 1)
    for ev in (OrderPendingUpdate(**C), OrderExpired(**C, reason="GTD"), OrderModifyRejected(**C, reason="x")):
        with pytest.raises(InvalidTransition):
            new.apply(ev)  # never sent
    done = working()
    done.apply(OrderCanceled(**C, reason="x"))
    for ev in (OrderPendingUpdate(**C), OrderExpired(**C, reason="GTD"), OrderAccepted(**C, venue_order_id="P")):
        with pytest.raises(InvalidTransition):
            done.apply(ev)


def test_late_fill_after_the_cancel_ack_is_honored_up_to_the_executed_quantity():
    o = working(qty="1.000")
    o.apply(OrderPendingCancel(**C, reason="REPLACE"))
    o.apply(OrderCanceled(**C, reason="REPLACE", executed_qty=D("0.165")))
    assert o.status == OrderStatus.CANCELED and o.filled_qty == 0 and o.venue_executed_qty == D("0.165")
    assert o.apply(fill("t1", "0.165"))
    assert o.status == OrderStatus.CANCELED and o.filled_qty == D("0.165")
    with pytest.raises(InvalidTransition):
        o.apply(fill("t2", "0.001"))  # beyond what the ack reported
    plain = working()
    plain.apply(OrderCanceled(**C, reason="x"))
    with pytest.raises(InvalidTransition):
        plain.apply(fill("t3", "0.1"))  # no executed quantity acknowledged


def test_every_transition_target_is_a_status_and_terminal_statuses_only_self_loop():
    closed = {OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.FILLED}
    for st_ in closed:
        assert st_ not in TRANSITIONS
    assert TRANSITIONS[OrderStatus.CANCELED] == {OrderStatus.CANCELED}
    assert TRANSITIONS[OrderStatus.EXPIRED] == {OrderStatus.EXPIRED}


def test_spec_errors_name_the_rule():
    assert order("a", OrderSide.BUY, "1", otype=OrderType.STOP_MARKET).spec_error().startswith("STOP_MARKET needs")
    assert "price" in order("a", OrderSide.BUY, "1", "10", otype=OrderType.STOP_MARKET,
                            trigger_price=D("9")).spec_error()
    assert order("a", OrderSide.BUY, "1", "10", tif=TimeInForce.GTD).spec_error().startswith("expire_time_ns")
    assert order("a", OrderSide.BUY, "1", "10", tif=TimeInForce.IOC, post_only=True).spec_error()
    assert order("a", OrderSide.SELL, "1", otype=OrderType.TRAILING_STOP_MARKET, trailing_offset=D("10000"),
                 trailing_offset_type=TrailingOffsetType.BASIS_POINTS).spec_error()
    assert order("a", OrderSide.BUY, "1", "10", otype=OrderType.STOP_LIMIT, trigger_price=D("9")).spec_error() is None


# ------------------------------------------------------------------ events
def test_new_events_round_trip_without_floats():
    evs = [
        OrderTriggered(**C, venue_order_id="P-1", trigger_price=D("2010.00")),
        OrderPendingUpdate(**C, quantity=D("0.835"), price=None, trigger_price=D("1.5")),
        OrderUpdated(**C, venue_order_id="P-1", quantity=D("1.000"), price=D("2090.00")),
        OrderModifyRejected(**C, reason="nothing to modify"),
        OrderExpired(**C, reason="GTD", executed_qty=D("0")),
        OrderCanceled(**C, reason="REPLACE", executed_qty=D("0.165")),
        initialized_event(order("NHD-1-0-0", OrderSide.SELL, "1", otype=OrderType.TRAILING_STOP_MARKET,
                                trailing_offset=D("50"), trailing_offset_type=TrailingOffsetType.BASIS_POINTS,
                                linked_order_ids=("a", "b"), parent_order_id="p"), 5),
    ]
    for ev in evs:
        d = ev.to_dict()
        assert all(v is None or type(v) in (str, int, bool) for v in d.values()), d
        assert event_from_dict(d) == ev
    for name in ("OrderTriggered", "OrderPendingUpdate", "OrderUpdated", "OrderModifyRejected", "OrderExpired"):
        assert name in EVENT_TYPES and name in ORDER_EVENT_TYPES


# ------------------------------------------------------------------ stops on the paper venue
def test_buy_stop_market_triggers_when_high_reaches_it_then_fills_with_slippage(tmp_path):
    v, clock, ev = make(tmp_path)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "0.5000", otype=OrderType.STOP_MARKET,
                             trigger_price=D("2100.00"))))
    assert ev[-1].type == "OrderAccepted" and v.free("USDT") == D("10000")  # a stop-market reserves nothing
    v.on_bar(bar(200, "2050", "2099.99", "2040", "2060"))  # high below the trigger: nothing
    assert types(ev) == ["OrderAccepted"]
    v.on_bar(bar(260, "2050", "2100.00", "2040", "2080"))  # high == trigger: triggers at 2100.00
    assert types(ev)[1:] == ["OrderTriggered", "OrderFilled"]
    f = ev[-1]
    # 2100.00 + 2100.00 * 1 bp = 2100.21 (on the tick); taker fee 0.5 * 0.001 = 0.0005 ETH
    assert f.last_px == D("2100.21") and f.liquidity_side == "TAKER" and f.commission == D("0.0005")


def test_sell_stop_gapping_through_fires_at_the_open(tmp_path):
    v, clock, ev = make(tmp_path)
    hold_eth(v, clock)
    clock.set_time(300)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.SELL, "1.0000", otype=OrderType.STOP_MARKET,
                             trigger_price=D("1900.00"))))
    v.on_bar(bar(400, "1850.00", "1860", "1840", "1850"))
    assert ev[-2].type == "OrderTriggered" and ev[-2].trigger_price == D("1900.00")
    # opened below the trigger: fires at the open 1850.00; 1850 - 0.185 = 1849.815 -> down to 1849.81
    assert ev[-1].type == "OrderFilled" and ev[-1].last_px == D("1849.81")


def test_stop_limit_fills_at_once_when_marketable_else_rests_as_a_limit(tmp_path):
    v, clock, ev = make(tmp_path)
    hold_eth(v, clock)
    clock.set_time(300)
    sl = dict(otype=OrderType.STOP_LIMIT, trigger_price=D("1900.00"))
    run(v.submit_order(order("NHD-1-0-0", OrderSide.SELL, "0.5000", "1895.00", **sl)))
    run(v.submit_order(order("NHD-2-0-0", OrderSide.SELL, "0.5000", "1895.00", **sl)))
    v.on_bar(bar(400, "1950", "1960", "1890", "1900"))
    # both fire at 1900.00 on the way down (no gap); 1900 >= limit 1895: fill at 1900.00 as taker
    fills = [e for e in ev if e.type == "OrderFilled" and e.client_order_id != "NHD-0-0-0"]
    assert [(f.last_px, f.liquidity_side) for f in fills] == [(D("1900.00"), "TAKER")] * 2
    (tmp_path / "b").mkdir()
    v2, clock2, ev2 = make(tmp_path / "b")
    hold_eth(v2, clock2)
    clock2.set_time(300)
    run(v2.submit_order(order("NHD-1-0-0", OrderSide.SELL, "0.5000", "1895.00", **sl)))
    v2.on_bar(bar(400, "1880", "1885", "1870", "1880"))  # gap: fires at 1880 < 1895, not marketable
    assert ev2[-1].type == "OrderTriggered"
    v2.on_bar(bar(460, "1890", "1895.00", "1880", "1890"))  # high == limit: no fill (strictly above)
    assert ev2[-1].type == "OrderTriggered"
    v2.on_bar(bar(520, "1890", "1896", "1880", "1890"))
    assert ev2[-1].type == "OrderFilled" and ev2[-1].last_px == D("1895.00") and ev2[-1].liquidity_side == "MAKER"


def test_trailing_stop_ratchets_with_the_high_and_fires_on_the_way_down(tmp_path):
    v, clock, ev = make(tmp_path)
    hold_eth(v, clock)  # the bar at 101 closes at 2000: the venue's last price
    clock.set_time(300)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.SELL, "1.0000", otype=OrderType.TRAILING_STOP_MARKET,
                             trailing_offset=D("10.00"))))
    assert ev[-1].type == "OrderAccepted"  # trigger 2000 - 10 = 1990.00 from the last price
    v.on_bar(bar(400, "2000", "2020", "2012", "2018"))
    # path 2000 -> 2020 -> 2012 -> 2018: best 2020, trigger 2010; the low 2012 stays above: no fire
    assert ev[-1].type == "OrderUpdated" and ev[-1].trigger_price == D("2010.00")
    v.on_bar(bar(460, "2018", "2030", "2021", "2025"))  # best 2030 -> trigger 2020; low 2021 > 2020
    assert ev[-1].type == "OrderUpdated" and ev[-1].trigger_price == D("2020.00")
    v.on_bar(bar(520, "2025", "2028", "2015", "2016"))  # high 2028 < best: no move; low 2015 <= 2020: fire
    assert types(ev)[-2:] == ["OrderTriggered", "OrderFilled"]
    assert ev[-2].trigger_price == D("2020.00")
    # fires at the trigger 2020.00; 2020 - 0.202 = 2019.798 -> down to the tick 2019.79
    assert ev[-1].last_px == D("2019.79") and ev[-1].last_qty == D("1.0000")


def test_trailing_trigger_in_basis_points_and_a_buy_trailing_walk():
    # 50 bp under a best of 2030: 2030 * (1 - 0.005) = 2019.85 exactly
    assert trailing_trigger(OrderSide.SELL, D("2030"), D("50"), TrailingOffsetType.BASIS_POINTS, D("0.01")) == D(
        "2019.85")
    # 30 bp over 1999: 1999 * 1.003 = 2004.997 -> up to the tick 2005.00 (never tighter than asked)
    assert trailing_trigger(OrderSide.BUY, D("1999"), D("30"), TrailingOffsetType.BASIS_POINTS, D("0.01")) == D(
        "2005.00")
    tr = Trailing(D("5"), TrailingOffsetType.PRICE, D("0.01"))
    # buy trailing stop at 2010, best 2005: path 2004 -> 2006 -> 1990 -> 1996
    r = walk_stop(OrderSide.BUY, D("2010"), D("2004"), D("2006"), D("1990"), D("1996"), trailing=tr, best_px=D("2005"))
    # open 2004 < 2010; best 2004 -> trigger 2009; high 2006 < 2009; low 1990 -> trigger 1995;
    # the close 1996 >= 1995 on a rising leg: fires at 1995
    assert (r.fired, r.fire_px, r.trigger_price, r.best_px, r.moved) == (True, D("1995"), D("1995"), D("1990"), True)


def test_trailing_stop_without_a_last_price_is_rejected(tmp_path):
    v, clock, ev = make(tmp_path)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", otype=OrderType.TRAILING_STOP_MARKET,
                             trailing_offset=D("5"))))
    assert ev[-1].type == "OrderRejected" and "last price" in ev[-1].reason


# ------------------------------------------------------------------ time in force
def test_gtd_expires_at_the_first_bar_closing_after_it(tmp_path):
    v, clock, ev = make(tmp_path)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000", tif=TimeInForce.GTD, expire_time_ns=260)))
    assert v.free("USDT") == D("8000")
    v.on_bar(bar(200, "2010", "2020", "2005", "2010"))  # no fill, before expiry
    v.on_bar(bar(260, "2010", "2020", "2005", "2010"))  # closes at the expiry: still in
    assert ev[-1].type == "OrderAccepted"
    v.on_bar(bar(320, "1990", "1995", "1980", "1990"))  # would fill, but closes after 260: expired first
    e = ev[-1]
    assert e.type == "OrderExpired" and e.reason == "GTD" and e.ts_event == 260 and e.executed_qty == 0
    assert v.free("USDT") == D("10000") and v.working_orders() == []
    run(v.submit_order(order("NHD-2-0-0", OrderSide.BUY, "1", "2000", tif=TimeInForce.GTD, expire_time_ns=50)))
    assert ev[-1].type == "OrderRejected" and "not after now" in ev[-1].reason


def test_day_order_expires_at_midnight_of_the_venue_day(tmp_path):
    t0 = ns("2026-01-01T10:00:00")  # 19:00 in Tokyo (UTC+9)
    v, clock, ev = make(tmp_path, start=t0, day_tz="Asia/Tokyo")
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000", tif=TimeInForce.DAY)))
    # the Tokyo day ends at 2026-01-02 00:00 JST = 2026-01-01 15:00 UTC
    v.on_bar(bar(ns("2026-01-01T15:00:00"), "2010", "2020", "2005", "2010"))
    assert ev[-1].type == "OrderAccepted"
    v.on_bar(bar(ns("2026-01-01T16:00:00"), "1990", "1995", "1980", "1990"))
    assert ev[-1].type == "OrderExpired" and ev[-1].reason == "DAY" and ev[-1].ts_event == ns("2026-01-01T15:00:00")


def test_fok_unfilled_expires_with_nothing_filled_and_ioc_keeps_what_it_got(tmp_path):
    v, clock, ev = make(tmp_path, max_volume_share=D("0.1"))
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1.0000", "2000", tif=TimeInForce.FOK)))
    run(v.submit_order(order("NHD-2-0-0", OrderSide.BUY, "1.0000", "2000", tif=TimeInForce.IOC)))
    # volume 5 * 0.1 = 0.5 per bar: the FOK cannot fill 1.0 in full -> expires untouched;
    # the IOC takes the 0.5 and its 0.5 remainder expires
    v.on_bar(bar(200, "1999", "2001", "1990", "1995", v="5"))
    assert [(e.type, e.client_order_id) for e in ev[2:]] == [
        ("OrderExpired", "NHD-1-0-0"), ("OrderFilled", "NHD-2-0-0"), ("OrderExpired", "NHD-2-0-0")]
    assert ev[2].reason == "FOK" and ev[2].executed_qty == 0
    assert ev[3].last_qty == D("0.5000") and ev[4].executed_qty == D("0.5000")
    # cash: 10000 - 0.5 * 1999 (the open, below the limit) = 9000.50, nothing left locked
    assert v.free("USDT") == D("9000.50") and v.balance("USDT") == D("9000.50")
    run(v.submit_order(order("NHD-3-0-0", OrderSide.BUY, "1.0000", "2000", tif=TimeInForce.FOK)))
    v.on_bar(bar(260, "1999", "2001", "1990", "1995", v="10"))  # 10 * 0.1 = 1.0: fills in full
    assert ev[-1].type == "OrderFilled" and ev[-1].last_qty == D("1.0000")


def test_ioc_limit_not_reached_expires_after_its_first_bar(tmp_path):
    v, clock, ev = make(tmp_path)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000", tif=TimeInForce.IOC)))
    v.on_bar(bar(200, "2010", "2020", "2005", "2010"))
    assert ev[-1].type == "OrderExpired" and ev[-1].reason == "IOC" and v.free("USDT") == D("10000")


# ------------------------------------------------------------------ flags
def test_post_only_rejected_if_it_would_take(tmp_path):
    v, clock, ev = make(tmp_path)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2100", post_only=True)))
    assert ev[-1].type == "OrderAccepted"  # no last price yet: nothing to take against
    v.on_bar(bar(200, "2000", "2001", "1999", "2000.00"))  # last price 2000.00 (the buy at 2100 stays: low < 2100 fills)
    clock.set_time(300)
    run(v.submit_order(order("NHD-2-0-0", OrderSide.BUY, "1", "2000.00", post_only=True)))
    assert ev[-1].type == "OrderRejected" and "post-only" in ev[-1].reason  # at the last price: would take
    run(v.submit_order(order("NHD-3-0-0", OrderSide.BUY, "1", "1999.99", post_only=True)))
    assert ev[-1].type == "OrderAccepted"
    run(v.submit_order(order("NHD-4-0-0", OrderSide.SELL, "0.5", "2000.00", post_only=True)))
    assert ev[-1].type == "OrderRejected"  # a sell at or below the last price would take


def test_reduce_only_buy_is_rejected_on_a_spot_account(tmp_path):
    v, clock, ev = make(tmp_path)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000", reduce_only=True)))
    assert ev[-1].type == "OrderRejected" and "reduce-only" in ev[-1].reason


# ------------------------------------------------------------------ native modify
def test_native_modify_keeps_the_total_quantity_and_reserves_the_difference(tmp_path):
    v, clock, ev = make(tmp_path, max_volume_share=D("0.1"))
    o = order("NHD-1-0-0", OrderSide.BUY, "1.0000", "2000.00")
    run(v.submit_order(o))
    v.on_bar(bar(200, "2000", "2001", "1990", "1995", v="4"))  # 4 * 0.1 = 0.4 fills at 2000.00
    assert ev[-1].last_qty == D("0.4000")
    # reserved: 2000.00 at first, 0.4 * 2000 = 800.00 released by the fill -> 1200.00 locked for 0.6
    assert v.balance("USDT") - v.free("USDT") == D("1200.00")
    run(v.modify_order(o, price=D("1990.00")))
    u = ev[-1]
    assert u.type == "OrderUpdated" and u.quantity == D("1.0000") and u.price == D("1990.00")
    assert v.balance("USDT") - v.free("USDT") == D("1194.00")  # 0.6 * 1990 = 1194.00
    run(v.modify_order(o, quantity=D("0.4000")))
    assert ev[-1].type == "OrderModifyRejected" and "must exceed the filled" in ev[-1].reason
    run(v.modify_order(o, quantity=D("0.8000")))  # total 0.8: 0.4 left
    assert ev[-1].type == "OrderUpdated" and v.balance("USDT") - v.free("USDT") == D("796.00")
    run(v.modify_order(o))
    assert ev[-1].type == "OrderModifyRejected" and ev[-1].reason == "nothing to modify"
    run(v.cancel_order(o))
    assert ev[-1].type == "OrderCanceled" and ev[-1].executed_qty == D("0.4000")
    run(v.modify_order(o, price=D("1")))
    assert ev[-1].type == "OrderModifyRejected"


def test_open_stops_survive_a_restart_of_the_venue(tmp_path):
    v, clock, ev = make(tmp_path)
    hold_eth(v, clock)
    clock.set_time(300)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.SELL, "1.0000", otype=OrderType.TRAILING_STOP_MARKET,
                             trailing_offset=D("10.00"))))
    v.on_bar(bar(400, "2000", "2020", "2012", "2018"))  # trigger -> 2010
    v.close()
    v2, clock2, ev2 = make(tmp_path, start=400)
    v2.on_bar(bar(460, "2018", "2019", "2009", "2010"))  # low 2009 <= 2010 (restored trigger): fires
    assert types(ev2) == ["OrderTriggered", "OrderFilled"] and ev2[0].trigger_price == D("2010.00")


# ------------------------------------------------------------------ properties
EVENTS = st.one_of(
    st.builds(lambda q, i: ("fill", q, i), st.integers(1, 6), st.integers(0, 5)),
    st.sampled_from([("accept",), ("pcancel",), ("cancel",), ("pupdate",), ("reject_mod",), ("expire",),
                     ("trigger",)]),
    st.builds(lambda q: ("update", q), st.integers(1, 12)),
    st.builds(lambda q: ("cancel_ack", q), st.integers(0, 10)),
)


def to_event(spec):
    kind = spec[0]
    if kind == "fill":
        return fill(f"t{spec[2]}", D(spec[1]) / 10)
    if kind == "update":
        return OrderUpdated(**C, venue_order_id="P-1", quantity=D(spec[1]) / 10, price=D("100"))
    if kind == "cancel_ack":
        return OrderCanceled(**C, reason="x", executed_qty=D(spec[1]) / 10)
    return {
        "accept": OrderAccepted(**C, venue_order_id="P-1"), "pcancel": OrderPendingCancel(**C, reason="x"),
        "cancel": OrderCanceled(**C, reason="x"), "pupdate": OrderPendingUpdate(**C, quantity=D("0.9")),
        "reject_mod": OrderModifyRejected(**C, reason="x"), "expire": OrderExpired(**C, reason="GTD"),
        "trigger": OrderTriggered(**C, venue_order_id="P-1", trigger_price=D("100")),
    }[kind]


def snapshot(o):
    d = dataclasses.asdict(o)
    d["trade_ids"] = frozenset(o.trade_ids)
    return d


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=25), st.booleans())
def test_filled_never_exceeds_quantity_and_a_repeated_event_changes_nothing(specs, stop):
    o = Order("NHD-1-0-0", "m", IID, OrderSide.BUY, OrderType.STOP_LIMIT if stop else OrderType.LIMIT, D("1"),
              D("100"), TimeInForce.GTC, 1, 1, trigger_price=D("99") if stop else None)
    o.apply(OrderSubmitted(**C))
    for spec in specs:
        ev = to_event(spec)
        before = o.status
        try:
            o.apply(ev)
        except InvalidTransition:
            continue
        assert o.status == before or o.status in TRANSITIONS[before]
        assert 0 <= o.filled_qty <= o.quantity
        snap = snapshot(o)
        assert o.apply(ev) is False  # the same event again
        assert snapshot(o) == snap


DEC = st.decimals(min_value=D("0.00000001"), max_value=D("1000000"), places=8, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(DEC, DEC, st.one_of(st.none(), DEC), st.integers(0, 2**62), st.booleans())
def test_no_float_in_any_order_event_payload(qty, px, trig, ts, flag):
    c = dict(ts_event=ts, ts_init=ts, client_order_id="NHD-1-0-0", instrument_id=IID, model_id="m")
    evs = [
        OrderInitialized(**c, side="BUY", order_type="STOP_LIMIT", quantity=qty, price=px, time_in_force="GTD",
                         reduce_only=flag, trigger_price=trig, trailing_offset=trig, expire_time_ns=ts,
                         post_only=flag),
        OrderFilled(**c, venue_order_id="P", trade_id="T", side="SELL", last_qty=qty, last_px=px, commission=qty,
                    commission_currency="USDT", liquidity_side="TAKER"),
        OrderTriggered(**c, venue_order_id="P", trigger_price=px),
        OrderPendingUpdate(**c, quantity=qty, price=px, trigger_price=trig),
        OrderUpdated(**c, venue_order_id="P", quantity=qty, price=px, trigger_price=trig),
        OrderModifyRejected(**c, reason="r"),
        OrderExpired(**c, reason="FOK", executed_qty=trig),
        OrderCanceled(**c, reason="r", executed_qty=qty),
        OrderRejected(**c, reason="r"),
    ]
    for ev in evs:
        d = ev.to_dict()
        assert all(v is None or type(v) in (str, int, bool) for v in d.values()), d
        assert event_from_dict(d) == ev


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1990, 2010), st.integers(0, 30), st.integers(0, 30), st.integers(0, 40)),
                min_size=1, max_size=12),
       st.sampled_from([None, D("0.05"), D("0.1"), D("0.5")]))
def test_paper_limit_orders_never_overfill_and_release_every_reservation(tmp_path_factory, bars, share):
    tmp = tmp_path_factory.mktemp("prop")
    v, clock, ev = make(tmp, max_volume_share=share)
    run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1.5000", "2000.00")))
    run(v.submit_order(order("NHD-2-0-0", OrderSide.BUY, "0.7000", "1999.00", tif=TimeInForce.IOC)))
    t = 200
    for o_, up, down, vol in bars:
        o_ = D(o_)
        v.on_bar(Bar(IID, o_, o_ + up, o_ - down, o_, D(vol) / 4, t - 60, t))
        t += 60
    filled: dict[str, Decimal] = {}
    for e in ev:
        if e.type == "OrderFilled":
            filled[e.client_order_id] = filled.get(e.client_order_id, D(0)) + e.last_qty
    assert filled.get("NHD-1-0-0", 0) <= D("1.5") and filled.get("NHD-2-0-0", 0) <= D("0.7")
    v.cancel_all("END")
    assert all(x == 0 for x in v._locked.values())
    # cash spent + cash left = the start; base received = fills minus base fees
    spent = sum((e.last_qty * e.last_px for e in ev if e.type == "OrderFilled"), D(0))
    assert v.balance("USDT") + spent == D("10000")


# ------------------------------------------------------------------ the engine hook
def test_engine_modify_journals_pending_update_then_the_venue_update(tmp_path):
    import json

    from core.audit import AuditLog
    from core.engine import Engine, EngineConfig, ModelSpec
    from core.enums import TradingState
    from core.risk import RiskConfig, RiskEngine
    from core.router import RouterConfig
    from core.store import Store
    from tests.helpers.scripted import InlineExecutor, ScriptedModel
    from venues.feeds import ReplayFeed
    from venues.klines import KlineFile

    minute = 60_000_000_000
    bars_ = [Bar(IID, D("2000"), D("2001"), D("2000"), D("2000"), D("100"), k * minute, (k + 1) * minute, k + 2)
             for k in range(6)]
    clock = TestClock()
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock,
        store=Store(tmp_path / "desk.sqlite"), audit=AuditLog(tmp_path / "audit" / "orders.jsonl"),
        feed=ReplayFeed([KlineFile("x.csv", IID, "ETHUSDT", minute, bars_, [])]), instruments={IID: ETH},
        models={"m0": {IID: ScriptedModel("m0", IID, ["1"] * 4, warmup=2)}}, specs=[ModelSpec("m0", D("1"))],
        risk=RiskEngine(RiskConfig()), executor=InlineExecutor(),
        venue_factory=lambda cb: PaperVenue(tmp_path / "venue.sqlite", "BINANCE", "USDT", {IID: ETH}, clock,
                                            PaperConfig(), cb),
    )
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=4))  # the buy at 2000.00 rests: the lows never go below it
    (o,) = eng.working_orders()
    assert o.status == OrderStatus.ACCEPTED and o.price == D("2000.00")
    assert asyncio.run(eng.modify(o, price=D("1995.00")))
    assert o.status == OrderStatus.ACCEPTED and o.price == D("1995.00") and o.quantity == D("5.0000")
    eng.flush()
    types_ = [t for (t,) in eng.store.conn.execute("SELECT type FROM journal ORDER BY seq")]
    assert types_[-2:] == ["OrderPendingUpdate", "OrderUpdated"]
    last = json.loads(eng.store.conn.execute("SELECT payload FROM journal ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert last["price"] == "1995.00" and last["quantity"] == "5.0000"
    eng.trading_state = TradingState.HALTED
    assert not asyncio.run(eng.modify(o, price=D("1990.00")))  # no modified orders while halted
    assert o.price == D("1995.00")
