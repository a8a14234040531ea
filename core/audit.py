"""The append-only JSONL audit trail (``audit/orders.jsonl``).

One line per order event and per governance action, written after the
store committed it, each carrying its journal sequence number ``seq``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.events import ORDER_EVENT_TYPES, Event


AUDITED_TYPES = ORDER_EVENT_TYPES | {"TradingStateChanged", "ModelStateChanged"}


class AuditLog:
    """Appends JSON lines to ``path`` (created with its folder).

    ``write_events`` keeps only audited types (order events and governance
    actions). Lines are flushed to the OS at each call; the journal, not this
    file, is the source of truth (it is repaired from the journal at start,
    issue 5).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write_events(self, events: list[tuple[int, Event]]) -> int:
        """Append the audited events among ``(seq, event)`` pairs; returns
        the number of lines written."""
        n = 0
        for seq, ev in events:
            if ev.type in AUDITED_TYPES:
                rec: dict[str, Any] = {"seq": seq, **ev.to_dict()}
                self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                n += 1
        if n:
            self._fh.flush()
        return n

    def close(self) -> None:
        """Flush to disk and close."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
