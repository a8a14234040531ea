"""Netting of several models' orders on one instrument, and the split of
shared fills back to the models (issue 4, "Netting and self-match
prevention").

When two models trade the same instrument on the same venue, their wanted
changes are netted: opposite wants are crossed internally (an internal fill
at the bar's close, no fee, its own TradeId), and what remains becomes one
order per instrument and side. Venue fills and fees of that shared order
are attributed back to the models by the largest-remainder rule at the step
(Hamilton's method), so the models' figures sum exactly to the venue's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from core.values import ZERO


def largest_remainder(total: Decimal, weights: dict[str, Decimal], step: Decimal) -> dict[str, Decimal]:
    """Split ``total`` (a multiple of ``step``) among the keys of ``weights``
    in proportion to the weights; every part is a multiple of ``step`` and
    the parts sum exactly to ``total``. Each key first gets its exact share
    rounded down to the step; the units left over go one each to the largest
    fractional remainders (ties: the order of ``weights``). Hamilton's
    largest-remainder method.

    Raises:
        ValueError: if ``total`` is negative or not a multiple of ``step``,
            or the weights are negative or sum to zero while ``total`` > 0.
    """
    if total < 0 or (total / step) != (total / step).to_integral_value():
        raise ValueError(f"largest_remainder: total {total} is not a non-negative multiple of {step}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"largest_remainder: negative weight in {weights}")
    wsum = sum(weights.values(), ZERO)
    if total == 0:
        return {k: ZERO for k in weights}
    if wsum <= 0:
        raise ValueError("largest_remainder: weights sum to zero")
    units = int((total / step).to_integral_value())
    floors: dict[str, int] = {}
    fracs: list[tuple[Decimal, int, str]] = []
    for i, (k, w) in enumerate(weights.items()):
        exact = Decimal(units) * w / wsum
        f = int(exact.to_integral_value(rounding=ROUND_DOWN))
        floors[k] = f
        fracs.append((exact - f, -i, k))
    left = units - sum(floors.values())
    for _, _, k in sorted(fracs, reverse=True)[:left]:
        floors[k] += 1
    return {k: (Decimal(n) * step).quantize(step) for k, n in floors.items()}


@dataclass(frozen=True, slots=True)
class NetResult:
    """The netting of one instrument's wants at one bar.

    Attributes:
        cross_buys / cross_sells: per model, what is crossed internally
            (base units; both sum to the crossed quantity).
        side: ``"BUY"``, ``"SELL"`` or None (everything crossed).
        residual: per model, that model's part of the one order to send.
    """

    cross_buys: dict[str, Decimal]
    cross_sells: dict[str, Decimal]
    side: str | None
    residual: dict[str, Decimal]

    @property
    def crossed(self) -> Decimal:
        """The quantity crossed internally (base units)."""
        return sum(self.cross_buys.values(), ZERO)

    @property
    def order_qty(self) -> Decimal:
        """The quantity of the one order to send (base units)."""
        return sum(self.residual.values(), ZERO)


def net(buys: dict[str, Decimal], sells: dict[str, Decimal], step: Decimal) -> NetResult:
    """Net the models' wanted buys and sells of one instrument (base units,
    multiples of ``step``): ``min(Σbuys, Σsells)`` is crossed internally,
    split among buyers and among sellers by the largest-remainder rule; the
    rest is one order on the larger side whose parts are each model's
    leftover."""
    b = sum(buys.values(), ZERO)
    s = sum(sells.values(), ZERO)
    x = min(b, s)
    cb = largest_remainder(x, buys, step) if buys else {}
    cs = largest_remainder(x, sells, step) if sells else {}
    if b > s:
        side, residual = "BUY", {m: q - cb.get(m, ZERO) for m, q in buys.items() if q - cb.get(m, ZERO) > 0}
    elif s > b:
        side, residual = "SELL", {m: q - cs.get(m, ZERO) for m, q in sells.items() if q - cs.get(m, ZERO) > 0}
    else:
        side, residual = None, {}
    return NetResult({m: q for m, q in cb.items() if q > 0}, {m: q for m, q in cs.items() if q > 0}, side, residual)


def split_fill(qty: Decimal, commission: Decimal, remaining: dict[str, Decimal], step: Decimal,
               fee_quantum: Decimal) -> dict[str, tuple[Decimal, Decimal]]:
    """Attribute one fill of a shared order to its models: the quantity in
    proportion to each model's remaining part (at the step), then the
    commission in proportion to the quantities (at ``fee_quantum``), both by
    the largest-remainder rule so the parts sum exactly to the fill.

    Returns ``{model: (qty, commission)}`` for models with a non-zero part.
    """
    q = largest_remainder(qty, remaining, step)
    f = largest_remainder(commission, q, fee_quantum) if commission else {k: ZERO for k in q}
    return {m: (q[m], f[m]) for m in q if q[m] > 0 or f[m] > 0}
