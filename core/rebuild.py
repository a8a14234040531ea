"""Recompute the store's materialized tables from its journal (issue 5, "The
store": the tables "can be rebuilt from the journal").

:func:`rebuild` replays the journal of a store and compares the result with
the ``orders``, ``fills``, ``positions``, ``balances``,
``governance_actions`` and ``alerts`` tables; with ``apply=True`` it
rewrites those tables from the journal in one transaction. ``desk
check-store`` runs it on a state dir.

How each table follows from the journal (the same rules the engine applies
live, so a store written by the engine rebuilds with no difference):

* ``orders``: ``OrderInitialized`` builds the :class:`~core.orders.Order`
  with all its order-type fields; every later order event goes through
  :meth:`Order.apply`. An order gets a row once an event after its
  ``OrderInitialized`` has applied (the engine records an order together
  with its denial or submit). ``step`` is read from the ClientOrderId
  (``NHD-<step hex>-...``, :func:`core.identifiers.make_client_order_id`).
* ``fills``: one row per trade id, from its first ``OrderFilled``.
* ``positions``: the fills replayed into a fresh
  :class:`~core.portfolio.Portfolio` (spot, as the engine's): a fill of a
  netted order is booked through its ``FillAllocated`` parts (each model's
  quantity and fee at the fill's price); an internal cross (trade id
  ``X-...``, no order) is a plain fill; a repeated fill (a trade id the
  order already holds) is booked once.
* ``FundingPaid`` (USD-M perpetuals): booked into the positions' realized
  PnL pro rata to the models' signed positions at that point of the
  journal, each ``tran_id`` once (``Portfolio.apply_funding``), as the
  engine books it (``core.funding``), so positions and cash rebuild equal.
* ``balances``: the engine's book, :func:`core.store.book_balances`; the
  equity start comes from ``meta['setup']`` (``capital``) or else
  ``meta['book']`` (written with the positions), the assets of each
  instrument from ``meta['book']`` or else its symbol.
* ``governance_actions``: ``TradingStateChanged`` (action = the new state,
  details ``{"previous": ...}``), ``ModelStateChanged`` (action
  ``MODEL_<state>``, details ``{"model_id": ...}``) and ``AlertRaised`` code
  ``FLATTEN`` (action ``FLATTEN``; ``who`` from the message). A flatten's
  ``details`` (its per-position report) is not in the journal, nor is its
  reason unless the halt it started is (``TradingStateChanged`` to HALTED,
  reason ``FLATTEN: <reason>``): such values are :data:`NOT_DERIVED`, not
  compared, and kept as stored when the table is rewritten. ``AlertRaised``
  codes ``VENUE_HALTED``/``VENUE_RESUMED`` give the per-venue actions
  (venue, who and reason read from the message ``<venue> halted by <who>:
  <reason>``; details ``{"venue": ...}``). ``AlertRaised`` code
  ``DAEMON_STOPPED`` gives the daemon's ``STOP`` (who ``daemon``, reason and
  details ``{"on_stop", "orders", "still_working"}`` read from the message,
  :data:`core.governance.STOP_MESSAGE_RE`). Every row's ``ts`` is its
  event's ``ts_event`` (``core.governance`` records it from the same clock
  read).
* ``alerts``: one row per ``AlertRaised``.

``models`` and ``allocations`` are not compared: the lifecycle events
(``ModelVersionRegistered``, ``ModelStageChanged``, ``AllocationChanged``) are
their history in the journal; the lifecycle's governance rows (stage changes,
promotions, rollbacks) are rebuilt and compared with the others.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.enums import OrderSide, OrderType, TimeInForce
from core.events import (
    ORDER_EVENT_TYPES,
    AlertRaised,
    CanaryPromoted,
    CanaryRolledBack,
    FillAllocated,
    FundingPaid,
    ModelStageChanged,
    ModelStateChanged,
    OrderEvent,
    OrderFilled,
    OrderInitialized,
    TradingStateChanged,
    event_from_dict,
)
from core.governance import STOP_MESSAGE_RE
from core.identifiers import InstrumentId
from core.orders import ContingencyType, InvalidTransition, Order, TrailingOffsetType
from core.portfolio import AccountingError, Portfolio
from core.store import (
    ALERTS_COLUMNS,
    BALANCES_COLUMNS,
    FILLS_COLUMNS,
    GOVERNANCE_COLUMNS,
    ORDERS_COLUMNS,
    POSITIONS_COLUMNS,
    Store,
    StoreError,
    balance_rows,
    book_balances,
    fill_row,
    order_row,
    position_rows,
    split_instrument_assets,
)
from core.values import ZERO


class _NotDerived:
    """The type of :data:`NOT_DERIVED`."""

    _instance: "_NotDerived | None" = None

    def __new__(cls) -> "_NotDerived":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_DERIVED"


#: a column value the journal does not carry: not compared, kept as stored on rewrite
NOT_DERIVED: Any = _NotDerived()


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A materialized table: its columns (key columns first), how many of
    them form the key, and which hold decimal strings (compared by value,
    so ``5.0`` equals ``5.00``)."""

    columns: tuple[str, ...]
    key_len: int
    decimals: frozenset[str] = frozenset()


