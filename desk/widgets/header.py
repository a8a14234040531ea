"""The header line and the kill-switch banner.

The header shows PAPER/LIVE (LIVE in red: a venue that trades real money),
the market, the engine clock as UTC (replay time, never wall time), the
speed, the trading state, the engine's status, a few counters and each
venue's connection state (``core.recovery.VenueSession.status``), coloured
by what it means: ``CONNECTED`` green, ``DEGRADED``/``THROTTLED until`` and
unknown submits or queued cancels yellow, ``DISCONNECTED``/``BANNED until``
and ``STORE FAILED`` red. The banner is a full-width line under it: red while
``HALTED``, dark yellow while ``REDUCING`` (reduce-only), and solid yellow
"press ctrl+k again to halt" while the kill switch is armed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.widgets import Static

from desk.widgets.common import Toned, fmt_datetime, fmt_speed, tone_classes


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    """What the header shows.

    Attributes:
        mode: ``PAPER`` or ``LIVE``.
        market: e.g. ``SIM`` or ``replay BTCUSDT``.
        clock_ns: the engine clock (UTC ns).
        speed: bar steps per second, None for max.
        state: the trading state (``ACTIVE``, ``REDUCING``, ``HALTED``).
        status: the engine's status (``warming up``, ``running``, …).
        bars: bars processed.
        working: working orders.
        venue: the venues' connection states and what blocks them, until
            when (``BINANCE CONNECTED``, ``BINANCE THROTTLED until …``,
            ``IBKR DISCONNECTED since …``, unknown submits, queued cancels),
            ``"; "``-separated; empty for the paper venue when all is well.
    """

    mode: str
    market: str
    clock_ns: int
    speed: float | None
    state: str
    status: str
    bars: int
    working: int
    venue: str = ""


#: words of a venue status part and the tone they give it (the first found wins)
_VENUE_TONES: tuple[tuple[str, str], ...] = (
    ("STORE FAILED", "halted"), ("HALTED", "halted"), ("BANNED", "halted"), ("DISCONNECTED", "halted"),
    ("THROTTLED", "reducing"), ("DEGRADED", "reducing"), ("unknown", "reducing"), ("queued", "reducing"),
    ("CONNECTED", "active"), (" OK", "active"),
)


def venue_tone(part: str) -> str:
    """The header tone of one ``"; "``-separated part of the venue status:
    ``halted`` (red) for ``STORE FAILED``, a venue ``HALTED`` (per-venue
    halt), ``BANNED`` and ``DISCONNECTED``;
    ``reducing`` (yellow) for ``THROTTLED``, ``DEGRADED``, unknown submits and
    queued cancels; ``active`` (green) for ``CONNECTED`` and a venue without a
    connection state of its own that is fine (``VA OK``); ``reducing`` for
    anything else (a state the header does not know is worth a look)."""
    for word, tone in _VENUE_TONES:
        if word in part:
            return tone
    return "reducing"


class DeskHeader(Toned, Static):
    """One line: ``PAPER │ SIM │ 2025-01-01 03:12:00 UTC │ 10/s │ ACTIVE │ …``."""

    TONE_PREFIX = "desk-header"
    COMPONENT_CLASSES: ClassVar[set[str]] = tone_classes("desk-header")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.info: HeaderInfo | None = None

    def show(self, info: HeaderInfo) -> None:
        """Render ``info`` (nothing is redrawn when it did not change)."""
        if info == self.info:
            return
        self.info = info
        self.update(self._render_info(info), layout=False)

    def retone(self) -> None:
        """Re-render with the current theme's colours."""
        self.clear_tones()
        if self.info is not None:
            self.update(self._render_info(self.info), layout=False)

    def on_mount(self) -> None:
        """Follow theme changes."""
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.call_after_refresh(self.retone))

    def on_resize(self) -> None:
        """Re-render for the new width (compact below 110 columns)."""
        if self.info is not None:
            self.update(self._render_info(self.info), layout=False)

    def _render_info(self, i: HeaderInfo) -> Text:
        state_tone = {"ACTIVE": "active", "REDUCING": "reducing", "HALTED": "halted"}.get(i.state, "strong")
        # what needs a look (a venue halted, down, degraded, throttled...) sits right after the desk's state, so
        # a narrow terminal never cuts it off; venues that are fine go last
        parts_v = [p for p in i.venue.split("; ") if p]
        fine = [p for p in parts_v if venue_tone(p) == "active"]
        halts = "; ".join(p for p in parts_v if p not in fine)
        rest = "; ".join(fine)
        if 0 < self.size.width < 110:
            sep = ("│", self.tone_style("muted"))
            return Text.assemble(
                (f" {i.mode} ", self.tone_style("live" if i.mode == "LIVE" else "paper")), sep,
                (i.market, self.tone_style("strong")), sep,
                (fmt_datetime(i.clock_ns)[:-4], self.tone_style(None)), sep,
                (fmt_speed(i.speed), self.tone_style("strong")), sep,
                (f" {i.state} ", self.tone_style(state_tone)), sep,
                *((*self._venue_parts(halts, compact=True), sep) if halts else ()),
                *(((i.status, self.tone_style("muted")), sep) if not halts else ()),  # (80 columns: room for it)
                (f"w {i.working}", self.tone_style(None)),
                *((sep, *self._venue_parts(rest, compact=True)) if rest else ()),
                no_wrap=True, overflow="ellipsis",
            )
        sep = (" │ ", self.tone_style("muted"))
        parts: list[tuple[str, object]] = [
            (f" {i.mode} ", self.tone_style("live" if i.mode == "LIVE" else "paper")), sep,
            (i.market, self.tone_style("strong")), sep,
            (fmt_datetime(i.clock_ns), self.tone_style(None)), sep,
            ("speed ", self.tone_style("muted")), (fmt_speed(i.speed), self.tone_style("strong")), sep,
            (f" {i.state} ", self.tone_style(state_tone)), sep,
            *((*self._venue_parts(halts, compact=False), sep) if halts else ()),
            (i.status, self.tone_style("muted")), sep,
            ("bars ", self.tone_style("muted")), (f"{i.bars:,}", self.tone_style(None)), sep,
            ("working ", self.tone_style("muted")), (str(i.working), self.tone_style(None)),
        ]
        if rest:  # each venue's connection state, and what blocks it until when
            parts += [sep, *self._venue_parts(rest, compact=False)]
        return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]

    def _venue_parts(self, venue: str, compact: bool) -> list[tuple[str, object]]:
        """The venue status split at ``"; "``, each part in its tone
        (:func:`venue_tone`), separated by a muted ``·``."""
        out: list[tuple[str, object]] = []
        for n, part in enumerate(p for p in venue.split("; ") if p):
            if n:
                out.append(("·" if compact else " · ", self.tone_style("muted")))
            out.append((part if compact else f" {part} ", self.tone_style(venue_tone(part))))
        return out


class HaltBanner(Static):
    """The full-width banner: class ``-halted`` (red) while halted,
    ``-reducing`` (warning colours, dark yellow with yellow text) while
    reduce-only, ``-armed`` (solid yellow) while the kill switch waits for
    its second press; hidden otherwise."""

    _text = ""

    def set_state(self, halted: bool, armed: bool, halt_keys: str, reason: str = "",
                  reducing: bool = False) -> None:
        """Show the banner for the given state (armed shows over the others)."""
        self.set_class(halted and not armed, "-halted")
        self.set_class(reducing and not halted and not armed, "-reducing")
        self.set_class(armed, "-armed")
        why = f" — {reason}" if reason else ""
        if armed:
            text = f"KILL SWITCH ARMED: press {halt_keys} again to halt (disarms in 2 s)"
        elif halted:
            text = f"HALTED{why} — resume: ctrl+p → Resume trading"
        elif reducing:
            text = f"REDUCING: only orders that reduce exposure pass{why} — ctrl+p → Resume trading"
        else:
            text = ""
        if text != self._text:
            self._text = text
            self.update(text, layout=False)
