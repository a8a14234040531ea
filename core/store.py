"""The engine's store: an append-only event journal plus materialized tables
in SQLite (WAL), through sqlite-utils (DESIGN.md section 5; issue 5 "The
store").

Writes are buffered and committed in one transaction per ``flush()``
(``executemany`` on ``db.conn``, the fast path measured in DESIGN.md section
7); the engine flushes before any order leaves (write-before-send) and at
checkpoints. ``synchronous=FULL`` so an acknowledged commit survives a power
cut. A failing commit raises :class:`StoreError`; the engine halts on it.

Schema versions (``meta.schema_version``, :data:`STORE_SCHEMA_VERSION`):

* **1**: ``meta``, ``journal``, ``orders``, ``fills``, ``governance_actions``,
  ``alerts``, ``checkpoint``.
* **2**: ``orders`` gains the order-type columns (``trigger_price``,
  ``trailing_offset``, ``trailing_offset_type``, ``expire_time_ns``,
  ``post_only``, ``contingency``, ``parent_order_id``); new tables
  ``positions`` and ``balances`` (the engine's book, written with every
  commit by :meth:`Store.record_positions`), and ``models`` and
  ``allocations`` (created empty; their shape is documented below for the
  model registry and the allocator of issue 7).

Every materialized table can be recomputed from the journal
(:mod:`core.rebuild`). Opening a store applies the pending
:data:`MIGRATIONS` in one transaction and records the new version; a store
written by a newer desk, or whose version is missing or unreadable, is
refused with a :class:`StoreError` naming the file.

Table shapes (money, prices and quantities are decimal strings; times UTC ns):

``positions`` (v2), one row per (model, instrument) that has had a fill:
    ``model_id``, ``instrument_id`` (key), ``quantity`` (base units,
    signed), ``cost`` (quote, signed total cost), ``realized`` (quote, net
    of fees), ``fees`` (quote value of all fees), ``fills`` (integer count).
``balances`` (v2), the engine's own book (not the venue's ledger), one row
    per asset: ``asset`` (key), ``total``. The quote asset holds the cash the
    book implies, ``equity_start + Σ realized - Σ cost``; each base asset the
    portfolio's quantity summed over models.
``models`` (v2, issue 7), one row per model version: ``model_id`` (key, a
    name such as ``hmm_v4_canary``), ``family``, ``instrument_id``,
    ``version`` (integer), ``stage`` (``canary``/``live``/``paused``/
    ``retired``), ``weight`` (stage weight, fraction 0..1), ``params`` and
    ``diagnostics`` (JSON), ``train_start_ns``/``train_end_ns`` (training
    window), ``created_seq``/``updated_seq`` (journal sequences).
``allocations`` (v2, issue 7), one row per family per allocator decision:
    ``seq`` (journal sequence of the ``AllocationChanged`` event) and
    ``family`` (key), ``ts``, ``weight`` (fraction 0..1), ``budget``
    (quote).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import sqlite_utils

from core.events import Event, OrderFilled
from core.identifiers import InstrumentId
from core.orders import Order
from core.values import ZERO, dec_str

if TYPE_CHECKING:
    from core.instruments import Instrument
    from core.portfolio import Portfolio

#: the schema version this code writes (and the newest it reads)
STORE_SCHEMA_VERSION = 2

#: columns of each materialized table, in table order (the key columns first)
ORDERS_COLUMNS: tuple[str, ...] = (
    "client_order_id", "model_id", "instrument_id", "side", "order_type", "quantity", "price", "time_in_force",
    "status", "filled_qty", "avg_px", "venue_order_id", "reason", "step", "ts_init", "ts_last",
    # v2
    "trigger_price", "trailing_offset", "trailing_offset_type", "expire_time_ns", "post_only", "contingency",
    "parent_order_id",
)
FILLS_COLUMNS: tuple[str, ...] = (
    "trade_id", "client_order_id", "model_id", "instrument_id", "side", "last_qty", "last_px", "commission",
    "commission_currency", "liquidity_side", "ts_event", "seq",
)
POSITIONS_COLUMNS: tuple[str, ...] = ("model_id", "instrument_id", "quantity", "cost", "realized", "fees", "fills")
BALANCES_COLUMNS: tuple[str, ...] = ("asset", "total")
GOVERNANCE_COLUMNS: tuple[str, ...] = ("seq", "ts", "who", "action", "reason", "details")
ALERTS_COLUMNS: tuple[str, ...] = ("seq", "ts", "level", "code", "message")
MODELS_COLUMNS: tuple[str, ...] = ("model_id", "family", "instrument_id", "version", "stage", "weight", "params",
                                   "diagnostics", "train_start_ns", "train_end_ns", "created_seq", "updated_seq")
ALLOCATIONS_COLUMNS: tuple[str, ...] = ("seq", "family", "ts", "weight", "budget")

_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS [meta] ([key] TEXT PRIMARY KEY, [value] TEXT);
CREATE TABLE IF NOT EXISTS [journal] (
    [seq] INTEGER PRIMARY KEY, [ts_event] INTEGER, [ts_init] INTEGER, [type] TEXT, [payload] TEXT);
CREATE INDEX IF NOT EXISTS [idx_journal_type] ON [journal] ([type]);
CREATE TABLE IF NOT EXISTS [orders] (
    [client_order_id] TEXT PRIMARY KEY, [model_id] TEXT, [instrument_id] TEXT, [side] TEXT, [order_type] TEXT,
    [quantity] TEXT, [price] TEXT, [time_in_force] TEXT, [status] TEXT, [filled_qty] TEXT, [avg_px] TEXT,
    [venue_order_id] TEXT, [reason] TEXT, [step] INTEGER, [ts_init] INTEGER, [ts_last] INTEGER);
CREATE TABLE IF NOT EXISTS [fills] (
    [trade_id] TEXT PRIMARY KEY, [client_order_id] TEXT, [model_id] TEXT, [instrument_id] TEXT, [side] TEXT,
    [last_qty] TEXT, [last_px] TEXT, [commission] TEXT, [commission_currency] TEXT, [liquidity_side] TEXT,
    [ts_event] INTEGER, [seq] INTEGER);
CREATE TABLE IF NOT EXISTS [governance_actions] (
    [seq] INTEGER PRIMARY KEY, [ts] INTEGER, [who] TEXT, [action] TEXT, [reason] TEXT, [details] TEXT);
CREATE TABLE IF NOT EXISTS [alerts] ([seq] INTEGER PRIMARY KEY, [ts] INTEGER, [level] TEXT, [code] TEXT, [message] TEXT);
CREATE TABLE IF NOT EXISTS [checkpoint] ([id] INTEGER PRIMARY KEY, [step] INTEGER, [snapshot] TEXT);
"""

