"""A working order comes back from the checkpoint with every field the OMS
uses (issue 6 follow-up: ``ts_last``, ``reason``, ``ts_triggered``,
``venue_executed_qty`` and ``status_before_update`` were dropped, so an amend
pending at the checkpoint forgot the status to go back to)."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.orders import Order
from tests.unit.test_engine import IID, build

D = Decimal


def test_every_field_of_a_working_order_survives_the_checkpoint(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    eng = build(tmp_path / "a", ["2000"] * 4, ["0"])
    asyncio.run(eng.warm_up())
    o = Order("NHD-1-0-0", "m0", IID, OrderSide.SELL, OrderType.STOP_LIMIT, D("0.5000"), D("1990.00"),
              TimeInForce.GTC, 1_000, 1, status=OrderStatus.PENDING_UPDATE, filled_qty=D("0.1000"),
              avg_px=D("1995.50"), venue_order_id="V1", ts_last=5_000, reason="amend asked", trade_ids={"T1"},
              trigger_price=D("1992.00"), ts_triggered=4_000, venue_executed_qty=D("0.1000"),
              status_before_update=OrderStatus.PARTIALLY_FILLED)
    eng.orders[o.client_order_id] = o
    eng.extra_working.add(o.client_order_id)
    snap = eng.snapshot_state()
    other = build(tmp_path / "b", ["2000"] * 4, ["0"])
    other.restore(snap)
    back = other.orders[o.client_order_id]
    assert dataclasses.asdict(back) == dataclasses.asdict(o)
    # the pending amend is refused: back to PARTIALLY_FILLED, as before the restart
    assert back.status_before_update == OrderStatus.PARTIALLY_FILLED
