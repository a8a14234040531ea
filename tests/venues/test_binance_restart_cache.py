"""A desk order resting at Binance when the desk was killed (``kill -9``) and
restarted on the same state dir, then canceled by the new process (the
router re-pricing it): through the real ccxt path against the local fake
Binance, spot and USD-M.

The break test saw, after the restart, ``OrderPendingCancel``, a spurious
``OrderAccepted``, then ``OrderCanceled`` in the journal, and 60 s later the
first periodic reconciliation reported ``UNRECONCILED: the venue has
NHD-0-99-0-... open, the store has it CANCELED`` and halted both venues. The
venue itself said CANCELED. Cause: the new adapter's start-up read of the open
orders (``GET openOrders``) put the order among the *foreign* open orders
(not tracked by this process yet), and ``open_orders()`` kept serving that
snapshot after the order's cancel was acknowledged (only the next REST poll,
which never comes while the user stream works, refreshed it); and the cancel
answer was applied to a freshly made tracking record that had never reported
the order accepted.

What is right is fixed by the venue, not by the adapter: the fake's order is
CANCELED, so the venue's open orders are empty; the order was accepted by the
previous process (the store holds it ACCEPTED), so the new process reports
only its ``OrderCanceled``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.orders import Order
from tests.conftest import SHARED_DATA
from tests.venues.binance_server import FakeBinanceUsdm
from tests.venues.conftest import ENV, KEY, SECRET, Recorder, venue_for
from venues.binance.adapter import BinanceConfig, BinanceVenue

D = Decimal
BTC = InstrumentId("BTCUSDT", "BINANCE")
PERP = InstrumentId("BTCUSDT-PERP", "BINANCE")
USDM_INFO = SHARED_DATA / "exchange-info" / "binance-usdm-exchangeInfo-2022-02-19-sample.json"
COID = "NHD-0-99-0-tjq82"


def resting(iid: InstrumentId, price: str, qty: str = "0.001") -> Order:
    return Order(client_order_id=COID, model_id="hmm_v1", instrument_id=iid, side=OrderSide.BUY,
                 order_type=OrderType.LIMIT, quantity=D(qty), price=D(price), time_in_force=TimeInForce.GTC,
                 ts_init=0, step=0)


async def _restart_and_cancel(first: BinanceVenue, second: BinanceVenue, rec2: Recorder, order: Order,
                              server_status) -> None:
    """``first`` places ``order`` (resting) and dies without a word; ``second``
    starts on the same account like ``desk.live`` after a restart
    (``start``, ``prefetch`` of the store's working orders), then the engine
    cancels it."""
    await first.start()
    await first.submit_order(order)
    assert server_status() == "NEW"  # resting: the book is far from the price
    await first.close()  # the kill: nothing more from the first process

    await second.start()
    await second.prefetch([COID])
    assert second.lookup(COID).status == "OPEN"  # the start-up reconciliation: the venue agrees with the store
    assert second.open_orders() == {COID: D("0")}  # open at the venue before the cancel: right
    rec2.events.clear()

    await second.cancel_order(order, "REPRICE")
    assert server_status() == "CANCELED"
    # the order was accepted by the previous process: only its cancel is new
    assert rec2.types() == ["OrderCanceled"], rec2.types()
    assert rec2.events[0].executed_qty == D("0")
    # the periodic reconciliation's reads: nothing open at the venue (the fake says CANCELED), the order CANCELED
    assert second.open_orders() == {}
    assert second.lookup(COID).status == "CANCELED"
    assert COID in second.order_ids()  # still known (startup reconciliation's listing), closed
    # a REST poll (user stream down, or a re-subscription) agrees and reports nothing more
    await second.poll()
    assert second.open_orders() == {}
    assert rec2.types() == ["OrderCanceled"]


async def test_spot_restart_then_cancel_leaves_no_stale_open_order(server, clock):
    server.set_book("BTCUSDT", "60741.67", "60741.68")
    rec2 = Recorder()
    first, second = venue_for(server, clock, Recorder()), venue_for(server, clock, rec2)
    try:
        # a buy at 50000.00, far under the ask 60741.68: rests
        await _restart_and_cancel(first, second, rec2, resting(BTC, "50000.00"),
                                  lambda: server.order_by_client_id(COID).status)
    finally:
        await second.close()


@pytest.fixture
async def fsrv(clock):
    if not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    srv = await FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, wallet=D("10000"),
                                book=[("BTCUSDT", "36567.00", "5", "36567.10", "5")]).start()
    yield srv
    await srv.close()


async def test_usdm_restart_then_cancel_leaves_no_stale_open_order(fsrv, clock):
    def usdm(rec: Recorder) -> BinanceVenue:
        return BinanceVenue(BinanceConfig(market="usdm", symbols=("BTCUSDT",), urls=fsrv.urls), clock, rec, env=ENV)

    rec2 = Recorder()
    first, second = usdm(Recorder()), usdm(rec2)
    try:
        # a buy at 30000.0, far under the ask 36567.10: rests
        await _restart_and_cancel(first, second, rec2, resting(PERP, "30000.0"),
                                  lambda: fsrv.order_by_client_id(COID).status)
    finally:
        await second.close()


async def test_spot_carried_order_filled_after_restart_reports_its_fill_without_a_second_accept(server, clock):
    server.set_book("BTCUSDT", "60741.67", "60741.68")
    rec2 = Recorder()
    first, second = venue_for(server, clock, Recorder()), venue_for(server, clock, rec2)
    o = resting(BTC, "50000.00")
    try:
        await first.start()
        await first.submit_order(o)
        await first.close()
        await second.start()
        await second.prefetch([COID])
        rec2.events.clear()
        server.set_book("BTCUSDT", "49990.00", "49999.99")  # the ask falls through 50000: a maker fill at 50000
        assert server.order_by_client_id(COID).status == "FILLED"
        # the router's re-price: the cancel finds it closed (-2011); the background lookup reports the fill
        with pytest.raises(Exception) as err:
            await second.cancel_order(o, "REPRICE")
        assert type(err.value).__name__ == "BinanceOrderNotFound"
        await second.settle()
        assert rec2.types() == ["OrderFilled"], rec2.types()
        # 0.001 BTC at the order's price 50000.00, maker; fee 0.1 % of the BTC received = 0.000001 BTC
        f = rec2.events[0]
        assert (f.last_qty, f.last_px, f.liquidity_side) == (D("0.001"), D("50000.00"), "MAKER")
        assert (f.commission, f.commission_currency) == (D("0.000001"), "BTC")
        assert second.open_orders() == {} and second.lookup(COID).status == "FILLED"
    finally:
        await second.close()
