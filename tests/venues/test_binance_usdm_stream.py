"""The USD-M futures user data stream (issue 6: "order updates through the
venue's user data stream, with REST reconciliation after every
reconnect"), through the real ccxt.pro ``binanceusdm`` code path against
the local fake (tests/venues/binance_server.py, ``FakeBinanceUsdm``):
ccxt's ``authenticate`` asks ``POST /fapi/v1/listenKey`` (API key header,
no signature), ``watch_orders`` connects to ``<ws base>/private/ws?
listenKey=<key>`` (ccxt's URL for a base ending in ``/ws``), and the fake
pushes ``ORDER_TRADE_UPDATE`` / ``ACCOUNT_UPDATE`` events in Binance's
documented shape (Derivatives docs, "Event: Order Update", "Event: Balance
and Position Update"). Nothing of ccxt is patched; the tests wait only on
loopback I/O with short timeouts, and drive the engine clock themselves.

The book sits at the recorded futures trade's ask (36567.10, as in
test_binance_usdm.py); a resting buy at 36000.0 fills at its own price as
maker when the book moves through it: fee = 0.02 % (the fake's maker rate)
of the notional."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.enums import OrderSide, OrderType
from core.events import OrderFilled
from tests.venues.binance_server import FakeBinanceUsdm
from tests.venues.conftest import ENV, KEY, SECRET, Recorder
from tests.venues.test_binance_usdm import ASK, BID, USDM_INFO, order
from venues.binance.adapter import BinanceConfig, BinanceVenue
from venues.binance.exchange import make_exchange
from venues.binance.usdm import BinanceUsdmVenue

D = Decimal
S = 1_000_000_000
#: the REST reads of an order poll (open orders, one order, its trades)
ORDER_READS = {("GET", "/fapi/v1/openOrders"), ("GET", "/fapi/v1/order"), ("GET", "/fapi/v1/userTrades"),
               ("GET", "/fapi/v1/allOrders")}


@pytest.fixture
async def fsrv(clock):
    if not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    srv = await FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, wallet=D("10000"),
                                book=[("BTCUSDT", BID, "5", ASK, "5")]).start()
    yield srv
    await srv.close()


@pytest.fixture
async def fv(fsrv, clock):
    rec = Recorder()
    v = BinanceVenue(BinanceConfig(market="usdm", symbols=("BTCUSDT",), urls=fsrv.urls), clock, rec, env=ENV)
    await v.start()
    rec.events.clear()
    v.rec = rec  # type: ignore[attr-defined]
    yield v
    await v.close()


async def wait_for(cond, what: str, timeout: float = 3.0) -> None:
    """Loopback I/O only: yield to the loop until ``cond()`` (fail naming ``what``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def fills(rec: Recorder) -> list[OrderFilled]:
    return rec.of("OrderFilled")


async def connect(v: BinanceUsdmVenue, srv: FakeBinanceUsdm) -> asyncio.Task[int]:
    """The first ``next_order_updates``: it connects, reconciles over REST
    (the last read of the poll is the funding income), then waits on the
    stream; returns the waiting call."""
    task = asyncio.create_task(v.next_order_updates())
    await asyncio.wait_for(srv.user_subscribed.wait(), 3)
    await wait_for(lambda: ("GET", "/fapi/v2/positionRisk") in srv.requests[-3:] or task.done(), "the poll")
    for _ in range(20):
        await asyncio.sleep(0)
    return task


async def test_a_fill_arrives_by_the_stream_with_no_rest_order_read(fv, fsrv):
    assert isinstance(fv, BinanceUsdmVenue) and fv.user_mode == "ws"
    rec = fv.rec
    # a resting buy: 0.002 at 36000.0, under the ask
    await fv.submit_order(order("NHD-f-0-0", OrderSide.BUY, "0.002", OrderType.LIMIT, "36000.0"))
    assert fv.open_orders() == {"NHD-f-0-0": D(0)}
    task = await connect(fv, fsrv)
    # the listenKey: asked once, with the API key header and no signature (a USER_STREAM endpoint)
    assert [r for r in fsrv.requests if r[1] == "/fapi/v1/listenKey"] == [("POST", "/fapi/v1/listenKey")]
    assert fsrv.key_checked == fsrv.key_ok == 1
    assert not [p for path, p in fsrv.signed_params if path == "/fapi/v1/listenKey"]
    # ccxt's URL for the base ws://.../ws: the private category, the key as a query parameter
    ws_paths = [p for m, p in fsrv.requests if m == "WS"]
    assert ws_paths == ["/private/ws"]
    assert fv.user_connections == 1 and not task.done()

    mark = len(fsrv.requests)
    fsrv.set_book("BTCUSDT", "35990.0", "35990.1")  # the book moves through the buy: filled at 36000.0 as maker
    assert fsrv.order_by_client_id("NHD-f-0-0").status == "FILLED"
    assert await asyncio.wait_for(task, 3) == 1
    # no REST read at all between the fill and its report: it came on the stream
    assert fsrv.requests[mark:] == []
    (f,) = fills(rec)
    # ORDER_TRADE_UPDATE l/L/n/N/m: 0.002 at 36000.0; fee 0.002 x 36000.0 x 0.0002 = 0.0144 USDT; maker
    assert (f.client_order_id, f.last_qty, f.last_px, f.commission, f.commission_currency, f.liquidity_side) == (
        "NHD-f-0-0", D("0.002"), D("36000.0"), D("0.0144"), "USDT", "MAKER")
    assert f.trade_id == f"F-{fsrv.trades[-1].id}" and f.venue_order_id == str(fsrv.order_by_client_id("NHD-f-0-0").order_id)
    assert fv.lookup("NHD-f-0-0").status == "FILLED" and fv.open_orders() == {}
    assert fv.balance("BTC") == D("0.002")  # the position moved by the reported fill
    assert fv.user_mode == "ws"

    # the next call waits on the same connection: a sell the venue cancels is reported with no REST read either
    await fv.submit_order(order("NHD-f-0-1", OrderSide.SELL, "0.002", OrderType.LIMIT, "37000.0"))
    mark = len(fsrv.requests)
    task = asyncio.create_task(fv.next_order_updates())
    await asyncio.sleep(0.01)
    fsrv._f_cancel_order({"symbol": "BTCUSDT", "origClientOrderId": "NHD-f-0-1"}, fsrv.now_ms())
    while not rec.of("OrderCanceled"):
        await asyncio.wait_for(task, 3)
        task = asyncio.create_task(fv.next_order_updates())
    task.cancel()
    assert fsrv.requests[mark:] == [] and fv.user_connections == 1
    c = rec.of("OrderCanceled")[0]
    assert (c.client_order_id, c.executed_qty) == ("NHD-f-0-1", D("0"))


async def test_a_dropped_stream_polls_rest_then_reconnects_with_one_reconciliation(fv, fsrv, clock):
    rec = fv.rec
    await fv.submit_order(order("NHD-f-1-0", OrderSide.BUY, "0.003", OrderType.LIMIT, "36000.0"))
    task = await connect(fv, fsrv)

    # the stream drops: the waiting call fails over to one REST poll, the venue reads DEGRADED (user_mode rest)
    fsrv.ws_refuse = True  # and it cannot reconnect for now
    assert await fsrv.drop_user_streams() == 1
    assert await asyncio.wait_for(task, 3) == 0
    assert fv.user_mode == "rest"
    assert [a.code for a in rec.of("AlertRaised")] == ["USER_STREAM_REST"]
    # while down: each call is a REST poll (open orders first); the stream is not tried before 30 s of clock
    mark = len(fsrv.requests)
    # 0.001 of the 0.003 fills while the stream is down (the bid qty shown is what trades against the buy)
    fsrv.set_book("BTCUSDT", "35990.0", "35990.1", bid_qty="5", ask_qty="0.001")
    assert await asyncio.wait_for(fv.next_order_updates(), 3) == 0
    polled = fsrv.requests[mark:]
    assert polled[0] == ("GET", "/fapi/v1/openOrders") and ("GET", "/fapi/v1/userTrades") in polled
    assert not [r for r in polled if r[0] == "WS" or r[1] == "/fapi/v1/listenKey"]
    assert [(f.last_qty, f.last_px) for f in fills(rec)] == [(D("0.001"), D("36000.0"))]  # found by REST

    # the rest (0.002) fills while the desk is still on REST but before its next poll
    fsrv.set_book("BTCUSDT", "35990.0", "35990.1", ask_qty="5")
    # 30 s later the stream is tried again and comes back: one reconnection, one reconciliation poll
    fsrv.ws_refuse = False
    clock.advance(30 * S)
    mark = len(fsrv.requests)
    task = asyncio.create_task(fv.next_order_updates())
    await asyncio.wait_for(fsrv.user_subscribed.wait(), 3)
    await wait_for(lambda: fills(rec)[1:], "the reconciliation's fill")
    await wait_for(lambda: ("GET", "/fapi/v2/positionRisk") in fsrv.requests[mark:], "the end of the poll")
    for _ in range(20):
        await asyncio.sleep(0)
    after = fsrv.requests[mark:]
    assert fv.user_mode == "ws" and fv.user_connections == 2 and not task.done()
    assert [r for r in after if r[0] == "WS"] == [("WS", "/private/ws")]
    assert after.count(("GET", "/fapi/v1/openOrders")) == 1  # one reconciliation poll
    assert ("POST", "/fapi/v1/listenKey") not in after  # the key was still valid: the same URL
    # each fill once: 0.001 from the REST poll while down, 0.002 from the reconciliation (not again by the stream)
    assert [(f.last_qty, f.last_px) for f in fills(rec)] == [(D("0.001"), D("36000.0")), (D("0.002"), D("36000.0"))]
    assert len({f.trade_id for f in fills(rec)}) == 2
    assert fv.lookup("NHD-f-1-0").status == "FILLED" and fv.balance("BTC") == D("0.003")

    task.cancel()

async def test_a_fill_seen_by_the_reconciliation_and_by_the_stream_is_reported_once(fv, fsrv):
    rec = fv.rec
    await fv.submit_order(order("NHD-f-2-0", OrderSide.BUY, "0.002", OrderType.LIMIT, "36000.0"))
    # the venue fills the buy just as the reconciliation after connecting starts (its first read, open orders):
    # the stream, already open, sends the fill's ORDER_TRADE_UPDATE, and the poll reads the same trade over REST

    def fill_now(method: str, path: str) -> None:
        if (method, path) == ("GET", "/fapi/v1/openOrders") and fsrv.order_by_client_id("NHD-f-2-0").is_open:
            fsrv.set_book("BTCUSDT", "35990.0", "35990.1")

    fsrv.on_request = fill_now
    assert await asyncio.wait_for(fv.next_order_updates(), 3) == 1  # the stream's report, about a desk order
    trade = fsrv.trades[-1]
    sent = [e["o"] for e in fsrv.user_events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert [(o["c"], o["t"], o["l"]) for o in sent] == [("NHD-f-2-0", trade.id, "0.002")]
    assert ("GET", "/fapi/v1/userTrades") in fsrv.requests  # the poll read it too
    assert [(f.trade_id, f.last_qty, f.last_px) for f in fills(rec)] == [(f"F-{trade.id}", D("0.002"), D("36000.0"))]
    assert len(rec.of("OrderAccepted")) == 1 and fv.balance("BTC") == D("0.002")  # the position moved once


async def test_an_expired_listen_key_is_replaced_after_the_rest_interval(fv, fsrv, clock):
    rec = fv.rec
    task = await connect(fv, fsrv)
    first = fsrv.listen_key
    await fsrv.expire_listen_key()  # listenKeyExpired, then the socket closes
    assert await asyncio.wait_for(task, 3) == 0 and fv.user_mode == "rest"
    # the old key is refused now; 30 s of clock later a new key is asked and the stream comes back on it
    await fv.submit_order(order("NHD-f-3-0", OrderSide.BUY, "0.002", OrderType.LIMIT, "36000.0"))
    clock.advance(30 * S)
    task = asyncio.create_task(fv.next_order_updates())
    await asyncio.wait_for(fsrv.user_subscribed.wait(), 3)
    assert fsrv.listen_keys == [first, fsrv.listen_key] and fsrv.listen_key != first
    assert [r for r in fsrv.requests if r[1] == "/fapi/v1/listenKey"] == [("POST", "/fapi/v1/listenKey")] * 2
    assert not [e for e in fsrv.errors if e[1] == -1125]  # the expired key was never tried again
    fsrv.set_book("BTCUSDT", "35990.0", "35990.1")
    while not fills(rec):
        await asyncio.wait_for(task, 3)
        task = asyncio.create_task(fv.next_order_updates())
    task.cancel()
    assert fv.user_mode == "ws" and fv.user_connections == 2
    assert [(f.client_order_id, f.last_qty) for f in fills(rec)] == [("NHD-f-3-0", D("0.002"))]


async def test_a_funding_account_update_reads_the_payment_at_once(fv, fsrv, clock):
    rec = fv.rec
    task = await connect(fv, fsrv)
    # a long of 0.002 BTCUSDT (the venue's figure; isolated so the ACCOUNT_UPDATE names the position too)
    fsrv.position("BTCUSDT").qty, fsrv.position("BTCUSDT").entry = D("0.002"), D("36567.1")
    fsrv.margin_type["BTCUSDT"] = "isolated"
    mark = len(fsrv.requests)
    # funding at rate 0.0001: income = -0.002 x mark x 0.0001, mark = mid (36567.00 + 36567.10) / 2 = 36567.05,
    # so -0.0073134100 USDT (the long pays)
    assert fsrv.pay_funding("BTCUSDT", "0.0001", fsrv.now_ms()) == D("-0.00731341")
    assert await asyncio.wait_for(task, 3) == 0  # no order report
    # the ACCOUNT_UPDATE (reason FUNDING_FEE) made the adapter read the income now, though its 60 s funding
    # interval (config.funding_poll_ns) had not passed since the connection's reconciliation read it
    assert fsrv.requests[mark:] == [("GET", "/fapi/v1/income")]
    (p,) = rec.of("FundingPaid")
    assert (p.amount, p.asset, p.tran_id) == (D("-0.00731341"), "USDT", "9689322392")


async def test_the_user_stream_urls_of_demo_trading_and_the_live_venue(clock):
    # ccxt 4.5's URL of the USD-M user data stream: the linear base with the "private" category and the key as
    # a parameter; demo trading's streams are on fstream.binancefuture.com (Binance's demo trading FAQ), its
    # REST (where the listenKey is asked) on demo-fapi.binance.com; the live venue's on fstream.binance.com
    demo = make_exchange(clock=clock, market="usdm", testnet=True)
    live = make_exchange(clock=clock, market="usdm", testnet=False)
    try:
        assert demo.get_private_ws_url("linear", "K") == "wss://fstream.binancefuture.com/private/ws?listenKey=K"
        assert demo.urls["api"]["fapiPrivate"] == "https://demo-fapi.binance.com/fapi/v1"
        assert live.get_private_ws_url("linear", "K") == "wss://fstream.binance.com/private/ws?listenKey=K"
        assert live.urls["api"]["fapiPrivate"] == "https://fapi.binance.com/fapi/v1"
    finally:
        await demo.close()
        await live.close()
