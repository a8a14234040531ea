"""Faults through the real ccxt code path against the local fake Binance:
clock offset (-1021), HTTP 429 with Retry-After, HTTP 418 ban, a connection
dropped after the venue accepted an order (unknown outcome), the request-weight
budget, an unreachable venue. Time is the shared TestClock (never slept); the
server counts every request it receives."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.orders import Order
from core.venue_errors import BACKEND_TIMEOUT_NS, TransientVenueError, VenueThrottled
from tests.venues.conftest import venue_for
from venues.binance.errors import BinanceBanned, BinanceRateLimited

BTC = InstrumentId("BTCUSDT", "BINANCE")
D = Decimal
S = 1_000_000_000


def limit_buy(coid: str, price: str = "60000.00", qty: str = "0.001") -> Order:
    return Order(client_order_id=coid, model_id="hmm_v1", instrument_id=BTC, side=OrderSide.BUY,
                 order_type=OrderType.LIMIT, quantity=D(qty), price=D(price), time_in_force=TimeInForce.GTC,
                 ts_init=0, step=0)


async def test_clock_8243_ms_behind_the_venue_is_measured_and_applied(server, clock, rec):
    server.offset_ms = 8243  # the venue's clock is 8,243 ms ahead of ours; recvWindow 5,000
    v = venue_for(server, clock, rec, recv_window_ms=5000)
    await v.start()
    try:
        signed = [(p, s) for (m, p, s) in server.answered if p not in ("/api/v3/exchangeInfo", "/api/v3/time")]
        # the first signed request (the balance read) is refused with -1021 ...
        assert signed[0] == ("/api/v3/account", 400)
        assert server.errors[0] == ("/api/v3/account", -1021)
        # ... the offset is measured from GET /api/v3/time and the read retried once, accepted
        assert [p for (m, p, s) in server.answered[1:4]] == ["/api/v3/account", "/api/v3/time", "/api/v3/account"]
        assert server.answered[3][2] == 200
        assert v.clock_offset_ms == 8243
        assert v.balance("USDT") == D("10000")
        assert any(e.type == "AlertRaised" and e.code == "CLOCK_OFFSET" and "+8243 ms" in e.message
                   for e in rec.events)
        await v.submit_order(limit_buy("NHD-c-0-0"))
        assert rec.of("OrderAccepted")[0].client_order_id == "NHD-c-0-0"
        assert len(server.orders) == 1  # exactly one order exists on the server
        assert server.signed_ok == server.signed_total > 0
    finally:
        await v.close()


async def test_a_submit_refused_with_1021_is_looked_up_never_resent(venue, server, clock, rec):
    server.offset_ms = 8243  # the venue's clock jumps ahead after the start
    await venue.submit_order(limit_buy("NHD-d-0-0"))
    posts = [r for r in server.requests if r == ("POST", "/api/v3/order")]
    assert len(posts) == 1  # never resent
    # after the -1021: GET /time, then the lookup by ClientOrderId
    assert server.requests[-2:] == [("GET", "/api/v3/time"), ("GET", "/api/v3/order")]
    assert rec.types()[-1] == "OrderRejected"
    assert "-1021" in rec.events[-1].reason and "+8243 ms" in rec.events[-1].reason
    assert server.orders == {}
    await venue.submit_order(limit_buy("NHD-d-0-1"))  # the next one is signed with the offset: accepted
    assert rec.types()[-1] == "OrderAccepted" and len(server.orders) == 1


async def test_429_stops_every_request_for_retry_after_then_trading_resumes(venue, server, clock, rec):
    server.fail_next(429, retry_after_s=35)
    with pytest.raises(BinanceRateLimited) as err:
        await venue.refresh_balances()
    assert err.value.retry_after_ns == 35 * S and err.value.status == 429
    assert rec.of("VenueStateChanged")[-1].state == "THROTTLED"
    n = len(server.requests)
    t0 = clock.timestamp_ns()
    for elapsed in (1 * S, 20 * S, 35 * S - 1):  # up to 1 ns before Retry-After: refused before it is sent
        clock.set_time(t0 + elapsed)
        with pytest.raises(VenueThrottled) as err2:
            await venue.submit_order(limit_buy("NHD-e-0-0"))
        assert err2.value.retry_after_ns == 35 * S - elapsed
        with pytest.raises(VenueThrottled):
            await venue.poll()
    assert len(server.requests) == n  # the server saw nothing for 35 s
    clock.set_time(t0 + 35 * S)  # Retry-After has passed
    await venue.submit_order(limit_buy("NHD-e-0-0"))
    assert rec.types()[-1] == "OrderAccepted"
    assert rec.of("VenueStateChanged")[-1].state == "CONNECTED"
    assert 418 not in [s for (_, _, s) in server.answered]  # it never earned a ban


async def test_418_marks_the_venue_down_for_the_ban_and_refuses_its_orders(venue, server, clock, rec):
    server.fail_next(418, retry_after_s=120)
    t0 = clock.timestamp_ns()
    with pytest.raises(BinanceBanned) as err:
        await venue.poll()
    assert err.value.retry_after_ns == 120 * S
    state = rec.of("VenueStateChanged")[-1]
    assert (state.state, state.until_ns) == ("BANNED", t0 + 120 * S)
    alert = rec.of("AlertRaised")[-1]
    assert (alert.level, alert.code) == ("ERROR", "VENUE_BANNED")
    assert not venue.is_connected()
    n = len(server.requests)
    clock.advance(60 * S)
    with pytest.raises(BinanceBanned) as err2:
        await venue.submit_order(limit_buy("NHD-f-0-0"))
    assert "IP banned (HTTP 418)" in err2.value.detail and "60 s" in err2.value.detail
    assert err2.value.retry_after_ns == 60 * S
    assert len(server.requests) == n
    clock.advance(60 * S)  # the ban is over
    await venue.submit_order(limit_buy("NHD-f-0-0"))
    assert rec.types()[-1] == "OrderAccepted" and venue.is_connected()


async def test_a_dropped_connection_after_accept_is_resolved_by_lookup(venue, server, clock, rec):
    server.drop_next_order = "after"  # the venue accepts and fills, the answer is lost
    with pytest.raises(TransientVenueError) as err:
        await venue.submit_order(limit_buy("NHD-g-0-0", price="60741.68"))
    assert "outcome unknown" in err.value.detail
    assert rec.types() == []
    with pytest.raises(TransientVenueError):
        venue.lookup("NHD-g-0-0")  # asked in the background; not known yet
    await venue.settle()
    rep = venue.lookup("NHD-g-0-0")
    assert (rep.status, rep.filled_qty) == ("FILLED", D("0.001"))
    assert rec.types() == ["OrderAccepted", "OrderFilled"]  # found: acknowledged, its fill applied once
    f = rec.events[1]
    assert (f.commission, f.commission_currency, f.last_px) == (D("0.000001"), "BTC", D("60741.68"))
    assert [r for r in server.requests if r[0] == "POST"] == [("POST", "/api/v3/order")]  # never resent
    assert len(server.orders) == 1


async def test_a_dropped_request_never_accepted_is_not_found_only_after_the_deadline(venue, server, clock, rec):
    server.drop_next_order = "before"
    sent = clock.timestamp_ns()
    with pytest.raises(TransientVenueError):
        await venue.submit_order(limit_buy("NHD-h-0-0"))
    await venue.settle()  # the background lookup: -2013, not found (so far)
    assert venue.lookup("NHD-h-0-0") is None  # before the deadline "not found" only means "wait"
    deadline = sent + 5000 * 1_000_000 + BACKEND_TIMEOUT_NS  # send time + recvWindow + 10 s
    clock.set_time(deadline)
    with pytest.raises(TransientVenueError):
        venue.lookup("NHD-h-0-0")  # the last query predates the deadline: asked again
    await venue.settle()
    assert venue.lookup("NHD-h-0-0") is None
    assert server.orders == {}


async def test_the_weight_budget_refuses_a_request_that_would_exceed_the_minute(venue, server, clock):
    minute = 60 * S
    clock.set_time((clock.timestamp_ns() // minute + 1) * minute)  # the start of a fresh minute
    venue.budget.limit = 50  # 45 usable with the 10 % headroom; GET /api/v3/account weighs 20
    await venue.refresh_balances()
    await venue.refresh_balances()
    n = len(server.requests)
    with pytest.raises(BinanceRateLimited) as err:
        await venue.refresh_balances()  # 40 + 20 > 45
    assert err.value.status == 0 and err.value.retry_after_ns == minute
    assert len(server.requests) == n  # refused before it was sent
    await venue.submit_order(limit_buy("NHD-i-0-0"))  # POST /order weighs 1: fits (41)
    await venue.cancel_order(limit_buy("NHD-i-0-0"), "HALT")  # cancels pass the budget
    clock.advance(minute)
    await venue.refresh_balances()  # a new minute


async def test_an_unreachable_venue_is_disconnected(venue, server, clock, rec):
    await server.close()
    with pytest.raises(TransientVenueError) as err:
        await venue.refresh_balances()
    assert err.value.kind == "disconnected"
    assert not venue.is_connected()
    assert rec.of("VenueStateChanged")[-1].state == "DISCONNECTED"
    assert "signature" not in err.value.detail  # query strings are redacted


async def test_an_unknown_submit_of_a_previous_process_is_not_answered_from_the_snapshot(server, clock, rec):
    # the previous process sent NHD-j-0-0 and died before the answer; the venue accepts it only after this
    # process took its start-up snapshot (the request was still in flight)
    sent = clock.timestamp_ns()
    deadline = sent + 5000 * 1_000_000 + BACKEND_TIMEOUT_NS
    v = venue_for(server, clock, rec)
    await v.start()
    try:
        v.expect_unknown({"NHD-j-0-0": deadline})
        await v.prefetch(["NHD-j-0-0"])
        assert v.lookup("NHD-j-0-0") is None  # not there yet; before the deadline that means "wait"
        # now the venue accepts it (placed directly on the fake: the late request)
        server.set_book("BTCUSDT", "60741.67", "60741.68")
        v2 = venue_for(server, clock)
        await v2.start()
        await v2.submit_order(limit_buy("NHD-j-0-0"))
        await v2.close()
        clock.set_time(deadline)
        with pytest.raises(TransientVenueError):
            v.lookup("NHD-j-0-0")  # the last query predates the deadline: asked again, not "not found"
        await v.settle()
        rep = v.lookup("NHD-j-0-0")
        assert rep is not None and rep.status == "OPEN"
    finally:
        await v.close()
