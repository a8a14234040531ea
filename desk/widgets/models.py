"""The models and canary pane: one row per model version in the registry
(``engine.lifecycle.rows()``): its id, stage (live / canary / paused /
retired), stage weight ("pin" when an operator pinned it), the canary's
analysis (intervals, PSR of its excess return over the live version, last
verdict: warming / hold / step / fail / inconclusive), trades (fills), PnL
(realized + unrealized, quote) and Sharpe ratio so far.

The Sharpe ratio is computed from the model's own equity series by
``desk.link.ModelStats`` (hourly returns on the engine clock, annualized
with √8760; see ``desk.link`` for the formula); "—" until there are two
returns. The row under the cursor is the model that ``p`` pauses or
resumes, ``u`` promotes and ``b`` rolls back (both ask first, Cancel
focused) and ``w`` pins the stage weight of (an input; empty clears). A retired version leaves the table once its position is flat.
Sampled at most 10 times a second; a pause shows at once.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical

from desk.widgets.common import DeskTable, pnl_cell

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("model", "Model", None, False),
    ("stage", "Stage", 7, False),
    ("weight", "Wt", 5, True),
    ("pnl", "PnL", 10, True),
    ("canary", "Canary", 16, False),
    ("sharpe", "Sharpe", 6, True),
    ("trades", "Trades", 6, True),
]

#: verdict -> short text in the Canary column
_VERDICT = {"warming": "warm", "hold": "hold", "step": "step", "fail": "fail", "inconclusive": "ASK",
            "promote": "promoted", "rollback": "rolled back"}


def model_rows(engine: Any) -> list[dict[str, Any]]:
    """The registry rows (``Lifecycle.rows()``), or one row per seed spec
    for an engine without a lifecycle."""
    lc = getattr(engine, "lifecycle", None)
    if lc is not None and lc.registry:
        return list(lc.rows())
    # before the seeds enter the registry (the engine's first step): the setup's specs
    return [{"model_id": m, "family": s.family or m, "stage": s.stage, "weight": str(s.weight), "manual": False,
             "intervals": None, "psr": None, "action": ""} for m, s in engine.specs.items()]


def canary_cell(row: dict[str, Any]) -> tuple[str, str | None]:
    """``"12 .83 hold"``: intervals analysed, PSR (2 decimals), last verdict."""
    if row.get("stage") not in ("canary", "paused") or row.get("intervals") is None:
        return ("", None)
    psr = row.get("psr")
    try:
        p = f"{float(psr):.2f}".lstrip("0") if psr not in (None, "", "nan") else "—"
    except (TypeError, ValueError):
        p = "—"
    verdict = _VERDICT.get(row.get("action") or "", row.get("action") or "new")
    style = {"fail": "down", "ASK": "warning", "step": "up"}.get(verdict)
    return (f"{row['intervals']} {p} {verdict}", style)


class ModelsPane(Vertical):
    """Pane 4: the model versions and the canary analysis."""

    BORDER_TITLE = "4 Models & canary"
    ALLOW_MAXIMIZE = True
    BORDER_SUBTITLE = "p pause · u promote · b roll back · w weight"
    BINDINGS = [
        Binding("u", "promote", "Promote", show=False),
        Binding("b", "rollback", "Roll back", show=False),
        Binding("w", "weight", "Pin weight", show=False),
    ]

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
        """Columns and one row per model version."""
        self.table.set_columns(COLUMNS)
        self.sample(engine, stats)

    def selected_model(self) -> str | None:
        """The model id under the cursor."""
        return self.table.selected_key()

    def sample(self, engine: Any, stats: dict[str, Any]) -> None:
        """Update the changed cells; drop versions that left the engine."""
        pf = engine.portfolio
        seen = set()
        for row in model_rows(engine):
            mid = row["model_id"]
            if row["stage"] == "retired" and mid not in engine.models:
                continue
            seen.add(mid)
            st = stats.get(mid)
            sharpe = st.sharpe if st is not None else None
            stage = "paused" if mid in engine.paused else row["stage"]
            w = float(row["weight"])
            self.table.upsert(mid, {
                "model": (mid, "strong"),
                "stage": (stage.upper() if stage == "paused" else stage,
                          {"canary": "canary", "paused": "paused", "retired": "muted"}.get(stage)),
                "weight": ("pin" if row.get("manual") else f"{w:.0%}", "warning" if row.get("manual") else None),
                "canary": canary_cell(row),
                "trades": (str(pf.fills(mid)), None),
                "pnl": pnl_cell(pf.realized(mid) + pf.unrealized(mid)),
                "sharpe": ("—", "muted") if sharpe is None else (f"{sharpe:+.2f}", None),
            })
        for key in list(self.table.row_keys()):
            if key not in seen:
                self.table.drop(key)

    # ------------------------------------------------------------ actions
    def _selected_canary(self, verb: str) -> str | None:
        mid = self.selected_model()
        engine = self.app.engine  # type: ignore[attr-defined]
        rows = {r["model_id"]: r for r in model_rows(engine)}
        row = rows.get(mid or "")
        if row is None or not (row["stage"] == "canary" or (row["stage"] == "paused"
                                                            and row.get("intervals") is not None)):
            self.app.notify(f"Select a canary in pane 4 first: only a canary can be {verb} "
                            f"(the cursor is on {mid or 'nothing'}).",
                            title="Models", severity="warning")
            return None
        return mid

    def action_promote(self) -> None:
        """``u``: promote the selected canary to live (asks first)."""
        mid = self._selected_canary("promoted")
        if mid is not None:
            self.app.confirm_lifecycle("promote", mid)  # type: ignore[attr-defined]

    def action_rollback(self) -> None:
        """``b``: roll the selected canary back (asks first)."""
        mid = self._selected_canary("rolled back")
        if mid is not None:
            self.app.confirm_lifecycle("rollback", mid)  # type: ignore[attr-defined]

    def action_weight(self) -> None:
        """``w``: pin (or clear) the selected version's stage weight."""
        from desk.screens import WeightScreen

        mid = self.selected_model()
        rows = {r["model_id"]: r for r in model_rows(self.app.engine)}  # type: ignore[attr-defined]
        row = rows.get(mid or "")
        if row is None or row["stage"] == "retired":
            self.app.notify("Select a model version in pane 4 first.", title="Models", severity="warning")
            return
        current = f"{float(row['weight']):.0%}"

        def done(text: str | None) -> None:
            if text is None:
                return
            self.app.set_model_weight(mid, WeightScreen.parse(text))  # type: ignore[attr-defined]

        self.app.push_screen(WeightScreen(mid, current, bool(row.get("manual"))), done)
