"""Sizing: from a budget and a target fraction to an order quantity.

Quantities round *down* to the step, so an order never spends more than its
budget (rounding 0.000359999 up to 0.00036 would spend 10.0000008 of a
budget of 10).
"""

from __future__ import annotations

from decimal import Decimal

from core.instruments import Instrument
from core.values import ZERO, floor_to_step


def size_buy(budget: Decimal, price: Decimal, instrument: Instrument) -> Decimal:
    """Largest quantity (base units, a multiple of the step) whose notional
    at ``price`` does not exceed ``budget`` (quote).

    Example (issue 2): step 0.00001, price 27777.78: budget 10 → 0.00035,
    10.01 → 0.00036, 12 → 0.00043.

    Raises:
        ValueError: when ``price`` is not positive.
    """
    if price <= 0:
        raise ValueError(f"price: must be positive, got {price}")
    if budget <= 0:
        return ZERO
    return floor_to_step(budget / price, instrument.step_size)


def size_sell(held: Decimal, amount_quote: Decimal, price: Decimal, instrument: Instrument) -> Decimal:
    """Quantity to sell to reduce exposure by ``amount_quote`` at ``price``,
    never more than the step-rounded ``held`` (a model's own position never
    goes below zero)."""
    if price <= 0:
        raise ValueError(f"price: must be positive, got {price}")
    cap = floor_to_step(held, instrument.step_size)
    want = floor_to_step(amount_quote / price, instrument.step_size)
    return min(cap, want)
