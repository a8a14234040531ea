"""The alerts pane: the engine's alerts (rail denials, rejections, fit
failures, engine failures), governance actions (halt, resume, pause and
resume of a model, with who and why) and model fits, newest at the bottom,
at engine-clock time. Driven by events, not sampled.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog

from desk.widgets.common import Toned, fmt_clock, tone_classes

#: lines kept in the pane
MAX_LINES = 1000

LEVEL_TONE = {"INFO": "info", "WARNING": "warning", "ERROR": "error", "GOV": "governance"}


class AlertLog(Toned, RichLog):
    """The log widget of the alerts pane."""

    TONE_PREFIX = "alert-log"
    COMPONENT_CLASSES: ClassVar[set[str]] = RichLog.COMPONENT_CLASSES | tone_classes("alert-log")


class AlertsPane(Vertical):
    """Pane 6: alerts and governance actions."""

    BORDER_TITLE = "6 Alerts"
    ALLOW_MAXIMIZE = True

    def __init__(self, *, id: str | None = "alerts-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.log_view = AlertLog(id="alerts-log", max_lines=MAX_LINES, wrap=False, markup=False,
                                 auto_scroll=True)
        self.count = 0
        self.lines: list[tuple[str, str, str]] = []

    def compose(self) -> ComposeResult:
        """The log."""
        yield self.log_view

    @property
    def focus_target(self) -> AlertLog:
        """The widget that ``6`` focuses."""
        return self.log_view

    def add(self, ts_ns: int, level: str, code: str, message: str) -> None:
        """Append one line: time, level, code, message."""
        self.count += 1
        self.lines.append((level, code, message))
        del self.lines[:-MAX_LINES]
        lv = self.log_view
        tone = LEVEL_TONE.get(level, "info")
        lv.write(Text.assemble(
            (fmt_clock(ts_ns), lv.tone_style("muted")), " ",
            (f"{level:<7}", lv.tone_style(tone)), " ",
            (code, lv.tone_style("strong")), " ",
            (message, lv.tone_style(None)),
            no_wrap=True, end="",
        ))
        self.border_subtitle = f"{self.count} total"

    def add_event(self, ev: Any) -> None:
        """Turn an engine event into a line when it is one the operator
        should see (alerts, governance actions, model fits)."""
        t = ev.type
        if t == "AlertRaised":
            self.add(ev.ts_event, ev.level, ev.code, ev.message)
        elif t == "TradingStateChanged":
            self.add(ev.ts_event, "GOV", ev.state, f"{ev.previous} → {ev.state} by {ev.who}: {ev.reason}")
        elif t == "ModelStateChanged":
            self.add(ev.ts_event, "GOV", f"MODEL_{ev.state}", f"{ev.model_id} {ev.state} by {ev.who}: {ev.reason}")
        elif t == "ModelFitted":
            self.add(ev.ts_event, "INFO", "MODEL_FITTED",
                     f"{ev.model_id} {ev.instrument_id}: {ev.n_iter} iterations, "
                     f"log-likelihood {float(ev.log_likelihood):.1f}{'' if ev.converged else ' (not converged)'}")
