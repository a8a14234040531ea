"""Decimal value types and conversions shared by every layer.

Money, prices and quantities are :class:`decimal.Decimal`, never ``float``
(DESIGN.md section 4). ``Price``, ``Quantity`` and ``Money`` are ``NewType``
names over ``Decimal``: they document units at zero run-time cost, and
``Decimal`` is already immutable.

A float from upstream (a model, a JSON body) reaches Decimal through its
shortest repr, ``Decimal(repr(x))``; ``Decimal(0.29)`` would give
``0.28999999999999998002…`` and flooring that to a step of 0.01 gives 0.28.
"""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation
from typing import NewType

Price = NewType("Price", Decimal)
Quantity = NewType("Quantity", Decimal)
Money = NewType("Money", Decimal)

ZERO = Decimal(0)
ONE = Decimal(1)

#: quantum of money in USDT-like quote assets (8 decimals, as Binance reports)
QUOTE_QUANTUM = Decimal("0.00000001")


def to_decimal(value: object, field: str = "value") -> Decimal:
    """Convert ``value`` to a finite Decimal.

    Floats go through their shortest repr (``Decimal(repr(x))``) so that
    ``0.29`` becomes ``Decimal("0.29")``. Strings and ints are parsed exactly.

    Raises:
        ValueError: naming ``field`` and the value when it is not a finite
            number (NaN, infinity, empty, garbage, bool).
    """
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, bool):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field}: expected a finite number, got {value!r}")
        d = Decimal(repr(value))
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{field}: not a number: {value!r}") from None
    else:
        raise ValueError(f"{field}: expected a number, got {type(value).__name__} {value!r}")
    if not d.is_finite():
        raise ValueError(f"{field}: expected a finite number, got {value!r}")
    return d


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down (toward zero) to a multiple of ``step``.

    The result carries the step's exponent, so ``floor_to_step(1E-7, 1E-8)``
    is ``Decimal("0.00000010")``, never ``1E-7``.

    Raises:
        ValueError: if ``step`` is not positive.
    """
    if step <= 0:
        raise ValueError(f"step: must be positive, got {step}")
    units = (value / step).to_integral_value(rounding=ROUND_DOWN)
    return (units * step).quantize(step)


def round_to_tick(value: Decimal, tick: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Round ``value`` to a multiple of ``tick`` with the given rounding mode.

    Raises:
        ValueError: if ``tick`` is not positive.
    """
    if tick <= 0:
        raise ValueError(f"tick: must be positive, got {tick}")
    units = (value / tick).to_integral_value(rounding=rounding)
    return (units * tick).quantize(tick)


def ceil_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` up (away from zero) to a multiple of ``step``."""
    return round_to_tick(value, step, ROUND_UP)


def quantize_money(value: Decimal, quantum: Decimal = QUOTE_QUANTUM) -> Decimal:
    """Quantize money to the quote asset's precision with ROUND_HALF_EVEN.

    DESIGN.md section 4: money is quantized at each fill to the quote asset's
    precision (8 decimals for USDT) with banker's rounding.
    """
    return value.quantize(quantum, rounding=ROUND_HALF_EVEN)


def dec_str(value: Decimal) -> str:
    """Render a Decimal as a plain string without exponent (``"0.00000010"``)."""
    return format(value, "f")
