"""Daily PnL bucketed by venue day in an IANA time zone (issue 4, Accounting).

The formula, per local date ``D`` of the zone ``tz`` (UTC by default)::

    daily_pnl(D) = realized(D) + (U_eod(D) - U_eod(previous stored date))

* ``realized(D)`` is the sum of the realized PnL of the fills whose *fill
  time* (``OrderFilled.ts_event``, UTC ns) falls in ``[start of D, start of
  D+1)`` in ``tz`` (quote, net of fees, as returned by
  ``Portfolio.apply_fill``).
* ``U_eod(D)`` is the stored end-of-day mark: the book's unrealized PnL
  (quote) at the last marks of day ``D``. The change is taken against the
  latest stored mark of an *earlier* date (``opening_unrealized``, default 0,
  before the first). A date without a stored mark has an unrealized change
  of 0; the change then lands on the next date that has one. So the rows sum
  exactly to ``Σ realized + (last stored mark - opening_unrealized)``.
* A venue day is a calendar date in ``tz``: it lasts 23 or 25 hours on the
  days daylight saving starts or ends (``Europe/Berlin`` 2026-03-29 and
  2026-10-25) and is still one row.

Sums are exact Decimal (no quantization here: the inputs are already
quantized money; quantize for display). No float anywhere.

How the engine calls it (core/engine.py is not changed by this module)::

    # set up once
    self.eod_marks = EndOfDayMarks(tz=venue_tz)          # "UTC" by default
    self.realized_log: list[RealizedPnl] = []
    # in _book_fill
    r = self.portfolio.apply_fill(event)
    self.realized_log.append(RealizedPnl.from_fill(event, r))
    # after portfolio.mark(...) for each bar (marks valid at ts)
    self.eod_marks.observe(ts, self.portfolio.unrealized())
    # rows, including today's open day at the latest marks
    rows = daily_pnl(self.realized_log, self.eod_marks.snapshot(include_open=True), tz=venue_tz)

After a restart the realized events can be rebuilt from the journal instead
of being checkpointed: ``realized_events(<OrderFilled events from
store.iter_journal()>, Portfolio(capital, ...))``; the marks survive through
``EndOfDayMarks.to_dict``/``from_dict`` in the checkpoint. For one model or
one venue, pass ``model_id=``/``venue=`` and marks of the same scope
(``portfolio.unrealized(model_id, venue)``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.events import OrderFilled
from core.identifiers import InstrumentId
from core.portfolio import Portfolio
from core.values import ZERO

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NS_PER_DAY = 86_400 * 1_000_000_000


def zone(tz: str) -> ZoneInfo:
    """The IANA time zone named ``tz`` (``"UTC"``, ``"Europe/Berlin"``).

    Raises:
        ValueError: naming ``tz`` when it is not a known IANA zone.
    """
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"time zone: not an IANA zone name: {tz!r}") from None


def _check_ts(ts_ns: object) -> int:
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise TypeError(f"ts_ns: expected int UTC nanoseconds, got {type(ts_ns).__name__} {ts_ns!r}")
    return ts_ns


def venue_day(ts_ns: int, tz: str = "UTC") -> date:
    """The local calendar date in ``tz`` of the instant ``ts_ns`` (UTC ns).

    Integer arithmetic only (sub-microsecond digits are floored, which never
    moves an instant across a day boundary: boundaries are whole seconds).
    Example: 2026-03-29T21:59Z is 2026-03-29 (23:59 CEST) in Europe/Berlin,
    22:00Z is 2026-03-30.

    Raises:
        TypeError: if ``ts_ns`` is not an int.
        ValueError: if ``tz`` is not an IANA zone name.
    """
    _check_ts(ts_ns)
    return (_EPOCH + timedelta(microseconds=ts_ns // 1000)).astimezone(zone(tz)).date()


def _to_ns(dt: datetime) -> int:
    d = dt.astimezone(timezone.utc) - _EPOCH
    return d.days * _NS_PER_DAY + d.seconds * 1_000_000_000 + d.microseconds * 1000


def day_bounds(day: date, tz: str = "UTC") -> tuple[int, int]:
    """``(start_ns, end_ns)``: the UTC ns of local midnight starting ``day``
    and of the next local midnight in ``tz``, a half-open interval
    ``[start, end)``; ``end - start`` is 23 h or 25 h across a DST change.
    (In a zone whose DST change happens at midnight, a skipped midnight
    starts the day at the transition instant.)

    Raises:
        ValueError: if ``tz`` is not an IANA zone name.
    """
    z = zone(tz)
    start = datetime.combine(day, time(0), tzinfo=z)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=z)
    return _to_ns(start), _to_ns(end)


@dataclass(frozen=True, slots=True)
class RealizedPnl:
    """The realized PnL of one fill: ``ts_ns`` fill time (UTC ns, the fill's
    ``ts_event`` at the venue), ``model_id``, ``instrument_id`` and
    ``realized`` (quote, net of fees; 0 for an opening fill)."""

    ts_ns: int
    model_id: str
    instrument_id: InstrumentId
    realized: Decimal

    def __post_init__(self) -> None:
        _check_ts(self.ts_ns)
        if not isinstance(self.realized, Decimal):
            raise TypeError(f"realized: expected Decimal, got {type(self.realized).__name__} {self.realized!r}")

    @classmethod
    def from_fill(cls, fill: OrderFilled, realized: Decimal) -> "RealizedPnl":
        """The event for ``fill`` with the ``realized`` that
        ``Portfolio.apply_fill(fill)`` returned.

        Raises:
            TypeError: if ``realized`` is not a Decimal.
        """
        return cls(fill.ts_event, fill.model_id, fill.instrument_id, realized)


def realized_events(fills: Iterable[OrderFilled], portfolio: Portfolio) -> list[RealizedPnl]:
    """Apply ``fills`` in order to ``portfolio`` (normally a fresh one with
    the run's ``equity_start``, ``allow_short``, registered instruments and
    asset prices) and return one :class:`RealizedPnl` per fill. Used to
    rebuild the daily PnL from the journal's ``OrderFilled`` events.

    Raises:
        AccountingError, MissingPriceError: as ``Portfolio.apply_fill``.
    """
    return [RealizedPnl.from_fill(f, portfolio.apply_fill(f)) for f in fills]


@dataclass(frozen=True, slots=True)
class DailyPnl:
    """One venue day's row. ``day`` local date in the zone; ``start_ns`` /
    ``end_ns`` its bounds (UTC ns, half-open); ``realized`` quote realized by
    fills in the day; ``unrealized_change`` quote, stored end-of-day mark
    minus the previous one (0 without a mark for the day); ``unrealized_eod``
    the stored mark or ``None``; ``pnl = realized + unrealized_change``;
    ``fills`` number of realized events in the day."""

    day: date
    start_ns: int
    end_ns: int
    realized: Decimal
    unrealized_change: Decimal
    unrealized_eod: Decimal | None
    pnl: Decimal
    fills: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row (date ISO, money as decimal strings)."""
        return {
            "day": self.day.isoformat(), "start_ns": self.start_ns, "end_ns": self.end_ns,
            "realized": format(self.realized, "f"), "unrealized_change": format(self.unrealized_change, "f"),
            "unrealized_eod": None if self.unrealized_eod is None else format(self.unrealized_eod, "f"),
            "pnl": format(self.pnl, "f"), "fills": self.fills,
        }


