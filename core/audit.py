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


AUDITED_TYPES = ORDER_EVENT_TYPES | {"TradingStateChanged", "ModelStateChanged", "FillAllocated"}


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


def repair_audit(path: str | Path, journal: "Any") -> dict[str, int]:
    """Repair the audit log from the journal at start (issue 5).

    ``journal`` is either an iterable of ``(seq, type, payload)`` of
    committed events in sequence order, or a callable taking ``after_seq``
    and returning such an iterable (``Store.iter_journal``), so only the
    events after the last audited one are read. The file is append-only
    with increasing ``seq``, so only its tail is read: a torn last line (no
    newline, or not JSON: the process died while writing it) is cut off;
    then every audited journal event with a ``seq`` beyond the last good
    line is appended; existing lines are left as they are.

    Returns ``{"torn": 0|1, "appended": n, "last_seq": n}``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torn, last_seq, good_end = 0, 0, 0
    if p.exists():
        with open(p, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            chunk = 1 << 16
            while True:  # find the last complete, parseable line from the end
                start = max(0, size - chunk)
                fh.seek(start)
                data = fh.read(size - start)
                lines = data.split(b"\n")
                tail = lines.pop()  # bytes after the last newline ('' when the file ends with one)
                if tail:
                    torn = 1
                end = size - len(tail)
                found = False
                while lines and (start == 0 or len(lines) > 1):
                    line = lines.pop()
                    try:
                        last_seq = int(json.loads(line)["seq"])
                        good_end, found = end, True
                        break
                    except (ValueError, KeyError, TypeError):
                        torn = 1
                        end -= len(line) + 1
                if found or start == 0:
                    if not found:
                        good_end = 0
                    break
                chunk *= 4
        if good_end < size:
            with open(p, "r+b") as fh:
                fh.truncate(good_end)
    events = journal(last_seq) if callable(journal) else journal
    appended = 0
    with open(p, "a", encoding="utf-8") as fh:
        for seq, typ, payload in events:
            if seq <= last_seq or typ not in AUDITED_TYPES:
                continue
            fh.write(json.dumps({"seq": seq, **payload}, separators=(",", ":")) + "\n")
            appended += 1
        fh.flush()
        os.fsync(fh.fileno())
    return {"torn": torn, "appended": appended, "last_seq": last_seq}
