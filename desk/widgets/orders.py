"""The orders pane: working and recent orders, newest first, status
coloured by tone, filterable with ``/``.

Driven by order events (not sampled): the app calls :meth:`order_changed`
with the engine's ``Order`` for each order event as soon as the event is
published, then :meth:`end_batch` once per batch of the same event-loop
turn. All working orders are kept, and the newest finished ones up to
:data:`MAX_ROWS` rows in all.

The filter is a case-insensitive substring over the order id, model,
instrument, side, type and status; a leading ``!`` inverts it. ``enter``
keeps the filter and returns to the table, ``escape`` clears and closes it.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input

from desk.widgets.common import STATUS_TONE, DeskTable, fmt_clock, fmt_step

#: orders kept in the pane: every working order, then the newest finished
#: ones up to this many rows in all (a constant row count in steady state)
MAX_ROWS = 200
MAX_FINISHED = MAX_ROWS

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("status", "Status", 16, False),
    ("side", "Side", 4, False),
    ("qty", "Qty", 10, True),
    ("iid", "Instrument", 12, False),
    ("price", "Price", 10, True),
    ("filled", "Filled", 10, True),
    ("time", "Time", 8, False),
    ("model", "Model", 13, False),
    ("id", "Order ID", 16, False),
    ("reason", "Reason", 30, False),
]


class OrdersPane(Vertical):
    """Pane 2: orders, newest first."""

    BORDER_TITLE = "2 Orders"
    ALLOW_MAXIMIZE = True
    BINDINGS = [Binding("escape", "close_filter", "Close filter", show=False, id="close-filter")]

    def __init__(self, *, id: str | None = "orders-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="orders-table")
        self.filter_input = Input(placeholder="filter: id, model, instrument, side, status (!text inverts)",
                                  id="orders-filter")
        self.query_text = ""
        self._orders: dict[str, Any] = {}
        self._seq: dict[str, int] = {}
        self._next = 0
        self._newest: list[str] = []
        self._shown: list[str] = []
        self._texts: dict[str, Any] = {}
        self._instruments: dict[Any, Any] = {}
        self._subtitle = ""

    def compose(self) -> ComposeResult:
        """The (hidden) filter input above the table."""
        yield self.filter_input
        yield self.table

    @property
    def focus_target(self) -> DeskTable:
        """The widget that ``2`` focuses."""
        return self.table

    def setup(self, engine: Any) -> None:
        """Columns, and the engine's existing orders (a continued run)."""
        self._instruments = engine.instruments
        self.table.set_columns(COLUMNS)
        for order in engine.orders.values():
            self.order_changed(order)
        self.end_batch()

    # ------------------------------------------------------------ rows
    def _cells(self, o: Any) -> dict[str, tuple[str, str | None]]:
        inst = self._instruments.get(o.instrument_id)
        tick = inst.tick_size if inst else None
        step = inst.step_size if inst else None

        def q(v: Any) -> str:
            return fmt_step(v, step) if step is not None else str(v)

        status = o.status.value
        price = o.price if o.price is not None else o.avg_px
        return {
            "time": (fmt_clock(o.ts_init), "muted"),
            "status": (status, STATUS_TONE.get(status)),
            "side": (o.side.value, "buy" if o.side.value == "BUY" else "sell"),
            "qty": (q(o.quantity), None),
            "iid": (str(o.instrument_id), None),
            "price": ("MKT" if price is None else (fmt_step(price, tick) if tick is not None else str(price)), None),
            "filled": (q(o.filled_qty), "muted" if not o.filled_qty else None),
            "model": (o.model_id, None),
            "id": (o.client_order_id, "muted"),
            "reason": (o.reason, "muted"),
        }

    def _matches(self, o: Any) -> bool:
        q = self.query_text.strip().lower()
        if not q:
            return True
        invert = q.startswith("!")
        q = q[1:] if invert else q
        hay = " ".join((o.client_order_id, o.model_id, str(o.instrument_id), o.side.value,
                        o.order_type.value, o.status.value)).lower()
        return (q in hay) != invert

    def order_changed(self, order: Any) -> None:
        """An order event was published for ``order``: show its new state
        (the table is rewritten at :meth:`end_batch`)."""
        coid = order.client_order_id
        if coid not in self._seq:
            self._seq[coid] = self._next
            self._next += 1
            self._newest.insert(0, coid)
        self._orders[coid] = order
        self._texts[coid] = self.table.render_cells(self._cells(order))

    def end_batch(self) -> None:
        """After a batch of events: drop the oldest finished orders beyond
        :data:`MAX_ROWS` rows in all, then write the rows, newest first.

        The rows are slots ``s0``, ``s1``, … holding the orders in display
        order; a new order shifts the contents down instead of inserting a
        row, so the table keeps its height (no layout pass) and only cells
        whose content changed are updated.
        """
        excess = len(self._newest) - MAX_ROWS
        finished = [c for c in reversed(self._newest) if not self._orders[c].is_working] if excess > 0 else []
        for coid in finished[:excess]:
            del self._orders[coid]
            del self._seq[coid]
            del self._texts[coid]
            self._newest.remove(coid)
        shown = [c for c in self._newest if self._matches(self._orders[c])]
        t = self.table
        for i, coid in enumerate(shown):
            t.put_row(f"s{i}", self._texts[coid])
        for i in range(len(shown), len(self._shown)):
            t.pop_row(f"s{i}")
        self._shown = shown
        working = sum(1 for o in self._orders.values() if o.is_working)
        sub = f"{working} working"
        if self.query_text:
            sub += f" · filter: {self.query_text}"
        if sub != self._subtitle:
            self._subtitle = sub
            self.border_subtitle = sub

    def shown_ids(self) -> list[str]:
        """Order ids in display order (top first)."""
        return list(self._shown)

    # ------------------------------------------------------------ filter
    def open_filter(self) -> None:
        """Show the filter input and focus it."""
        self.filter_input.add_class("-open")
        self.filter_input.focus()

    def set_filter(self, text: str) -> None:
        """Filter the rows (newest first)."""
        self.query_text = text
        self.end_batch()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Live filtering while typing."""
        event.stop()
        self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Keep the filter, back to the table."""
        event.stop()
        self.table.focus()

    def action_close_filter(self) -> None:
        """Clear and hide the filter."""
        if self.filter_input.has_class("-open"):
            self.filter_input.value = ""
            self.filter_input.remove_class("-open")
            self.set_filter("")
            self.table.focus()