#: the tables rebuilt and compared, in the order they are reported
TABLES: dict[str, TableSpec] = {
    "orders": TableSpec(ORDERS_COLUMNS, 1, frozenset(
        {"quantity", "price", "filled_qty", "avg_px", "trigger_price", "trailing_offset"})),
    "fills": TableSpec(FILLS_COLUMNS, 1, frozenset({"last_qty", "last_px", "commission"})),
    "positions": TableSpec(POSITIONS_COLUMNS, 2, frozenset({"quantity", "cost", "realized", "fees"})),
    "balances": TableSpec(BALANCES_COLUMNS, 1, frozenset({"total"})),
    "governance_actions": TableSpec(GOVERNANCE_COLUMNS, 1),
    "alerts": TableSpec(ALERTS_COLUMNS, 1),
}

#: the event types the rebuild reads (others, e.g. signals and fits, feed no table)
_USED_TYPES = frozenset(ORDER_EVENT_TYPES | {"FillAllocated", "AlertRaised", "TradingStateChanged",
                                              "ModelStateChanged", "ModelStageChanged", "CanaryPromoted",
                                              "CanaryRolledBack", "FundingPaid"})
_STEP_RE = re.compile(r"^NHD-([0-9a-f]+)-")
_FLATTEN_WHO_RE = re.compile(r"^flatten by (.*?): ", re.DOTALL)
#: alerts that record a per-venue governance action (``core.governance``'s messages)
_VENUE_ACTIONS = {
    "VENUE_HALTED": re.compile(r"^(?P<venue>\S+) halted by (?P<who>.*?): (?P<reason>.*)\Z", re.DOTALL),
    "VENUE_RESUMED": re.compile(r"^(?P<venue>\S+) resumed by (?P<who>.*?): (?P<reason>.*)\Z", re.DOTALL),
}
#: at most this many notes are kept (the rest are counted)
MAX_NOTES = 50

Row = dict[str, Any]
Key = tuple[Any, ...]


