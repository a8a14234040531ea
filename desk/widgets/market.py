"""The market pane: per instrument its last price, each model's regime with
its probability, and the change since the first step of the UTC day (engine
clock; ``desk.link.EngineLink.day_open``).

Regimes are the models' canonical states (ordered by the variance of the
return feature, ascending: ``S0`` is the calmest); the probability is the
filtered posterior of that state. Sampled at most 10 times a second.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical

from desk.widgets.common import DeskTable, fmt_step, pnl_cell


class MarketPane(Vertical):
    """Pane 1: instruments, last prices and regimes."""

    BORDER_TITLE = "1 Market"
    ALLOW_MAXIMIZE = True
    BORDER_SUBTITLE = "S0 = calmest regime"

    def __init__(self, *, id: str | None = "market-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="market-table", cursor=False)
        self._models: list[str] = []

    def compose(self) -> ComposeResult:
        """The table."""
        yield self.table

    @property
    def focus_target(self) -> DeskTable:
        """The widget that ``1`` focuses."""
        return self.table

    def setup(self, engine: Any) -> None:
        """Columns for the engine's models; one row per instrument."""
        self._models = list(engine.specs)
        cols: list[tuple[str, str, int | None, bool]] = [
            ("iid", "Instrument", None, False), ("last", "Last", 10, True),
        ]
        cols += [(f"m:{m}", m, max(8, len(m)), True) for m in self._models]
        cols += [("chg", "Day %", 7, True)]
        self.table.set_columns(cols)
        self.sample(engine, {})

    def sample(self, engine: Any, day_open: dict[Any, Decimal]) -> None:
        """Update the changed cells from the engine; ``day_open`` are the
        marks at the first step of the day."""
        marks = engine.portfolio.marks
        for iid in sorted(engine.instruments, key=str):
            inst = engine.instruments[iid]
            px = marks.get(iid)
            cells = {"iid": (str(iid), "strong")}
            if px is None:
                cells["last"] = ("—", "muted")
                cells["chg"] = ("", None)
            else:
                first = day_open.get(iid)
                cells["last"] = (fmt_step(px, inst.tick_size), None)
                cells["chg"] = pnl_cell((px / first - 1) * 100) if first else ("", None)
            for m in self._models:
                reg = engine.regimes.get((m, iid))
                cells[f"m:{m}"] = ("—", "muted") if reg is None else (f"S{reg[0]} {reg[1]:4.0%}", None)
            self.table.upsert(str(iid), cells)
