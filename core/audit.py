"""The append-only JSONL audit trail (``audit/orders.jsonl``, issue 8).

One JSON object per line, written after the store committed the event, for
every order event, denial, governance command and model decision
(:func:`is_audited`). Each line carries (:func:`audit_record`):

* ``seq``: the event's journal sequence number (strictly increasing);
* ``ts``: when it happened, ``ts_event`` as ISO 8601 UTC with nanoseconds
  (``2026-01-02T00:30:00.000000001Z``);
* ``actor``: who: the model id for the desk's own order events
  (``OrderInitialized``, ``OrderDenied``, ``OrderSubmitted``,
  ``OrderPendingCancel``, ``OrderPendingUpdate``); ``"venue"`` for the
  venue's reports (accepted, rejected, filled, canceled, triggered, updated,
  modify rejected, expired); ``"desk"`` for an internal cross
  (``venue_order_id`` ``INTERNAL``) and a ``FillAllocated``; the event's
  ``who`` for governance and lifecycle events; ``"canary"`` for
  ``CanaryAnalysed``, ``"allocator"`` for ``AllocationChanged``,
  ``"policy:<rule>"`` for ``PolicyTriggered``; for the governance actions
  that are journaled as alerts (``VENUE_HALTED``, ``VENUE_RESUMED``,
  ``FLATTEN``, and the daemon's stop ``DAEMON_STOPPED``: actor ``daemon``,
  reason what stopped it) the ``who`` written in the message
  (``core.governance``'s wording, read as :mod:`core.rebuild` reads it),
  else ``"governance"``;
* ``reason``: the event's ``reason`` ("" when it has none);
* then every field of the event (``Event.to_dict``: ``type``, ``v``,
  ``ts_event``, ``ts_init``, ...), unchanged.

The journal, not this file, is the source of truth: at start the file is
repaired from it (:func:`repair_audit`), so a line built live and one
appended by the repair are identical.

Rotation by size: before a line that would take the current file past
``max_bytes``, the file is closed (fsync-ed) and renamed (``os.replace``,
atomic) to ``orders.jsonl.1``, older ones shift to ``.2``, ``.3``, ... and
the oldest beyond ``backups`` is deleted (``backups=None`` keeps all); a new
current file is opened. A line is never split across files (a single line
longer than ``max_bytes`` gets a file of its own). A crash between the
rename and the open of the new file leaves no current file: the repair then
reads the last sequence from the newest rotated file and appends only what
came after it, so no line is lost or written twice. A crash while older
files shift leaves a gap in the numbering (``.1`` missing, ``.2`` present);
nothing is lost and the next rotation shifts around the gap.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from core.events import ORDER_EVENT_TYPES, Event
from core.governance import STOP_MESSAGE_RE

#: lifecycle and policy decisions (issue 7): audited with their figures
DECISION_TYPES = frozenset({
    "ModelVersionRegistered", "ModelStageChanged", "CanaryAnalysed", "CanaryPromoted", "CanaryRolledBack",
    "AllocationChanged", "PolicyTriggered",
})
#: every event type that is audited whatever its payload
AUDITED_TYPES = ORDER_EVENT_TYPES | {"TradingStateChanged", "ModelStateChanged", "FillAllocated"} | DECISION_TYPES
#: alert codes that record a governance action (``core.governance``): audited too
GOVERNANCE_ALERT_CODES = frozenset({"VENUE_HALTED", "VENUE_RESUMED", "FLATTEN", "DAEMON_STOPPED"})
#: order events the venue reports (actor ``"venue"``); the other order events are the desk's (actor = model id)
VENUE_REPORT_TYPES = frozenset({
    "OrderAccepted", "OrderRejected", "OrderCanceled", "OrderFilled", "OrderTriggered", "OrderUpdated",
    "OrderModifyRejected", "OrderExpired",
})
#: defaults of :class:`AuditLog`
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 20

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# core.governance's alert messages (the same patterns core.rebuild reads)
_GOV_WHO = {
    "VENUE_HALTED": re.compile(r"^\S+ halted by (?P<who>.*?): (?P<reason>.*)\Z", re.DOTALL),
    "VENUE_RESUMED": re.compile(r"^\S+ resumed by (?P<who>.*?): (?P<reason>.*)\Z", re.DOTALL),
    "FLATTEN": re.compile(r"^flatten by (?P<who>.*?): (?P<reason>.*)\Z", re.DOTALL),
    "DAEMON_STOPPED": STOP_MESSAGE_RE,
}
_SUFFIX = re.compile(r"^\.(\d+)$")


def iso_ns(ts_ns: int) -> str:
    """``ts_ns`` (int UTC ns since the epoch) as ISO 8601 UTC with all nine
    fraction digits: ``1767310200000000001`` → ``2026-01-01T23:30:00.000000001Z``.

    Raises:
        TypeError: if ``ts_ns`` is not an int.
    """
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise TypeError(f"ts_ns: expected int UTC nanoseconds, got {type(ts_ns).__name__} {ts_ns!r}")
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return (_EPOCH + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def is_audited(event_type: str, payload: Mapping[str, Any]) -> bool:
    """Whether an event (its type name and its ``to_dict`` payload) goes to
    the audit log: order events, governance commands (trading state, model
    pause/resume, the governance alerts :data:`GOVERNANCE_ALERT_CODES`), fill
    allocations and model decisions (:data:`DECISION_TYPES`)."""
    if event_type in AUDITED_TYPES:
        return True
    return event_type == "AlertRaised" and payload.get("code") in GOVERNANCE_ALERT_CODES


def _actor_reason(event_type: str, p: Mapping[str, Any]) -> tuple[str, str]:
    reason = p.get("reason")
    reason = reason if isinstance(reason, str) else ""
    if event_type in ORDER_EVENT_TYPES:
        if event_type in VENUE_REPORT_TYPES:
            return ("desk" if p.get("venue_order_id") == "INTERNAL" else "venue"), reason
        return str(p.get("model_id", "")), reason
    if "who" in p:
        return str(p["who"]), reason
    if event_type == "AlertRaised":
        message = str(p.get("message", ""))
        pattern = _GOV_WHO.get(str(p.get("code")))
        m = pattern.match(message) if pattern else None
        return (m["who"], m["reason"]) if m else ("governance", message)
    if event_type == "PolicyTriggered":
        return f"policy:{p.get('rule', '')}", reason
    return {"CanaryAnalysed": "canary", "AllocationChanged": "allocator"}.get(event_type, "desk"), reason


def audit_record(seq: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The audit line of the event journaled at ``seq`` whose ``to_dict``
    is ``payload``: ``{"seq", "ts", "actor", "reason", **payload}`` (fields
    in the module docstring). Used by the live writer and by the repair.

    Raises:
        KeyError: if ``payload`` has no ``type``.
        TypeError: if its ``ts_event`` is not an int.
    """
    typ = payload["type"]
    actor, reason = _actor_reason(typ, payload)
    rec: dict[str, Any] = {"seq": seq, "ts": iso_ns(payload.get("ts_event", 0)), "actor": actor, "reason": reason}
    for k, v in payload.items():
        if k not in ("seq", "ts", "actor"):
            rec[k] = v
    return rec