@dataclass(slots=True)
class Rebuilt:
    """What the journal gives: ``tables`` maps a table name to its rows by
    key (a row maps each column to its value, possibly :data:`NOT_DERIVED`);
    a table that cannot be derived (balances without an equity start) is
    absent. ``events`` counts the journal rows; ``notes`` lists what the
    replay refused or could not tell (e.g. a transition the order state
    machine refuses), ``portfolio`` is the replayed book."""

    tables: dict[str, dict[Key, Row]]
    events: int
    notes: list[str]
    portfolio: Portfolio


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement between a table and its journal.

    ``column`` is ``"(row)"`` when the whole row is missing from the table
    (``stored`` None) or is in the table but not in the journal
    (``rebuilt`` None); otherwise ``stored`` and ``rebuilt`` are the two
    values (as stored: decimal strings, integers, text or None).
    """

    table: str
    key: str
    column: str
    stored: Any
    rebuilt: Any

    def line(self) -> str:
        """One human-readable line."""
        if self.column == "(row)":
            if self.stored is None:
                return f"{self.table} {self.key}: missing from the table (the journal has it)"
            return f"{self.table} {self.key}: in the table but not in the journal"
        return f"{self.table} {self.key}: {self.column} stored {self.stored!r}, journal gives {self.rebuilt!r}"


@dataclass(slots=True)
class RebuildReport:
    """The outcome of :func:`rebuild`.

    Attributes:
        path: the store file.
        events: journal rows read.
        rows: rows per table as rebuilt from the journal.
        differences: every difference found (before any rewrite).
        notes: what the replay refused or could not derive.
        applied: True when the tables were rewritten from the journal.
    """

    path: Path
    events: int
    rows: dict[str, int]
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def ok(self) -> bool:
        """True when every compared table equals its journal."""
        return not self.differences

    def lines(self) -> list[str]:
        """The report as lines of text: a summary, the differences, the notes."""
        counts = ", ".join(f"{t} {n}" for t, n in self.rows.items())
        state = "no difference" if self.ok else f"{len(self.differences)} difference(s)"
        out = [f"{self.path}: {self.events} journal events; rebuilt {counts}; {state}"]
        out += [d.line() for d in self.differences]
        out += [f"note: {n}" for n in self.notes]
        if self.applied:
            out.append(f"rewrote {', '.join(sorted({d.table for d in self.differences}))} from the journal")
        return out


# ---------------------------------------------------------------- replay
@dataclass(slots=True)
class _Book:
    """How the engine's portfolio was set up (``meta``): equity start
    (quote), quote asset, instrument assets, short-selling settings."""

    equity_start: Decimal | None = None
    quote: str | None = None
    assets: dict[InstrumentId, tuple[str, str]] = field(default_factory=dict)
    allow_short: bool = False
    registered: dict[str, Any] = field(default_factory=dict)

    def portfolio(self) -> Portfolio:
        """A fresh portfolio set up as the engine's was."""
        pf = Portfolio(self.equity_start if self.equity_start is not None else ZERO, allow_short=self.allow_short)
        for i, (b, q, short) in self.registered.items():
            iid = InstrumentId.parse(i)
            pf.instrument_assets[iid] = (b, q)
            if short is not None:
                pf.short_by_instrument[iid] = bool(short)
        return pf


def _book_settings(meta: Mapping[str, str], equity_start: Decimal | None, notes: list[str]) -> _Book:
    """The portfolio's setup from the argument, ``meta['setup']`` (capital)
    and ``meta['book']`` (written by :meth:`core.store.Store.record_positions`)."""
    book: dict[str, Any] = {}
    if meta.get("book"):
        try:
            book = json.loads(meta["book"])
        except ValueError:
            notes.append("meta book is not JSON; ignored")
    start = equity_start
    if start is None and meta.get("setup"):
        try:
            cap = json.loads(meta["setup"]).get("capital")
            start = None if cap is None else Decimal(str(cap))
        except (ValueError, AttributeError, InvalidOperation):
            notes.append("meta setup has no readable capital")
    if start is None and book.get("equity_start") is not None:
        start = Decimal(book["equity_start"])
    assets = {InstrumentId.parse(i): (str(p[0]), str(p[1])) for i, p in (book.get("assets") or {}).items()}
    return _Book(start, book.get("quote"), assets, bool(book.get("allow_short", False)),
                 dict(book.get("registered") or {}))


def _order_from_init(e: OrderInitialized) -> tuple[Order, bool]:
    """The order an ``OrderInitialized`` describes, and whether its step
    could be read from its ClientOrderId."""
    m = _STEP_RE.match(e.client_order_id)
    order = Order(
        client_order_id=e.client_order_id, model_id=e.model_id, instrument_id=e.instrument_id,
        side=OrderSide(e.side), order_type=OrderType(e.order_type), quantity=e.quantity, price=e.price,
        time_in_force=TimeInForce(e.time_in_force), ts_init=e.ts_init, step=int(m.group(1), 16) if m else 0,
        reduce_only=e.reduce_only, ts_last=e.ts_event, trigger_price=e.trigger_price,
        trailing_offset=e.trailing_offset, trailing_offset_type=TrailingOffsetType(e.trailing_offset_type),
        expire_time_ns=e.expire_time_ns, post_only=e.post_only, contingency=ContingencyType(e.contingency),
        linked_order_ids=tuple(x for x in e.linked_order_ids.split(",") if x),
        parent_order_id=e.parent_order_id or None,
    )
    return order, m is not None