_V2_ORDER_COLUMNS = (
    ("trigger_price", "TEXT"), ("trailing_offset", "TEXT"), ("trailing_offset_type", "TEXT"),
    ("expire_time_ns", "INTEGER"), ("post_only", "INTEGER"), ("contingency", "TEXT"), ("parent_order_id", "TEXT"),
)
_V2_TABLES = """
CREATE TABLE IF NOT EXISTS [positions] (
    [model_id] TEXT, [instrument_id] TEXT, [quantity] TEXT, [cost] TEXT, [realized] TEXT, [fees] TEXT,
    [fills] INTEGER, PRIMARY KEY ([model_id], [instrument_id]));
CREATE TABLE IF NOT EXISTS [balances] ([asset] TEXT PRIMARY KEY, [total] TEXT);
CREATE TABLE IF NOT EXISTS [models] (
    [model_id] TEXT PRIMARY KEY, [family] TEXT, [instrument_id] TEXT, [version] INTEGER, [stage] TEXT,
    [weight] TEXT, [params] TEXT, [diagnostics] TEXT, [train_start_ns] INTEGER, [train_end_ns] INTEGER,
    [created_seq] INTEGER, [updated_seq] INTEGER);
CREATE TABLE IF NOT EXISTS [allocations] (
    [seq] INTEGER, [family] TEXT, [ts] INTEGER, [weight] TEXT, [budget] TEXT, PRIMARY KEY ([seq], [family]));
"""


