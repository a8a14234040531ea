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
    # order-management issue (4): optional, defaulted, so older journals still load
    trigger_price: Decimal | None = None
    trailing_offset: Decimal | None = None
    trailing_offset_type: str = "PRICE"
    expire_time_ns: int | None = None
    post_only: bool = False
    contingency: str = "NO_CONTINGENCY"
    linked_order_ids: str = ""  # comma-separated ClientOrderIds (OCO siblings / OTO children)
    parent_order_id: str = ""


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
    """The venue canceled the order (on request, or e.g. END_OF_DATA).

    ``executed_qty`` (base units) is the quantity the venue says had been
    executed when the cancel took effect, as Binance's cancel response
    reports ``executedQty``; ``None`` when the venue does not say. Fills up
    to it may still arrive after this acknowledgement.
    """

    reason: str
    executed_qty: Decimal | None = None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderTriggered(OrderEvent):
    """A stop's trigger was reached (STOP_MARKET, STOP_LIMIT,
    TRAILING_STOP_MARKET): ``trigger_price`` (quote per base) is the level
    that fired. Fills, if any, follow as ``OrderFilled`` (NautilusTrader's
    ``OrderTriggered``)."""

    venue_order_id: str
    trigger_price: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPendingUpdate(OrderEvent):
    """A modify (cancel/replace) was requested: the new total ``quantity``
    (base units), ``price`` and ``trigger_price`` (quote per base); ``None``
    means unchanged. ``OrderUpdated`` or ``OrderModifyRejected`` follows."""

    quantity: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderUpdated(OrderEvent):
    """The venue amended the order in place: ``quantity`` is the new total
    (filled included), ``price``/``trigger_price`` the values now in force.
    Also sent unsolicited when a trailing stop's trigger ratchets."""

    venue_order_id: str
    quantity: Decimal
    price: Decimal | None = None
    trigger_price: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderModifyRejected(OrderEvent):
    """The venue (or the desk's emulated replace) refused a modify; the
    order goes back to the status it had before ``PENDING_UPDATE``."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    """The order's time in force ran out: GTD/DAY expiry, or the unfilled
    remainder of an IOC/FOK order (Binance reports these as ``EXPIRED``).
    ``executed_qty`` as in :class:`OrderCanceled`."""

    reason: str
    executed_qty: Decimal | None = None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class FillAllocated(Event):
    """A part of a shared (netted) order's fill attributed to one model by
    the largest-remainder rule: ``last_qty`` base units and ``commission``
    in ``commission_currency`` of fill ``trade_id``."""

    client_order_id: str
    instrument_id: InstrumentId
    model_id: str
    trade_id: str
    last_qty: Decimal
    commission: Decimal
    commission_currency: str


# ---------------------------------------------------------------- lifecycle (issue 7), venues (6), reports (8)
@dataclass(frozen=True, slots=True, kw_only=True)
class ModelVersionRegistered(Event):
    """A model version entered the registry (a seed version at start, or a
    refit). ``model_version`` its number in the family (not the event's
    schema version ``v``), ``stage`` its first stage, ``parent`` the version it was refit
    from ("" for a seed), ``train_start_ns``/``train_end_ns`` the training
    window (bar times, UTC ns; 0 when not fitted yet), ``diagnostics`` fit
    figures (iterations, log-likelihood, converged; strings)."""

    model_id: str
    family: str
    model_version: int
    stage: str
    parent: str
    who: str
    reason: str
    train_start_ns: int = 0
    train_end_ns: int = 0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelStageChanged(Event):
    """A version moved between stages (``canary``/``live``/``paused``/
    ``retired``) or its stage weight changed (fraction 0..1), by whom and why;
    ``manual`` when an operator pinned the weight."""

    model_id: str
    family: str
    stage: str
    previous: str
    weight: Decimal
    who: str
    reason: str
    manual: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryAnalysed(Event):
    """One analysis interval of a canary against the live version of its
    family: ``action`` (warming/hold/step/promote/fail/rollback/
    inconclusive), the step ``weight`` after it, and the figures (PSR,
    Sharpe of the excess return, PnL, drawdown, trades; strings)."""

    model_id: str
    family: str
    live_model_id: str
    interval: int
    action: str
    weight: Decimal
    reason: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryPromoted(Event):
    """A canary became the live version of its family (``previous_live``
    retired)."""

    model_id: str
    family: str
    previous_live: str
    who: str
    reason: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryRolledBack(Event):
    """A canary was rolled back (retired; its position unwound)."""

    model_id: str
    family: str
    who: str
    reason: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationChanged(Event):
    """The allocator set the families' budgets: ``weights`` (fraction of
    capital, decimal strings), ``budgets`` (quote, decimal strings),
    ``sharpe`` (the trailing Sharpe used, strings), ``idle`` (fraction left
    unallocated), ``capital`` (quote)."""

    weights: dict[str, str]
    budgets: dict[str, str]
    sharpe: dict[str, str]
    idle: Decimal
    capital: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfDayMarked(Event):
    """The book at the end of local day ``day`` (YYYY-MM-DD in ``tz``):
    one row per (model, instrument) with a position or a fill that day:
    ``{"model_id", "instrument_id", "quantity" (base), "mark" (quote per
    base), "unrealized" (quote), "realized" (quote, cumulative, net of
    fees), "fees" (quote, cumulative)}``, all decimal strings."""

    day: str
    tz: str
    rows: list[dict[str, str]] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyTriggered(Event):
    """A governance-policy rule fired: the figure, its value and threshold
    (strings), and the action taken."""

    rule: str
    figure: str
    value: str
    threshold: str
    action: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueStateChanged(Event):
    """A venue's connection state changed (``CONNECTED``, ``DEGRADED``,
    ``DISCONNECTED``, ``THROTTLED``, ``BANNED``), with the reason and until
    when (UTC ns, 0 = open-ended)."""

    venue: str
    state: str
    previous: str
    reason: str
    until_ns: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FundingPaid(Event):
    """A funding payment of a perpetual position, as the venue reports it
    (Binance ``GET /fapi/v1/income`` ``incomeType=FUNDING_FEE``).

    ``amount`` is in ``asset`` (the quote/margin asset, USDT), signed from
    the account's side: negative = paid, positive = received. ``tran_id``
    is the venue's transaction id (unique per payment: the portfolio books
    each id once). ``ts_event`` is the funding time at the venue (UTC ns).
    """

    instrument_id: InstrumentId
    amount: Decimal
    asset: str
    tran_id: str


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
        FillAllocated,
    )
}

_DECIMAL_FIELDS = {"quantity", "price", "last_qty", "last_px", "commission", "target"}

# order-management issue (4): the new order events and Decimal fields
EVENT_TYPES.update({
    cls.__name__: cls
    for cls in (OrderTriggered, OrderPendingUpdate, OrderUpdated, OrderModifyRejected, OrderExpired)
})
_DECIMAL_FIELDS.update({"trigger_price", "trailing_offset", "executed_qty"})

# lifecycle (issue 7), venues (issue 6), reports (issue 8)
EVENT_TYPES.update({
    cls.__name__: cls
    for cls in (ModelVersionRegistered, ModelStageChanged, CanaryAnalysed, CanaryPromoted, CanaryRolledBack,
                AllocationChanged, EndOfDayMarked, PolicyTriggered, VenueStateChanged)
})
_DECIMAL_FIELDS.update({"weight", "idle", "capital"})

# USD-M futures (issue 6): funding payments
EVENT_TYPES[FundingPaid.__name__] = FundingPaid
_DECIMAL_FIELDS.add("amount")


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``Event.to_dict`` output.

    Raises:
        ValueError: for an unknown ``type`` or a newer ``v`` than this code knows.
    """
    data = dict(data)
    name = data.pop("type", None)
    version = data.pop("v", SCHEMA_VERSION)
    if name == "ModelVersionRegistered" and "version" in data:
        # rows written before the field was renamed: their "v" was the model's version number
        data["model_version"], version = data.pop("version"), SCHEMA_VERSION
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
