"""The capital allocations pane: per family its allocator weight and budget
(``budget = weight × capital``), the trailing Sharpe the allocator used and
the last change; under it each active version with its stage weight and
budget (``family budget × stage weight``, DESIGN.md section 3), its
exposure (position value at the marks plus working buy orders at their
limit) and the share of its budget in use; a last row with the capital,
the idle share and, in the weight column, the share committed to all
versions (above 100 % while canaries trade on top of their families). Sampled at most 10 times a second.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from textual.app import ComposeResult
from textual.containers import Vertical

from core.values import ZERO
from desk.widgets.common import DeskTable, fmt_money

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("model", "Family / model", None, False),
    ("weight", "Weight", 6, True),
    ("budget", "Budget", 10, True),
    ("change", "Δ", 5, True),
    ("use", "Use", 5, True),
    ("exposure", "Exposure", 10, True),
]


class AllocationsPane(Vertical):
    """Pane 5: the allocator's family weights and the versions' budgets."""

    BORDER_TITLE = "5 Allocations"
    ALLOW_MAXIMIZE = True

    def __init__(self, *, id: str | None = "allocations-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="allocations-table", cursor=False)
        #: family -> (the weight shown before the last change, the current weight)
        self._last: dict[str, tuple[Decimal, Decimal]] = {}

    def compose(self) -> ComposeResult:
        """The table."""
        yield self.table

    @property
    def focus_target(self) -> DeskTable:
        """The widget that ``5`` focuses."""
        return self.table

    def setup(self, engine: Any, working: Iterable[Any] = ()) -> None:
        """Columns and the rows."""
        self.table.set_columns(COLUMNS)
        self.sample(engine, working)

    def _change(self, family: str, w: Decimal) -> tuple[str, str | None]:
        prev = self._last.get(family)
        if prev is None:
            self._last[family] = (w, w)
            return ("", None)
        before, now = prev
        if w != now:
            self._last[family] = (now, w)
            before = now
        d = w - before
        if d == 0:
            return ("", None)
        return (f"{float(d) * 100:+.0f}", "up" if d > 0 else "down")

    def sample(self, engine: Any, working: Iterable[Any]) -> None:
        """Update the changed cells; ``working`` are the working orders."""
        capital: Decimal = engine.config.router.capital
        marks = engine.portfolio.marks
        exposure: dict[str, Decimal] = {m: ZERO for m in engine.weights}
        for (m, iid), pos in engine.portfolio.positions.items():
            if pos.quantity:
                exposure[m] = exposure.get(m, ZERO) + pos.quantity * marks.get(iid, ZERO)
        for o in working:
            if o.is_working and o.side.value == "BUY":
                exposure[o.model_id] = exposure.get(o.model_id, ZERO) + \
                    o.leaves_qty * (o.price or marks.get(o.instrument_id, ZERO))
        lc = getattr(engine, "lifecycle", None)
        families = lc.allocation_rows() if lc is not None else []
        seen = set()
        total_x = ZERO
        planned = [f"family:{f['family']}" for f in families] + [f"model:{m}" for f in families for m in f["models"]]
        if any(not self.table.has_row(k) for k in planned):
            self.table.drop_all()  # a new family or version: rebuilt in order (family, its versions, ..., Σ)
        for fam in families:
            key = f"family:{fam['family']}"
            seen.add(key)
            w = Decimal(fam["weight"])
            try:
                sharpe = float(fam.get("sharpe", "0"))
            except ValueError:
                sharpe = 0.0
            fx = sum((exposure.get(m, ZERO) for m in fam["models"]), ZERO)
            self.table.upsert(key, {
                "model": (f"{fam['family']}  S {sharpe:+.2f}", "strong"), "weight": (f"{float(w):.0%}", "strong"),
                "budget": (fmt_money(Decimal(fam["budget"])), "strong"), "change": self._change(fam["family"], w),
                "use": ("", None), "exposure": (fmt_money(fx), None if fx else "muted"),
            })
            for mid, m in sorted(fam["models"].items(), key=lambda kv: kv[1]["stage"] != "live"):
                mkey = f"model:{mid}"
                seen.add(mkey)
                budget = Decimal(m["budget"])
                x = exposure.get(mid, ZERO)
                total_x += x
                use = x / budget if budget else ZERO
                sw = Decimal(m["stage_weight"])
                self.table.upsert(mkey, {
                    "model": (f"  {mid} ({m['stage']})", "canary" if m["stage"] == "canary" else None),
                    "weight": ("pin" if m.get("manual") else f"{float(sw):.0%}",
                               "warning" if m.get("manual") else "muted"),
                    "budget": (fmt_money(budget), None), "change": ("", None),
                    "exposure": (fmt_money(x), None if x else "muted"),
                    "use": (f"{float(use):.0%}", "warning" if use > 1 else ("muted" if not x else None)),
                })
        idle = lc.idle if lc is not None else ZERO
        committed = sum(engine.weights.values(), ZERO)  # Σ family weight × stage weight (lifecycle.committed)
        seen.add("Σ")
        self.table.upsert("Σ", {
            "model": (f"Σ capital (idle {float(idle):.0%})", "strong"),
            "weight": (f"{float(committed):.0%}", "warning" if committed > 1 else "muted"),
            "budget": (fmt_money(capital), "strong"), "change": ("", None),
            "exposure": (fmt_money(total_x), "strong"),
            "use": (f"{float(total_x / capital):.0%}" if capital else "", "muted"),
        })
        for key in list(self.table.row_keys()):
            if key not in seen:
                self.table.drop(key)
