"""The order state machine: legal transitions, refusals, idempotence."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import (OrderAccepted, OrderCanceled, OrderDenied, OrderFilled, OrderPendingCancel, OrderRejected,
                         OrderSubmitted)
from core.identifiers import InstrumentId, is_desk_order, make_client_order_id
from core.orders import InvalidTransition, Order

IID = InstrumentId("BTCUSDT", "SIM")
C = dict(ts_event=1, ts_init=1, client_order_id="NHD-1-0-0", instrument_id=IID, model_id="m")


def new_order(qty="1"):
    return Order("NHD-1-0-0", "m", IID, OrderSide.BUY, OrderType.LIMIT, Decimal(qty), Decimal("100"),
                 TimeInForce.GTC, 1, 1)


def filled(tid, qty):
    return OrderFilled(**C, venue_order_id="v", trade_id=tid, side="BUY", last_qty=Decimal(qty),
                       last_px=Decimal("100"), commission=Decimal("0"), commission_currency="BTC",
                       liquidity_side="MAKER")


def test_happy_path_and_repeated_events_change_nothing():
    o = new_order()
    assert o.apply(OrderSubmitted(**C))
    assert o.apply(OrderAccepted(**C, venue_order_id="P-1"))
    assert not o.apply(OrderAccepted(**C, venue_order_id="P-1"))
    assert o.apply(filled("t1", "0.4"))
    assert o.status == OrderStatus.PARTIALLY_FILLED
    assert not o.apply(filled("t1", "0.4"))  # same trade twice
    assert o.filled_qty == Decimal("0.4")
    assert o.apply(filled("t2", "0.6"))
    assert o.status == OrderStatus.FILLED and o.leaves_qty == 0


def test_illegal_transitions_are_refused():
    o = new_order()
    with pytest.raises(InvalidTransition):
        o.apply(OrderAccepted(**C, venue_order_id="P-1"))  # not submitted yet
    o.apply(OrderDenied(**C, code="MIN_NOTIONAL", reason="x"))
    with pytest.raises(InvalidTransition):
        o.apply(OrderSubmitted(**C))
    o2 = new_order()
    o2.apply(OrderSubmitted(**C))
    o2.apply(OrderRejected(**C, reason="no"))
    with pytest.raises(InvalidTransition):
        o2.apply(OrderCanceled(**C, reason="late"))


def test_overfill_is_refused():
    o = new_order("1")
    o.apply(OrderSubmitted(**C))
    with pytest.raises(InvalidTransition):
        o.apply(filled("t1", "1.5"))


def test_cancel_path():
    o = new_order()
    o.apply(OrderSubmitted(**C))
    o.apply(OrderAccepted(**C, venue_order_id="P-1"))
    o.apply(OrderPendingCancel(**C, reason="REPRICE"))
    o.apply(OrderCanceled(**C, reason="REPRICE"))
    assert o.status == OrderStatus.CANCELED and o.is_closed and not o.is_working


@given(st.integers(0, 2**40), st.integers(0, 20), st.integers(0, 999))
def test_client_order_ids_fit_binance_and_are_ours(step, model, seq):
    coid = make_client_order_id(step, model, seq)
    assert len(coid) <= 36 and coid.isascii() and is_desk_order(coid)
    assert coid == make_client_order_id(step, model, seq)
