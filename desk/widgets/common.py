"""Shared pieces of the panes: number and time formatting, theme-driven
"tones" (colours from component classes styled in ``themes/desk.tcss``),
and :class:`DeskTable`, a ``DataTable`` that updates only changed cells.

A tone is a name such as ``up``, ``down``, ``filled`` or ``halted``. A widget
that uses tones declares component classes ``<prefix>--<tone>``; the
stylesheet gives each a colour from a theme variable
(``DeskTable > .desk-table--up { color: $pnl-up; }``), so no colour is
written in Python and a theme change re-colours everything.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar, Iterable, Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

#: every tone a widget may use (each becomes a component class)
TONES: tuple[str, ...] = (
    "up", "down", "muted", "strong", "working", "filled", "canceled", "rejected", "pending",
    "buy", "sell", "active", "paused", "halted", "reducing", "info", "warning", "error",
    "governance", "paper", "live", "canary",
)

#: order status -> tone
STATUS_TONE: dict[str, str] = {
    "INITIALIZED": "pending", "SUBMITTED": "pending", "PENDING_UPDATE": "pending", "PENDING_CANCEL": "pending",
    "ACCEPTED": "working", "TRIGGERED": "working", "PARTIALLY_FILLED": "working",
    "FILLED": "filled", "CANCELED": "canceled", "EXPIRED": "canceled",
    "DENIED": "rejected", "REJECTED": "rejected",
}

Cell = tuple[str, str | None]
"""A table cell: its text and its tone (or None)."""


# ------------------------------------------------------------------ formats
def fmt_money(value: Decimal | float, signed: bool = False, places: int = 2) -> str:
    """``1,234.57``; with ``signed`` also ``+1,234.57`` / ``-0.12`` (a zero is
    ``0.00``). Decimals are rounded half-even to ``places``."""
    q = Decimal(1).scaleb(-places)
    d = (value if isinstance(value, Decimal) else Decimal(repr(float(value)))).quantize(q, ROUND_HALF_EVEN)
    if d == 0:
        d = abs(d)
    text = f"{d:,.{places}f}"
    if signed and d > 0:
        text = "+" + text
    return text


def pnl_cell(value: Decimal | float, places: int = 2) -> Cell:
    """A signed money cell toned ``up``/``down`` (``muted`` at zero)."""
    text = fmt_money(value, signed=True, places=places)
    d = Decimal(text.replace(",", ""))
    return text, ("up" if d > 0 else "down" if d < 0 else "muted")


def fmt_step(value: Decimal, step: Decimal) -> str:
    """A quantity or price shown with the decimals of its step or tick
    (rounded down to the step, as the venue would)."""
    exp = step.normalize().as_tuple().exponent
    places = max(0, -int(exp)) if isinstance(exp, int) else 0
    q = Decimal(1).scaleb(-places)
    return f"{value.quantize(q, ROUND_DOWN):,.{places}f}"


def fmt_clock(ts_ns: int, seconds: bool = True) -> str:
    """Engine-clock time as UTC ``HH:MM:SS`` (or ``HH:MM``)."""
    dt = datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc)
    return dt.strftime("%H:%M:%S" if seconds else "%H:%M")


def fmt_datetime(ts_ns: int) -> str:
    """Engine-clock time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_speed(speed: float | None) -> str:
    """``10 bars/s`` style (``max`` for None); a step is one bar per instrument."""
    if speed is None:
        return "max"
    return f"{speed:g}/s"


# ------------------------------------------------------------------ tones
class Toned:
    """Mixin for widgets that colour text by tone. Subclasses set
    ``TONE_PREFIX`` and declare ``COMPONENT_CLASSES`` with
    :func:`tone_classes`."""

    TONE_PREFIX: ClassVar[str] = "desk-table"

    def tone_style(self, tone: str | None) -> Style:
        """The Rich style of a tone: the component class's colour (blended
        onto the widget's background when translucent) and text style."""
        if not tone:
            return Style.null()
        cache: dict[str, Style] = self.__dict__.setdefault("_tone_cache", {})
        style = cache.get(tone)
        if style is None:
            styles = self.get_component_styles(f"{self.TONE_PREFIX}--{tone}")  # type: ignore[attr-defined]
            base = self.background_colors[1]  # type: ignore[attr-defined]
            color = styles.color
            if color.a < 1:
                color = base + color
            bg = styles.background
            bgcolor = (base + bg).rich_color if bg.a > 0 else None
            style = Style(color=color.rich_color, bgcolor=bgcolor) + styles.text_style
            cache[tone] = style
        return style

    def clear_tones(self) -> None:
        """Forget cached tone styles (after a theme change)."""
        self.__dict__["_tone_cache"] = {}

    def toned(self, text: str, tone: str | None, justify: str = "left") -> Text:
        """``text`` as a Rich Text in ``tone``."""
        return Text(text, style=self.tone_style(tone), justify=justify, no_wrap=True, end="")  # type: ignore[arg-type]


def tone_classes(prefix: str) -> set[str]:
    """The component class names of every tone for ``prefix``."""
    return {f"{prefix}--{t}" for t in TONES}


