"""Manual orders and signals from an operator (the control API's ``POST
/orders`` and ``POST /strategy/signal``; any other front end may call them).

Both build an order for the pseudo-model :data:`MANUAL_MODEL_ID`
(``"manual"``) and hand it to ``Engine.submit_prepared``: the same rails as
every model order, in the same order (DESIGN.md section 5: trading state,
venue halt, self-match, allow-list, instrument filters, max notional and
quantity, collar, stale data, exposure, daily loss, throttle, duplicate).
A refused order is journaled ``OrderDenied`` with its code and reason and is
returned in status ``DENIED`` (``order.reason`` says why); nothing is sent.
A passed order is journaled ``OrderSubmitted`` and queued; the caller then
awaits ``engine.send_pending()`` (commit, then send: write-before-send), so
it leaves at once rather than at the engine's next step.

Why ``submit_prepared`` and not ``Engine.submit``: ``submit`` registers the
order as the router's working order of ``(model, instrument)``, and the
router then (a) routes nothing else on that instrument while it works and
(b) cancels it with ``REPRICE`` after ``reprice_bars`` steps. A resting
manual LIMIT would freeze the models on its instrument and vanish after a
few bars. ``submit_prepared`` keeps it among the engine's other working
orders (counted by the exposure rails and the self-match check, canceled by a
halt), outside the router.

ClientOrderIds: ``NHD-<step hex>-90-<n>`` (:data:`MANUAL_MODEL_INDEX`), ``n``
one more than the largest already used at that step, in memory or in the
store's ``orders`` table, so an id is never reused, even after a restart
that resumes at the same step (a venue would refuse the duplicate).

Sizing of a signal: ``quantity = floor_step(quote / last price)`` (base
units; the last price is the instrument's last close, quote per base), sent
as the router's order type (``RouterConfig.order_type``: LIMIT at the last
close rounded to the tick, or MARKET). ``quote`` must be finite, positive
and at most the max notional per order that the rails would apply to a
manual order (:func:`max_order_notional`).

Only the standard library and ``core`` are imported here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING

from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import DESK_ORDER_PREFIX, InstrumentId, make_client_order_id
from core.orders import Order
from core.values import ZERO, floor_to_step

if TYPE_CHECKING:
    from core.engine import Engine

#: the pseudo-model that owns orders placed by hand (positions and PnL are booked to it)
MANUAL_MODEL_ID = "manual"
#: the model slot of manual orders in their ClientOrderIds (models use 0..n, NET and unknown ids 99)
MANUAL_MODEL_INDEX = 90


class ManualOrderError(ValueError):
    """A manual order or signal that cannot be built: a bad field value.

    Attributes:
        field: the request field at fault (``symbol``, ``side``,
            ``quantity``, ``price``, ``quote``, ``order_type``).
        value: the offending value (as given).
        message: what is wrong, naming the field and the value.
    """

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.message = message


class ManualOrderUnavailable(Exception):
    """A well-formed manual order that cannot be priced now: the instrument
    has no last price yet (no bar seen). The message names the instrument."""


def resolve_instrument(engine: "Engine", symbol: str | InstrumentId, field: str = "symbol") -> InstrumentId:
    """The engine's instrument for ``symbol`` (``"BTCUSDT.SIM"``).

    Raises:
        ManualOrderError: naming ``field`` when the text is not
            ``SYMBOL.VENUE`` or the desk does not trade it (the known ids
            are listed).
    """
    try:
        iid = symbol if isinstance(symbol, InstrumentId) else InstrumentId.parse(str(symbol))
    except ValueError as exc:
        raise ManualOrderError(field, symbol, f"{field}: {exc}") from None
    if iid not in engine.instruments:
        known = ", ".join(sorted(str(i) for i in engine.instruments))
        raise ManualOrderError(field, symbol, f"{field}: unknown instrument {str(symbol)!r}; known: {known}")
    return iid


def max_order_notional(engine: "Engine", instrument_id: InstrumentId,
                       model_id: str = MANUAL_MODEL_ID) -> Decimal | None:
    """The largest notional (quote) one order of ``model_id`` may have in
    ``instrument_id``: the rails' ``max_order_notional`` for that scope
    (model, instrument, venue, default; ``core.risk.RiskConfig.limit``) and
    the instrument's own max notional, whichever is smaller; None when
    neither is set."""
    limit = engine.risk.config.limit("max_order_notional", model_id=model_id, instrument_id=instrument_id)
    inst = engine.instruments[instrument_id]
    if inst.max_notional is not None:
        limit = inst.max_notional if limit is None else min(limit, inst.max_notional)
    return limit


def last_price(engine: "Engine", instrument_id: InstrumentId) -> Decimal:
    """The instrument's last close (quote per base unit).

    Raises:
        ManualOrderUnavailable: before the instrument's first bar.
    """
    px = engine.portfolio.marks.get(instrument_id)
    if px is None or px <= 0:
        raise ManualOrderUnavailable(f"{instrument_id}: no last price yet (no bar seen); try again after the first bar")
    return px


def next_client_order_id(engine: "Engine") -> str:
    """A new ClientOrderId for a manual order at the engine's current step:
    ``NHD-<step hex>-90-<n>`` with ``n`` above every id of that prefix in
    memory and in the store's ``orders`` table (so never reused)."""
    step = engine.stats.bars
    prefix = f"{DESK_ORDER_PREFIX}-{step:x}-{MANUAL_MODEL_INDEX}-"
    tag = getattr(engine, "coid_tag", "")
    pattern = re.compile(re.escape(prefix) + r"(\d+)(?:-[a-z0-9]+)?$")
    used = [m.group(1) for coid in engine.orders if (m := pattern.match(coid))]
    for (coid,) in engine.store.conn.execute(
        "SELECT client_order_id FROM orders WHERE client_order_id LIKE ?", (prefix + "%",)
    ):
        m = pattern.match(coid)
        if m:
            used.append(m.group(1))
    n = 1 + max((int(u) for u in used), default=-1)
    return make_client_order_id(step, MANUAL_MODEL_INDEX, n, tag)


