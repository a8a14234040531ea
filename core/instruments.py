"""Instruments and their exchange filters (tick, step, min qty, min notional).

Quantities round *down* to the step and prices to the tick (DESIGN.md section
4). Filter values come from Binance ``exchangeInfo`` strings
(``PRICE_FILTER.tickSize``, ``LOT_SIZE.stepSize/minQty/maxQty``,
``MIN_NOTIONAL.minNotional`` or ``NOTIONAL.minNotional``), a built-in table,
or inference from data (see ``venues.filters``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal

from core.identifiers import InstrumentId
from core.values import ZERO, floor_to_step, round_to_tick, to_decimal


@dataclass(frozen=True, slots=True)
class Instrument:
    """A spot instrument with its venue filters.

    Attributes:
        id: ``SYMBOL.VENUE``.
        base: base asset (``BTC``); quantities are in base units.
        quote: quote asset (``USDT``); prices and money are in the quote.
        tick_size: price increment (quote per base unit).
        step_size: quantity increment (base units).
        min_qty: smallest order quantity (base units).
        max_qty: largest order quantity (base units), or ``None``.
        min_notional: smallest price × quantity (quote), ``0`` if none.
        max_notional: largest price × quantity (quote), or ``None``.
        filters_source: where the filters came from (``exchange-info``,
            ``builtin``, ``inferred``), shown to the operator.
        multiplier: units of the underlying per unit of quantity (quote per
            price point per contract): 1 for spot, stocks and FX; a future's
            contract multiplier (CME ES: 50, so one contract at 5000.25 is
            worth 250,012.50 USD). Notional, cost and PnL scale by it
            (:meth:`notional`).
    """

    id: InstrumentId
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal | None = None
    min_notional: Decimal = ZERO
    max_notional: Decimal | None = None
    filters_source: str = "builtin"
    multiplier: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        for name in ("tick_size", "step_size"):
            v = getattr(self, name)
            if not isinstance(v, Decimal) or v <= 0:
                raise ValueError(f"{self.id} {name}: must be a positive Decimal, got {v!r}")
        if self.min_qty < 0 or self.min_notional < 0:
            raise ValueError(f"{self.id}: min_qty/min_notional must be >= 0")
        if not isinstance(self.multiplier, Decimal) or not self.multiplier.is_finite() or self.multiplier <= 0:
            raise ValueError(f"{self.id} multiplier: must be a positive Decimal, got {self.multiplier!r}")

    def notional(self, price: Decimal, quantity: Decimal) -> Decimal:
        """The value of ``quantity`` at ``price`` in the quote currency:
        ``price x quantity x multiplier`` (exact, not quantized; with a
        multiplier of 1 exactly ``price x quantity``). CME's E-mini S&P 500
        (multiplier 50): 2 contracts at 5000.25 are 500,025.00 USD."""
        value = price * quantity
        return value if self.multiplier == 1 else value * self.multiplier

    def round_qty_down(self, qty: Decimal | float | str) -> Decimal:
        """Round a quantity *down* to the step (float via shortest repr).

        ``0.29`` with step 0.01 gives ``Decimal("0.29")`` (float flooring
        would give 0.28).
        """
        return floor_to_step(to_decimal(qty, "quantity"), self.step_size)

    def round_price(self, price: Decimal | float | str, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        """Round a price to the tick (nearest, half-even, unless told)."""
        return round_to_tick(to_decimal(price, "price"), self.tick_size, rounding)

    def round_price_against(self, price: Decimal, is_buy: bool) -> Decimal:
        """Round a price to the tick against the trader: up for a buy, down
        for a sell (used for slippage so it never favours us)."""
        return round_to_tick(price, self.tick_size, ROUND_UP if is_buy else ROUND_DOWN)

    def price_precision(self) -> int:
        """Number of decimals of the tick size."""
        return max(0, -self.tick_size.normalize().as_tuple().exponent)  # type: ignore[operator]

    def size_precision(self) -> int:
        """Number of decimals of the step size."""
        return max(0, -self.step_size.normalize().as_tuple().exponent)  # type: ignore[operator]