class StoreError(Exception):
    """The store could not be read or written (full disk, I/O error), or is
    not one this desk can open (not a desk store, a newer or unknown schema
    version, a failed migration). The message names the file."""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute ``;``-separated DDL statement by statement, inside the open
    transaction (``executescript`` would commit it first)."""
    for stmt in script.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _migrate_1_to_2(conn: sqlite3.Connection, path: Path) -> None:
    """v1 -> v2: the order-type columns of ``orders``; the ``positions``,
    ``balances``, ``models`` and ``allocations`` tables. The new columns and
    the positions and balances are then filled from the journal
    (:func:`core.rebuild.compute`), so a migrated store is consistent at once."""
    have = {r[1] for r in conn.execute("PRAGMA table_info([orders])")}
    for name, sql_type in _V2_ORDER_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE [orders] ADD COLUMN [{name}] {sql_type}")
    _run_script(conn, _V2_TABLES)
    if conn.execute("SELECT 1 FROM journal LIMIT 1").fetchone() is None:
        return
    from core.rebuild import NOT_DERIVED, compute, write_tables  # local: core.rebuild imports this module

    rebuilt = compute(conn)
    write_tables(conn, rebuilt, ("positions", "balances"))
    new = [c for c, _ in _V2_ORDER_COLUMNS]
    conn.executemany(
        f"UPDATE orders SET {', '.join(f'[{c}]=?' for c in new)} WHERE client_order_id=?",
        [tuple(None if row[c] is NOT_DERIVED else row[c] for c in new) + (key[0],)
         for key, row in rebuilt.tables["orders"].items()],
    )


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``apply(conn, path)`` takes a store at
    ``from_version`` to ``to_version`` inside the caller's transaction
    (it must not commit)."""

    from_version: int
    to_version: int
    description: str
    apply: Callable[[sqlite3.Connection, Path], None]


#: every schema step, in order; opening a store applies those above its version
MIGRATIONS: list[Migration] = [
    Migration(1, 2, "orders: order-type columns; positions, balances, models, allocations tables", _migrate_1_to_2),
]
assert MIGRATIONS[-1].to_version == STORE_SCHEMA_VERSION


