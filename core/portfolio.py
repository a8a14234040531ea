"""The portfolio: positions and PnL per model and per instrument.

Accounting rules (DESIGN.md section 4):

* Fees are charged in the asset received, as Binance does without BNB: on a
  buy the fee is taken from the bought coin (the position grows by
  ``qty - fee``, the cost is the full ``qty * px``); on a sell it is taken
  from the quote proceeds.
* A position keeps its *total* cost, not a unit cost. A sell removes the
  sold share of the cost (``cost * sold / held``, the whole cost when the
  position closes), and ``realized_pnl = net proceeds - cost removed``, so
  realized PnL is net of every fee.
* Money is quantized at each fill to the quote precision (8 decimals) with
  ROUND_HALF_EVEN.
* ``fees`` values every fee in the quote at the fill price; informational.

Worked example (the issue's): buy 1.0000 ETH at 2000.00, fee 0.1 % = 0.0010
ETH → position 0.9990 ETH, cost 2000.00. Sell 0.9990 at 2100.00: proceeds
2097.90, fee 2.0979 USDT, net 2095.8021 → realized +95.8021 USDT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.enums import OrderSide
from core.events import OrderFilled
from core.identifiers import InstrumentId
from core.values import ZERO, quantize_money


@dataclass(slots=True)
class Position:
    """One model's position in one instrument.

    ``quantity`` base units held; ``cost`` quote paid for what is held
    (fees included); ``realized`` quote, net of fees; ``fees`` quote value of
    all fees; ``fills`` count of fills.
    """

    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """``quantity * mark - cost`` in quote, exact (not quantized, so sums
        over positions stay exact; quantize for display); 0 when flat."""
        if self.quantity == 0:
            return -self.cost
        if mark is None:
            return -self.cost
        return self.quantity * mark - self.cost

    def to_dict(self) -> dict[str, str | int]:
        """JSON-ready state."""
        return {
            "quantity": format(self.quantity, "f"), "cost": format(self.cost, "f"),
            "realized": format(self.realized, "f"), "fees": format(self.fees, "f"), "fills": self.fills,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Position":
        """Inverse of ``to_dict``."""
        return cls(Decimal(d["quantity"]), Decimal(d["cost"]), Decimal(d["realized"]), Decimal(d["fees"]), int(d["fills"]))


class AccountingError(Exception):
    """A fill that would make a model's position negative (spot is long-only)."""


@dataclass(slots=True)
class Portfolio:
    """Positions per (model, instrument), marks per instrument, equity curve.

    ``equity_start`` is the quote cash at the start (no positions). Equity is
    computed from this book alone (``equity_start + realized + unrealized``)
    so that it can be checked against the venue's cash ledger.
    """

    equity_start: Decimal
    positions: dict[tuple[str, InstrumentId], Position] = field(default_factory=dict)
    marks: dict[InstrumentId, Decimal] = field(default_factory=dict)
    equity_curve: list[tuple[int, str]] = field(default_factory=list)
    curve_every_ns: int = 3_600_000_000_000  # one point per hour of engine time
    _last_curve_ts: int = -1

    def position(self, model_id: str, instrument_id: InstrumentId) -> Position:
        """The (possibly new, flat) position of a model in an instrument."""
        key = (model_id, instrument_id)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position()
        return pos

    def apply_fill(self, fill: OrderFilled) -> Decimal:
        """Book a fill; returns the realized PnL of this fill (quote).

        Raises:
            AccountingError: when a sell exceeds the model's position.
        """
        pos = self.position(fill.model_id, fill.instrument_id)
        qty, px, fee = fill.last_qty, fill.last_px, fill.commission
        notional = quantize_money(qty * px)
        pos.fills += 1
        if fill.side == OrderSide.BUY.value:
            pos.quantity += qty - fee
            pos.cost += notional
            pos.fees += quantize_money(fee * px)
            realized = ZERO
        else:
            if qty > pos.quantity:
                raise AccountingError(
                    f"{fill.model_id} {fill.instrument_id}: sell {qty} exceeds position {pos.quantity}"
                )
            removed = pos.cost if qty == pos.quantity else quantize_money(pos.cost * qty / pos.quantity)
            net = notional - fee
            realized = net - removed
            pos.quantity -= qty
            pos.cost -= removed
            pos.realized += realized
            pos.fees += fee
        self.marks.setdefault(fill.instrument_id, px)
        return realized

    def mark(self, instrument_id: InstrumentId, price: Decimal) -> None:
        """Set the mark (last close) of an instrument."""
        self.marks[instrument_id] = price

    # ---------------------------------------------------------- figures
    def realized(self, model_id: str | None = None) -> Decimal:
        """Sum of realized PnL (quote), for one model or all."""
        return sum((p.realized for (m, _), p in self.positions.items() if model_id in (None, m)), ZERO)

    def unrealized(self, model_id: str | None = None) -> Decimal:
        """Sum of unrealized PnL at the marks (quote), for one model or all."""
        return sum(
            (p.unrealized(self.marks.get(i)) for (m, i), p in self.positions.items() if model_id in (None, m)),
            ZERO,
        )

    def fees(self, model_id: str | None = None) -> Decimal:
        """Sum of fees valued in the quote, for one model or all."""
        return sum((p.fees for (m, _), p in self.positions.items() if model_id in (None, m)), ZERO)

    def fills(self, model_id: str | None = None) -> int:
        """Number of fills, for one model or all."""
        return sum(p.fills for (m, _), p in self.positions.items() if model_id in (None, m))

    def quantity(self, instrument_id: InstrumentId) -> Decimal:
        """Total quantity of an instrument over all models (base units)."""
        return sum((p.quantity for (_, i), p in self.positions.items() if i == instrument_id), ZERO)

    def equity(self) -> Decimal:
        """``equity_start + realized + unrealized`` (quote)."""
        return self.equity_start + self.realized() + self.unrealized()

    def sample_equity(self, ts_ns: int) -> None:
        """Append an equity point at most once per ``curve_every_ns``."""
        if self._last_curve_ts < 0 or ts_ns - self._last_curve_ts >= self.curve_every_ns:
            self.equity_curve.append((ts_ns, format(self.equity(), "f")))
            self._last_curve_ts = ts_ns

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot for the checkpoint."""
        return {
            "equity_start": format(self.equity_start, "f"),
            "positions": [[m, str(i), p.to_dict()] for (m, i), p in self.positions.items()],
            "marks": {str(i): format(px, "f") for i, px in self.marks.items()},
            "equity_curve": self.equity_curve,
            "last_curve_ts": self._last_curve_ts,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Portfolio":
        """Inverse of ``to_dict``."""
        pf = cls(Decimal(d["equity_start"]))
        for m, i, p in d["positions"]:
            pf.positions[(m, InstrumentId.parse(i))] = Position.from_dict(p)
        pf.marks = {InstrumentId.parse(i): Decimal(px) for i, px in d["marks"].items()}
        pf.equity_curve = [tuple(x) for x in d["equity_curve"]]  # type: ignore[misc]
        pf._last_curve_ts = int(d["last_curve_ts"])
        return pf
