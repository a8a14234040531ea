"""The policy in force, on screen: a modal with one row per governance
policy rule (rule, figure and scope, comparison, threshold, window, action,
target, last value, status, last fired and how often).

The app pushes :class:`PolicyScreen` from a key or a palette command. It
reads the rows through a provider so the same screen serves the embedded
engine (a :class:`core.policy.PolicyEngine`) and an attached TUI (a callable
returning the daemon's rows). The table refreshes every ``refresh_s``
seconds of wall time and changes only the cells that changed (DESIGN.md
section 7: a DataTable redraws its whole visible area on each update).
``escape`` dismisses it; the kill switch (an App priority binding)
stays live over it.
"""

from __future__ import annotations

from typing import Any, Callable, Union

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

#: ``() -> (summary line, rows)``; rows as ``PolicyEngine.describe()``
PolicyProvider = Callable[[], tuple[str, list[dict[str, str]]]]

#: (column key, header) in display order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Rule"), ("figure", "Figure"), ("op", "Op"), ("threshold", "Threshold"), ("window", "Window"),
    ("action", "Action"), ("target", "Target"), ("last_value", "Last value"), ("status", "Status"),
    ("fired", "Fired"),
)

NO_POLICY = "No governance policy in force (name a policy file in the desk config: policy: policy.yaml)."
NOTE = ("Rules never resume anything: a halt from a rule stays until you resume. To change a rule, "
        "edit the file and reload (an invalid file is refused; this policy stays). escape closes.")


def cells(row: dict[str, str]) -> dict[str, str]:
    """The table's cells for one ``describe()`` row: the figure with its
    scope (``reject_rate venue=BINANCE``), the window as ``for 60 s`` and/or
    ``over 300 s``, the target (``each`` for the one that crossed, ``desk``
    for desk-wide actions), and Fired as ``<ISO time> ×<count>``."""
    figure = row.get("figure", "") + (f" {row['scope']}" if row.get("scope") else "")
    window = " ".join(p for p in (f"for {row['window']}" if row.get("window") else "",
                                  f"over {row['over']}" if row.get("over") else "") if p) or "at once"
    count = row.get("fired_count", "0")
    fired = f"{row['last_fired']} ×{count}" if row.get("last_fired") else "never"
    return {"name": row.get("name", ""), "figure": figure, "op": row.get("op", ""),
            "threshold": row.get("threshold", ""), "window": window, "action": row.get("action", ""),
            "target": row.get("target", "") or "desk", "last_value": row.get("last_value", "") or "—",
            "status": row.get("status", "") or "ok", "fired": fired}


def provider_for(policy_engine: Any) -> PolicyProvider:
    """A provider reading a :class:`core.policy.PolicyEngine` (its summary
    and ``describe()``)."""
    return lambda: (policy_engine.summary(), policy_engine.describe())


class PolicyScreen(ModalScreen[None]):
    """"Governance policy": the rules in force and how they stand.

    Args:
        source: a ``PolicyEngine``, a provider ``() -> (summary, rows)``, or
            None when no policy is configured (the screen says so).
        refresh_s: wall seconds between refreshes while open (0: never;
            :meth:`refresh_rows` refreshes on demand).
    """

    DEFAULT_CSS = """
    PolicyScreen #policy-table { height: auto; max-height: 16; }
    PolicyScreen.-short #policy-table { max-height: 9; }
    """
    BINDINGS = [Binding("escape", "close", "Close", id="policy-close")]
    AUTO_FOCUS = "#policy-table"

    def __init__(self, source: Union[PolicyProvider, Any, None], refresh_s: float = 1.0) -> None:
        super().__init__(classes="dialog-screen")
        if source is None or callable(source):
            self.provider: PolicyProvider | None = source
        else:
            self.provider = provider_for(source)
        self.refresh_s = refresh_s
        self._names: list[str] = []
        self._shown: dict[str, dict[str, str]] = {}

    def compose(self) -> ComposeResult:
        """Title, the policy's source and digest, the table, a note (no
        button: escape closes, so it fits 80×24)."""
        with Vertical(classes="dialog policy"):
            yield Static("Governance policy", classes="dialog-title")
            yield Static(NO_POLICY if self.provider is None else "", id="policy-summary", classes="dialog-body")
            if self.provider is not None:
                yield DataTable(id="policy-table", cursor_type="row", zebra_stripes=True)
            yield Static(NOTE if self.provider is not None else "escape closes.", classes="dialog-note")

    def on_mount(self) -> None:
        """Width (inline: the app's ``.dialog { width: 72 }`` outranks
        DEFAULT_CSS), columns, the first rows, and the refresh timer."""
        dialog = self.query_one(".dialog.policy")
        dialog.styles.width = 150
        dialog.styles.max_width = "100%"
        if self.provider is None:
            return
        table = self.query_one("#policy-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.refresh_rows()
        if self.refresh_s > 0:
            self.set_interval(self.refresh_s, self.refresh_rows)

    def refresh_rows(self) -> None:
        """Read the provider and update the table: only changed cells when
        the rules are the same, the whole table after a reload changed
        them."""
        if self.provider is None:
            return
        summary, rows = self.provider()
        self.query_one("#policy-summary", Static).update(
            f"{summary}" if rows else f"{summary}: no rules (the policy is empty)")
        table = self.query_one("#policy-table", DataTable)
        names = [r.get("name", "") for r in rows]
        new = {r.get("name", ""): cells(r) for r in rows}
        if names != self._names:
            table.clear()
            for name in names:
                table.add_row(*(new[name][k] for k, _ in COLUMNS), key=name)
        else:
            for name in names:
                old = self._shown.get(name, {})
                for key, _ in COLUMNS:
                    if old.get(key) != new[name][key]:
                        table.update_cell(name, key, new[name][key])
        self._names, self._shown = names, new

    def action_close(self) -> None:
        """Close the policy."""
        self.dismiss(None)
