"""The alerts pane: the engine's alerts (rail denials, rejections, fit
failures, engine failures), governance actions (halt, reduce-only, flatten
and its per-position report, resume, pause and resume of a model, with who
and why) and model fits, newest at the bottom, at engine-clock time.
Driven by events, not sampled.

Repeated denials do not flood the pane: the alerts of one denial code
(``DENIED_<CODE>``, one per order the rails refused) share one line, which
moves to the bottom on each repeat and reads ``DENIED_MIN_NOTIONAL ×12,
last: <the latest message>`` at the time of the latest. Every other alert
and every governance line (``GOV``) keeps its own line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from desk.widgets.common import Toned, fmt_clock, tone_classes

#: lines kept in the pane
MAX_LINES = 1000

LEVEL_TONE = {"INFO": "info", "WARNING": "warning", "ERROR": "error", "GOV": "governance"}

#: alert codes that collapse into one line per code when they repeat
COLLAPSE_PREFIX = "DENIED_"


@dataclass(eq=False, slots=True)
class AlertLine:
    """One line of the pane (a collapsed denial counts its repeats).

    Attributes:
        ts_ns: engine time of the latest occurrence.
        level: ``INFO``, ``WARNING``, ``ERROR`` or ``GOV``.
        code: the alert code (``DENIED_MIN_NOTIONAL``, ``HALTED`` …).
        message: the latest message.
        count: occurrences folded into this line.
        strip: the rendered line (None until drawn, or after a change).
    """

    ts_ns: int
    level: str
    code: str
    message: str
    count: int = 1
    strip: Strip | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The line as plain text."""
        head = f"{fmt_clock(self.ts_ns)} {self.level:<7} {self.code}"
        if self.count > 1:
            return f"{head} ×{self.count}, last: {self.message}"
        return f"{head} {self.message}"


class AlertLog(Toned, ScrollView):
    """The log widget of the alerts pane: a line-API view over
    :class:`AlertLine` objects, so that a collapsed line can change and
    move without rewriting the others. Follows the newest line while the
    view is at the bottom."""

    DEFAULT_CSS = """
    AlertLog {
        background: $surface;
        color: $foreground;
        overflow-y: scroll;
        &:focus { background-tint: $foreground 5%; }
    }
    """
    TONE_PREFIX = "alert-log"
    COMPONENT_CLASSES: ClassVar[set[str]] = tone_classes("alert-log")

    def __init__(self, *, id: str | None = None, max_lines: int = MAX_LINES) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self.entries: list[AlertLine] = []
        self._widest = 0

    def on_mount(self) -> None:
        """Follow theme changes."""
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.call_after_refresh(self.retone))

    def retone(self) -> None:
        """Re-render every line in the current theme's colours."""
        self.clear_tones()
        for entry in self.entries:
            entry.strip = None
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.clear_tones()
        for entry in self.entries:
            entry.strip = None

    def append(self, entry: AlertLine) -> None:
        """Add ``entry`` at the bottom (or move it there when shown)."""
        follow = self.scroll_offset.y >= self.max_scroll_y or not self.size
        if self.entries and self.entries[-1] is entry:
            pass
        else:
            if entry in self.entries:
                self.entries.remove(entry)
            self.entries.append(entry)
            if len(self.entries) > self.max_lines:
                del self.entries[: len(self.entries) - self.max_lines]
        entry.strip = None
        self._widest = max(self._widest, cell_len(entry.text))
        self.virtual_size = Size(self._widest, len(self.entries))
        self.refresh()
        if follow:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def _strip(self, entry: AlertLine) -> Strip:
        if entry.strip is None:
            tone = LEVEL_TONE.get(entry.level, "info")
            parts: list[Any] = [
                (fmt_clock(entry.ts_ns), self.tone_style("muted")), " ",
                (f"{entry.level:<7}", self.tone_style(tone)), " ",
                (entry.code, self.tone_style("strong")),
            ]
            if entry.count > 1:
                parts += [(f" ×{entry.count}", self.tone_style("warning")), (", last: ", self.tone_style("muted"))]
            else:
                parts.append(" ")
            parts.append(entry.message)
            text = Text.assemble(*parts, no_wrap=True, end="")
            entry.strip = Strip(list(text.render(self.app.console)), text.cell_len)
        return entry.strip

    def render_line(self, y: int) -> Strip:
        """One line of the view (line API)."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        idx = scroll_y + y
        if idx >= len(self.entries):
            return Strip.blank(width, self.rich_style)
        return self._strip(self.entries[idx]).crop_extend(scroll_x, scroll_x + width, self.rich_style) \
            .apply_style(self.rich_style)

    def plain_lines(self) -> list[str]:
        """Every line as plain text, top first."""
        return [e.text for e in self.entries]


class AlertsPane(Vertical):
    """Pane 6: alerts and governance actions."""

    BORDER_TITLE = "6 Alerts"
    ALLOW_MAXIMIZE = True

    def __init__(self, *, id: str | None = "alerts-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.log_view = AlertLog(id="alerts-log", max_lines=MAX_LINES)
        self.count = 0
        #: every alert added, uncollapsed: (level, code, message)
        self.lines: list[tuple[str, str, str]] = []
        self._collapsed: dict[str, AlertLine] = {}

    def compose(self) -> ComposeResult:
        """The log."""
        yield self.log_view

    @property
    def focus_target(self) -> AlertLog:
        """The widget that ``6`` focuses."""
        return self.log_view

    def add(self, ts_ns: int, level: str, code: str, message: str) -> None:
        """Append one line: time, level, code, message. A denial
        (``DENIED_<CODE>``) whose code is already shown updates that line
        (count, time, latest message) and moves it to the bottom."""
        self.count += 1
        self.lines.append((level, code, message))
        del self.lines[:-MAX_LINES]
        entry = self._collapsed.get(code) if code.startswith(COLLAPSE_PREFIX) else None
        if entry is not None and entry in self.log_view.entries:
            entry.count += 1
            entry.ts_ns = ts_ns
            entry.level = level
            entry.message = message
        else:
            entry = AlertLine(ts_ns, level, code, message)
            if code.startswith(COLLAPSE_PREFIX):
                self._collapsed[code] = entry
        self.log_view.append(entry)
        self.border_subtitle = f"{self.count} total"

    def shown_lines(self) -> list[str]:
        """The pane's lines as plain text, top first (collapsed as shown)."""
        return self.log_view.plain_lines()

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