class DeskTable(Toned, DataTable):
    """A DataTable for sampled or event-driven figures.

    Columns are declared once with :meth:`set_columns`; rows are written
    with :meth:`upsert`, which adds a missing row and otherwise calls
    ``update_cell`` only for the cells whose text or tone changed (the stock
    DataTable redraws on every update, DESIGN.md section 7). A theme change
    re-renders every cell in the new colours.
    """

    TONE_PREFIX = "desk-table"
    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | tone_classes("desk-table")

    def __init__(self, *, id: str | None = None, classes: str | None = None, cursor: bool = True) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row" if cursor else "none",
                         show_cursor=cursor, zebra_stripes=False, cursor_foreground_priority="renderable")
        self._raw: dict[str, dict[str, Cell]] = {}
        self._rows_put: dict[str, dict[str, Text]] = {}
        self._right: dict[str, bool] = {}

    def on_mount(self) -> None:
        """Follow theme changes."""
        self.app.theme_changed_signal.subscribe(self, self._on_theme_changed)

    #: rendered cells kept across updates (see ``_render_cell``)
    _STABLE_CACHE_MAX = 20_000

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> Any:
        """Render a cell, reusing the rendering of the same cell object.

        The stock DataTable keys its cell cache on a table-wide update
        counter, so one ``update_cell`` re-renders every visible cell
        (DESIGN.md section 7). Here a data cell is rendered once per value
        object (``upsert`` makes a new object exactly when a cell's text or
        tone changes) and style inputs; when the same object shows at
        another row (rows shifting as new orders arrive) only the row and
        column mouse metadata of its segments is re-stamped.
        (Overrides a private method of textual 8.2.8, pinned exactly.)
        """
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cell = self._data[row_key][column_key]
        key = (id(cell), base_style, width, cursor, hover, self._show_hover_cursor, self._pseudo_class_state)
        cache: dict[Any, Any] = self.__dict__.setdefault("_stable_cells", {})
        hit = cache.get(key)
        if hit is not None and hit[0] is cell:
            if hit[1] == (row_index, column_index):
                return hit[2]
            meta = Style.from_meta({"row": row_index, "column": column_index})
            lines = [[Segment(seg.text, (seg.style or Style.null()) + meta, seg.control) for seg in line]
                     for line in hit[2]]
            cache[key] = (cell, (row_index, column_index), lines)
            return lines
        lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        if len(cache) >= self._STABLE_CACHE_MAX:
            cache.clear()
        cache[key] = (cell, (row_index, column_index), lines)
        return lines

    def _on_theme_changed(self, _theme: Any) -> None:
        self.call_after_refresh(self.retone)

    def retone(self) -> None:
        """Re-render every cell with the current theme's colours."""
        self.clear_tones()
        self.__dict__["_stable_cells"] = {}
        for row_key, cells in self._raw.items():
            for col, cell in cells.items():
                self.update_cell(row_key, col, self._render(col, cell))

    def set_columns(self, columns: Sequence[tuple[str, str, int | None, bool]]) -> None:
        """Declare columns as ``(key, label, width, right_aligned)``."""
        for key, label, width, right in columns:
            self._right[key] = right
            self.add_column(Text(label, justify="right" if right else "left"), width=width, key=key)

    def _render(self, col: str, cell: Cell) -> Text:
        return self.toned(cell[0], cell[1], "right" if self._right.get(col) else "left")

    def render_cells(self, cells: dict[str, Cell]) -> dict[str, Text]:
        """The Text of each cell (for :meth:`put_row`)."""
        return {col: self._render(col, cell) for col, cell in cells.items()}

    def put_row(self, key: str, texts: dict[str, Text]) -> None:
        """Add the row ``key`` or set its cells to ``texts`` (objects from
        :meth:`render_cells`), calling ``update_cell`` only for cells whose
        object changed. Rows written this way are not re-toned by
        :meth:`retone`; their owner re-renders them."""
        if key not in self._rows_put:
            self._rows_put[key] = dict(texts)
            self.add_row(*(texts.get(c, Text("")) for c in self._right), key=key)
            return
        old = self._rows_put[key]
        for col, text in texts.items():
            if old.get(col) is not text:
                old[col] = text
                self.update_cell(key, col, text)

    def pop_row(self, key: str) -> None:
        """Remove a row written with :meth:`put_row`."""
        if self._rows_put.pop(key, None) is not None:
            self.remove_row(key)

    def has_row(self, key: str) -> bool:
        """True when a row with ``key`` is shown."""
        return key in self._raw

    def upsert(self, key: str, cells: dict[str, Cell]) -> bool:
        """Add the row ``key`` or update its changed cells. Returns True when
        the row was added."""
        old = self._raw.get(key)
        if old is None:
            self._raw[key] = dict(cells)
            self.add_row(*(self._render(c, cells.get(c, ("", None))) for c in self._right), key=key)
            return True
        for col, cell in cells.items():
            if old.get(col) != cell:
                old[col] = cell
                self.update_cell(key, col, self._render(col, cell))
        return False

    def drop(self, key: str) -> None:
        """Remove the row ``key`` if shown."""
        if self._raw.pop(key, None) is not None:
            self.remove_row(key)

    def drop_all(self) -> None:
        """Remove every row (columns stay)."""
        self._raw.clear()
        self._rows_put.clear()
        self.clear()

    def row_keys(self) -> Iterable[str]:
        """Keys of the rows shown (insertion order)."""
        return list(self._raw)

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None."""
        if not self._raw or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        from textual.coordinate import Coordinate

        return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