def _reduces(engine: "Engine", iid: InstrumentId, side: OrderSide, qty: Decimal) -> bool:
    """Whether the manual book's order only reduces its exposure (the
    engine's rule: on spot every sell; on a margin account a sell of at most
    the long or a buy of at most the short)."""
    pos = engine.portfolio.position(MANUAL_MODEL_ID, iid).quantity
    if not engine.can_short(iid):
        return side == OrderSide.SELL
    return (side == OrderSide.SELL and 0 < qty <= pos) or (side == OrderSide.BUY and 0 < qty <= -pos)


def sellable(engine: "Engine", instrument_id: InstrumentId) -> Decimal:
    """Base units the manual book may still sell on spot: its position less
    the open quantity of its working sells of the instrument."""
    held = engine.portfolio.position(MANUAL_MODEL_ID, instrument_id).quantity
    selling = sum((o.leaves_qty for o in engine.working_orders()
                   if o.model_id == MANUAL_MODEL_ID and o.instrument_id == instrument_id
                   and o.side == OrderSide.SELL), ZERO)
    return held - selling


#: most significant decimal places a manual quantity, price or quote may have
MAX_PLACES = 18


def decimal_places(value: Decimal) -> int:
    """Significant decimal places of a finite Decimal, read from its digits
    and exponent without any context arithmetic (trailing zeros do not
    count; ``Decimal("3E-127978813")`` has 127978813, where ``normalize()``
    would underflow it to 0). Zero has none."""
    _, digits, exp = value.as_tuple()
    if not isinstance(exp, int) or not any(digits):
        return 0
    zeros = 0
    for d in reversed(digits):
        if d != 0:
            break
        zeros += 1
    return max(0, -(exp + zeros))


def _check_number(field: str, value: object) -> Decimal:
    """A finite, positive Decimal with at most :data:`MAX_PLACES` decimal
    places (``1E-999999`` would be journaled as a million digits).

    Raises:
        ManualOrderError: naming ``field`` and the value.
    """
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ManualOrderError(field, value, f"{field}: expected a finite decimal number, got {value!r}")
    if value <= ZERO:
        raise ManualOrderError(field, value, f"{field}: must be positive, got {value}")
    if decimal_places(value) > MAX_PLACES:
        raise ManualOrderError(field, value, f"{field}: at most {MAX_PLACES} decimal places, got {value:.6E}")
    return value


