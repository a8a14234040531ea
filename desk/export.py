"""``desk export-pnl``: the daily PnL CSV from the store (issue 8, Reports).

``export_pnl(state_dir, date, tz)`` writes ``<state_dir>/exports/pnl_<date>.csv``
(written to a temporary file and renamed, so a reader never sees half a
file; an existing file of that date is replaced). A day in another zone
than the run's venue-day zone is another span of time, so it gets its own
file, ``pnl_<date>_<zone>.csv`` with the zone's ``/`` written ``-``
(``pnl_2025-06-10_Europe-Berlin.csv``), and never replaces the run's own
export of that date. The CSV has a header and
one row per model and instrument, then a total row; columns
(:data:`core.daily_pnl.EXPORT_COLUMNS`), money in the quote currency as exact
decimal strings (no float anywhere):

=============== ================================================================
``date``        the local date (YYYY-MM-DD) in ``tz``
``model_id``    the model (``TOTAL`` on the total row)
``instrument_id`` ``SYMBOL.VENUE`` ("" on the total row)
``realized``    Σ realized PnL of the day's fills, by fill time (quote, net of fees)
``unrealized``  the change of the stored end-of-day unrealized PnL: the day's
                ``EndOfDayMarked`` mark minus the previous stored one (quote);
                0 when the day has no stored mark (see below)
``fees``        Σ fee value of the day's fills (quote; informational: already
                inside ``realized`` or the position's cost)
``pnl``         ``realized + unrealized``
``trades``      number of fills booked (a netted fill counts once per model)
``volume``      Σ fill notional ``quantity × price`` (quote)
=============== ================================================================

The formulas are :func:`core.daily_pnl.pnl_export_rows`; the fills are the
journal replayed as :mod:`core.rebuild` replays it
(:func:`core.daily_pnl.journal_fill_pnl`), the marks the journal's
``EndOfDayMarked`` events (:func:`core.daily_pnl.journal_eod_marks`) of the
same time zone. Marks stored for another zone's days are not used (their
days are other instants): the unrealized column is then 0 and a warning
says so.

* The default ``date`` is the last complete day on the engine clock: the
  local date in ``tz`` of the store's latest journal time (``MAX(ts_init)``,
  the engine clock when it last wrote), minus one day.
* The default ``tz`` is the run's venue-day zone (``day_tz`` in the store's
  setup record), else UTC.
* A date without trades writes a file with only the total row of zeros.
* The store is opened read-only (``mode=ro``): it works while the daemon
  runs (SQLite WAL lets a reader in beside the writer; it sees the last
  commit) and it does not take ``desk.lock``.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from core.daily_pnl import EXPORT_COLUMNS, journal_eod_marks, journal_fill_pnl, pnl_export_rows, venue_day, zone
from core.store import StoreError, read_schema_version


class ExportError(Exception):
    """The export cannot run: no store, an unreadable store, a bad date or
    zone (the message names the option and the value). Exit code 2."""


@dataclass(slots=True)
class ExportResult:
    """What :func:`export_pnl` wrote: the file, the local ``day`` and ``tz``,
    the rows (total last) and warnings for the operator."""

    path: Path
    day: Date
    tz: str
    rows: list[dict[str, str]]
    warnings: list[str] = field(default_factory=list)


def open_store_readonly(path: Path) -> sqlite3.Connection:
    """An ``sqlite3`` connection to the desk store at ``path``, read-only
    (URI ``mode=ro``: nothing is created or written; no lock file taken).

    Raises:
        ExportError: when the file does not exist or is not a desk store
            this code can read (naming the file).
    """
    if not path.is_file():
        raise ExportError(f"no store at {path}: run the desk on this --state-dir first")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        read_schema_version(conn, path)
        conn.execute("SELECT 1 FROM journal LIMIT 1").fetchall()
    except (sqlite3.Error, StoreError) as exc:
        raise ExportError(f"{path}: cannot read the store: {exc}") from None
    return conn


def engine_now_ns(conn: sqlite3.Connection) -> int | None:
    """The engine clock as the store last saw it: the largest ``ts_init``
    (UTC ns) in the journal; None for an empty journal."""
    row = conn.execute("SELECT MAX(ts_init) FROM journal").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def setup_day_tz(conn: sqlite3.Connection) -> str | None:
    """The run's venue-day zone from ``meta['setup']`` (``day_tz``), or None."""
    row = conn.execute("SELECT value FROM meta WHERE key='setup'").fetchone()
    if row is None:
        return None
    try:
        tz = json.loads(row[0]).get("day_tz")
    except (ValueError, AttributeError):
        return None
    return tz if isinstance(tz, str) and tz else None


