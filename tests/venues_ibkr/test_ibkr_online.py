"""The same adapter against a real IB paper account (marker ``online``).

Skipped unless ``IBKR_PAPER_HOST`` is set (``IBKR_PAPER_PORT``, default
4002 for IB Gateway paper; ``IBKR_PAPER_CLIENT_ID``, default 17;
``IBKR_PAPER_ACCOUNT``, default the login's only account). These are the
scenarios a paper account can show without a market maker's help:
qualification, an unknown contract refused, and an order far from the
market accepted and canceled by ``orderRef`` (or, outside US hours, refused
locally as ``MARKET_CLOSED``). Real time passes here: the gateway answers
over the network.
"""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal

import pytest

from core.clock import LiveClock
from core.enums import OrderSide, OrderType, TimeInForce
from core.events import Event, OrderAccepted, OrderCanceled, OrderRejected, OrderSubmitted
from core.identifiers import InstrumentId
from core.orders import Order
from venues.ibkr import ContractError, ContractSpec, IbkrConfig, IbkrVenue

pytestmark = pytest.mark.online

AAPL = InstrumentId("AAPL", "IBKR")


def _config(*specs: ContractSpec) -> IbkrConfig:
    return IbkrConfig(host=os.environ.get("IBKR_PAPER_HOST", "127.0.0.1"),
                      port=int(os.environ.get("IBKR_PAPER_PORT", "4002")),
                      client_id=int(os.environ.get("IBKR_PAPER_CLIENT_ID", "17")),
                      account=os.environ.get("IBKR_PAPER_ACCOUNT", ""), contracts=specs)


async def _wait(events: list[Event], cls: type, coid: str, seconds: float = 15.0) -> list[Event]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [e for e in events if isinstance(e, cls) and getattr(e, "client_order_id", "") == coid]
        if found:
            return found
        await asyncio.sleep(0.1)
    return []


async def test_online_qualifies_aapl_and_refuses_an_unknown_contract():
    venue = IbkrVenue(_config(ContractSpec("AAPL", "STK", "SMART", "USD")), LiveClock())
    await venue.start()
    try:
        inst = venue.instruments[AAPL]
        assert inst.tick_size == Decimal("0.01") and inst.step_size == Decimal("1")
        assert venue.is_connected()
    finally:
        venue.close()
    bad = IbkrVenue(_config(ContractSpec("XYZQQQ", "STK", "SMART", "USD")), LiveClock())
    with pytest.raises(ContractError, match="contract XYZQQQ STK SMART USD: unknown to IB"):
        await bad.start()


async def test_online_far_limit_accepted_then_canceled_by_order_ref():
    events: list[Event] = []
    clock = LiveClock()
    venue = IbkrVenue(_config(ContractSpec("AAPL", "STK", "SMART", "USD")), clock, events.append)
    await venue.start()
    try:
        now = clock.timestamp_ns()
        coid = f"NHD-{now // 1_000_000:x}-9-0"
        order = Order(client_order_id=coid, model_id="online", instrument_id=AAPL, side=OrderSide.BUY,
                      order_type=OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("1.00"),
                      time_in_force=TimeInForce.DAY, ts_init=now, step=0, ts_last=now)
        order.apply(OrderSubmitted(ts_event=now, ts_init=now, client_order_id=coid, instrument_id=AAPL,
                                   model_id="online"))
        await venue.submit_order(order)
        rejected = [e for e in events if isinstance(e, OrderRejected)]
        if rejected:
            assert rejected[0].reason.startswith("MARKET_CLOSED")
            return
        assert await _wait(events, OrderAccepted, coid)
        await venue.cancel_order(order, "ONLINE_TEST")
        canceled = await _wait(events, OrderCanceled, coid, seconds=20.0)
        assert canceled and canceled[0].reason == "ONLINE_TEST"
        report = venue.lookup(coid)
        assert report is not None and report.status == "CANCELED"
    finally:
        venue.close()
