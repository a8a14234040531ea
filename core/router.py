"""The strategy router: from a model's target to an order intent.

DESIGN.md section 3: a model's budget is one product, its family budget ×
its stage weight; until the allocator exists the family budget is the desk's
trading capital, so ``budget = weight × capital``. A model trading several
instruments splits its budget equally among them. The router turns the
difference between ``target × budget`` and the model's current position
(valued at the last close) into an order, and sends nothing while that
difference is below a threshold (default the larger of the instrument's min
notional and 1 % of the budget), so small wiggles of the posterior do not
become orders. A model's own position never goes below zero (spot is
long-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from core.enums import OrderSide, OrderType
from core.instruments import Instrument
from core.sizing import size_buy, size_sell
from core.values import ZERO, floor_to_step


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Router settings.

    Attributes:
        capital: the desk's trading capital in the quote currency.
        order_type: LIMIT at the last close (default) or MARKET.
        reprice_bars: a limit order not filled within this many bars of its
            instrument is canceled and re-priced.
        threshold_fraction: minimum rebalance as a fraction of the budget
            (0.01 = 1 %); the min notional is the other floor.
        max_order_notional: the rails' max notional per order (quote); a
            larger rebalance is sent in slices no larger than this, one per
            bar, so an exit after a rally is not stuck behind the rail.
    """

    capital: Decimal
    order_type: OrderType = OrderType.LIMIT
    reprice_bars: int = 5
    threshold_fraction: Decimal = Decimal("0.01")
    max_order_notional: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What the router wants sent: side, quantity (base units), limit price
    (None for MARKET), and the reference price used for the rails."""

    side: OrderSide
    quantity: Decimal
    price: Decimal | None
    reference_price: Decimal
    order_type: OrderType


def model_budget(weight: Decimal, capital: Decimal, n_instruments: int) -> Decimal:
    """``weight × capital / n_instruments`` (quote) for one model in one instrument.

    Raises:
        ValueError: if ``n_instruments`` < 1 or ``weight`` is outside [0, 1].
    """
    if n_instruments < 1:
        raise ValueError(f"n_instruments: must be >= 1, got {n_instruments}")
    if not (ZERO <= weight <= 1):
        raise ValueError(f"weight: must be in [0, 1], got {weight}")
    return weight * capital / n_instruments


def target_quantity(target: Decimal, budget: Decimal, close: Decimal, instrument: Instrument) -> Decimal:
    """The position a target stands for, fixed when the target is set:
    ``size_buy(target × budget, close)`` base units (rounded down to the step).

    Fixing the quantity at the signal, rather than re-valuing the target at
    every close, keeps a held position from being trimmed and topped up each
    time the price moves by the threshold (each trade costs a fee). A
    contract with a multiplier (a future) is sized on its notional: the
    budget buys ``budget / (close × multiplier)`` contracts.
    """
    return size_buy(target * budget / instrument.multiplier, instrument.round_price(close), instrument)


def decide(
    *,
    config: RouterConfig,
    instrument: Instrument,
    budget: Decimal,
    target_qty: Decimal,
    position: Decimal,
    close: Decimal,
    cash_available: Callable[[], Decimal],
    max_qty: Decimal | None = None,
) -> OrderIntent | None:
    """Decide the rebalancing order of one model in one instrument.

    Args:
        budget: quote the model may hold in this instrument.
        target_qty: the position the model's current target stands for
            (base units, see :func:`target_quantity`).
        position: the model's own quantity held (base units).
        close: last close (quote per base unit), the limit price.
        cash_available: returns the quote the desk can still spend (caps
            buys); called only when a buy is considered.
        max_qty: the largest order the rails allow (base units; the
            engine's scoped max order notional and quantity): a larger
            rebalance is sent in slices, one per bar.

    Returns None when the difference, valued at ``close``, is below the
    threshold (max of min notional and ``threshold_fraction`` × budget), or
    rounds to zero. A target of zero sells everything sellable (a multiple
    of the step) even when that is below the threshold but above min
    notional. Entries are not checked against min notional here: the rails
    do that, and record a denial.
    """
    price = instrument.round_price(close)
    delta_qty = target_qty - position
    threshold = max(instrument.min_notional, budget * config.threshold_fraction)
    flat_exit = (
        target_qty == 0 and position > 0
        and floor_to_step(position, instrument.step_size) * price >= instrument.min_notional
    )
    if abs(delta_qty) * price < threshold and not flat_exit:
        return None
    limit = price if config.order_type == OrderType.LIMIT else None
    if delta_qty > 0:
        spend = min(delta_qty * price, max(cash_available(), ZERO))
        if spend < threshold:
            return None  # the desk's cash, not the model, is the limit: nothing worth sending
        qty = size_buy(spend, price, instrument)
        side = OrderSide.BUY
    else:
        qty = size_sell(position, -delta_qty * price, price, instrument)
        side = OrderSide.SELL
    if config.max_order_notional is not None:
        qty = min(qty, floor_to_step(config.max_order_notional / price, instrument.step_size))
    if instrument.max_qty is not None:
        qty = min(qty, instrument.max_qty)  # larger changes go in slices, one per bar
    if max_qty is not None:
        qty = min(qty, max_qty)
    if qty <= 0:
        return None
    return OrderIntent(side, qty, limit, price, config.order_type)