def _line(seq: int, payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(audit_record(seq, payload), separators=(",", ":")) + "\n").encode("utf-8")


def rotated_files(path: str | Path) -> list[tuple[int, Path]]:
    """The rotated files of the audit log at ``path`` (``orders.jsonl.1``,
    ``.2``, ...) that exist, as ``(n, path)`` newest first (ascending ``n``)."""
    p = Path(path)
    out = []
    if p.parent.is_dir():
        for q in p.parent.iterdir():
            if q.name.startswith(p.name):
                m = _SUFFIX.match(q.name[len(p.name):])
                if m:
                    out.append((int(m.group(1)), q))
    return sorted(out)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rotate_files(path: str | Path, backups: int | None = DEFAULT_BACKUPS) -> None:
    """Shift the rotated files of ``path`` up by one (``.1`` → ``.2`` ...;
    the file at ``.backups`` is deleted first, ``backups=None`` keeps all)
    and rename ``path`` to ``path.1``; every step is an atomic
    ``os.replace``. Files beyond ``.backups`` are left alone. The caller
    closes ``path`` before and opens a new one after."""
    p = Path(path)
    existing = dict(rotated_files(p))
    if backups is not None and backups in existing:
        existing.pop(backups).unlink()
    for n in sorted((n for n in existing if backups is None or n < backups), reverse=True):
        os.replace(existing[n], p.with_name(f"{p.name}.{n + 1}"))
    if p.exists():
        os.replace(p, p.with_name(f"{p.name}.1"))
    _fsync_dir(p.parent)