class _Replay:
    """The state of one pass over the journal."""

    def __init__(self, portfolio: Portfolio, allocated: set[str]) -> None:
        self.portfolio = portfolio
        portfolio.track_all = True  # funding is split by the positions at its funding time (apply_funding)
        self.allocated = allocated
        self.orders: dict[str, Order] = {}
        self.step_known: dict[str, bool] = {}
        self.recorded: dict[str, None] = {}  # ordered set of ClientOrderIds with a row
        self.fills: dict[str, Row] = {}
        self.fill_events: dict[str, OrderFilled] = {}
        self.booked_parts: set[tuple[str, str]] = set()
        self.governance: dict[Key, Row] = {}
        self.alerts: dict[Key, Row] = {}
        self.last_state_change: TradingStateChanged | None = None
        self.quotes_seen: Counter[str] = Counter()
        self.notes: list[str] = []
        self.dropped_notes = 0

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        else:
            self.dropped_notes += 1

    def book(self, fill: OrderFilled, seq: int) -> None:
        try:
            self.portfolio.apply_fill(fill)
        except AccountingError as exc:  # the engine logs it and books nothing, as here
            self.note(f"seq {seq}: fill {fill.trade_id} not booked: {exc}")

    def on_event(self, seq: int, event: Any) -> None:
        if isinstance(event, OrderInitialized):
            if event.client_order_id in self.orders:
                self.note(f"seq {seq}: {event.client_order_id} initialized again; the new order replaces it")
            order, known = _order_from_init(event)
            self.orders[order.client_order_id] = order
            self.step_known[order.client_order_id] = known
            self.recorded.pop(order.client_order_id, None)
        elif isinstance(event, OrderFilled):
            self.on_fill(seq, event)
        elif isinstance(event, OrderEvent):
            order = self.orders.get(event.client_order_id)
            if order is None:
                self.note(f"seq {seq}: {event.type} for {event.client_order_id}, which was never initialized")
                return
            try:
                order.apply(event)
            except InvalidTransition as exc:
                self.note(f"seq {seq}: {exc}")
                return
            self.recorded[order.client_order_id] = None
        elif isinstance(event, FillAllocated):
            self.on_allocated(seq, event)
        elif isinstance(event, FundingPaid):
            self.on_funding(seq, event)
        elif isinstance(event, AlertRaised):
            self.alerts[(seq,)] = dict(zip(ALERTS_COLUMNS, (seq, event.ts_event, event.level, event.code,
                                                            event.message)))
            if event.code == "FLATTEN":
                self.on_flatten(seq, event)
            elif event.code in _VENUE_ACTIONS:
                self.on_venue_action(seq, event)
            elif event.code == "DAEMON_STOPPED":
                self.on_stop(seq, event)
        elif isinstance(event, TradingStateChanged):
            self.last_state_change = event
            self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
                seq, event.ts_event, event.who, event.state, event.reason,
                json.dumps({"previous": event.previous}, sort_keys=True))))
        elif isinstance(event, ModelStageChanged):
            if "paused" not in (event.stage, event.previous):  # core.lifecycle records pauses once
                self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
                    seq, event.ts_event, event.who, f"MODEL_STAGE_{event.stage.upper()}", event.reason,
                    json.dumps({"model_id": event.model_id, "weight": format(event.weight, "f"),
                                "previous": event.previous}, sort_keys=True))))
        elif isinstance(event, (CanaryPromoted, CanaryRolledBack)):
            action = "CANARY_PROMOTED" if isinstance(event, CanaryPromoted) else "CANARY_ROLLED_BACK"
            self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
                seq, event.ts_event, event.who, action, event.reason,
                json.dumps({"model_id": event.model_id, **event.figures}, sort_keys=True))))
        elif isinstance(event, ModelStateChanged):
            self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
                seq, event.ts_event, event.who, f"MODEL_{event.state}", event.reason,
                json.dumps({"model_id": event.model_id}, sort_keys=True))))

    def on_fill(self, seq: int, event: OrderFilled) -> None:
        if event.trade_id not in self.fills:
            self.fills[event.trade_id] = dict(zip(FILLS_COLUMNS, fill_row(event, seq)))
        if event.side == OrderSide.SELL.value and event.commission or event.liquidity_side == "INTERNAL":
            self.quotes_seen[event.commission_currency] += 1  # Binance: a sell's fee is in the quote
        order = self.orders.get(event.client_order_id)
        if order is not None:
            try:
                changed = order.apply(event)
            except InvalidTransition as exc:  # journaled, so the engine's order took it: book it
                self.note(f"seq {seq}: {exc}")
                changed = True
            else:
                self.recorded[order.client_order_id] = None
            if not changed:
                return  # a repeated fill: already booked
        elif not event.trade_id.startswith("X-"):
            self.note(f"seq {seq}: fill {event.trade_id} of {event.client_order_id}, which was never initialized")
            if event.trade_id in self.fill_events:
                return
        elif event.trade_id in self.fill_events:
            return
        self.fill_events[event.trade_id] = event
        if event.trade_id not in self.allocated:
            self.book(event, seq)

    def on_allocated(self, seq: int, event: FillAllocated) -> None:
        key = (event.trade_id, event.model_id)
        if key in self.booked_parts:
            return
        parent = self.fill_events.get(event.trade_id)
        if parent is None:
            self.note(f"seq {seq}: allocation of fill {event.trade_id}, which is not in the journal before it")
            return
        self.booked_parts.add(key)
        self.book(dataclasses.replace(parent, model_id=event.model_id, last_qty=event.last_qty,
                                      commission=event.commission), seq)

    def on_funding(self, seq: int, event: FundingPaid) -> None:
        """A perpetual's funding payment, booked as the engine books it
        (``core.funding.attach_funding``: ``Portfolio.apply_funding``, pro
        rata to the positions held at its funding time, each ``tran_id``
        once; the replay logs every instrument's changes)."""
        try:
            self.portfolio.apply_funding(event.instrument_id, event.amount, event.tran_id, at_ns=event.ts_event)
        except (TypeError, ValueError) as exc:
            self.note(f"seq {seq}: funding {event.tran_id} not booked: {exc}")

    def on_venue_action(self, seq: int, event: AlertRaised) -> None:
        m = _VENUE_ACTIONS[event.code].match(event.message)
        if m is None:
            self.note(f"seq {seq}: {event.code} alert message not understood: {event.message[:80]!r}")
            values: tuple[Any, ...] = (NOT_DERIVED,) * 3
        else:
            values = (m["who"], m["reason"], json.dumps({"venue": m["venue"]}, sort_keys=True))
        self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
            seq, event.ts_event, values[0], event.code, values[1], values[2])))

    def on_stop(self, seq: int, event: AlertRaised) -> None:
        """The daemon's stop (``Governance.daemon_stopped``): its ``STOP``
        row, read from the alert's message."""
        m = STOP_MESSAGE_RE.match(event.message)
        if m is None:
            self.note(f"seq {seq}: DAEMON_STOPPED alert message not understood: {event.message[:80]!r}")
            values: tuple[Any, ...] = ("daemon", NOT_DERIVED, NOT_DERIVED)
        else:
            values = ("daemon", m["reason"], json.dumps(
                {"on_stop": m["on_stop"], "orders": int(m["orders"]), "still_working": int(m["still_working"])},
                sort_keys=True))
        self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
            seq, event.ts_event, values[0], "STOP", values[1], values[2])))

    def on_flatten(self, seq: int, event: AlertRaised) -> None:
        m = _FLATTEN_WHO_RE.match(event.message)
        who = m.group(1) if m else NOT_DERIVED
        reason: Any = NOT_DERIVED
        halt = self.last_state_change
        if halt is not None and halt.state == "HALTED" and halt.who == who and halt.reason.startswith("FLATTEN: "):
            reason = halt.reason[len("FLATTEN: "):]
            self.last_state_change = None  # one halt explains one flatten
        self.governance[(seq,)] = dict(zip(GOVERNANCE_COLUMNS, (
            seq, event.ts_event, who, "FLATTEN", reason, NOT_DERIVED)))


