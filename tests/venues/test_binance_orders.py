"""Orders through the real ccxt code path against the local fake Binance:
submit, fill (fees as reported: base asset on a buy, quote on a sell, BNB),
partial fills, resting fills found by polling, cancel with late fills, IOC
expiry, refusals, native OCO, and the reads reconciliation uses.

The book is the recorded BTCUSDT bookTicker (../shared/data/binance/rest/
http_spot_market_book_ticker.json: bid 60741.67, ask 60741.68); the fee rate is
0.1 %. Every expected figure is worked out by hand in the comments."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.orders import Order
from core.venue_errors import DuplicateClientOrderId
from tests.venues.conftest import Recorder, venue_for

BTC = InstrumentId("BTCUSDT", "BINANCE")
D = Decimal


def order(coid: str, side: str, qty: str, price: str | None = None, type_: OrderType | None = None,
          tif: TimeInForce = TimeInForce.GTC, **kw) -> Order:
    t = type_ or (OrderType.LIMIT if price is not None else OrderType.MARKET)
    return Order(client_order_id=coid, model_id="hmm_v1", instrument_id=BTC, side=OrderSide(side), order_type=t,
                 quantity=D(qty), price=None if price is None else D(price),
                 time_in_force=tif if t != OrderType.MARKET else TimeInForce.IOC, ts_init=0, step=0, **kw)


async def test_a_crossing_limit_buy_fills_at_the_ask_with_the_fee_in_btc(venue, server, rec):
    await venue.submit_order(order("NHD-1-0-0", "BUY", "0.001", "60741.68"))
    assert rec.types() == ["OrderAccepted", "OrderFilled"]
    acc, fill = rec.events
    assert acc.venue_order_id == "1" and acc.client_order_id == "NHD-1-0-0"
    # 0.001 BTC at the ask 60741.68; commission 0.1 % of the BTC received = 0.000001 BTC
    assert (fill.trade_id, fill.last_qty, fill.last_px) == ("1", D("0.001"), D("60741.68"))
    assert (fill.commission, fill.commission_currency, fill.liquidity_side) == (D("0.000001"), "BTC", "TAKER")
    assert fill.ts_event == server.clock.timestamp_ns()  # transactTime (ms) of the answer
    # balances: BTC 1 + 0.001 - 0.000001 = 1.000999; USDT 10000 - 0.001 * 60741.68 = 9939.25832
    assert (venue.balance("BTC"), venue.balance("USDT")) == (D("1.000999"), D("9939.25832"))
    await venue.refresh_balances()  # the venue's own figures agree
    assert (venue.balance("BTC"), venue.balance("USDT")) == (D("1.000999"), D("9939.25832"))
    assert server.order_by_client_id("NHD-1-0-0").status == "FILLED"


async def test_a_market_sell_fills_at_the_bid_with_the_fee_in_usdt(venue, server, rec):
    await venue.submit_order(order("NHD-2-0-0", "SELL", "0.002"))
    fill = rec.of("OrderFilled")[0]
    # 0.002 * 60741.67 = 121.48334 USDT received; fee 0.1 % = 0.12148334 USDT
    assert (fill.last_qty, fill.last_px, fill.side) == (D("0.002"), D("60741.67"), "SELL")
    assert (fill.commission, fill.commission_currency) == (D("0.12148334"), "USDT")
    assert ("POST", "/api/v3/order") in server.requests
    sent = server.order_by_client_id("NHD-2-0-0")
    assert sent.type == "MARKET" and sent.time_in_force == "GTC"  # no timeInForce and no quoteOrderQty sent


async def test_fees_in_bnb_as_reported(venue, server, rec):
    server.bnb_fees = True  # BNB at 300 USDT
    await venue.submit_order(order("NHD-3-0-0", "BUY", "0.001", "60741.68"))
    fill = rec.of("OrderFilled")[0]
    # 0.001 * 60741.68 = 60.74168 USDT; 0.1 % = 0.06074168 USDT = 0.000202472266... BNB -> 0.00020247 (8 dp)
    assert (fill.commission, fill.commission_currency) == (D("0.00020247"), "BNB")
    assert venue.balance("BNB") == D("2") - D("0.00020247")
    assert venue.balance("BTC") == D("1.001")  # no BTC fee when paid in BNB


async def test_a_partial_fill_on_arrival_then_the_rest_rests(venue, server, rec):
    server.set_book("BTCUSDT", "60741.67", "60741.68", ask_qty="0.0004")
    await venue.submit_order(order("NHD-4-0-0", "BUY", "0.001", "60741.68"))
    assert rec.types() == ["OrderAccepted", "OrderFilled"]
    assert rec.events[1].last_qty == D("0.0004")
    rep = venue.lookup("NHD-4-0-0")
    assert (rep.status, rep.filled_qty, len(rep.fills)) == ("OPEN", D("0.0004"), 1)
    assert venue.open_orders() == {"NHD-4-0-0": D("0.0004")}


async def test_a_resting_limit_filled_later_is_found_by_polling_as_maker(venue, server, rec):
    await venue.submit_order(order("NHD-5-0-0", "BUY", "0.001", "60000.00"))
    assert rec.types() == ["OrderAccepted"]
    await venue.poll()
    assert rec.types() == ["OrderAccepted"]  # nothing moved
    server.set_book("BTCUSDT", "59990.00", "59999.99")  # the ask falls through 60000: a maker fill at 60000
    await venue.poll()
    fill = rec.of("OrderFilled")[0]
    assert (fill.last_px, fill.liquidity_side, fill.commission, fill.commission_currency) == (
        D("60000"), "MAKER", D("0.000001"), "BTC")
    assert venue.lookup("NHD-5-0-0").status == "FILLED"
    assert venue.open_orders() == {}


async def test_cancel_reports_the_late_fill_first_then_canceled_with_executed_qty(venue, server, rec):
    await venue.submit_order(order("NHD-6-0-0", "BUY", "0.002", "59000.00"))
    server.set_book("BTCUSDT", "58990.00", "58999.99", ask_qty="0.0005")  # 0.0005 fills at 59000 as maker
    await venue.cancel_order(order("NHD-6-0-0", "BUY", "0.002", "59000.00"), "REPRICE")
    assert rec.types() == ["OrderAccepted", "OrderFilled", "OrderCanceled"]
    fill, canceled = rec.events[1], rec.events[2]
    # 0.0005 * 0.1 % = 0.0000005 BTC
    assert (fill.last_qty, fill.last_px, fill.commission, fill.liquidity_side) == (
        D("0.0005"), D("59000"), D("0.0000005"), "MAKER")
    assert (canceled.reason, canceled.executed_qty) == ("REPRICE", D("0.0005"))
    assert server.order_by_client_id("NHD-6-0-0").status == "CANCELED"
    assert ("DELETE", "/api/v3/order") in server.requests


async def test_an_ioc_limit_that_does_not_cross_expires(venue, rec):
    await venue.submit_order(order("NHD-7-0-0", "BUY", "0.001", "60000.00", tif=TimeInForce.IOC))
    assert rec.types() == ["OrderAccepted", "OrderExpired"]
    assert (rec.events[1].reason, rec.events[1].executed_qty) == ("IOC", D("0"))


@pytest.mark.parametrize("qty, price, post_only, why", [
    ("0.00001", "60000.00", False, "Filter failure: NOTIONAL"),  # 0.00001 * 60000 = 0.6 < 5 USDT
    ("1", "60000.00", False, "insufficient balance"),  # 60000 USDT needed, 10000 held
    ("0.001", "60741.68", True, "immediately match and take"),  # a LIMIT_MAKER at the ask would take
])
async def test_a_definite_refusal_is_reported_as_rejected(venue, server, rec, qty, price, post_only, why):
    await venue.submit_order(order("NHD-8-0-0", "BUY", qty, price, post_only=post_only))
    assert rec.types() == ["OrderRejected"]
    assert why in rec.events[0].reason
    assert server.order_by_client_id("NHD-8-0-0") is None


async def test_a_duplicate_client_order_id_is_look_it_up_not_rejected(venue, rec):
    await venue.submit_order(order("NHD-9-0-0", "BUY", "0.001", "60000.00"))
    with pytest.raises(DuplicateClientOrderId):
        await venue.submit_order(order("NHD-9-0-0", "BUY", "0.001", "60000.00"))
    assert rec.types() == ["OrderAccepted"]


async def test_native_oco_one_leg_fills_the_other_expires(venue, server, rec):
    above = order("NHD-a-0-0", "SELL", "0.001", "62000.00")
    below = order("NHD-a-0-1", "SELL", "0.001", None, OrderType.STOP_MARKET, trigger_price=D("59000.00"))
    await venue.submit_oco(above, below)
    assert sorted(e.client_order_id for e in rec.of("OrderAccepted")) == ["NHD-a-0-0", "NHD-a-0-1"]
    assert ("POST", "/api/v3/orderList/oco") in server.requests
    assert server.locked["BTC"] == D("0.001")  # one lock for the list
    server.set_book("BTCUSDT", "62000.00", "62000.01")
    await venue.poll()
    fill = rec.of("OrderFilled")[0]
    # the take-profit sells 0.001 at 62000 as maker: 62 USDT, fee 0.062 USDT
    assert (fill.client_order_id, fill.last_px, fill.commission, fill.commission_currency) == (
        "NHD-a-0-0", D("62000"), D("0.062"), "USDT")
    expired = rec.of("OrderExpired")
    assert [(e.client_order_id, e.reason) for e in expired] == [("NHD-a-0-1", "OCO")]
    assert venue.balance("BTC") == D("0.999")


async def test_after_a_restart_lookups_come_from_the_venue_with_fills(venue, server, clock, rec):
    await venue.submit_order(order("NHD-b-0-0", "BUY", "0.001", "60741.68"))
    await venue.submit_order(order("NHD-b-0-1", "BUY", "0.001", "60000.00"))
    # a new process: nothing in memory; the start-up snapshot reads allOrders and myTrades
    again = venue_for(server, clock, Recorder())
    await again.start()
    try:
        n = len(server.requests)
        rep = again.lookup("NHD-b-0-0")  # answered without a request
        assert len(server.requests) == n
        assert (rep.status, rep.venue_order_id, rep.filled_qty) == ("FILLED", "1", D("0.001"))
        (f,) = rep.fills
        assert (f.trade_id, f.last_px, f.commission, f.commission_currency, f.liquidity_side) == (
            "1", D("60741.68"), D("0.000001"), "BTC", "TAKER")
        assert again.lookup("NHD-b-0-1").status == "OPEN"
        assert again.lookup("NHD-never-0") is None
        assert again.order_ids() == ["NHD-b-0-0", "NHD-b-0-1"]
        assert again.open_orders() == {"NHD-b-0-1": D("0")}
        direct = await again.lookup_async("NHD-b-0-0")  # GET /order?origClientOrderId= + myTrades
        assert direct.fills[0].commission == D("0.000001")
        assert server.requests[-2:] == [("GET", "/api/v3/order"), ("GET", "/api/v3/myTrades")]
    finally:
        await again.close()