def read_schema_version(conn: sqlite3.Connection, path: str | Path) -> int:
    """The schema version recorded in the store's ``meta`` table; 0 for an
    empty database (a new store).

    Raises:
        StoreError: naming ``path``, when the database holds tables but no
            ``meta`` (not a desk store), when ``schema_version`` is missing
            or not a positive integer (unknown or damaged meta), or when it
            is newer than :data:`STORE_SCHEMA_VERSION` (naming both versions).
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        others = sorted(t for t in tables if not t.startswith("sqlite_"))
        if others:
            raise StoreError(f"{path}: not a desk store: it holds tables ({', '.join(others[:5])}) but no meta table")
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    raw = None if row is None else row[0]
    try:
        version = int(str(raw).strip())
    except ValueError:
        version = -1
    if version < 1:
        found = "no schema_version" if row is None else f"schema_version {raw!r}"
        raise StoreError(
            f"{path}: unknown store schema ({found} in meta); this desk reads versions 1 to "
            f"{STORE_SCHEMA_VERSION}; the file is not a desk store or its meta table is damaged"
        )
    if version > STORE_SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema version {version} is newer than this desk's {STORE_SCHEMA_VERSION}; "
            f"upgrade the desk"
        )
    return version


def split_instrument_assets(instrument_id: InstrumentId, quote: str | None) -> tuple[str, str | None]:
    """``(base, quote)`` of an instrument known only by its id: ``BASE/QUOTE``
    splits at the slash; a concatenated symbol ending with ``quote``
    (``ETHUSDT`` with ``USDT``) loses it; otherwise the whole symbol is the
    base asset and the quote is ``quote`` (None when unknown)."""
    sym = instrument_id.symbol
    if "/" in sym:
        base, _, q = sym.partition("/")
        return base, q.partition(":")[0]
    core = sym.partition("-")[0]
    if quote and core != quote and core.endswith(quote):
        return core[: -len(quote)], quote
    return sym, quote


def book_balances(
    portfolio: "Portfolio", quote: str | None, assets: Mapping[InstrumentId, tuple[str, str]] | None = None,
) -> dict[str, Decimal]:
    """The engine's book as balances per asset (decimal, exact): the quote
    cash ``equity_start + Σ realized - Σ cost`` (``equity_start`` is in
    ``quote``; each instrument's realized and cost count in its own quote)
    and, per base asset, the summed signed quantity. Only positions that
    have had a fill count; ``assets`` maps an instrument to ``(base,
    quote)``, else :func:`split_instrument_assets` reads the symbol.
    ``quote`` None (unknown) leaves the equity start out."""
    out: dict[str, Decimal] = {}
    if quote:
        out[quote] = portfolio.equity_start
    for (_, iid), p in portfolio.positions.items():
        if p.fills == 0:
            continue
        base, q = (assets or {}).get(iid) or split_instrument_assets(iid, quote)
        q = q or "?"
        out[q] = out.get(q, ZERO) + p.realized - p.cost
        out[base] = out.get(base, ZERO) + p.quantity
    return out


def position_rows(portfolio: "Portfolio") -> list[tuple[Any, ...]]:
    """Rows of ``positions`` (:data:`POSITIONS_COLUMNS`) for every position
    that has had a fill, sorted by model and instrument."""
    return sorted(
        (m, str(i), dec_str(p.quantity), dec_str(p.cost), dec_str(p.realized), dec_str(p.fees), p.fills)
        for (m, i), p in portfolio.positions.items() if p.fills
    )


def balance_rows(balances: Mapping[str, Decimal]) -> list[tuple[str, str]]:
    """Rows of ``balances`` (:data:`BALANCES_COLUMNS`), sorted by asset."""
    return sorted((a, dec_str(v)) for a, v in balances.items())


def order_row(order: Order) -> tuple[Any, ...]:
    """The ``orders`` row (:data:`ORDERS_COLUMNS`) of an order's current state."""
    return (
        order.client_order_id, order.model_id, str(order.instrument_id), order.side.value,
        order.order_type.value, dec_str(order.quantity),
        None if order.price is None else dec_str(order.price), order.time_in_force.value,
        order.status.value, dec_str(order.filled_qty),
        None if order.avg_px is None else dec_str(order.avg_px), order.venue_order_id,
        order.reason, order.step, order.ts_init, order.ts_last,
        None if order.trigger_price is None else dec_str(order.trigger_price),
        None if order.trailing_offset is None else dec_str(order.trailing_offset),
        order.trailing_offset_type.value, order.expire_time_ns, int(order.post_only), order.contingency.value,
        order.parent_order_id or None,
    )


def fill_row(event: OrderFilled, seq: int) -> tuple[Any, ...]:
    """The ``fills`` row (:data:`FILLS_COLUMNS`) of a fill journaled at ``seq``."""
    return (
        event.trade_id, event.client_order_id, event.model_id, str(event.instrument_id),
        event.side, dec_str(event.last_qty), dec_str(event.last_px), dec_str(event.commission),
        event.commission_currency, event.liquidity_side, event.ts_event, seq,
    )


def _insert_sql(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
    return f"{verb} INTO [{table}] ({', '.join(f'[{c}]' for c in columns)}) VALUES ({', '.join('?' * len(columns))})"


class Store:
    """The engine's SQLite store at ``path``.

    Tables: ``meta`` (key/value), ``journal`` (seq, ts_event, ts_init, type,
    payload JSON), ``orders`` (one row per ClientOrderId, its latest state),
    ``fills`` (one row per trade id), ``positions`` and ``balances`` (the
    engine's book at the last commit), ``governance_actions``, ``alerts``,
    ``models`` and ``allocations`` (issue 7), ``checkpoint`` (the resume
    point and engine snapshot). Shapes: the module docstring.

    Opening creates a new store at :data:`STORE_SCHEMA_VERSION`, or brings
    an older one up to it through :data:`MIGRATIONS` in one transaction;
    ``schema_version_found`` is the version the file had (0 for a new one).

    Raises:
        StoreError: on open, naming the file: not a SQLite file or not a
            desk store, a schema newer than this code or an unknown one, or
            a migration that failed (the store is left as it was).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite_utils.Database(self.path)
            self.conn: sqlite3.Connection = self.db.conn
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.schema_version_found = read_schema_version(self.conn, self.path)
            self._migrate()
            row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(f"{self.path}: not a usable desk store: {exc}") from exc
        except StoreError:
            self._close_quietly()
            raise
        self._seq = int(row[0])
        self._journal: list[tuple[int, int, int, str, str]] = []
        self._orders: dict[str, tuple[Any, ...]] = {}
        self._fills: list[tuple[Any, ...]] = []
        self._gov: list[tuple[Any, ...]] = []
        self._alerts: list[tuple[Any, ...]] = []
        self._models: dict[str, dict[str, Any]] = {}
        self._allocs: list[tuple[Any, ...]] = []
        self._meta: dict[str, str] = {}
        self._pending_events: list[tuple[int, Event]] = []
        self._checkpoint: tuple[int, int, str] | None = None
        self._positions: list[tuple[Any, ...]] | None = None
        self._balances: list[tuple[str, str]] | None = None
        self._book_written: tuple[list[tuple[Any, ...]], list[tuple[str, str]]] | None = None

    def _close_quietly(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - the open already failed; report that error
            pass

    # ------------------------------------------------------------ schema
    def _migrate(self) -> None:
        """Create a new store, or apply the pending migrations, in one
        ``BEGIN IMMEDIATE`` transaction (re-reading the version under the
        write lock, so two processes opening one new store do it once)."""
        if self.schema_version_found == STORE_SCHEMA_VERSION:
            return
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            version = read_schema_version(c, self.path)
            if version == 0:
                _run_script(c, _V1_SCHEMA)
                version = 1
            for m in MIGRATIONS:
                if m.from_version == version:
                    try:
                        m.apply(c, self.path)
                    except StoreError:
                        raise
                    except Exception as exc:
                        raise StoreError(
                            f"{self.path}: migration of the store from schema version {m.from_version} to "
                            f"{m.to_version} failed ({type(exc).__name__}: {exc}); the store is unchanged"
                        ) from exc
                    version = m.to_version
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        """The schema version of the open store (always the current one)."""
        return int(self.meta_get("schema_version") or 0)

    # ------------------------------------------------------------ meta
    def meta_get(self, key: str) -> str | None:
        """The committed value of ``key`` in ``meta`` (or a pending one), or None."""
        pending = getattr(self, "_meta", None)
        if pending and key in pending:
            return pending[key]
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def meta_set(self, key: str, value: str) -> None:
        """Set ``meta[key]`` at the next flush."""
        self._meta[key] = value

    # ------------------------------------------------------------ writes
    def append(self, event: Event) -> int:
        """Buffer ``event`` for the journal; returns its sequence number."""
        self._seq += 1
        payload = json.dumps(event.to_dict(), separators=(",", ":"))
        self._journal.append((self._seq, event.ts_event, event.ts_init, event.type, payload))
        self._pending_events.append((self._seq, event))
        if isinstance(event, OrderFilled):
            self._fills.append(fill_row(event, self._seq))
        return self._seq

    def record_order(self, order: Order) -> None:
        """Buffer the order's latest state for the ``orders`` table."""
        self._orders[order.client_order_id] = order_row(order)

    def record_positions(
        self, portfolio: "Portfolio", instruments: Mapping[InstrumentId, "Instrument"] | None = None,
        quote: str | None = None,
    ) -> None:
        """Buffer the engine's book for ``positions`` and ``balances`` (see
        the module docstring); called before every commit so the tables
        always match the journal committed with them. Nothing is buffered
        when the book has not changed since the last call.

        ``instruments`` gives each instrument's base and quote assets (else
        they are read from the symbol); ``quote`` is the currency of
        ``portfolio.equity_start`` (default: the first instrument's quote).
        The equity start, quote, assets and the portfolio's short-selling
        settings and registered instruments also go to ``meta['book']``, so
        :mod:`core.rebuild` replays fills into a portfolio set up the same.
        """
        assets = {i: (inst.base, inst.quote) for i, inst in (instruments or {}).items()}
        if quote is None and assets:
            quote = next(iter(assets.values()))[1]
        positions = position_rows(portfolio)
        last = self._positions if self._positions is not None else (
            None if self._book_written is None else self._book_written[0])
        if last == positions:
            return
        balances = balance_rows(book_balances(portfolio, quote, assets))
        self._positions, self._balances = positions, balances
        book = json.dumps({
            "equity_start": dec_str(portfolio.equity_start), "quote": quote,
            "assets": {str(i): list(a) for i, a in sorted(assets.items(), key=lambda kv: str(kv[0]))},
            "allow_short": portfolio.allow_short,
            "registered": {str(i): [b, q, portfolio.short_by_instrument.get(i)]
                           for i, (b, q) in portfolio.instrument_assets.items()},
        }, sort_keys=True)
        if self.meta_get("book") != book:
            self._meta["book"] = book

    def record_governance(self, seq: int, ts: int, who: str, action: str, reason: str, details: dict[str, Any]) -> None:
        """Buffer a governance action (``seq`` is its journal sequence, ``ts`` UTC ns)."""
        self._gov.append((seq, ts, who, action, reason, json.dumps(details, sort_keys=True)))

    def record_alert(self, seq: int, ts: int, level: str, code: str, message: str) -> None:
        """Buffer an alert (``seq`` is its journal sequence, ``ts`` UTC ns)."""
        self._alerts.append((seq, ts, level, code, message))

    def upsert_model(self, row: dict[str, Any]) -> None:
        """Buffer a ``models`` row (one model version; shape in the module
        docstring). ``created_seq`` None keeps the stored one."""
        prev = self._models.get(row["model_id"])
        if row.get("created_seq") is None and prev is not None:
            row = {**row, "created_seq": prev.get("created_seq")}
        self._models[row["model_id"]] = row

    def record_allocation(self, seq: int, family: str, ts: int, weight: str, budget: str) -> None:
        """Buffer an ``allocations`` row (``seq`` the AllocationChanged
        event's journal sequence; weight a fraction, budget quote, strings)."""
        self._allocs.append((seq, family, ts, weight, budget))

    def set_checkpoint(self, step: int, snapshot: dict[str, Any]) -> None:
        """Buffer the resume point: the engine snapshot after ``step`` bars."""
        self._checkpoint = (1, step, json.dumps(snapshot, separators=(",", ":")))

    @property
    def has_journal_pending(self) -> bool:
        """True when journal rows wait for the next flush."""
        return bool(self._journal)

    @property
    def has_fill_pending(self) -> bool:
        """True when a fill waits for the next flush."""
        return bool(self._fills)

    @property
    def dirty(self) -> bool:
        """True when something is buffered."""
        return bool(self._journal or self._orders or self._meta or self._checkpoint
                    or self._positions is not None or self._models or self._allocs)

    def flush(self) -> list[tuple[int, Event]]:
        """Commit everything buffered in one transaction.

        Returns the ``(seq, event)`` pairs committed, in order, so the caller
        can write them to the audit log after the commit.

        Raises:
            StoreError: when the commit fails (disk full, I/O error); nothing
                buffered is dropped, so a later flush may retry.
        """
        if not self.dirty:
            return []
        c = self.conn
        try:
            with c:
                if self._journal:
                    c.executemany("INSERT INTO journal VALUES (?,?,?,?,?)", self._journal)
                if self._orders:
                    c.executemany(_insert_sql("orders", ORDERS_COLUMNS, "INSERT OR REPLACE"),
                                  list(self._orders.values()))
                if self._fills:
                    c.executemany(_insert_sql("fills", FILLS_COLUMNS, "INSERT OR IGNORE"), self._fills)
                if self._gov:
                    c.executemany(_insert_sql("governance_actions", GOVERNANCE_COLUMNS), self._gov)
                if self._alerts:
                    c.executemany(_insert_sql("alerts", ALERTS_COLUMNS), self._alerts)
                for row in self._models.values():
                    if row.get("created_seq") is None:
                        old = c.execute("SELECT created_seq FROM models WHERE model_id=?",
                                        (row["model_id"],)).fetchone()
                        row = {**row, "created_seq": old[0] if old else row["updated_seq"]}
                    c.execute(_insert_sql("models", MODELS_COLUMNS, "INSERT OR REPLACE"),
                              tuple(row[k] for k in MODELS_COLUMNS))
                if self._allocs:
                    c.executemany(_insert_sql("allocations", ALLOCATIONS_COLUMNS, "INSERT OR REPLACE"), self._allocs)
                if self._positions is not None and self._balances is not None:
                    c.execute("DELETE FROM positions")
                    c.executemany(_insert_sql("positions", POSITIONS_COLUMNS), self._positions)
                    c.execute("DELETE FROM balances")
                    c.executemany(_insert_sql("balances", BALANCES_COLUMNS), self._balances)
                if self._meta:
                    c.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(self._meta.items()))
                if self._checkpoint is not None:
                    c.execute("INSERT OR REPLACE INTO checkpoint VALUES (?,?,?)", self._checkpoint)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: commit failed: {exc}") from exc
        done = self._pending_events
        if self._positions is not None and self._balances is not None:
            self._book_written = (self._positions, self._balances)
        self._journal, self._orders, self._fills, self._gov, self._alerts = [], {}, [], [], []
        self._models, self._allocs = {}, []
        self._meta, self._pending_events, self._checkpoint = {}, [], None
        self._positions = self._balances = None
        return done

    # ------------------------------------------------------------ reads
    def load_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """The committed ``(step, snapshot)`` or None."""
        row = self.conn.execute("SELECT step, snapshot FROM checkpoint WHERE id=1").fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    def iter_journal(self, after_seq: int = 0) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """Committed journal rows after ``after_seq`` as ``(seq, type, payload)``."""
        for seq, typ, payload in self.conn.execute(
            "SELECT seq, type, payload FROM journal WHERE seq > ? ORDER BY seq", (after_seq,)
        ):
            yield int(seq), typ, json.loads(payload)

    def close(self) -> None:
        """Close the connection (pending writes are not flushed)."""
        self.conn.close()
