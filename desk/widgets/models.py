"""The models and canary pane: per model its id, stage (live / canary),
stage weight, state (ACTIVE / PAUSED), trades (fills), PnL (realized +
unrealized, quote) and Sharpe ratio so far.

The Sharpe ratio is computed from the model's own equity series by
``desk.link.ModelStats`` (hourly returns on the engine clock, annualized
with √8760; see ``desk.link`` for the formula); "—" until there are two
returns. The row under the cursor is the model that ``p`` pauses or
resumes. Sampled at most 10 times a second; a pause shows at once.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical

from desk.widgets.common import DeskTable, pnl_cell

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("model", "Model", None, False),
    ("state", "State", 6, False),
    ("pnl", "PnL", 10, True),
    ("sharpe", "Sharpe", 7, True),
    ("trades", "Trades", 6, True),
    ("weight", "Weight", 6, True),
    ("stage", "Stage", 6, False),
]


class ModelsPane(Vertical):
    """Pane 4: models and the canary."""

    BORDER_TITLE = "4 Models & canary"
    ALLOW_MAXIMIZE = True
    BORDER_SUBTITLE = "p pause/resume"

    def __init__(self, *, id: str | None = "models-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="models-table")

    def compose(self) -> ComposeResult:
        """The table."""
        yield self.table

    @property
    def focus_target(self) -> DeskTable:
        """The widget that ``4`` focuses."""
        return self.table

    def setup(self, engine: Any, stats: dict[str, Any]) -> None:
        """Columns and one row per model."""
        self.table.set_columns(COLUMNS)
        self.sample(engine, stats)

    def selected_model(self) -> str | None:
        """The model id under the cursor."""
        return self.table.selected_key()

    def sample(self, engine: Any, stats: dict[str, Any]) -> None:
        """Update the changed cells."""
        pf = engine.portfolio
        for mid, spec in engine.specs.items():
            st = stats.get(mid)
            sharpe = st.sharpe if st is not None else None
            paused = mid in engine.paused
            self.table.upsert(mid, {
                "model": (mid, "strong"),
                "stage": (spec.stage, "canary" if spec.stage == "canary" else None),
                "weight": (f"{float(engine.weights[mid]):.0%}", None),
                "state": ("PAUSED" if paused else "ACTIVE", "paused" if paused else "active"),
                "trades": (str(pf.fills(mid)), None),
                "pnl": pnl_cell(pf.realized(mid) + pf.unrealized(mid)),
                "sharpe": ("—", "muted") if sharpe is None else (f"{sharpe:+.2f}", None),
            })