def compute(conn: sqlite3.Connection, equity_start: Decimal | None = None) -> Rebuilt:
    """Replay the journal on ``conn`` (a desk store at schema version 2 or a
    migration in progress) into the materialized tables' rows.

    ``equity_start`` (quote) overrides the capital read from ``meta``.
    Journal rows that cannot be decoded, and events the replay refuses, are
    reported in ``notes``, never raised.

    Raises:
        sqlite3.Error: when the database cannot be read.
    """
    notes: list[str] = []
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    book = _book_settings(meta, equity_start, notes)
    start, quote, assets = book.equity_start, book.quote, book.assets
    allocated = {tid for (tid,) in conn.execute(
        "SELECT DISTINCT json_extract(payload, '$.trade_id') FROM journal WHERE type='FillAllocated'")}
    events = int(conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0])
    r = _Replay(book.portfolio(), allocated)
    r.notes = notes
    replay_journal(conn, r)

    orders: dict[Key, Row] = {}
    for coid in r.recorded:
        row = dict(zip(ORDERS_COLUMNS, order_row(r.orders[coid])))
        if not r.step_known[coid]:
            row["step"] = NOT_DERIVED
        orders[(coid,)] = row
    tables: dict[str, dict[Key, Row]] = {
        "orders": orders,
        "fills": {(tid,): row for tid, row in r.fills.items()},
        "positions": {(row[0], row[1]): dict(zip(POSITIONS_COLUMNS, row)) for row in position_rows(r.portfolio)},
    }
    if quote is None and r.quotes_seen:
        quote = r.quotes_seen.most_common(1)[0][0]
        r.note(f"quote asset {quote} inferred from the fills (meta book has none)")
    if start is None:
        if r.portfolio.positions:
            r.note("no equity start in meta (setup capital or book); balances not compared")
    else:
        balances = book_balances(r.portfolio, quote, assets or {
            iid: (base, q or "?") for (_, iid) in r.portfolio.positions
            for base, q in [split_instrument_assets(iid, quote)]})
        tables["balances"] = {(a,): dict(zip(BALANCES_COLUMNS, (a, t))) for a, t in balance_rows(balances)}
    tables["governance_actions"] = r.governance
    tables["alerts"] = r.alerts
    if r.dropped_notes:
        r.notes.append(f"... and {r.dropped_notes} more notes")
    return Rebuilt(tables, events, r.notes, r.portfolio)


