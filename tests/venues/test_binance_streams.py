"""Market data through ccxt.pro's WebSocket streams from the local fake Binance
(kline and bookTicker events built from the recorded REST klines and bookTicker
in ../shared/data/binance/rest/), with REST polling as the fallback while the
stream is down, and the gap filled from REST when it is back."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from core.identifiers import InstrumentId
from tests.venues.conftest import KLINES

BTC = InstrumentId("BTCUSDT", "BINANCE")
D = Decimal
S = 1_000_000_000


async def _next_bars_after(venue, server, push):
    task = asyncio.create_task(venue.next_bars("1m"))
    await asyncio.wait_for(server.subscribed.wait(), 5)
    await push()
    return await asyncio.wait_for(task, 5)


async def test_closed_klines_from_the_stream_then_rest_while_it_is_down(venue, server, clock, rec):
    rows = json.loads(KLINES.read_text())
    bars = await _next_bars_after(venue, server, lambda: server.push_kline("BTCUSDT", rows[0]))
    assert [(b.ts_open, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
        (rows[0][0] * 1_000_000, D("60685.22"), D("60729.84"), D("60670.90"), D("60719.27"), D("21.63272"))]
    assert bars[0].ts_event == (rows[0][0] + 60_000) * 1_000_000
    assert ("WS", "/ws/0") in server.requests and venue.md_mode == "ws"

    async def open_then_closed():
        await server.push_kline("BTCUSDT", rows[1], closed=False)  # a bar still open: no bar yet
        await server.push_kline("BTCUSDT", rows[1], closed=True)

    got = []
    task = asyncio.create_task(open_then_closed())
    while not got:
        got = await asyncio.wait_for(venue.next_bars("1m"), 5)
    await task
    assert [b.ts_open for b in got] == [rows[1][0] * 1_000_000]

    # the stream drops while a watch is pending and cannot reconnect: REST klines after the last bar delivered
    server.ws_refuse = True
    n_rest = len([r for r in server.requests if r[1] == "/api/v3/klines"])
    task = asyncio.create_task(venue.next_bars("1m"))
    await asyncio.sleep(0)
    await server.drop_ws()
    bars = await asyncio.wait_for(task, 5)
    assert venue.md_mode == "rest"
    assert [b.ts_open // 1_000_000 for b in bars] == [r[0] for r in rows[2:]]  # the eight later bars, once
    assert [b.close for b in bars] == [D(r[4]) for r in rows[2:]]
    assert len([r for r in server.requests if r[1] == "/api/v3/klines"]) == n_rest + 1
    alert = rec.of("AlertRaised")[-1]
    assert alert.code == "MARKET_DATA_REST" and "every 30 s" in alert.message
    assert await venue.next_bars("1m") == []  # nothing new; the stream is not retried before 30 s
    n_ws = len([r for r in server.requests if r[0] == "WS"])

    clock.advance(30 * S)  # the stream is tried again and comes back
    server.ws_refuse = False
    server.subscribed.clear()
    again = await _next_bars_after(venue, server, lambda: server.push_kline("BTCUSDT", rows[9]))
    assert again == [] and venue.md_mode == "ws"  # rows[9] was already delivered by REST: not twice
    assert len([r for r in server.requests if r[0] == "WS"]) == n_ws + 1


async def test_best_bid_ask_from_the_stream_and_from_rest_when_down(venue, server):
    task = asyncio.create_task(venue.best_bid_ask(BTC))
    await asyncio.wait_for(server.subscribed.wait(), 5)
    await server.push_book_ticker("BTCUSDT", "60741.67000000", "0.36580000", "60741.68000000", "0.45178000")
    assert await asyncio.wait_for(task, 5) == (D("60741.67"), D("0.3658"), D("60741.68"), D("0.45178"))
    server.ws_refuse = True
    task = asyncio.create_task(venue.best_bid_ask(BTC))
    await asyncio.sleep(0)
    await server.drop_ws()
    server.set_book("BTCUSDT", "60000.00", "60000.01", "1", "2")
    assert await asyncio.wait_for(task, 5) == (D("60000"), D("1"), D("60000.01"), D("2"))
    assert venue.md_mode == "rest"


async def test_order_updates_from_the_user_data_stream_with_rest_reconciliation_on_reconnect(venue, server, clock, rec):
    from tests.venues.test_binance_orders import order

    await venue.submit_order(order("NHD-s-0-0", "BUY", "0.002", "60000.00"))  # rests
    rec.events.clear()
    n0 = server.signed_total
    first = asyncio.create_task(venue.next_order_updates())
    await asyncio.wait_for(server.user_subscribed.wait(), 5)
    mark = len(server.requests)
    while ("GET", "/api/v3/account") not in server.requests[mark:]:  # the REST reconciliation after subscribing
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)  # let it reach watch_orders
    mark = len(server.requests)
    server.set_book("BTCUSDT", "59990.00", "59999.99", ask_qty="0.0005")  # 0.0005 fills at 60000 as maker
    assert await asyncio.wait_for(first, 5) == 1
    assert server.requests[mark:] == []  # the fill came on the stream, not from a REST read
    f = rec.of("OrderFilled")[0]
    # executionReport l/L/n/N: 0.0005 at 60000, commission 0.1 % of 0.0005 BTC = 0.0000005 BTC, maker
    assert (f.last_qty, f.last_px, f.commission, f.commission_currency, f.liquidity_side) == (
        D("0.0005"), D("60000"), D("0.0000005"), "BTC", "MAKER")
    # the subscription is signed and verified like a REST request (then openOrders and account)
    assert server.signed_total == n0 + 3 and server.signed_ok == server.signed_total
    assert ("WS", "/ws-api/v3") in server.requests

    # the stream drops; meanwhile the rest fills; reconnecting reconciles over REST first
    await server.drop_ws()
    server.set_book("BTCUSDT", "59990.00", "59999.99", ask_qty="1")  # the remaining 0.0015 fills while down
    await asyncio.wait_for(venue.next_order_updates(), 5)
    fills = rec.of("OrderFilled")
    assert [x.last_qty for x in fills] == [D("0.0005"), D("0.0015")]  # each fill once
    assert venue.lookup("NHD-s-0-0").status == "FILLED"

    # a cancel's executionReport carries the order's id in "C"
    await venue.submit_order(order("NHD-s-0-1", "BUY", "0.001", "50000.00"))
    server.user_subscribed.clear()
    task = asyncio.create_task(venue.next_order_updates())
    await asyncio.sleep(0)
    server._cancel(server.order_by_client_id("NHD-s-0-1"), server.now_ms())  # canceled at the venue
    while not rec.of("OrderCanceled"):
        await asyncio.wait_for(task, 5)
        task = asyncio.create_task(venue.next_order_updates())
    task.cancel()
    c = rec.of("OrderCanceled")[0]
    assert (c.client_order_id, c.executed_qty) == ("NHD-s-0-1", D("0"))
