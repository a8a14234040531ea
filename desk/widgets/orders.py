"""The orders pane: working and recent orders, newest first, status
coloured by tone, filterable with ``/``.

Driven by order events (not sampled): the app calls :meth:`order_changed`
with the engine's ``Order`` for each order event as soon as the event is
published, then :meth:`end_batch` once per batch of the same event-loop
turn. All working orders are kept, and the newest finished ones up to
:data:`MAX_ROWS` rows in all.

Columns, the most important left (at 80 columns, pane maximized, the
first seven show; in the roomy layout the first six): status (long ones
abbreviated: ``PARTIAL``, ``CANCELING``, ``UPDATING``, ``INIT``), side,
quantity, type (``MKT``, ``LMT``, ``LMT-PO`` post-only, ``STP``,
``STP-LMT``, ``TRAIL``), instrument, price (the limit, else the average
fill), trigger (a stop's trigger; a trailing stop without one yet shows its
offset, ``Δ50bp``), time in force, link, model (``NET`` for an order netted
for several models), filled, time, order id, reason. The link column marks
contingencies: ``↳<parent>`` for a child of an OTO (a bracket leg, the
parent id without the desk prefix), ``OCO``/``OTO`` for members of a list,
``RO`` for reduce-only. A DENIED order's reason starts with its denial
code (``MIN_NOTIONAL: …``).

The filter is a case-insensitive substring over the order id, model,
instrument, side, type, time in force, link, denial code and status; a
leading ``!`` inverts it. ``enter`` keeps the filter and returns to the
table, ``escape`` clears and closes it.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input

from core.identifiers import DESK_ORDER_PREFIX
from desk.widgets.common import STATUS_TONE, DeskTable, fmt_clock, fmt_step

#: orders kept in the pane: every working order, then the newest finished
#: ones up to this many rows in all (a constant row count in steady state)
MAX_ROWS = 200
MAX_FINISHED = MAX_ROWS

COLUMNS: list[tuple[str, str, int | None, bool]] = [
    ("status", "Status", 9, False),
    ("side", "Side", 4, False),
    ("qty", "Qty", 10, True),
    ("type", "Type", 7, False),
    ("iid", "Instrument", 12, False),
    ("price", "Price", 10, True),
    ("trigger", "Trigger", 10, True),
    ("tif", "TIF", 3, False),
    ("link", "Link", 14, False),
    ("model", "Model", 13, False),
    ("filled", "Filled", 10, True),
    ("time", "Time", 8, False),
    ("id", "Order ID", 16, False),
    ("reason", "Reason", 30, False),
]

#: statuses too long for the status column, shortened
STATUS_SHORT: dict[str, str] = {
    "INITIALIZED": "INIT", "PARTIALLY_FILLED": "PARTIAL", "PENDING_CANCEL": "CANCELING",
    "PENDING_UPDATE": "UPDATING",
}

#: order type -> its abbreviation in the type column
TYPE_SHORT: dict[str, str] = {
    "MARKET": "MKT", "LIMIT": "LMT", "STOP_MARKET": "STP", "STOP_LIMIT": "STP-LMT",
    "TRAILING_STOP_MARKET": "TRAIL",
}

#: the desk's ClientOrderId prefix, left out of the parent marker
_DESK_PREFIX = DESK_ORDER_PREFIX + "-"


def type_text(o: Any) -> str:
    """The type column: ``MKT``, ``LMT`` (``LMT-PO`` when post-only),
    ``STP``, ``STP-LMT`` or ``TRAIL``."""
    t = TYPE_SHORT.get(o.order_type.value, o.order_type.value)
    return t + "-PO" if getattr(o, "post_only", False) else t


def link_text(o: Any) -> str:
    """The link column: ``↳<parent>`` for an OTO child (a bracket leg),
    ``OCO`` or ``OTO`` for a member of a list, ``RO`` for reduce-only,
    separated by spaces."""
    parts = []
    parent = getattr(o, "parent_order_id", None)
    if parent:
        parts.append("↳" + (parent[len(_DESK_PREFIX):] if parent.startswith(_DESK_PREFIX) else parent))
    cont = getattr(o, "contingency", None)
    cont_value = getattr(cont, "value", cont)
    if cont_value in ("OCO", "OTO"):
        parts.append(cont_value)
    if getattr(o, "reduce_only", False):
        parts.append("RO")
    return " ".join(parts)


class OrdersPane(Vertical):
    """Pane 2: orders, newest first."""

    BORDER_TITLE = "2 Orders"
    ALLOW_MAXIMIZE = True
    BINDINGS = [Binding("escape", "close_filter", "Close filter", show=False, id="close-filter")]

    def __init__(self, *, id: str | None = "orders-pane") -> None:
        super().__init__(id=id, classes="pane")
        self.table = DeskTable(id="orders-table")
        self.filter_input = Input(placeholder="filter: id, model, instrument, side, type, status, code (!text inverts)",
                                  id="orders-filter")
        self.query_text = ""
        self._orders: dict[str, Any] = {}
        self._seq: dict[str, int] = {}
        self._next = 0
        self._newest: list[str] = []
        self._shown: list[str] = []
        self._texts: dict[str, Any] = {}
        self._raw: dict[str, dict[str, tuple[str, str | None]]] = {}
        #: denial code of each DENIED order (from its OrderDenied event)
        self.denial_codes: dict[str, str] = {}
        #: venues whose working orders are unknown until reconciled (DEGRADED or DISCONNECTED)
        self.unknown_venues: set[str] = set()
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

        def px(v: Any) -> str:
            return fmt_step(v, tick) if tick is not None else str(v)

        status = o.status.value
        price = o.price if o.price is not None else o.avg_px
        trigger = getattr(o, "trigger_price", None)
        if trigger is not None:
            trig = px(trigger)
        elif getattr(o, "trailing_offset", None) is not None:
            bp = getattr(o.trailing_offset_type, "value", "") == "BASIS_POINTS"
            trig = f"Δ{o.trailing_offset.normalize():f}{'bp' if bp else ''}"
        else:
            trig = ""
        code = self.denial_codes.get(o.client_order_id)
        reason = f"{code}: {o.reason}" if code and status == "DENIED" else o.reason
        shown = (STATUS_SHORT.get(status, status), STATUS_TONE.get(status))
        if o.is_working and o.instrument_id.venue in self.unknown_venues:
            # its venue failed: what the venue did with it is unknown until reconciled (issue 6, "Isolation")
            shown = ("UNKNOWN", "warning")
            reason = f"{o.instrument_id.venue} not reconciled; last known {status}"
        return {
            "status": shown,
            "side": (o.side.value, "buy" if o.side.value == "BUY" else "sell"),
            "qty": (q(o.quantity), None),
            "type": (type_text(o), None),
            "iid": (str(o.instrument_id), None),
            "price": ("—" if price is None else px(price), "muted" if price is None or o.price is None else None),
            "trigger": (trig, "warning" if trig else None),
            "tif": (o.time_in_force.value, "muted"),
            "link": (link_text(o), "muted"),
            "model": (o.model_id, "strong" if o.model_id == "NET" else None),
            "filled": (q(o.filled_qty), "muted" if not o.filled_qty else None),
            "time": (fmt_clock(o.ts_init), "muted"),
            "id": (o.client_order_id, "muted"),
            "reason": (reason, "rejected" if code and status == "DENIED" else "muted"),
        }

    def _matches(self, o: Any) -> bool:
        q = self.query_text.strip().lower()
        if not q:
            return True
        invert = q.startswith("!")
        q = q[1:] if invert else q
        hay = " ".join((o.client_order_id, o.model_id, str(o.instrument_id), o.side.value,
                        o.order_type.value, type_text(o), o.time_in_force.value, link_text(o),
                        self.denial_codes.get(o.client_order_id, ""), o.status.value)).lower()
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
        cells = self._cells(order)
        old_raw = self._raw.get(coid)
        old_texts = self._texts.get(coid)
        if old_raw is None or old_texts is None:
            self._texts[coid] = self.table.render_cells(cells)
        else:  # keep the Text of an unchanged cell: put_row then leaves that cell alone
            changed = {col: cell for col, cell in cells.items() if old_raw.get(col) != cell}
            if changed:
                self._texts[coid] = {**old_texts, **self.table.render_cells(changed)}
        self._raw[coid] = cells

    def set_unknown_venues(self, venues: set[str]) -> None:
        """Show the working orders of ``venues`` as ``UNKNOWN`` (their venue
        is DEGRADED or DISCONNECTED and not reconciled since), the others as
        their status; rewrites only the rows of venues that changed."""
        changed = venues ^ self.unknown_venues
        if not changed:
            return
        self.unknown_venues = set(venues)
        for o in list(self._orders.values()):
            if o.is_working and o.instrument_id.venue in changed:
                self.order_changed(o)
        self.end_batch()

    def order_denied(self, client_order_id: str, code: str) -> None:
        """Remember the denial code of an order (its ``OrderDenied`` event),
        shown at the start of its reason (an order already shown is
        re-rendered at the next :meth:`end_batch`)."""
        self.denial_codes[client_order_id] = code
        known = self._orders.get(client_order_id)
        if known is not None:
            self.order_changed(known)

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
            self._raw.pop(coid, None)
            self.denial_codes.pop(coid, None)
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