# ---------------------------------------------------------------- compare / write
def read_table(conn: sqlite3.Connection, table: str) -> dict[Key, Row]:
    """The rows of a materialized table by key (see :data:`TABLES`).

    Raises:
        KeyError: for a table not in :data:`TABLES`.
        sqlite3.Error: when it cannot be read.
    """
    spec = TABLES[table]
    cols = ", ".join(f"[{c}]" for c in spec.columns)
    out: dict[Key, Row] = {}
    for values in conn.execute(f"SELECT {cols} FROM [{table}]"):
        row = dict(zip(spec.columns, values))
        out[tuple(values[: spec.key_len])] = row
    return out


def _same(a: Any, b: Any, decimal: bool) -> bool:
    if b is NOT_DERIVED:
        return True
    if decimal and isinstance(a, str) and isinstance(b, str):
        try:
            return Decimal(a) == Decimal(b)
        except InvalidOperation:
            return a == b
    return a == b


def compare(stored: Mapping[str, Mapping[Key, Row]], rebuilt: Rebuilt) -> list[Difference]:
    """Every difference between the ``stored`` tables (as from
    :func:`read_table`) and ``rebuilt``, table by table in :data:`TABLES`
    order, keys sorted, columns in table order. Tables absent from
    ``rebuilt`` are not compared."""
    out: list[Difference] = []
    for table, spec in TABLES.items():
        if table not in rebuilt.tables:
            continue
        mine, theirs = rebuilt.tables[table], stored.get(table, {})
        for key in sorted(set(mine) | set(theirs), key=lambda k: tuple(str(x) for x in k)):
            name = " ".join(str(x) for x in key)
            if key not in theirs:
                out.append(Difference(table, name, "(row)", None, "present"))
                continue
            if key not in mine:
                out.append(Difference(table, name, "(row)", "present", None))
                continue
            for col in spec.columns[spec.key_len:]:
                a, b = theirs[key][col], mine[key][col]
                if not _same(a, b, col in spec.decimals):
                    out.append(Difference(table, name, col, a, b))
    return out