def submit_manual_order(engine: "Engine", *, instrument_id: InstrumentId | str, side: OrderSide | str,
                        quantity: Decimal, order_type: OrderType | str, price: Decimal | None, who: str,
                        reason: str = "") -> Order:
    """Place an order by hand for the ``manual`` book, through every rail.

    Args:
        instrument_id: ``SYMBOL.VENUE`` the desk trades.
        side: ``BUY`` or ``SELL``.
        quantity: base units (the rails deny a quantity off the step, below
            the minimums or above the maximums).
        order_type: ``MARKET`` (time in force IOC, no price) or ``LIMIT``
            (GTC, ``price`` quote per base unit, a multiple of the tick).
        price: the limit price; None for MARKET.
        who: the caller, e.g. ``"api:127.0.0.1"``; written to the order's
            ``OrderInitialized`` tags (``MANUAL by <who>: <reason>``), so the
            audit log names who placed it.
        reason: free text for the audit.

    Returns:
        The order: ``SUBMITTED`` and queued (the caller awaits
        ``engine.send_pending()``), or ``DENIED`` with ``order.reason``.

    Raises:
        ManualOrderError: naming the field: unknown instrument, bad side or
            type, a quantity or price that is not a finite positive number,
            a price on a MARKET order or none on a LIMIT, or (spot) a sell of
            more than the manual book holds (the desk's manual orders sell
            only what they bought; models' positions are theirs).
        ManualOrderUnavailable: a MARKET order before the instrument's
            first bar (the rails need a reference price).
    """
    iid = resolve_instrument(engine, instrument_id)
    try:
        side = OrderSide(side)
    except ValueError:
        raise ManualOrderError("side", side, f"side: expected BUY or SELL, got {side!r}") from None
    try:
        order_type = OrderType(order_type)
    except ValueError:
        raise ManualOrderError("order_type", order_type, f"order_type: expected MARKET or LIMIT, got {order_type!r}") \
            from None
    if order_type not in (OrderType.MARKET, OrderType.LIMIT):
        raise ManualOrderError("order_type", order_type.value,
                               f"order_type: expected MARKET or LIMIT, got {order_type.value!r}")
    quantity = _check_number("quantity", quantity)
    if order_type == OrderType.LIMIT:
        if price is None:
            raise ManualOrderError("price", None, "price: required for a LIMIT order")
        price = _check_number("price", price)
    elif price is not None:
        raise ManualOrderError("price", price, f"price: a MARKET order takes no price, got {price}")
    else:
        last_price(engine, iid)  # a market order needs a reference price for the rails
    if not engine.can_short(iid) and side == OrderSide.SELL:
        free = sellable(engine, iid)
        if quantity > free:
            raise ManualOrderError(
                "quantity", quantity,
                f"quantity: SELL {quantity} {iid} exceeds what the manual book can sell, {free} (its position less "
                f"its working sells; spot: manual orders sell only what manual orders bought)",
            )
    now = engine.clock.timestamp_ns()
    order = Order(
        client_order_id=next_client_order_id(engine), model_id=MANUAL_MODEL_ID, instrument_id=iid, side=side,
        order_type=order_type, quantity=quantity, price=price,
        time_in_force=TimeInForce.GTC if order_type == OrderType.LIMIT else TimeInForce.IOC,
        ts_init=now, step=engine.stats.bars, ts_last=now,
        reduce_only=_reduces(engine, iid, side, quantity),
    )
    tags = f"MANUAL by {who}" + (f": {reason}" if reason else "")
    return engine.submit_prepared(order, tags=tags)


def route_signal(engine: "Engine", *, instrument_id: InstrumentId | str, side: OrderSide | str,
                 quote_amount: Decimal, who: str, reason: str = "") -> Order:
    """Turn an operator's signal ("buy 100 USDT of BTCUSDT.SIM") into one
    order of the ``manual`` book, sized and priced as the router does.

    ``quantity = floor_step(quote_amount / last)`` base units, with
    ``last`` the instrument's last close (quote per base); order type the
    router's (``engine.config.router.order_type``): LIMIT at
    ``round_tick(last)`` (GTC), or MARKET (IOC). Then
    :func:`submit_manual_order` (every rail applies).

    Args:
        quote_amount: the quote currency to spend (BUY) or to raise (SELL),
            a finite positive Decimal at most :func:`max_order_notional`.

    Returns:
        The order, ``SUBMITTED`` (queued) or ``DENIED`` with its reason.

    Raises:
        ManualOrderError: field ``quote`` when it is not finite and
            positive, above the max notional, or buys less than one step;
            ``symbol``/``side`` as in :func:`submit_manual_order`.
        ManualOrderUnavailable: before the instrument's first bar.
    """
    iid = resolve_instrument(engine, instrument_id)
    try:
        side = OrderSide(side)
    except ValueError:
        raise ManualOrderError("side", side, f"side: expected BUY or SELL, got {side!r}") from None
    quote_amount = _check_number("quote", quote_amount)
    cap = max_order_notional(engine, iid)
    if cap is not None and quote_amount > cap:
        raise ManualOrderError("quote", quote_amount, f"quote: {quote_amount} is above the max notional per order {cap}")
    last = last_price(engine, iid)
    inst = engine.instruments[iid]
    qty = floor_to_step(quote_amount / last, inst.step_size)
    if qty <= 0:
        raise ManualOrderError("quote", quote_amount,
                               f"quote: {quote_amount} buys less than one step ({inst.step_size}) at {last}")
    if not engine.can_short(iid) and side == OrderSide.SELL and qty > sellable(engine, iid):
        raise ManualOrderError("quote", quote_amount,
                               f"quote: SELL {qty} {iid} ({quote_amount} quote at {last}) exceeds what the manual "
                               f"book can sell, {sellable(engine, iid)}")
    order_type = engine.config.router.order_type
    price = inst.round_price(last) if order_type == OrderType.LIMIT else None
    return submit_manual_order(engine, instrument_id=iid, side=side, quantity=qty, order_type=order_type,
                               price=price, who=who, reason=reason or f"signal {side.value} {quote_amount} quote")
