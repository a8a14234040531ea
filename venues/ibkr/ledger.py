"""The IBKR adapter's own small ledger (SQLite): what IB does not keep for
the desk.

IB keeps the orders and executions; it does not know which desk model an
order belongs to, and its commission reports (with the realized PnL of a
closing fill) are sent once. The ledger keeps, per ``ClientOrderId`` (IB
``orderRef``), the model id, instrument, side, quantity, time in force, IB's
order and permanent ids and the status last reported to the desk; per
execution (``execId``), the fill as reported, its commission and IB's
realized PnL (``NULL`` when IB sent its "unset" value for an opening fill:
no value, not zero).

Rows are written as they happen (an order before it is sent, a fill when it
is reported), so a restart of the desk finds the model of every order IB
still lists. Money, prices and quantities are stored as decimal strings.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, model_id TEXT NOT NULL, instrument_id TEXT NOT NULL, side TEXT NOT NULL,
    quantity TEXT NOT NULL, time_in_force TEXT NOT NULL, order_id INTEGER NOT NULL DEFAULT 0,
    perm_id INTEGER NOT NULL DEFAULT 0, venue_order_id TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', ts_init INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    exec_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL,
    px TEXT NOT NULL, commission TEXT, commission_currency TEXT NOT NULL DEFAULT '', realized_pnl TEXT,
    liquidity_side TEXT NOT NULL, ts_event INTEGER NOT NULL, venue_order_id TEXT NOT NULL DEFAULT ''
);
"""

ORDER_COLUMNS = ("client_order_id", "model_id", "instrument_id", "side", "quantity", "time_in_force", "order_id",
                 "perm_id", "venue_order_id", "status", "reason", "ts_init")
EXEC_COLUMNS = ("exec_id", "client_order_id", "side", "qty", "px", "commission", "commission_currency",
                "realized_pnl", "liquidity_side", "ts_event", "venue_order_id")


class Ledger:
    """The adapter's SQLite ledger at ``path`` (``None``: in memory).

    Raises:
        sqlite3.Error: when the file cannot be opened or written.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self.conn = sqlite3.connect(":memory:" if self.path is None else str(self.path))
        if self.path is not None:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self.conn.commit()

    def put_order(self, row: dict[str, Any]) -> None:
        """Insert or replace one order row (keys: ``ORDER_COLUMNS``) and commit."""
        self.conn.execute(f"INSERT OR REPLACE INTO orders ({', '.join(ORDER_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(ORDER_COLUMNS))})", tuple(row[c] for c in ORDER_COLUMNS))
        self.conn.commit()

    def put_execution(self, row: dict[str, Any]) -> None:
        """Insert or replace one execution row (keys: ``EXEC_COLUMNS``) and commit."""
        self.conn.execute(f"INSERT OR REPLACE INTO executions ({', '.join(EXEC_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(EXEC_COLUMNS))})", tuple(row[c] for c in EXEC_COLUMNS))
        self.conn.commit()

    def orders(self) -> list[dict[str, Any]]:
        """Every order row, oldest first."""
        cur = self.conn.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders ORDER BY rowid")
        return [dict(zip(ORDER_COLUMNS, r)) for r in cur]

    def executions(self) -> list[dict[str, Any]]:
        """Every execution row, in the order they were written."""
        cur = self.conn.execute(f"SELECT {', '.join(EXEC_COLUMNS)} FROM executions ORDER BY rowid")
        return [dict(zip(EXEC_COLUMNS, r)) for r in cur]

    def commit(self) -> None:
        """Commit (rows are committed as written; kept for the venue protocol)."""
        self.conn.commit()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
