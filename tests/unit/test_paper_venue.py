"""The paper venue's matching and ledger, with values worked out by hand."""

import asyncio
from decimal import Decimal

import pytest

from core.clock import TestClock
from core.data import Bar
from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import Order
from core.venue_errors import DuplicateClientOrderId
from venues.paper import PaperConfig, PaperVenue

D = Decimal
IID = InstrumentId("ETHUSDT", "BINANCE")
ETH = Instrument(IID, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))


def bar(ts, o, h, l, c):
    return Bar(IID, D(o), D(h), D(l), D(c), D("10"), ts - 60, ts)


def make(tmp_path, **cfg):
    clock = TestClock(100)
    events = []
    v = PaperVenue(tmp_path / "v.sqlite", "BINANCE", "USDT", {IID: ETH}, clock, PaperConfig(**cfg), events.append)
    return v, clock, events


def order(coid, side, qty, price=None, otype=OrderType.LIMIT):
    return Order(coid, "m", IID, side, otype, D(qty), None if price is None else D(price), TimeInForce.GTC, 0, 0)


def test_buy_limit_fills_only_when_low_strictly_below(tmp_path):
    v, clock, ev = make(tmp_path)
    asyncio.run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1.0000", "2000.00")))
    assert ev[-1].type == "OrderAccepted"
    assert v.free("USDT") == D("8000.00")  # 2000 reserved
    v.on_bar(bar(200, "2001", "2010", "2000.00", "2005"))  # low == price: no fill
    assert ev[-1].type == "OrderAccepted"
    v.on_bar(bar(260, "1999.50", "2003", "1998", "2001"))  # open below the limit: fills at the open
    f = ev[-1]
    assert f.type == "OrderFilled" and f.last_px == D("1999.50")
    assert f.commission == D("0.001") and f.commission_currency == "ETH"
    assert v.balance("ETH") == D("0.999")
    assert v.balance("USDT") == D("10000") - D("1999.50")


def test_sell_fee_in_quote_and_oversell_rejected(tmp_path):
    v, clock, ev = make(tmp_path)
    asyncio.run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1.0000", "2000.00")))
    v.on_bar(bar(200, "2000", "2001", "1990", "1995"))  # fills at 2000.00
    clock.set_time(300)
    asyncio.run(v.submit_order(order("NHD-2-0-0", OrderSide.SELL, "1.0000", "2100.00")))
    assert ev[-1].type == "OrderRejected" and "insufficient ETH" in ev[-1].reason
    asyncio.run(v.submit_order(order("NHD-3-0-0", OrderSide.SELL, "0.9990", "2100.00")))
    v.on_bar(bar(400, "2099", "2100.00", "2090", "2095"))  # high == price: no fill
    v.on_bar(bar(460, "2099", "2100.01", "2090", "2095"))
    f = ev[-1]
    assert f.type == "OrderFilled" and f.last_px == D("2100.00")
    assert f.commission == D("2.0979") and f.commission_currency == "USDT"
    # cash: 10000 - 2000 + 2097.90 - 2.0979 = 10095.8021
    assert v.balance("USDT") == D("10095.8021")


def test_market_order_fills_next_open_plus_slippage_against_us(tmp_path):
    v, clock, ev = make(tmp_path)
    asyncio.run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "0.1000", otype=OrderType.MARKET)))
    v.on_bar(bar(200, "2000.00", "2001", "1990", "1995"))
    # 2000 * (1 + 1 bp) = 2000.20, already on the tick
    assert ev[-1].last_px == D("2000.20")
    asyncio.run(v.submit_order(order("NHD-2-0-0", OrderSide.SELL, "0.0500", otype=OrderType.MARKET)))
    v.on_bar(bar(300, "2000.05", "2001", "1990", "1995"))
    # 2000.05 - 2000.05 * 0.0001 = 2000.05 - 0.200005 = 1999.849995 -> rounded down to 1999.84
    assert ev[-1].last_px == D("1999.84")


def test_orders_submitted_during_a_bar_do_not_match_it_and_duplicates_rejected(tmp_path):
    v, clock, ev = make(tmp_path)
    clock.set_time(200)
    asyncio.run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000")))
    v.on_bar(bar(200, "1990", "1995", "1980", "1990"))  # the same bar: no fill
    assert ev[-1].type == "OrderAccepted"
    # a repeated ClientOrderId means "look it up" (Binance -2010), never a rejection of the first
    with pytest.raises(DuplicateClientOrderId):
        asyncio.run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000")))
    assert ev[-1].type == "OrderAccepted" and v.working_orders() == ["NHD-1-0-0"]


def test_cancel_all_releases_reservations_and_ledger_outlives_the_process(tmp_path):
    v, clock, ev = make(tmp_path)
    asyncio.run(v.submit_order(order("NHD-1-0-0", OrderSide.BUY, "1", "2000")))
    assert v.cancel_all("END_OF_DATA") == 1
    assert ev[-1].type == "OrderCanceled" and ev[-1].reason == "END_OF_DATA"
    assert v.free("USDT") == D("10000")
    asyncio.run(v.submit_order(order("NHD-2-0-0", OrderSide.BUY, "1", "2000")))
    v.on_bar(bar(200, "1990", "1995", "1980", "1990"))
    v.close()
    v2, _, _ = make(tmp_path)
    assert v2.balance("ETH") == D("0.999") and v2.balance("USDT") == D("10000") - D("1990")