class AuditLog:
    """Appends audit lines to ``path`` (created with its folder).

    ``write_events`` keeps only audited events (:func:`is_audited`) and
    writes :func:`audit_record` lines, each flushed to the OS as it is
    written (``flush`` per line; ``close`` fsyncs). ``max_bytes`` (bytes,
    default 50 MiB) and ``backups`` (rotated files kept, default 20; None
    keeps all) set the rotation described in the module docstring.

    Raises:
        ValueError: naming the field, if ``max_bytes`` is not a positive int
            or ``backups`` not a positive int or None.
    """

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int | None = DEFAULT_BACKUPS) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes: expected a positive int (bytes), got {max_bytes!r}")
        if backups is not None and (isinstance(backups, bool) or not isinstance(backups, int) or backups <= 0):
            raise ValueError(f"backups: expected a positive int or None, got {backups!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotations = 0
        self._open()

    def _open(self) -> None:
        self._fh = open(self.path, "ab")
        self._size = self._fh.tell()

    def _write(self, data: bytes) -> None:
        if self._size and self._size + len(data) > self.max_bytes:
            self.rotate()
        self._fh.write(data)
        self._fh.flush()
        self._size += len(data)

    def rotate(self) -> None:
        """Close the current file (fsync-ed), rotate it (:func:`rotate_files`)
        and open a new, empty one."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
        rotate_files(self.path, self.backups)
        self.rotations += 1
        self._open()

    def write_events(self, events: list[tuple[int, Event]]) -> int:
        """Append the audited events among ``(seq, event)`` pairs (committed
        to the journal, in sequence order); returns the number of lines
        written."""
        n = 0
        for seq, ev in events:
            typ = ev.type
            if typ in AUDITED_TYPES or (typ == "AlertRaised" and getattr(ev, "code", None) in GOVERNANCE_ALERT_CODES):
                self._write(_line(seq, ev.to_dict()))
                n += 1
        return n

    def close(self) -> None:
        """Flush to disk and close."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()


def _tail(p: Path) -> tuple[int, int, int, int]:
    """``(torn, last_seq, good_end, size)`` of the file ``p``, read from
    the end in growing chunks: ``good_end`` the byte offset just after its
    last complete line that parses with a ``seq`` (0 when none does),
    ``last_seq`` that line's sequence (0 with none), ``torn`` 1 when bytes
    after it do not form such a line, ``size`` the file's size."""
    torn, last_seq, good_end = 0, 0, 0
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
    return torn, last_seq, good_end, size


def repair_audit(path: str | Path,
                 journal: Iterable[tuple[int, str, dict[str, Any]]] | Callable[[int], Any]) -> dict[str, int]:
    """Repair the audit log from the journal at start (issue 5).

    ``journal`` is either an iterable of ``(seq, type, payload)`` of
    committed events in sequence order, or a callable taking ``after_seq``
    and returning such an iterable (``Store.iter_journal``), so only the
    events after the last audited one are read. The file is append-only
    with increasing ``seq``, so only its tail is read: a torn last line (no
    newline, or not JSON: the process died while writing it) is cut off;
    then every audited journal event (:func:`is_audited`) with a ``seq``
    beyond the last good line is appended as :func:`audit_record` lines;
    existing lines are left as they are. When the current file is missing
    or holds no good line (a crash right after a rotation), the last
    sequence comes from the newest rotated file that has one (``.1``, else
    ``.2``, ...); rotated files are only read, never changed.

    Returns ``{"torn": 0|1, "appended": n, "last_seq": n}``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torn, last_seq = 0, 0
    found = False
    if p.exists():
        torn, last_seq, good_end, size = _tail(p)
        found = good_end > 0
        if good_end < size:
            with open(p, "r+b") as fh:
                fh.truncate(good_end)
    if not found:
        for _, q in rotated_files(p):
            _, seq, end, _ = _tail(q)
            if end > 0:
                last_seq = seq
                break
    events = journal(last_seq) if callable(journal) else journal
    appended = 0
    with open(p, "ab") as fh:
        for seq, typ, payload in events:
            if seq <= last_seq or not is_audited(typ, payload):
                continue
            fh.write(_line(seq, payload))
            appended += 1
        fh.flush()
        os.fsync(fh.fileno())
    return {"torn": torn, "appended": appended, "last_seq": last_seq}