def daily_pnl(
    events: Iterable[RealizedPnl],
    eod_unrealized: Mapping[date, Decimal] | None = None,
    tz: str = "UTC",
    *,
    opening_unrealized: Decimal = ZERO,
    model_id: str | None = None,
    venue: str | None = None,
) -> list[DailyPnl]:
    """Daily PnL rows, one per local date in ``tz`` that has a realized
    event or a stored end-of-day mark, in date order (formula in the module
    docstring: realized by fill time + change of unrealized between stored
    end-of-day marks).

    ``events`` realized PnL per fill (any order); ``eod_unrealized`` stored
    end-of-day unrealized PnL per local date (quote), of the same scope as
    the events after filtering; ``opening_unrealized`` the unrealized before
    the first stored mark (quote, default 0: a flat book); ``model_id`` /
    ``venue`` keep only the events of one model / one venue
    (``instrument_id.venue``). Pure: no clock, no I/O.

    Worked example (issue 4): +5 at 2026-01-01 23:30Z, +12 at 2026-01-02
    00:30Z, -3 at 01:30Z → UTC: 2026-01-01 5, 2026-01-02 9; Europe/Moscow
    (UTC+3): one row, 2026-01-02 14.

    Raises:
        ValueError: if ``tz`` is not an IANA zone name.
        TypeError: if a mark or ``opening_unrealized`` is not a Decimal.
    """
    z = zone(tz)  # validates once
    realized: dict[date, Decimal] = {}
    counts: dict[date, int] = {}
    for ev in events:
        if model_id is not None and ev.model_id != model_id:
            continue
        if venue is not None and ev.instrument_id.venue != venue:
            continue
        d = (_EPOCH + timedelta(microseconds=ev.ts_ns // 1000)).astimezone(z).date()
        realized[d] = realized.get(d, ZERO) + ev.realized
        counts[d] = counts.get(d, 0) + 1
    marks = dict(eod_unrealized or {})
    for v in (opening_unrealized, *marks.values()):
        if not isinstance(v, Decimal):
            raise TypeError(f"unrealized mark: expected Decimal, got {type(v).__name__} {v!r}")
    rows: list[DailyPnl] = []
    prev = opening_unrealized
    for d in sorted(set(realized) | set(marks)):
        r = realized.get(d, ZERO)
        eod = marks.get(d)
        change = ZERO
        if eod is not None:
            change, prev = eod - prev, eod
        start, end = day_bounds(d, tz)
        rows.append(DailyPnl(d, start, end, r, change, eod, r + change, counts.get(d, 0)))
    return rows


@dataclass(slots=True)
class EndOfDayMarks:
    """Records the end-of-day unrealized PnL (quote) per local date in
    ``tz`` from a stream of observations on the engine clock.

    ``observe(ts_ns, unrealized)`` after each re-mark of the book; when an
    observation falls on a later local date than the previous one, the
    previous day's last observed value becomes its stored mark. ``marks``
    holds the closed days (one entry per day: bounded by the run's length in
    days, not by the number of bars).
    """

    tz: str = "UTC"
    marks: dict[date, Decimal] = field(default_factory=dict)
    _day: date | None = None
    _last: Decimal = ZERO

    def observe(self, ts_ns: int, unrealized: Decimal) -> date | None:
        """Record ``unrealized`` (quote) as of ``ts_ns`` (UTC ns, engine
        clock); returns the date that this observation closed, or ``None``.

        Raises:
            TypeError: if ``unrealized`` is not a Decimal or ``ts_ns`` not an int.
            ValueError: if ``ts_ns`` falls on an earlier local date than a
                previous observation (the engine clock never goes back), or
                ``tz`` is not an IANA zone name.
        """
        if not isinstance(unrealized, Decimal):
            raise TypeError(f"unrealized: expected Decimal, got {type(unrealized).__name__} {unrealized!r}")
        day = venue_day(ts_ns, self.tz)
        closed = None
        if self._day is not None:
            if day < self._day:
                raise ValueError(f"end-of-day marks: {day} is before the current day {self._day}")
            if day > self._day:
                self.marks[self._day] = self._last
                closed = self._day
        self._day, self._last = day, unrealized
        return closed

    def snapshot(self, include_open: bool = False) -> dict[date, Decimal]:
        """A copy of the stored marks; with ``include_open`` the current
        (not yet closed) day is included at its latest observation, so that
        ``daily_pnl`` shows today's running figure."""
        out = dict(self.marks)
        if include_open and self._day is not None:
            out[self._day] = self._last
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for the checkpoint."""
        return {
            "tz": self.tz,
            "marks": {d.isoformat(): format(v, "f") for d, v in self.marks.items()},
            "day": None if self._day is None else self._day.isoformat(),
            "last": format(self._last, "f"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EndOfDayMarks":
        """Inverse of ``to_dict``."""
        out = cls(d["tz"], {date.fromisoformat(k): Decimal(v) for k, v in d["marks"].items()})
        out._day = None if d["day"] is None else date.fromisoformat(d["day"])
        out._last = Decimal(d["last"])
        return out


# ---------------------------------------------------------------- the daily export (issue 8, desk export-pnl)
@dataclass(frozen=True, slots=True)
class FillPnl:
    """What one booked fill (or one model's part of a netted fill) did to
    its model's book: ``ts_ns`` fill time (``OrderFilled.ts_event``, UTC
    ns), ``model_id``, ``instrument_id``, ``realized`` (quote, net of fees,
    ``Portfolio.apply_fill``'s return), ``fees`` (quote value of the fee,
    the change of ``Position.fees``), ``quantity`` (base units) and
    ``notional`` (quote, ``quantity × price`` quantized to 8 decimals)."""

    ts_ns: int
    model_id: str
    instrument_id: InstrumentId
    realized: Decimal
    fees: Decimal
    quantity: Decimal
    notional: Decimal
    #: False for a perpetual's funding payment (``FundingPaid``, one model's
    #: part): realized money, not a trade (no count, no volume)
    trade: bool = True


def journal_fill_pnl(conn: Any) -> tuple[list[FillPnl], list[str]]:
    """Replay the journal of the store on ``conn`` (an ``sqlite3``
    connection, read-only is enough) the way :mod:`core.rebuild` rebuilds
    the ``positions`` table (a netted order's fill booked through its
    ``FillAllocated`` parts, a repeated fill once, internal crosses as
    plain fills; the portfolio set up from ``meta``), and return one
    :class:`FillPnl` per booked fill in journal order, and the replay's
    notes (fills it could not book, undecodable rows), with one record per
    model's part of each funding payment (``trade=False``). So the export's
    realized per model sums to the stored positions' realized.

    Raises:
        sqlite3.Error: when the journal cannot be read.
    """
    from core.portfolio import AccountingError
    from core.rebuild import _book_settings, _Replay, replay_journal  # the rebuild's own replay rules
    from core.values import quantize_money

    class _Recorder(_Replay):
        def __init__(self, portfolio: Portfolio, allocated: set[str]) -> None:
            super().__init__(portfolio, allocated)
            self.records: list[FillPnl] = []

        def book(self, fill: OrderFilled, seq: int) -> None:
            key = (fill.model_id, fill.instrument_id)
            before = self.portfolio.positions.get(key)
            fees_before = before.fees if before is not None else ZERO
            try:
                realized = self.portfolio.apply_fill(fill)
            except AccountingError as exc:  # the engine books nothing either
                self.note(f"seq {seq}: fill {fill.trade_id} not booked: {exc}")
                return
            self.records.append(FillPnl(
                fill.ts_event, fill.model_id, fill.instrument_id, realized,
                self.portfolio.positions[key].fees - fees_before, fill.last_qty,
                quantize_money(fill.last_qty * fill.last_px)))

        def on_funding(self, seq: int, event: Any) -> None:  # each model's part is realized that day
            try:
                parts = self.portfolio.apply_funding(event.instrument_id, event.amount, event.tran_id,
                                                     at_ns=event.ts_event)
            except (TypeError, ValueError) as exc:
                self.note(f"seq {seq}: funding {event.tran_id} not booked: {exc}")
                return
            for model_id, part in sorted(parts.items()):
                self.records.append(FillPnl(event.ts_event, model_id, event.instrument_id, part, ZERO, ZERO, ZERO,
                                            trade=False))

    notes: list[str] = []
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    book = _book_settings(meta, None, notes)
    allocated = {tid for (tid,) in conn.execute(
        "SELECT DISTINCT json_extract(payload, '$.trade_id') FROM journal WHERE type='FillAllocated'")}
    r = _Recorder(book.portfolio(), allocated)
    r.notes = notes
    replay_journal(conn, r)
    return r.records, r.notes


def journal_eod_marks(conn: Any) -> dict[str, dict[date, dict[tuple[str, str], Decimal]]]:
    """The stored end-of-day marks (``EndOfDayMarked`` journal rows) of the
    store on ``conn``: ``{tz: {day: {(model_id, instrument_id): unrealized
    (quote)}}}``. A day marked more than once keeps its last mark.

    Raises:
        sqlite3.Error: when the journal cannot be read.
        ValueError: naming the journal seq, for a row whose day or
            unrealized cannot be read.
    """
    out: dict[str, dict[date, dict[tuple[str, str], Decimal]]] = {}
    for seq, payload in conn.execute("SELECT seq, payload FROM journal WHERE type='EndOfDayMarked' ORDER BY seq"):
        try:
            p = json.loads(payload)
            day = date.fromisoformat(p["day"])
            rows = {(str(x["model_id"]), str(x["instrument_id"])): Decimal(str(x["unrealized"]))
                    for x in p.get("rows") or []}
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            raise ValueError(f"journal seq {seq}: EndOfDayMarked cannot be read: {exc}") from None
        out.setdefault(str(p.get("tz", "UTC")), {})[day] = rows
    return out


#: columns of the daily PnL export, in order (see :func:`pnl_export_rows`)
EXPORT_COLUMNS: tuple[str, ...] = (
    "date", "model_id", "instrument_id", "realized", "unrealized", "fees", "pnl", "trades", "volume")
#: the ``model_id`` of the total row
TOTAL = "TOTAL"


def pnl_export_rows(
    fills: Iterable[FillPnl], marks: Mapping[date, Mapping[tuple[str, str], Decimal]] | None, day: date,
    tz: str = "UTC",
) -> list[dict[str, str]]:
    """The daily PnL export of local date ``day`` in ``tz``: one row per
    (model, instrument), sorted, then the total row (``model_id``
    :data:`TOTAL`, ``instrument_id`` ""), columns :data:`EXPORT_COLUMNS`,
    money as exact decimal strings:

    * ``realized``: Σ realized of the fills whose fill time is in
      ``day_bounds(day, tz)`` (quote, net of fees: Portfolio.apply_fill),
      plus the perpetuals' funding parts paid or received in it
      (``FundingPaid``, at its ``ts_event``).
    * ``unrealized``: the change of the stored end-of-day unrealized
      (``marks``, per local date, of the same ``tz``): ``day``'s mark minus
      the latest stored mark before it (normally the day before); a pair
      absent from a stored mark is flat there (0); with no earlier mark the
      book was flat (0); when ``day`` itself has no stored mark the change
      is 0 for every pair (it lands on the next marked day, as in
      :func:`daily_pnl`).
    * ``fees``: Σ fee value of those fills (quote). Informational: already
      inside ``realized`` (a reducing fill) or the position's cost (an
      opening one), so it must not be subtracted again.
    * ``pnl`` = ``realized + unrealized``.
    * ``trades``: number of booked fills (each model's part of a netted
      fill, and internal crosses, count as one); ``volume``: Σ notional
      (quote).

    Rows: every pair with a fill that day or in the day's or the previous
    stored mark. The sums assume one quote currency (the desk trades one).
    A day with nothing gives only the total row of zeros. Pure: no I/O.

    Raises:
        ValueError: if ``tz`` is not an IANA zone name.
    """
    start, end = day_bounds(day, tz)
    acc: dict[tuple[str, str], list[Any]] = {}

    def slot(key: tuple[str, str]) -> list[Any]:
        return acc.setdefault(key, [ZERO, ZERO, ZERO, 0, ZERO])  # realized, unrealized, fees, trades, volume

    for f in fills:
        if start <= f.ts_ns < end:
            s = slot((f.model_id, str(f.instrument_id)))
            s[0] += f.realized
            s[2] += f.fees
            s[3] += 1 if f.trade else 0
            s[4] += f.notional
    marks = marks or {}
    if day in marks:
        cur = marks[day]
        earlier = [d for d in marks if d < day]
        prev = marks[max(earlier)] if earlier else {}
        for key in set(cur) | set(prev):
            slot(key)[1] += cur.get(key, ZERO) - prev.get(key, ZERO)
    rows: list[dict[str, str]] = []
    total: list[Any] = [ZERO, ZERO, ZERO, 0, ZERO]
    iso = day.isoformat()
    for (model_id, iid), s in sorted(acc.items()):
        rows.append(_export_row(iso, model_id, iid, s))
        total = [a + b for a, b in zip(total, s)]
    rows.append(_export_row(iso, TOTAL, "", total))
    return rows


def _export_row(iso: str, model_id: str, iid: str, s: list[Any]) -> dict[str, str]:
    realized, unrealized, fees, trades, volume = s
    return {"date": iso, "model_id": model_id, "instrument_id": iid, "realized": format(realized, "f"),
            "unrealized": format(unrealized, "f"), "fees": format(fees, "f"),
            "pnl": format(realized + unrealized, "f"), "trades": str(trades), "volume": format(volume, "f")}
