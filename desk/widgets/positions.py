"""The positions and PnL pane: one row per model and instrument, a total
row per instrument (all models) and per model (all instruments), the
desk's equity and an equity sparkline.

Money is in the quote currency; PnL cells carry a sign and the ``up`` /
``down`` tones (blue / orange in the desk themes). The sparkline plots the
portfolio's equity curve (one point per hour of engine clock, kept by the
engine) plus the current equity. Sampled at most 10 times a second.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from core.values import ZERO
from desk.widgets.common import DeskTable, Toned, fmt_money, fmt_step, pnl_cell, tone_classes

#: equity-curve points shown in the sparkline
SPARK_POINTS = 240

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("model", "Model", None, False),
    ("iid", "Instrument", None, False),
    ("unreal", "Unrealized", 10, True),
    ("real", "Realized", 10, True),
    ("qty", "Qty", 10, True),
    ("value", "Value", 10, True),
    ("fees", "Fees", 7, True),
]


def _row_order(models: list[str], model: str, iid: str) -> tuple[Any, ...]:
    """Rows by model (its instruments, then its total), then the
    per-instrument totals."""
    if model == "Σ all models":
        return (1, 0, 0, iid)
    if model.startswith("Σ "):
        name = model[2:]
        return (0, models.index(name) if name in models else 99, 1, "")
    return (0, models.index(model) if model in models else 99, 0, iid)


class EquityLine(Toned, Static):
    """``Equity 10,012.34  +0.12 %  (realized … unrealized … fees …)``."""

    TONE_PREFIX = "equity-line"
    COMPONENT_CLASSES = tone_classes("equity-line")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._last: tuple[Any, ...] | None = None

    def show(self, equity: Decimal, start: Decimal, realized: Decimal, unrealized: Decimal, fees: Decimal) -> None:
        """Render the figures (no redraw when unchanged)."""
        key = (equity.quantize(Decimal("0.01")), realized.quantize(Decimal("0.01")),
               unrealized.quantize(Decimal("0.01")), fees.quantize(Decimal("0.01")))
        if key == self._last:
            return
        self._last = key
        chg = (equity / start - 1) * 100 if start else ZERO
        tone = "up" if chg > 0 else "down" if chg < 0 else "muted"
        self.update(Text.assemble(
            ("Equity ", self.tone_style("muted")), (fmt_money(equity), self.tone_style("strong")),
            (f"  {fmt_money(chg, signed=True)} %", self.tone_style(tone)),
            ("  realized ", self.tone_style("muted")), (fmt_money(realized, signed=True), self.tone_style(pnl_cell(realized)[1])),
            ("  unrealized ", self.tone_style("muted")), (fmt_money(unrealized, signed=True), self.tone_style(pnl_cell(unrealized)[1])),
            ("  fees ", self.tone_style("muted")), (fmt_money(fees), self.tone_style(None)),
            no_wrap=True, overflow="ellipsis",
        ), layout=False)

    def retone(self) -> None:
        """Re-render in the current theme's colours on the next sample."""
        self.clear_tones()
        self._last = None


class PositionsPane(Vertical):
    """Pane 3: positions and PnL per model and instrument, equity sparkline."""

    BORDER_TITLE = "3 Positions & PnL"
    ALLOW_MAXIMIZE = True

    def __init__(self, *, id: str | None = "positions-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="positions-table", cursor=False)
        self.equity = EquityLine(id="equity-line")
        self.spark = Sparkline([], id="equity-spark")
        self._curve_len = -1
        self._spark_last: float | None = None

    def compose(self) -> ComposeResult:
        """Table, equity line, sparkline."""
        yield self.table
        yield self.equity
        yield self.spark

    def on_mount(self) -> None:
        """Follow theme changes for the equity line."""
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.equity.retone())

    @property
    def focus_target(self) -> DeskTable:
        """The widget that ``3`` focuses."""
        return self.table

    def setup(self, engine: Any) -> None:
        """Columns; rows appear as the engine trades."""
        self.table.set_columns(COLUMNS)
        self.sample(engine)

    def sample(self, engine: Any) -> None:
        """Update changed cells, the equity line and the sparkline."""
        pf = engine.portfolio
        marks = pf.marks
        iids = sorted(engine.instruments, key=str)
        # every book with a position: seed versions, refits, retired ones unwinding, manual orders (API)
        index = getattr(engine, "model_index", {}) or {m: k for k, m in enumerate(engine.specs)}
        held = {m for (m, _) in pf.positions}
        models = sorted(set(engine.specs) | held, key=lambda m: (index.get(m, len(index)), m))
        t = self.table
        added = False
        per_iid: dict[Any, list[Decimal]] = {i: [ZERO, ZERO, ZERO, ZERO, ZERO] for i in iids}
        for m in models:
            tot = [ZERO, ZERO, ZERO, ZERO]
            for iid in iids:
                pos = pf.positions.get((m, iid))
                if pos is None:
                    continue
                inst = engine.instruments[iid]
                mark = marks.get(iid)
                value = pos.quantity * mark if mark is not None else ZERO
                unreal = pos.unrealized(mark)
                added |= t.upsert(f"{m}|{iid}", {
                    "model": (m, None), "iid": (str(iid), None),
                    "qty": (fmt_step(pos.quantity, inst.step_size), None if pos.quantity else "muted"),
                    "value": (fmt_money(value), None if value else "muted"),
                    "unreal": pnl_cell(unreal), "real": pnl_cell(pos.realized), "fees": (fmt_money(pos.fees), "muted"),
                })
                for k, v in enumerate((value, unreal, pos.realized, pos.fees)):
                    tot[k] += v
                acc = per_iid[iid]
                acc[0] += pos.quantity
                for k, v in enumerate((value, unreal, pos.realized, pos.fees)):
                    acc[k + 1] += v
            if any(key[0] == m for key in pf.positions):
                added |= t.upsert(f"Σ|{m}", {
                    "model": (f"Σ {m}", "strong"), "iid": ("all", "muted"), "qty": ("", None),
                    "value": (fmt_money(tot[0]), "strong"), "unreal": pnl_cell(tot[1]), "real": pnl_cell(tot[2]),
                    "fees": (fmt_money(tot[3]), "muted"),
                })
        for iid in iids:
            if not any(key[1] == iid for key in pf.positions):
                continue
            acc = per_iid[iid]
            inst = engine.instruments[iid]
            added |= t.upsert(f"Σ|{iid}", {
                "model": ("Σ all models", "strong"), "iid": (str(iid), "strong"),
                "qty": (fmt_step(acc[0], inst.step_size), "strong"), "value": (fmt_money(acc[1]), "strong"),
                "unreal": pnl_cell(acc[2]), "real": pnl_cell(acc[3]), "fees": (fmt_money(acc[4]), "muted"),
            })
        if added:
            t.sort("model", "iid", key=lambda cells: _row_order(models, cells[0].plain, cells[1].plain))
        equity = pf.equity()
        self.equity.show(equity, pf.equity_start, pf.realized(), pf.unrealized(), pf.fees())
        curve = pf.equity_curve
        eq = float(equity)
        if len(curve) != self._curve_len or eq != self._spark_last:
            self._curve_len = len(curve)
            self._spark_last = eq
            self.spark.data = [float(v) for _, v in curve[-SPARK_POINTS:]] + [eq]
