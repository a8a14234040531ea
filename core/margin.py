"""Margin figures of a USD-M perpetual position (Binance one-way mode), in
exact Decimal arithmetic (no float).

Sources (Binance Support FAQ):

* "How to Calculate Liquidation Price of USDⓈ-M Contracts": in one-way
  mode (position side ``BOTH``)::

      LP = (WB - TMM1 + UPNL1 + cumB - Side1 * Position1 * EP1)
           / (Position1 * MMR1 - Side1 * Position1)

  ``WB`` wallet balance (cross: the cross wallet balance of the margin
  asset; isolated: the position's isolated wallet balance), ``TMM1`` the
  maintenance margin of every *other* cross position, ``UPNL1`` their
  unrealized PnL (both 0 for an isolated position), ``cumB`` the
  maintenance amount of the position's leverage bracket, ``Side1`` +1 long
  / -1 short, ``Position1`` the absolute size (base units), ``EP1`` the
  entry price, ``MMR1`` the maintenance margin rate of the bracket.
* "Leverage and Margin of USDⓈ-M Futures": maintenance margin = notional x
  maintenance margin rate - maintenance amount (``cum`` of the bracket in
  ``GET /fapi/v1/leverageBracket``), notional = |position| x mark price.

Units: prices quote per base unit (USDT per BTC), sizes base units, money
quote. Results are exact quotients at the default decimal context (28
significant digits), not rounded to a tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Mapping

from core.identifiers import InstrumentId

ZERO = Decimal(0)

#: the two margin modes of a USD-M position (Binance ``marginType``)
MARGIN_MODES = ("isolated", "cross")


@dataclass(frozen=True, slots=True)
class Bracket:
    """One leverage bracket of a symbol (``GET /fapi/v1/leverageBracket``).

    Attributes:
        notional_floor, notional_cap: the position notional range (quote)
            the bracket applies to (floor exclusive, cap inclusive; the first
            bracket starts at 0 inclusive).
        mmr: maintenance margin rate (a fraction: 0.004 = 0.4 %).
        cum: maintenance amount (quote) subtracted from notional x mmr.
        initial_leverage: the highest leverage allowed in the bracket.
    """

    notional_floor: Decimal
    notional_cap: Decimal
    mmr: Decimal
    cum: Decimal
    initial_leverage: int = 0


def _dec(value: Any, name: str) -> Decimal:
    """A Decimal from a Binance number (JSON number, parsed as float by
    ccxt, or string): floats through their shortest repr."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"{name}: expected a number, got {value!r}") from None


def brackets_from_response(rows: Iterable[Mapping[str, Any]]) -> list[Bracket]:
    """The brackets of one symbol from its ``brackets`` list (Binance field
    names ``notionalFloor``, ``notionalCap``, ``maintMarginRatio``, ``cum``,
    ``initialLeverage``), sorted by floor.

    Raises:
        ValueError: a missing or non-numeric field (named).
    """
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(Bracket(_dec(r["notionalFloor"], f"brackets[{i}].notionalFloor"),
                               _dec(r["notionalCap"], f"brackets[{i}].notionalCap"),
                               _dec(r["maintMarginRatio"], f"brackets[{i}].maintMarginRatio"),
                               _dec(r.get("cum", 0), f"brackets[{i}].cum"),
                               int(r.get("initialLeverage", 0))))
        except KeyError as exc:
            raise ValueError(f"brackets[{i}]: field {exc.args[0]} missing") from None
    if not out:
        raise ValueError("brackets: empty list")
    return sorted(out, key=lambda b: b.notional_floor)


def bracket_for(brackets: list[Bracket], notional: Decimal) -> Bracket:
    """The bracket whose range holds ``abs(notional)`` (quote): the first
    one with ``notional <= notional_cap``; the last one beyond every cap.

    Raises:
        ValueError: an empty list.
    """
    if not brackets:
        raise ValueError("brackets: empty list")
    n = abs(notional)
    for b in brackets:
        if n <= b.notional_cap:
            return b
    return brackets[-1]


def maintenance_margin(quantity: Decimal, mark_price: Decimal, bracket: Bracket) -> Decimal:
    """Maintenance margin (quote) = |quantity| x mark price x MMR - cum
    (Binance, "Leverage and Margin of USDⓈ-M Futures"); 0 when flat.

    Raises:
        ValueError: a negative mark price.
    """
    if mark_price < 0:
        raise ValueError(f"mark_price: must be >= 0, got {mark_price}")
    if quantity == 0:
        return ZERO
    return abs(quantity) * mark_price * bracket.mmr - bracket.cum


def liquidation_price(*, quantity: Decimal, entry_price: Decimal, wallet_balance: Decimal, mmr: Decimal,
                      cum: Decimal, other_maintenance: Decimal = ZERO, other_unrealized: Decimal = ZERO
                      ) -> Decimal | None:
    """Binance's liquidation price of a one-way USD-M position (module
    docstring): ``(WB - TMM1 + UPNL1 + cumB - Side1*Position1*EP1) /
    (Position1*MMR1 - Side1*Position1)``.

    Args:
        quantity: signed position (base units; negative = short).
        entry_price: EP1 (quote per base).
        wallet_balance: WB (quote): the cross wallet balance, or the
            isolated wallet of the position.
        mmr, cum: MMR1 (fraction) and cumB (quote) of the position's bracket.
        other_maintenance, other_unrealized: TMM1 and UPNL1 (quote): the
            maintenance margin and unrealized PnL of the account's *other*
            cross positions; 0 for an isolated position.

    Returns:
        The price (quote per base, exact), 0 when the formula gives a
        negative price (the position cannot be liquidated: Binance shows
        no price), None when flat.

    Raises:
        ValueError: ``mmr`` outside [0, 1) or a negative entry price.
    """
    if not ZERO <= mmr < 1:
        raise ValueError(f"mmr: must be a fraction in [0, 1), got {mmr}")
    if entry_price < 0:
        raise ValueError(f"entry_price: must be >= 0, got {entry_price}")
    if quantity == 0:
        return None
    side = 1 if quantity > 0 else -1
    size = abs(quantity)
    num = wallet_balance - other_maintenance + other_unrealized + cum - side * size * entry_price
    den = size * mmr - side * size
    lp = num / den
    return lp if lp > 0 else ZERO


@dataclass(frozen=True, slots=True)
class PerpPosition:
    """One USD-M perpetual position as the venue reports it, with the
    desk's own figures beside the venue's.

    Attributes:
        instrument_id: ``BTCUSDT-PERP.BINANCE``.
        quantity: signed size (base units; negative = short).
        entry_price, mark_price: quote per base.
        leverage: the symbol's leverage setting (x).
        margin_mode: ``isolated`` or ``cross``.
        wallet_balance: the WB used (quote): isolated wallet, or the cross
            wallet balance of the margin asset.
        unrealized_pnl: the venue's unrealized PnL (quote).
        venue_liquidation_price: Binance's ``liquidationPrice`` (0 = none).
        liquidation_price: :func:`liquidation_price` of these figures (None
            when flat).
        maintenance_margin: :func:`maintenance_margin` at the mark (quote).
        bracket: the leverage bracket used.
    """

    instrument_id: InstrumentId
    quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal
    leverage: int
    margin_mode: str
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    venue_liquidation_price: Decimal
    liquidation_price: Decimal | None
    maintenance_margin: Decimal
    bracket: Bracket | None = None