def export_file_name(day: Date, zone_name: str, run_zone: str) -> str:
    """The export's file name: ``pnl_<day>.csv`` for a day in the run's
    venue-day zone ``run_zone``, else ``pnl_<day>_<zone>.csv`` with the
    zone's ``/`` as ``-`` (``pnl_2025-06-10_Europe-Berlin.csv``)."""
    if zone_name == run_zone:
        return f"pnl_{day.isoformat()}.csv"
    return f"pnl_{day.isoformat()}_{zone_name.replace('/', '-')}.csv"


def export_pnl(state_dir: Path, date: str | None = None, tz: str | None = None) -> ExportResult:
    """Write ``<state_dir>/exports/pnl_<date>.csv`` (module docstring; with
    a ``tz`` other than the run's zone ``pnl_<date>_<zone>.csv``, see
    :func:`export_file_name`) and return what was written.

    ``date`` ``YYYY-MM-DD`` (default: the last complete day on the engine
    clock); ``tz`` an IANA zone (default: the run's ``day_tz``, else UTC).

    Raises:
        ExportError: no store, an unreadable store, ``--date`` not
            YYYY-MM-DD, ``--tz`` not an IANA zone, or no ``--date`` and an
            empty journal (no engine clock to take the default from).
    """
    if date is not None:
        try:
            day: Date | None = Date.fromisoformat(date)
        except (TypeError, ValueError):
            raise ExportError(f"--date: expected YYYY-MM-DD, got {date!r}") from None
        if len(date) != 10:
            raise ExportError(f"--date: expected YYYY-MM-DD, got {date!r}")
    else:
        day = None
    store_path = Path(state_dir) / "desk.sqlite"
    conn = open_store_readonly(store_path)
    try:
        run_zone = setup_day_tz(conn) or "UTC"
        zone_name = tz or run_zone
        try:
            zone(zone_name)
        except ValueError:
            raise ExportError(f"--tz: not an IANA zone name: {zone_name!r}") from None
        now = engine_now_ns(conn)
        if day is None:
            if now is None:
                raise ExportError(f"{store_path}: the journal is empty, so there is no engine clock to take "
                                  f"the last complete day from; give --date YYYY-MM-DD")
            day = venue_day(now, zone_name) - timedelta(days=1)
        elif now is not None and day > venue_day(now, zone_name):
            raise ExportError(f"--date: {day} is after the engine clock's day {venue_day(now, zone_name)} "
                              f"({zone_name}): the store has nothing of it yet")
        try:
            fills, notes = journal_fill_pnl(conn)
            all_marks = journal_eod_marks(conn)
        except sqlite3.Error as exc:
            raise ExportError(f"{store_path}: cannot read the journal: {exc}") from None
        except ValueError as exc:
            raise ExportError(f"{store_path}: {exc}") from None
    finally:
        conn.close()
    warnings = [f"journal replay: {n}" for n in notes]
    marks = all_marks.get(zone_name, {})
    others = sorted(z for z in all_marks if z != zone_name)
    if others and not marks:
        warnings.append(f"end-of-day marks are stored for days in {', '.join(others)}, not {zone_name}: "
                        f"the unrealized column is 0")
    elif day not in marks:
        warnings.append(f"no end-of-day mark stored for {day} ({zone_name}): the unrealized column is 0")
    rows = pnl_export_rows(fills, marks, day, zone_name)
    out_dir = Path(state_dir) / "exports"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / export_file_name(day, zone_name, run_zone)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return ExportResult(path, day, zone_name, rows, warnings)


def export_pnl_main(state_dir: Path, date: str | None, tz: str | None = None) -> int:
    """The ``desk export-pnl`` command: run :func:`export_pnl`, print the
    written path on stdout (warnings on stderr) and return the exit code:
    0 written, 2 bad input or no readable store (the message on stderr).
    Pass ``tz=None`` when ``--tz`` was not given (the run's zone is used)."""
    try:
        res = export_pnl(Path(state_dir), date, tz)
    except ExportError as exc:
        print(f"desk export-pnl: {exc}", file=sys.stderr)
        return 2
    for w in res.warnings:
        print(f"desk export-pnl: {w}", file=sys.stderr)
    print(res.path)
    return 0
