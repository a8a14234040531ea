"""The paper venue: a matching model on bars with fees and slippage, and a
ledger of its own in ``venue-paper.sqlite`` that outlives the engine, as an
exchange would (DESIGN.md section 5).

Matching rules (issue 2):

* An order matches only bars that close after it was accepted.
* A buy LIMIT fills when a bar's low is strictly below its price, at the
  limit price or at the bar's open if that is lower (better); a sell LIMIT
  when the high is strictly above its price, at the price or the open if
  higher.
* A MARKET order fills at the next bar's open plus slippage (default 1 bp),
  rounded to the tick against the trader.
* Fees (default 0.1 % maker and taker) are charged in the asset received:
  the base on a buy, the quote on a sell (Binance without BNB). Amounts are
  quantized to 8 decimals with ROUND_HALF_EVEN.
* A buy reserves ``qty * limit price`` of cash; a sell reserves the base.
  A spot sell of more than is held is rejected, as is a buy without the cash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

import sqlite_utils

from core.clock import Clock
from core.data import Bar
from core.enums import LiquiditySide, OrderSide, OrderType
from core.events import Event, OrderAccepted, OrderCanceled, OrderFilled, OrderRejected
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import Order
from core.values import ZERO, dec_str, quantize_money

BASE_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """Paper venue settings: fee fractions (0.001 = 0.1 %), slippage in
    basis points for market orders, starting cash in the quote currency."""

    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    slippage_bps: Decimal = Decimal("1")
    starting_cash: Decimal = Decimal("10000")


@dataclass(slots=True)
class _VenueOrder:
    client_order_id: str
    venue_order_id: str
    model_id: str
    instrument_id: InstrumentId
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    ts_accepted: int
    reserved: Decimal  # quote for buys, base for sells
    filled: Decimal = ZERO

    def to_row(self) -> dict[str, object]:
        return {
            "client_order_id": self.client_order_id, "venue_order_id": self.venue_order_id,
            "model_id": self.model_id, "instrument_id": str(self.instrument_id), "side": self.side.value,
            "order_type": self.order_type.value, "quantity": dec_str(self.quantity),
            "price": None if self.price is None else dec_str(self.price), "ts_accepted": self.ts_accepted,
            "reserved": dec_str(self.reserved), "filled": dec_str(self.filled), "status": "OPEN",
        }


class PaperVenue:
    """A simulated exchange for one venue name (``SIM`` or ``BINANCE``) and
    one quote (cash) currency.

    Reports go to ``on_event`` synchronously (``OrderAccepted``,
    ``OrderRejected``, ``OrderFilled``, ``OrderCanceled``).

    Raises:
        ValueError: at construction if instruments do not share ``quote``.
    """

    def __init__(
        self,
        path: str | Path,
        venue: str,
        quote: str,
        instruments: dict[InstrumentId, Instrument],
        clock: Clock,
        config: PaperConfig,
        on_event: Callable[[Event], None],
    ) -> None:
        for inst in instruments.values():
            if inst.quote != quote:
                raise ValueError(f"paper venue: {inst.id} quotes in {inst.quote}, not the cash currency {quote}")
        self.venue = venue
        self.quote = quote
        self.instruments = instruments
        self.clock = clock
        self.config = config
        self.on_event = on_event
        self.db = sqlite_utils.Database(Path(path))
        self.db.conn.execute("PRAGMA journal_mode=WAL")
        self.db.conn.execute("PRAGMA synchronous=FULL")
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        self._working: dict[str, _VenueOrder] = {}
        self._seen: set[str] = set()
        self._next_order = 1
        self._next_trade = 1
        self._dirty_orders: dict[str, dict[str, object]] = {}
        self._fills: list[dict[str, object]] = []
        self._load_or_init()

    # ----------------------------------------------------------- ledger
    def _load_or_init(self) -> None:
        db = self.db
        if "state" not in db.table_names():
            db["state"].create({"key": str, "value": str}, pk="key")
            db["orders"].create(
                {"client_order_id": str, "venue_order_id": str, "model_id": str, "instrument_id": str,
                 "side": str, "order_type": str, "quantity": str, "price": str, "ts_accepted": int,
                 "reserved": str, "filled": str, "status": str},
                pk="client_order_id",
            )
            db["fills"].create(
                {"trade_id": str, "client_order_id": str, "instrument_id": str, "side": str,
                 "qty": str, "px": str, "commission": str, "commission_currency": str, "ts": int},
                pk="trade_id",
            )
            self._free = {self.quote: self.config.starting_cash}
            self._locked = {}
            self.commit()
            return
        state = {r["key"]: r["value"] for r in db["state"].rows}
        self._free = {k: Decimal(v) for k, v in json.loads(state["free"]).items()}
        self._locked = {k: Decimal(v) for k, v in json.loads(state["locked"]).items()}
        self._next_order = int(state["next_order"])
        self._next_trade = int(state["next_trade"])
        for r in db["orders"].rows:
            self._seen.add(r["client_order_id"])
            if r["status"] == "OPEN":
                vo = _VenueOrder(
                    r["client_order_id"], r["venue_order_id"], r["model_id"], InstrumentId.parse(r["instrument_id"]),
                    OrderSide(r["side"]), OrderType(r["order_type"]), Decimal(r["quantity"]),
                    None if r["price"] is None else Decimal(r["price"]), int(r["ts_accepted"]),
                    Decimal(r["reserved"]), Decimal(r["filled"]),
                )
                self._working[vo.client_order_id] = vo

    def commit(self) -> None:
        """Commit the ledger (balances, order states, fills) to the venue's store."""
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO state VALUES (?, ?)",
                [
                    ("free", json.dumps({k: dec_str(v) for k, v in self._free.items()})),
                    ("locked", json.dumps({k: dec_str(v) for k, v in self._locked.items()})),
                    ("next_order", str(self._next_order)),
                    ("next_trade", str(self._next_trade)),
                ],
            )
            if self._dirty_orders:
                self.db["orders"].upsert_all(list(self._dirty_orders.values()), pk="client_order_id")
            if self._fills:
                self.db["fills"].insert_all(self._fills, pk="trade_id")
        self._dirty_orders.clear()
        self._fills.clear()

    def balance(self, asset: str) -> Decimal:
        """Total (free + locked) of ``asset``."""
        return self._free.get(asset, ZERO) + self._locked.get(asset, ZERO)

    def free(self, asset: str) -> Decimal:
        """Free (unreserved) balance of ``asset``."""
        return self._free.get(asset, ZERO)

    def balances(self) -> dict[str, Decimal]:
        """Every asset's total balance."""
        assets = set(self._free) | set(self._locked)
        return {a: self.balance(a) for a in sorted(assets)}

    def working_orders(self) -> list[str]:
        """ClientOrderIds of open orders, in acceptance order."""
        return list(self._working)

    def _adjust(self, book: dict[str, Decimal], asset: str, delta: Decimal) -> None:
        book[asset] = book.get(asset, ZERO) + delta

    # ----------------------------------------------------------- orders
    async def submit_order(self, order: Order) -> None:
        """Accept or reject ``order``; a repeated ClientOrderId is rejected."""
        now = self.clock.timestamp_ns()
        common = dict(
            ts_event=now, ts_init=now, client_order_id=order.client_order_id,
            instrument_id=order.instrument_id, model_id=order.model_id,
        )
        inst = self.instruments.get(order.instrument_id)
        if order.client_order_id in self._seen:
            self.on_event(OrderRejected(**common, reason=f"duplicate client order id {order.client_order_id}"))
            return
        self._seen.add(order.client_order_id)
        if inst is None:
            self.on_event(OrderRejected(**common, reason=f"unknown instrument {order.instrument_id}"))
            return
        if order.side == OrderSide.BUY:
            if order.order_type == OrderType.LIMIT:
                assert order.price is not None
                need = quantize_money(order.quantity * order.price)
                if need > self.free(self.quote):
                    self.on_event(OrderRejected(**common, reason=(
                        f"insufficient {self.quote}: need {need}, free {self.free(self.quote)}")))
                    return
                self._adjust(self._free, self.quote, -need)
                self._adjust(self._locked, self.quote, need)
                reserved = need
            else:
                reserved = ZERO
        else:
            have = self.free(inst.base)
            if order.quantity > have:
                self.on_event(OrderRejected(**common, reason=(
                    f"insufficient {inst.base}: sell {order.quantity}, free {have}")))
                return
            self._adjust(self._free, inst.base, -order.quantity)
            self._adjust(self._locked, inst.base, order.quantity)
            reserved = order.quantity
        vo = _VenueOrder(
            order.client_order_id, f"P-{self._next_order}", order.model_id, order.instrument_id, order.side,
            order.order_type, order.quantity, order.price, now, reserved,
        )
        self._next_order += 1
        self._working[vo.client_order_id] = vo
        self._dirty_orders[vo.client_order_id] = vo.to_row()
        self.on_event(OrderAccepted(**common, venue_order_id=vo.venue_order_id))

    async def cancel_order(self, order: Order, reason: str = "CANCELED") -> None:
        """Cancel a working order and release its reservation; an unknown or
        finished order gets no event (the OMS keeps its own state)."""
        vo = self._working.pop(order.client_order_id, None)
        if vo is None:
            return
        self._cancel(vo, reason)

    def _cancel(self, vo: _VenueOrder, reason: str) -> None:
        inst = self.instruments[vo.instrument_id]
        asset = self.quote if vo.side == OrderSide.BUY else inst.base
        self._adjust(self._locked, asset, -vo.reserved)
        self._adjust(self._free, asset, vo.reserved)
        row = vo.to_row()
        row["status"] = "CANCELED"
        row["reserved"] = "0"
        self._dirty_orders[vo.client_order_id] = row
        now = self.clock.timestamp_ns()
        self.on_event(OrderCanceled(
            ts_event=now, ts_init=now, client_order_id=vo.client_order_id,
            instrument_id=vo.instrument_id, model_id=vo.model_id, reason=reason,
        ))

    def cancel_all(self, reason: str) -> int:
        """Cancel every working order (e.g. ``END_OF_DATA``); returns how many."""
        orders = list(self._working.values())
        self._working.clear()
        for vo in orders:
            self._cancel(vo, reason)
        return len(orders)

    # ----------------------------------------------------------- matching
    def on_bar(self, bar: Bar) -> None:
        """Match working orders of ``bar.instrument_id`` accepted before the
        bar closed, in acceptance order."""
        if not self._working:
            return
        for vo in [o for o in self._working.values() if o.instrument_id == bar.instrument_id]:
            if vo.ts_accepted >= bar.ts_event:
                continue
            px = self._match_price(vo, bar)
            if px is not None:
                self._fill(vo, px, bar)

    def _match_price(self, vo: _VenueOrder, bar: Bar) -> Decimal | None:
        inst = self.instruments[vo.instrument_id]
        if vo.order_type == OrderType.MARKET:
            slip = bar.open * self.config.slippage_bps / Decimal(10000)
            raw = bar.open + slip if vo.side == OrderSide.BUY else bar.open - slip
            return inst.round_price_against(raw, vo.side == OrderSide.BUY)
        assert vo.price is not None
        if vo.side == OrderSide.BUY and bar.low < vo.price:
            return min(vo.price, bar.open)
        if vo.side == OrderSide.SELL and bar.high > vo.price:
            return max(vo.price, bar.open)
        return None

    def _fill(self, vo: _VenueOrder, px: Decimal, bar: Bar) -> None:
        inst = self.instruments[vo.instrument_id]
        qty = vo.quantity - vo.filled
        maker = vo.order_type == OrderType.LIMIT
        rate = self.config.maker_fee if maker else self.config.taker_fee
        notional = quantize_money(qty * px)
        if vo.side == OrderSide.BUY:
            if vo.order_type == OrderType.MARKET and notional > self.free(self.quote):
                self._working.pop(vo.client_order_id, None)
                self._cancel(vo, f"insufficient {self.quote} at fill: need {notional}")
                return
            fee = (qty * rate).quantize(BASE_QUANTUM)
            fee_ccy = inst.base
            self._adjust(self._locked, self.quote, -vo.reserved)
            self._adjust(self._free, self.quote, vo.reserved - notional)
            self._adjust(self._free, inst.base, qty - fee)
        else:
            fee = quantize_money(notional * rate)
            fee_ccy = self.quote
            self._adjust(self._locked, inst.base, -vo.reserved)
            self._adjust(self._free, self.quote, notional - fee)
        vo.filled += qty
        vo.reserved = ZERO
        self._working.pop(vo.client_order_id, None)
        row = vo.to_row()
        row["status"] = "FILLED"
        self._dirty_orders[vo.client_order_id] = row
        trade_id = f"T-{self._next_trade}"
        self._next_trade += 1
        now = self.clock.timestamp_ns()
        self._fills.append({
            "trade_id": trade_id, "client_order_id": vo.client_order_id, "instrument_id": str(vo.instrument_id),
            "side": vo.side.value, "qty": dec_str(qty), "px": dec_str(px), "commission": dec_str(fee),
            "commission_currency": fee_ccy, "ts": now,
        })
        self.on_event(OrderFilled(
            ts_event=bar.ts_event, ts_init=now, client_order_id=vo.client_order_id,
            instrument_id=vo.instrument_id, model_id=vo.model_id, venue_order_id=vo.venue_order_id,
            trade_id=trade_id, side=vo.side.value, last_qty=qty, last_px=px, commission=fee,
            commission_currency=fee_ccy,
            liquidity_side=(LiquiditySide.MAKER if maker else LiquiditySide.TAKER).value,
        ))

    def close(self) -> None:
        """Commit and close the venue's store."""
        try:
            self.commit()
        finally:
            self.db.conn.close()


