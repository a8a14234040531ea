"""Orders and their explicit state machine (NautilusTrader's statuses).

Every allowed transition is listed in ``TRANSITIONS``; anything else is
refused with :class:`InvalidTransition` and logged (``desk.orders``) with the
order and the event; the OMS turns it into an alert. Applying the same venue
event twice changes nothing: fills are keyed by ``trade_id``, a repeated
status event is ignored, and an ``OrderUpdated`` whose values are already in
force is a repeat.

Sources of the rules:

* statuses and most transitions: NautilusTrader's order state machine
  (``nautilus_trader/model/orders/base.pyx``), without its local-only
  ``EMULATED``/``RELEASED`` statuses (DESIGN.md section 4 lists ours);
* ``PENDING_UPDATE`` resolves to the status the order had before it
  (``OrderUpdated`` or ``OrderModifyRejected``), as NautilusTrader does;
* a fill that arrives after the cancel (or expiry) acknowledgement is
  honored up to the ``executed_qty`` that acknowledgement reported (Binance
  cancel responses carry ``executedQty``; the fill stream may lag the REST
  answer). The order stays ``CANCELED``/``EXPIRED``; this is the listed
  self-transition ``CANCELED -> CANCELED`` / ``EXPIRED -> EXPIRED``. A fill
  beyond it, or beyond the order quantity, is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from core.enums import CLOSED_STATUSES, WORKING_STATUSES, OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import (
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderRejected,
    OrderSubmitted,
    OrderTriggered,
    OrderUpdated,
)
from core.identifiers import InstrumentId
from core.values import ZERO

log = logging.getLogger("desk.orders")


class TrailingOffsetType(str, Enum):
    """How a trailing stop's offset is expressed (NautilusTrader's
    ``TrailingOffsetType``): ``PRICE`` in quote per base unit, or
    ``BASIS_POINTS`` of the best price seen (Binance's ``trailingDelta`` is
    in basis points)."""

    PRICE = "PRICE"
    BASIS_POINTS = "BASIS_POINTS"


class ContingencyType(str, Enum):
    """Contingency of an order within a list (NautilusTrader's
    ``ContingencyType``): ``OCO`` one-cancels-other (a partial fill reduces
    the siblings, issue 4), ``OTO`` one-triggers-other (children are sent
    once the parent fills)."""

    NO_CONTINGENCY = "NO_CONTINGENCY"
    OCO = "OCO"
    OTO = "OTO"


#: order types that wait for a trigger price before they can trade
STOP_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP_MARKET})
#: order types that carry a limit price
LIMIT_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})

S = OrderStatus
#: every legal (from, to) transition; a status missing as a key is terminal
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.INITIALIZED: frozenset({S.DENIED, S.SUBMITTED}),
    S.SUBMITTED: frozenset({
        S.ACCEPTED, S.REJECTED, S.CANCELED, S.PENDING_CANCEL, S.PENDING_UPDATE, S.PARTIALLY_FILLED, S.FILLED,
        S.EXPIRED,  # Binance answers an unfilled IOC/FOK with EXPIRED in the new-order response
    }),
    S.ACCEPTED: frozenset({
        S.ACCEPTED,  # an unsolicited OrderUpdated (a trailing stop's trigger moved)
        S.PENDING_CANCEL, S.PENDING_UPDATE, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.TRIGGERED,
    }),
    S.TRIGGERED: frozenset({
        S.TRIGGERED,  # an OrderUpdated of a triggered STOP_LIMIT
        S.PENDING_CANCEL, S.PENDING_UPDATE, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED,
    }),
    S.PENDING_UPDATE: frozenset({
        S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED,  # OrderUpdated / OrderModifyRejected: back where it was
        S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL,
    }),
    S.PENDING_CANCEL: frozenset({
        S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED,
        S.ACCEPTED, S.TRIGGERED,  # a failed cancel (OrderAccepted again) rolls back
    }),
    S.PARTIALLY_FILLED: frozenset({
        S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.PENDING_UPDATE, S.CANCELED, S.EXPIRED,
    }),
    S.CANCELED: frozenset({S.CANCELED}),  # a late fill within the acknowledged executed quantity
    S.EXPIRED: frozenset({S.EXPIRED}),  # idem
}

_STATUS_EVENTS: dict[type, OrderStatus] = {
    OrderDenied: S.DENIED,
    OrderSubmitted: S.SUBMITTED,
    OrderAccepted: S.ACCEPTED,
    OrderRejected: S.REJECTED,
    OrderPendingCancel: S.PENDING_CANCEL,
    OrderCanceled: S.CANCELED,
    OrderExpired: S.EXPIRED,
    OrderPendingUpdate: S.PENDING_UPDATE,
}


class InvalidTransition(Exception):
    """An event that the order's current status does not allow (or a fill
    that would overfill the order)."""


@dataclass(slots=True)
class Order:
    """A desk order and its live state.

    Quantities in base units, prices in quote per base unit; ``price`` is
    None for MARKET, STOP_MARKET and TRAILING_STOP_MARKET. ``step`` is the
    engine step (bar count) that created it, used to re-price a limit order
    left unfilled for N bars.

    Order-management fields (issue 4; all optional):

    * ``trigger_price``: a stop's trigger (quote per base); for a trailing
      stop the initial trigger (``None``: computed from the last price).
    * ``trailing_offset`` and ``trailing_offset_type``: the trailing
      distance, in quote per base (``PRICE``) or basis points.
    * ``expire_time_ns``: a GTD order's expiry, UTC nanoseconds.
    * ``post_only``: a LIMIT that must not take liquidity (Binance
      ``LIMIT_MAKER``: rejected if it would match at once).
    * ``reduce_only``: may only reduce the position.
    * ``contingency``, ``linked_order_ids`` (OCO siblings or OTO children)
      and ``parent_order_id`` (the OTO parent of a child).
    * ``ts_triggered``: when the trigger fired (UTC ns), ``None`` before.
    * ``venue_executed_qty``: the executed quantity the venue reported in
      the cancel/expiry acknowledgement (late fills are honored up to it).
    * ``status_before_update``: the status to go back to when a pending
      modify resolves.
    """

    client_order_id: str
    model_id: str
    instrument_id: InstrumentId
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    time_in_force: TimeInForce
    ts_init: int
    step: int
    reduce_only: bool = False
    status: OrderStatus = OrderStatus.INITIALIZED
    filled_qty: Decimal = ZERO
    avg_px: Decimal | None = None
    venue_order_id: str | None = None
    ts_last: int = 0
    reason: str = ""
    trade_ids: set[str] = field(default_factory=set)
    allocation: dict[str, Decimal] | None = None  # a netted order: each model's remaining part
    trigger_price: Decimal | None = None
    trailing_offset: Decimal | None = None
    trailing_offset_type: TrailingOffsetType = TrailingOffsetType.PRICE
    expire_time_ns: int | None = None
    post_only: bool = False
    contingency: ContingencyType = ContingencyType.NO_CONTINGENCY
    linked_order_ids: tuple[str, ...] = ()
    parent_order_id: str | None = None
    ts_triggered: int | None = None
    venue_executed_qty: Decimal | None = None
    status_before_update: OrderStatus | None = None

    @property
    def is_working(self) -> bool:
        """True while the order may still trade at the venue."""
        return self.status in WORKING_STATUSES

    @property
    def is_closed(self) -> bool:
        """True in a terminal status."""
        return self.status in CLOSED_STATUSES

    @property
    def leaves_qty(self) -> Decimal:
        """Quantity still open (base units)."""
        return self.quantity - self.filled_qty

    @property
    def is_stop(self) -> bool:
        """True for STOP_MARKET, STOP_LIMIT and TRAILING_STOP_MARKET."""
        return self.order_type in STOP_TYPES

    def spec_error(self) -> str | None:
        """Why this order's fields do not make a valid order, or ``None``.

        Rules (Binance spot order types: LIMIT needs a price, STOP_LOSS a
        stopPrice, STOP_LOSS_LIMIT both, trailing stops a trailingDelta;
        LIMIT_MAKER takes no timeInForce; NautilusTrader's order
        constructors check the same): quantity positive; a price exactly for
        LIMIT/STOP_LIMIT; a trigger for STOP_MARKET/STOP_LIMIT; a positive
        trailing offset for TRAILING_STOP_MARKET (basis points below
        10000); an ``expire_time_ns`` exactly for GTD; ``post_only`` only on
        a GTC/GTD/DAY LIMIT; IOC/FOK only for MARKET and LIMIT (a stop's
        time in force is GTC, GTD or DAY).
        """
        t = self.order_type
        if self.quantity <= 0:
            return f"quantity must be positive, got {self.quantity}"
        if t in LIMIT_TYPES:
            if self.price is None or self.price <= 0:
                return f"{t.value} needs a positive price"
        elif self.price is not None:
            return f"{t.value} takes no limit price"
        if t in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT):
            if self.trigger_price is None or self.trigger_price <= 0:
                return f"{t.value} needs a positive trigger_price"
        elif t == OrderType.TRAILING_STOP_MARKET:
            if self.trailing_offset is None or self.trailing_offset <= 0:
                return "TRAILING_STOP_MARKET needs a positive trailing_offset"
            if self.trailing_offset_type == TrailingOffsetType.BASIS_POINTS and self.trailing_offset >= 10000:
                return f"trailing offset {self.trailing_offset} bp must be below 10000"
            if self.trigger_price is not None and self.trigger_price <= 0:
                return "trigger_price must be positive"
        elif self.trigger_price is not None:
            return f"{t.value} takes no trigger_price"
        if (self.time_in_force == TimeInForce.GTD) != (self.expire_time_ns is not None):
            return "expire_time_ns is required with GTD and only with GTD"
        if self.post_only and (t != OrderType.LIMIT or self.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)):
            return "post_only needs a GTC, GTD or DAY LIMIT order"
        if self.time_in_force in (TimeInForce.IOC, TimeInForce.FOK) and t not in (OrderType.MARKET, OrderType.LIMIT):
            return f"{self.time_in_force.value} applies to MARKET and LIMIT orders only"
        return None

    # ----------------------------------------------------------- transitions
    def _move(self, to: OrderStatus, event: OrderEvent) -> None:
        if to not in TRANSITIONS.get(self.status, frozenset()):
            self._refuse(f"{event.type} not allowed in status {self.status.value}", event)
        if self.status == S.PENDING_UPDATE and to != S.PENDING_UPDATE:
            self.status_before_update = None
        self.status = to
        self.ts_last = event.ts_event

    def _refuse(self, why: str, event: OrderEvent) -> None:
        msg = f"order {self.client_order_id}: {why}"
        log.warning("refused %s for %s (%s): %s", event.type, self.client_order_id, self.status.value, why)
        raise InvalidTransition(msg)

    def _resting_status(self) -> OrderStatus:
        """The status of a live order with no request pending: partially
        filled, triggered, or accepted."""
        if self.filled_qty > 0:
            return S.PARTIALLY_FILLED
        if self.ts_triggered is not None:
            return S.TRIGGERED
        return S.ACCEPTED

    def apply(self, event: OrderEvent) -> bool:
        """Apply an order event. Returns False when the event was a repeat
        (already applied) or stale (an update or modify rejection for an
        order already closed) and changed nothing.

        Raises:
            InvalidTransition: when the current status does not allow it, a
                fill would overfill, or an update would cut the quantity
                below what has been filled.
        """
        if isinstance(event, OrderFilled):
            return self._apply_fill(event)
        if isinstance(event, OrderInitialized):
            return False
        if isinstance(event, OrderUpdated):
            return self._apply_update(event)
        if isinstance(event, OrderModifyRejected):
            if self.status == S.PENDING_UPDATE:
                self._move(self._resting_status(), event)
                self.reason = event.reason
                return True
            if self.status == S.INITIALIZED:
                self._refuse("OrderModifyRejected for an order never sent", event)
            return False  # no modify pending (a repeat, or the order closed meanwhile)
        if isinstance(event, OrderTriggered):
            if self.order_type not in STOP_TYPES:
                self._refuse(f"OrderTriggered for a {self.order_type.value} order", event)
            if self.ts_triggered is not None:
                return False
            self._move(S.TRIGGERED, event)
            self.ts_triggered = event.ts_event
            self.trigger_price = event.trigger_price
            self.venue_order_id = event.venue_order_id or self.venue_order_id
            return True
        target = _STATUS_EVENTS.get(type(event))
        if target is None:
            self._refuse(f"unknown event {event.type}", event)
        assert target is not None
        if target == self.status:
            return False
        if target == S.ACCEPTED:
            if self.status in (S.PARTIALLY_FILLED, S.FILLED, S.TRIGGERED):
                return False  # a late accept after a fill or trigger changes nothing
            if self.status == S.PENDING_CANCEL:
                target = self._resting_status()  # the cancel failed: back where it was
            elif self.status == S.PENDING_UPDATE:
                # the accept of an order modified before it was acknowledged: the modify stays pending
                if self.venue_order_id == event.venue_order_id:
                    return False
                self.venue_order_id = event.venue_order_id
                return True
        if target == S.PENDING_UPDATE:
            before = self.status
            self._move(target, event)
            self.status_before_update = before
            return True
        self._move(target, event)
        if isinstance(event, OrderAccepted):
            self.venue_order_id = event.venue_order_id
        elif isinstance(event, (OrderDenied, OrderRejected)):
            self.reason = event.reason
        elif isinstance(event, (OrderCanceled, OrderExpired)):
            self.reason = event.reason
            if event.executed_qty is not None:
                if event.executed_qty > self.quantity:
                    raise InvalidTransition(
                        f"order {self.client_order_id}: {event.type} reports {event.executed_qty} executed "
                        f"of {self.quantity}"
                    )
                self.venue_executed_qty = max(event.executed_qty, self.filled_qty)
        return True

    def _apply_fill(self, event: OrderFilled) -> bool:
        if event.trade_id in self.trade_ids:
            return False
        if event.last_qty <= 0:
            self._refuse(f"fill {event.trade_id} of non-positive quantity {event.last_qty}", event)
        new_filled = self.filled_qty + event.last_qty
        if new_filled > self.quantity:
            self._refuse(
                f"fill {event.trade_id} of {event.last_qty} would overfill {self.filled_qty}/{self.quantity}", event
            )
        if self.status in (S.CANCELED, S.EXPIRED):
            allowed = self.venue_executed_qty
            if allowed is None or new_filled > allowed:
                self._refuse(
                    f"fill {event.trade_id} of {event.last_qty} after {self.status.value} exceeds the "
                    f"acknowledged executed quantity {allowed}", event,
                )
            to = self.status
        else:
            to = S.FILLED if new_filled == self.quantity else S.PARTIALLY_FILLED
        self._move(to, event)
        prev_notional = (self.avg_px or ZERO) * self.filled_qty
        self.avg_px = (prev_notional + event.last_px * event.last_qty) / new_filled
        self.filled_qty = new_filled
        self.venue_order_id = event.venue_order_id
        self.trade_ids.add(event.trade_id)
        return True

    def _apply_update(self, event: OrderUpdated) -> bool:
        if self.status in (S.FILLED, S.CANCELED, S.EXPIRED):
            return False  # stale: the order closed before the update was reported
        if event.quantity < self.filled_qty or event.quantity <= 0:
            self._refuse(f"update to quantity {event.quantity} below filled {self.filled_qty}", event)
        if self.status == S.PENDING_UPDATE:
            to = self._resting_status()
        elif self.status in (S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED):
            to = self.status
        else:
            self._refuse(f"OrderUpdated not allowed in status {self.status.value}", event)
            return False  # unreachable
        if event.quantity == self.filled_qty:
            to = S.FILLED  # cut to what has already filled: nothing left to trade
        same = (
            to == self.status and event.quantity == self.quantity and event.price == self.price
            and event.trigger_price == self.trigger_price
            and (not event.venue_order_id or event.venue_order_id == self.venue_order_id)
        )
        if same:
            return False
        self._move(to, event)
        self.quantity = event.quantity
        self.price = event.price
        self.trigger_price = event.trigger_price
        if event.venue_order_id:
            self.venue_order_id = event.venue_order_id
        return True


def initialized_event(order: Order, ts_ns: int, tags: str = "") -> OrderInitialized:
    """The ``OrderInitialized`` event describing ``order`` (journal record of
    an order created outside ``Engine.submit``, e.g. by the emulator).
    ``ts_ns`` (UTC nanoseconds) is when it is journaled (``ts_event``);
    ``ts_init`` is the order's own ``ts_init``, its creation, which is
    earlier for an OTO child held until its parent fills, so the ``orders``
    table can be rebuilt from the journal (``core.rebuild``)."""
    return OrderInitialized(
        ts_event=ts_ns, ts_init=order.ts_init, client_order_id=order.client_order_id, instrument_id=order.instrument_id,
        model_id=order.model_id, side=order.side.value, order_type=order.order_type.value,
        quantity=order.quantity, price=order.price, time_in_force=order.time_in_force.value,
        reduce_only=order.reduce_only, tags=tags, trigger_price=order.trigger_price,
        trailing_offset=order.trailing_offset, trailing_offset_type=order.trailing_offset_type.value,
        expire_time_ns=order.expire_time_ns, post_only=order.post_only, contingency=order.contingency.value,
        linked_order_ids=",".join(order.linked_order_ids), parent_order_id=order.parent_order_id or "",
    )
