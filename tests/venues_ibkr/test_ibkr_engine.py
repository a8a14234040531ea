"""The IBKR adapter under the desk's engine (``core.engine.Engine`` with
``venue_factory=venue.attach``): the engine's view after IB's reports, its
venue session across the gateway's daily restart, and its reconciliation
through ``lookup``. ib_async runs for real against the fake gateway."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from ib_async.order import Order as IbOrder
from ib_async.order import OrderState

from core.audit import AuditLog
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderSide, OrderStatus, OrderType
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.helpers.scripted import InlineExecutor
from tests.venues_ibkr.conftest import AAPL_ID, CLIENT_ID, NANOS, T0, commission, execution
from venues.feeds import ReplayFeed

D = Decimal


def _engine(h, tmp_path) -> Engine:
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("100000.00"))), clock=h.clock,
        store=Store(tmp_path / "desk.sqlite"), audit=AuditLog(tmp_path / "audit.jsonl"), feed=ReplayFeed([]),
        instruments=h.venue.instruments, models={}, specs=[ModelSpec("manual", D("1"))],
        risk=RiskEngine(RiskConfig()), executor=InlineExecutor(), venue_factory=h.venue.attach,
    )
    for inst in h.venue.instruments.values():  # AAPL/USD: the symbol alone does not say USD is the quote
        eng.portfolio.register_instrument(inst)
    return eng


async def test_error_201_through_the_engine_releases_the_reservation(harness, tmp_path):
    h = harness
    eng = _engine(h, tmp_path)
    assert eng.margin  # an IB account: shorts allowed, commissions in the quote
    assert await eng.recover() == []  # nothing to reconcile: no orders, cash 100000.00 on both sides
    order = eng.submit("manual", AAPL_ID, OrderSide.BUY, D("100"), D("187.25"), D("187.25"), OrderType.LIMIT)
    await eng.send_pending()
    assert order.status == OrderStatus.SUBMITTED
    assert eng.exposure(venue="IBKR") == D("18725.00")  # 100 x 187.25 reserved by the working order
    oid = h.gw.placed[0][0]
    h.gw.error(oid, 201, "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED "
                         "POSITION YOUR EQUITY WITH LOAN VALUE [100000.00 USD] MUST EXCEED THE INITIAL MARGIN")
    h.gw.status(oid, "Inactive", 0.0, 100.0, 0)
    assert order.status == OrderStatus.REJECTED and order.ts_last == T0  # the same instant
    assert order.reason.startswith("IB error 201: Order rejected - reason:YOUR ORDER IS NOT ACCEPTED")
    assert eng.exposure(venue="IBKR") == D("0") and not eng.working  # the reservation is released
    for _ in range(3):  # the session's ticks over the next minute: nothing is sent again
        h.clock.advance(30 * NANOS)
        await eng.session.tick()
    assert len(h.gw.placed) == 1
    assert eng.session.unknown == {} and not eng.unreconciled
    eng.store.close()
    eng.audit.close()


async def test_daily_restart_under_the_engine(harness, tmp_path):
    h = harness
    eng = _engine(h, tmp_path)
    await eng.recover()
    order = eng.submit("manual", AAPL_ID, OrderSide.BUY, D("100"), D("187.25"), D("187.25"), OrderType.LIMIT)
    await eng.send_pending()
    oid, contract, _ = h.gw.placed[0]
    h.gw.status(oid, "Submitted", 0.0, 100.0, 9001)
    assert order.status == OrderStatus.ACCEPTED and order.venue_order_id == "9001"
    h.gw.up = False
    h.gw.drop()
    h.clock.advance(NANOS)
    await eng.session.tick()
    assert eng.session.down and "IBKR DISCONNECTED since" in eng.session.status()
    # back with IB's synchronisation: 60 shares traded meanwhile; the account shows them
    h.gw.up = True
    ib_order = IbOrder(orderId=oid, clientId=CLIENT_ID, permId=9001, action="BUY", totalQuantity=100.0,
                       orderType="LMT", lmtPrice=187.25, tif="GTC", orderRef=order.client_order_id)
    h.gw.open_orders = [(oid, contract, ib_order, OrderState(status="Submitted"),
                         (oid, "Submitted", 60.0, 40.0, 187.25, 9001, 0, 187.25, CLIENT_ID, "", 0.0))]
    h.gw.executions = [(contract, execution("e-away", oid, 9001, "BOT", 60.0, 187.25, order.client_order_id,
                                            60.0, 187.25), commission("e-away", 1.0))]
    h.gw.positions = [(contract, 60.0, 187.27)]
    h.gw.cash = {"USD": "88764.00"}  # 100000 - 60 x 187.25 - 1.00 commission
    await eng.session.tick()  # the venue's pump starts the reconnect attempt (1 s after the drop)
    for _ in range(300):
        if h.venue.reconnecting is not None and h.venue.reconnecting.done():
            break
        await asyncio.sleep(0)
    await eng.session.tick()  # connected again: the session reconciles ("reconnect")
    assert not eng.session.down and eng.session.reconnects == 1
    assert order.status == OrderStatus.PARTIALLY_FILLED and order.filled_qty == D("60")
    assert order.trade_ids == {"e-away"}
    assert eng.portfolio.quantity(AAPL_ID) == D("60")
    assert h.venue.balance("AAPL") == D("60") and h.venue.balance("USD") == D("88764.00")
    assert eng.unreconciled == [], eng.unreconciled
    eng.flush()
    states = [json.loads(p)["state"] for (p,) in eng.store.conn.execute(
        "SELECT payload FROM journal WHERE type = 'VenueStateChanged' ORDER BY seq")]
    assert states == ["DISCONNECTED", "CONNECTED"]  # journaled: the venue was reported down in between
    eng.store.close()
    eng.audit.close()
