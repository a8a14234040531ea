"""The engine's store: an append-only event journal plus materialized tables
in SQLite (WAL), through sqlite-utils (DESIGN.md section 5).

Writes are buffered and committed in one transaction per ``flush()``
(``executemany`` on ``db.conn``, the fast path measured in DESIGN.md section
7); the engine flushes before any order leaves (write-before-send) and at
checkpoints. ``synchronous=FULL`` so an acknowledged commit survives a power
cut. A failing commit raises :class:`StoreError`; the engine halts on it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

from core.events import Event, OrderFilled
from core.orders import Order
from core.values import dec_str

STORE_SCHEMA_VERSION = 1


class StoreError(Exception):
    """The store could not be read or written (full disk, I/O error, newer schema)."""


class Store:
    """The engine's SQLite store at ``path``.

    Tables: ``meta`` (key/value), ``journal`` (seq, ts_event, ts_init, type,
    payload JSON), ``orders`` (one row per ClientOrderId, its latest state),
    ``fills`` (one row per trade id), ``governance_actions``, ``alerts``,
    ``checkpoint`` (the resume point and engine snapshot).

    Raises:
        StoreError: on open, when the file is not a desk store or its schema
            is newer than this code.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite_utils.Database(self.path)
            self.conn: sqlite3.Connection = self.db.conn
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable desk store: {exc}") from exc
        row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()
        self._seq = int(row[0])
        self._journal: list[tuple[int, int, int, str, str]] = []
        self._orders: dict[str, tuple[Any, ...]] = {}
        self._fills: list[tuple[Any, ...]] = []
        self._gov: list[tuple[Any, ...]] = []
        self._alerts: list[tuple[Any, ...]] = []
        self._meta: dict[str, str] = {}
        self._pending_events: list[tuple[int, Event]] = []

    # ------------------------------------------------------------ schema
    def _create_schema(self) -> None:
        db = self.db
        if "meta" not in db.table_names():
            db["meta"].create({"key": str, "value": str}, pk="key")
            db["meta"].insert({"key": "schema_version", "value": str(STORE_SCHEMA_VERSION)})
        version = int(self.meta_get("schema_version") or 0)
        if version > STORE_SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {version} is newer than this desk's "
                f"{STORE_SCHEMA_VERSION}; upgrade the desk"
            )
        if "journal" not in db.table_names():
            db["journal"].create(
                {"seq": int, "ts_event": int, "ts_init": int, "type": str, "payload": str}, pk="seq"
            )
            db["journal"].create_index(["type"])
        if "orders" not in db.table_names():
            db["orders"].create(
                {
                    "client_order_id": str, "model_id": str, "instrument_id": str, "side": str,
                    "order_type": str, "quantity": str, "price": str, "time_in_force": str,
                    "status": str, "filled_qty": str, "avg_px": str, "venue_order_id": str,
                    "reason": str, "step": int, "ts_init": int, "ts_last": int,
                },
                pk="client_order_id",
            )
        if "fills" not in db.table_names():
            db["fills"].create(
                {
                    "trade_id": str, "client_order_id": str, "model_id": str, "instrument_id": str,
                    "side": str, "last_qty": str, "last_px": str, "commission": str,
                    "commission_currency": str, "liquidity_side": str, "ts_event": int, "seq": int,
                },
                pk="trade_id",
            )
        if "governance_actions" not in db.table_names():
            db["governance_actions"].create(
                {"seq": int, "ts": int, "who": str, "action": str, "reason": str, "details": str}, pk="seq"
            )
        if "alerts" not in db.table_names():
            db["alerts"].create({"seq": int, "ts": int, "level": str, "code": str, "message": str}, pk="seq")
        if "checkpoint" not in db.table_names():
            db["checkpoint"].create({"id": int, "step": int, "snapshot": str}, pk="id")

    # ------------------------------------------------------------ meta
    def meta_get(self, key: str) -> str | None:
        """The committed value of ``key`` in ``meta`` (or a pending one), or None."""
        if hasattr(self, "_meta") and key in self._meta:
            return self._meta[key]
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
            self._fills.append(
                (
                    event.trade_id, event.client_order_id, event.model_id, str(event.instrument_id),
                    event.side, dec_str(event.last_qty), dec_str(event.last_px), dec_str(event.commission),
                    event.commission_currency, event.liquidity_side, event.ts_event, self._seq,
                )
            )
        return self._seq

    def record_order(self, order: Order) -> None:
        """Buffer the order's latest state for the ``orders`` table."""
        self._orders[order.client_order_id] = (
            order.client_order_id, order.model_id, str(order.instrument_id), order.side.value,
            order.order_type.value, dec_str(order.quantity),
            None if order.price is None else dec_str(order.price), order.time_in_force.value,
            order.status.value, dec_str(order.filled_qty),
            None if order.avg_px is None else dec_str(order.avg_px), order.venue_order_id,
            order.reason, order.step, order.ts_init, order.ts_last,
        )

    def record_governance(self, seq: int, ts: int, who: str, action: str, reason: str, details: dict[str, Any]) -> None:
        """Buffer a governance action (``seq`` is its journal sequence)."""
        self._gov.append((seq, ts, who, action, reason, json.dumps(details, sort_keys=True)))

    def record_alert(self, seq: int, ts: int, level: str, code: str, message: str) -> None:
        """Buffer an alert (``seq`` is its journal sequence)."""
        self._alerts.append((seq, ts, level, code, message))

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
        return bool(self._journal or self._orders or self._meta or getattr(self, "_checkpoint", None))

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
                    c.executemany(
                        "INSERT OR REPLACE INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        list(self._orders.values()),
                    )
                if self._fills:
                    c.executemany("INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", self._fills)
                if self._gov:
                    c.executemany("INSERT INTO governance_actions VALUES (?,?,?,?,?,?)", self._gov)
                if self._alerts:
                    c.executemany("INSERT INTO alerts VALUES (?,?,?,?,?)", self._alerts)
                if self._meta:
                    c.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(self._meta.items()))
                cp = getattr(self, "_checkpoint", None)
                if cp is not None:
                    c.execute("INSERT OR REPLACE INTO checkpoint VALUES (?,?,?)", cp)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: commit failed: {exc}") from exc
        done = self._pending_events
        self._journal, self._orders, self._fills, self._gov, self._alerts = [], {}, [], [], []
        self._meta, self._pending_events, self._checkpoint = {}, [], None
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
