"""The capital allocations pane: each model's stage weight and budget
(``budget = weight × capital``, DESIGN.md section 3; until the allocator
exists the family budget is the desk's trading capital), its exposure
(position value at the marks plus working buy orders at their limit) and
the share of the budget in use. Sampled at most 10 times a second.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from textual.app import ComposeResult
from textual.containers import Vertical

from core.values import ZERO
from desk.widgets.common import DeskTable, fmt_money

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("model", "Model", None, False),
    ("budget", "Budget", 10, True),
    ("use", "Use", 5, True),
    ("exposure", "Exposure", 10, True),
    ("weight", "Weight", 6, True),
]


class AllocationsPane(Vertical):
    """Pane 5: weights and budgets."""

    BORDER_TITLE = "5 Allocations"
    ALLOW_MAXIMIZE = True

    def __init__(self, *, id: str | None = "allocations-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="allocations-table", cursor=False)

    def compose(self) -> ComposeResult:
        """The table."""
        yield self.table

    @property
    def focus_target(self) -> DeskTable:
        """The widget that ``5`` focuses."""
        return self.table

    def setup(self, engine: Any, working: Iterable[Any] = ()) -> None:
        """Columns and one row per model plus the total."""
        self.table.set_columns(COLUMNS)
        self.sample(engine, working)

    def sample(self, engine: Any, working: Iterable[Any]) -> None:
        """Update the changed cells; ``working`` are the working orders."""
        capital: Decimal = engine.config.router.capital
        marks = engine.portfolio.marks
        exposure: dict[str, Decimal] = {m: ZERO for m in engine.specs}
        for (m, iid), pos in engine.portfolio.positions.items():
            if m in exposure and pos.quantity:
                exposure[m] += pos.quantity * marks.get(iid, ZERO)
        for o in working:
            if o.is_working and o.side.value == "BUY" and o.model_id in exposure:
                exposure[o.model_id] += o.leaves_qty * (o.price or marks.get(o.instrument_id, ZERO))
        total_w = ZERO
        total_x = ZERO
        for mid in engine.specs:
            w = engine.weights[mid]
            budget = w * capital
            x = exposure[mid]
            total_w += w
            total_x += x
            use = x / budget if budget else ZERO
            self.table.upsert(mid, {
                "model": (mid, "strong"), "weight": (f"{float(w):.0%}", None), "budget": (fmt_money(budget), None),
                "exposure": (fmt_money(x), None if x else "muted"),
                "use": (f"{float(use):.0%}", "warning" if use > 1 else ("muted" if not x else None)),
            })
        self.table.upsert("Σ", {
            "model": ("Σ capital", "strong"), "weight": (f"{float(total_w):.0%}", "muted"),
            "budget": (fmt_money(capital), "strong"), "exposure": (fmt_money(total_x), "strong"),
            "use": (f"{float(total_x / capital):.0%}" if capital else "", "muted"),
        })
