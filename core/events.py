"""Events: plain, versioned, JSON-serializable records (DESIGN.md section 9).

Every event has a stable type name (the class name), ``ts_event`` (when it
happened at its source, UTC ns) and ``ts_init`` (when this process created
it, UTC ns). ``to_dict`` turns Decimals into strings, enums into their names
and ids into their text; ``event_from_dict`` reverses it without loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

from core.identifiers import InstrumentId

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. ``ts_event``/``ts_init`` in UTC nanoseconds."""

    ts_event: int
    ts_init: int
    version: ClassVar[int] = SCHEMA_VERSION

    @property
    def type(self) -> str:
        """The stable type name (the class name)."""
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``type`` and ``v`` keys."""
        out: dict[str, Any] = {"type": self.type, "v": self.version}
        for f in dataclasses.fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out


def _encode(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, InstrumentId):
        return str(v)
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


# ---------------------------------------------------------------- orders
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent(Event):
    """Base of order events; all carry the order's ids."""

    client_order_id: str
    instrument_id: InstrumentId
    model_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderInitialized(OrderEvent):
    """An order was created by the desk (before any rail)."""

    side: str
    order_type: str
    quantity: Decimal
    price: Decimal | None
    time_in_force: str
    reduce_only: bool = False
    tags: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDenied(OrderEvent):
    """A pre-trade rail refused the order; it never left the desk."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSubmitted(OrderEvent):
    """The order was committed to the store and sent to the venue."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAccepted(OrderEvent):
    """The venue accepted the order."""

    venue_order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(OrderEvent):
    """The venue rejected the order."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPendingCancel(OrderEvent):
    """A cancel request was sent."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCanceled(OrderEvent):
    """The venue canceled the order (on request, or e.g. END_OF_DATA)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(OrderEvent):
    """A (partial) fill.

    ``last_qty`` base units at ``last_px`` quote per base; ``commission`` in
    ``commission_currency`` (the asset received: base on a buy, quote on a
    sell).
    """

    venue_order_id: str
    trade_id: str
    side: str
    last_qty: Decimal
    last_px: Decimal
    commission: Decimal
    commission_currency: str
    liquidity_side: str


# ---------------------------------------------------------------- others
@dataclass(frozen=True, slots=True, kw_only=True)
class SignalGenerated(Event):
    """A model's target changed: ``target`` is a fraction of its budget in
    [0, 1]; ``regime`` the most likely canonical state, ``probability`` its
    posterior (string of the float's repr)."""

    model_id: str
    instrument_id: InstrumentId
    target: Decimal
    regime: int
    probability: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TradingStateChanged(Event):
    """The desk's trading state changed, on whose command and why."""

    state: str
    previous: str
    who: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelStateChanged(Event):
    """A model was paused or resumed (``state`` is ``PAUSED``/``ACTIVE``)."""

    model_id: str
    state: str
    who: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFitted(Event):
    """A model version got a fit installed (diagnostics as strings)."""

    model_id: str
    instrument_id: InstrumentId
    n_iter: int
    log_likelihood: str
    converged: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised(Event):
    """Something the operator should see. ``level`` INFO/WARNING/ERROR."""

    level: str
    code: str
    message: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        OrderInitialized,
        OrderDenied,
        OrderSubmitted,
        OrderAccepted,
        OrderRejected,
        OrderPendingCancel,
        OrderCanceled,
        OrderFilled,
        SignalGenerated,
        TradingStateChanged,
        ModelStateChanged,
        ModelFitted,
        AlertRaised,
    )
}

_DECIMAL_FIELDS = {"quantity", "price", "last_qty", "last_px", "commission", "target"}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``Event.to_dict`` output.

    Raises:
        ValueError: for an unknown ``type`` or a newer ``v`` than this code knows.
    """
    data = dict(data)
    name = data.pop("type", None)
    version = data.pop("v", SCHEMA_VERSION)
    cls = EVENT_TYPES.get(str(name))
    if cls is None:
        raise ValueError(f"event type: unknown {name!r}")
    if int(version) > SCHEMA_VERSION:
        raise ValueError(f"event {name}: version {version} is newer than {SCHEMA_VERSION}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        if f.name == "instrument_id" and v is not None:
            v = InstrumentId.parse(v)
        elif f.name in _DECIMAL_FIELDS and v is not None:
            v = Decimal(v)
        kwargs[f.name] = v
    return cls(**kwargs)


ORDER_EVENT_TYPES = frozenset(n for n, c in EVENT_TYPES.items() if issubclass(c, OrderEvent))