def write_tables(conn: sqlite3.Connection, rebuilt: Rebuilt, tables: Iterable[str],
                 stored: Mapping[str, Mapping[Key, Row]] | None = None) -> None:
    """Replace the rows of ``tables`` with the rebuilt ones, inside the
    caller's transaction (nothing is committed here). A :data:`NOT_DERIVED`
    value takes the stored row's value (from ``stored``, read from the table
    when not given), or NULL when there is none.

    Raises:
        KeyError: for a table not in :data:`TABLES` or not rebuilt.
        sqlite3.Error: when it cannot be written.
    """
    for table in tables:
        spec = TABLES[table]
        rows = rebuilt.tables[table]
        old = stored[table] if stored is not None and table in stored else read_table(conn, table)
        values = []
        for key, row in rows.items():
            prev = old.get(key, {})
            values.append(tuple(prev.get(c) if row[c] is NOT_DERIVED else row[c] for c in spec.columns))
        conn.execute(f"DELETE FROM [{table}]")
        cols = ", ".join(f"[{c}]" for c in spec.columns)
        conn.executemany(f"INSERT INTO [{table}] ({cols}) VALUES ({', '.join('?' * len(spec.columns))})", values)


def replay_journal(conn: sqlite3.Connection, replay: Any) -> None:
    """Feed every journal event this module uses (``_USED_TYPES``), in
    sequence order, to ``replay.on_event(seq, event)``; an event that cannot
    be decoded is a ``replay.note`` naming its sequence, not an error. Shared
    by :func:`rebuild` and ``core.daily_pnl.journal_fill_pnl``."""
    for seq, typ, payload in conn.execute("SELECT seq, type, payload FROM journal ORDER BY seq"):
        if typ not in _USED_TYPES:
            continue
        try:
            event = event_from_dict(json.loads(payload))
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            replay.note(f"seq {seq}: {typ} cannot be decoded: {exc}")
            continue
        replay.on_event(int(seq), event)


def rebuild(store_path: str | Path, apply: bool = False, equity_start: Decimal | None = None) -> RebuildReport:
    """Recompute the materialized tables of the store at ``store_path``
    from its journal and compare them with the stored ones; with ``apply``
    rewrite every table that differs, in one transaction.

    The store is opened as the desk opens it (:class:`core.store.Store`),
    so an older schema is migrated first. Reading and writing happen in one
    transaction (``BEGIN IMMEDIATE`` with ``apply``), so a desk committing
    meanwhile is either wholly before or wholly after. Run it on a stopped
    desk: the running engine keeps its own state and would overwrite
    rewritten rows at its next commit. ``equity_start`` (quote) overrides
    the capital read from ``meta``.

    Raises:
        StoreError: naming the file, when it is not a desk store, has a
            newer or unknown schema, or cannot be read or written.
    """
    path = Path(store_path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    store = Store(path)
    conn = store.conn
    try:
        conn.execute("BEGIN IMMEDIATE" if apply else "BEGIN")
        try:
            rebuilt = compute(conn, equity_start)
            stored = {t: read_table(conn, t) for t in rebuilt.tables}
            diffs = compare(stored, rebuilt)
            changed = sorted({d.table for d in diffs}, key=list(TABLES).index)
            if apply and changed:
                write_tables(conn, rebuilt, changed, stored)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: rebuild failed: {exc}") from exc
    finally:
        store.close()
    notes = list(rebuilt.notes)
    notes.append("models, allocations: not compared by this check (the journal's ModelVersionRegistered, "
                 "ModelStageChanged and AllocationChanged events are their history)")
    return RebuildReport(path, rebuilt.events, {t: len(rows) for t, rows in rebuilt.tables.items()}, diffs, notes,
                         applied=bool(apply and diffs))
