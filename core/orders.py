"""Orders and their explicit state machine (NautilusTrader's statuses).

Every allowed transition is listed in ``TRANSITIONS``; anything else is
refused with :class:`InvalidTransition` (the OMS logs it with the order and
event). Applying the same venue event twice changes nothing: fills are keyed
by ``trade_id`` and a repeated status event is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.enums import CLOSED_STATUSES, WORKING_STATUSES, OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import (
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderFilled,
    OrderInitialized,
    OrderPendingCancel,
    OrderRejected,
    OrderSubmitted,
)
from core.identifiers import InstrumentId
from core.values import ZERO

S = OrderStatus
#: every legal (from, to) transition
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.INITIALIZED: frozenset({S.DENIED, S.SUBMITTED}),
    S.SUBMITTED: frozenset({S.ACCEPTED, S.REJECTED, S.CANCELED, S.PENDING_CANCEL, S.PARTIALLY_FILLED, S.FILLED}),
    S.ACCEPTED: frozenset({S.PENDING_CANCEL, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.TRIGGERED, S.PENDING_UPDATE}),
    S.PENDING_CANCEL: frozenset({S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.ACCEPTED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED}),
    S.TRIGGERED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.PENDING_CANCEL, S.EXPIRED}),
    S.PENDING_UPDATE: frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED}),
}


class InvalidTransition(Exception):
    """An event that the order's current status does not allow."""


@dataclass(slots=True)
class Order:
    """A desk order and its live state.

    Quantities in base units, prices in quote per base unit; ``price`` is
    None for MARKET. ``step`` is the engine step (bar count) that created it,
    used to re-price a limit order left unfilled for N bars.
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

    def _move(self, to: OrderStatus, event: OrderEvent) -> None:
        if to not in TRANSITIONS.get(self.status, frozenset()):
            raise InvalidTransition(
                f"order {self.client_order_id}: {event.type} not allowed in status {self.status.value}"
            )
        self.status = to
        self.ts_last = event.ts_event

    def apply(self, event: OrderEvent) -> bool:
        """Apply an order event. Returns False when the event was a repeat
        (already applied) and changed nothing.

        Raises:
            InvalidTransition: when the current status does not allow it.
        """
        if isinstance(event, OrderFilled):
            if event.trade_id in self.trade_ids:
                return False
            new_filled = self.filled_qty + event.last_qty
            if new_filled > self.quantity:
                raise InvalidTransition(
                    f"order {self.client_order_id}: fill {event.trade_id} of {event.last_qty} "
                    f"would overfill {self.filled_qty}/{self.quantity}"
                )
            self._move(S.FILLED if new_filled == self.quantity else S.PARTIALLY_FILLED, event)
            prev_notional = (self.avg_px or ZERO) * self.filled_qty
            self.avg_px = (prev_notional + event.last_px * event.last_qty) / new_filled
            self.filled_qty = new_filled
            self.venue_order_id = event.venue_order_id
            self.trade_ids.add(event.trade_id)
            return True
        target = {
            OrderDenied: S.DENIED,
            OrderSubmitted: S.SUBMITTED,
            OrderAccepted: S.ACCEPTED,
            OrderRejected: S.REJECTED,
            OrderPendingCancel: S.PENDING_CANCEL,
            OrderCanceled: S.CANCELED,
        }.get(type(event))
        if target is None:
            if isinstance(event, OrderInitialized):
                return False
            raise InvalidTransition(f"order {self.client_order_id}: unknown event {event.type}")
        if target == self.status:
            return False
        if target == S.ACCEPTED and self.status in (S.PARTIALLY_FILLED, S.FILLED):
            return False  # a late accept after a fill changes nothing
        self._move(target, event)
        if isinstance(event, OrderAccepted):
            self.venue_order_id = event.venue_order_id
        if isinstance(event, (OrderDenied,)):
            self.reason = event.reason
        elif isinstance(event, (OrderRejected, OrderCanceled)):
            self.reason = event.reason
        return True
