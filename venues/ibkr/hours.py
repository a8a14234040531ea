"""Trading hours of an IB contract, from its contract details.

IB sends the sessions of the next days in ``ContractDetails.liquidHours``
(regular trading hours) and ``ContractDetails.tradingHours`` (every hour the
contract trades), in the exchange's time zone ``ContractDetails.timeZoneId``
(TWS API reference, "ContractDetails": *"The trading hours of the product.
This value will contain the trading hours of the current day as well as the
next's. For example, 20090507:0700-1830,1830-2330;20090508:CLOSED. In TWS
versions 965+ there is an option in the Global Configuration API settings
to return 1 month of trading hours. In TWS version 970+, the format includes
the date of the closing time to clarify potential ambiguity, ex:
20180323:0400-20180323:2000;20180326:0400-20180326:2000"*).

Both formats are read:

* current: ``20240102:0930-20240102:1600;20240103:CLOSED`` (a session per
  ``;`` item, the closing date written out; an overnight futures session
  reads ``20240101:1700-20240102:1600``);
* older: ``20090507:0700-1830,1830-2330;20090508:CLOSED`` (several ranges
  of one day separated by ``,``; a closing time at or before the opening
  time ends on the next day).

Sessions are half-open intervals ``[open, close)`` in UTC nanoseconds. Hours
are known only for the days IB listed: a time outside them is reported as
not covered (the adapter treats it as closed and asks IB again).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NANOS = 1_000_000_000

#: time-zone names older TWS versions send that are not (or not the same) IANA
#: zones: "EST" in IANA is a fixed UTC-5 without daylight saving, while IB
#: means the exchange's local time (New York) with it
LEGACY_ZONES = {
    "EST": "America/New_York", "EDT": "America/New_York", "EST5EDT": "America/New_York",
    "CST": "America/Chicago", "CDT": "America/Chicago", "CST6CDT": "America/Chicago",
    "MST": "America/Denver", "MDT": "America/Denver",
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles",
    "GMT": "Europe/London", "BST": "Europe/London",
    "MET": "Europe/Berlin", "CET": "Europe/Berlin",
    "JST": "Asia/Tokyo", "HKT": "Asia/Hong_Kong",
}


def exchange_zone(tz_id: str) -> ZoneInfo:
    """The IANA zone of an IB ``timeZoneId`` (``US/Eastern``,
    ``America/New_York``, or a legacy abbreviation such as ``EST``; IB
    sometimes appends a description in parentheses, which is dropped).

    Raises:
        ValueError: naming ``timeZoneId`` and the value when it is empty or
            not a known zone.
    """
    name = (tz_id or "").split("(")[0].strip()
    if not name:
        raise ValueError("timeZoneId: empty; the contract details carry no exchange time zone")
    try:
        return ZoneInfo(LEGACY_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timeZoneId: unknown time zone {tz_id!r}") from None


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session, ``[open_ns, close_ns)`` in UTC nanoseconds."""

    open_ns: int
    close_ns: int


@dataclass(frozen=True, slots=True)
class TradingHours:
    """The sessions of a contract over the days IB listed.

    Attributes:
        tz: the exchange's IANA zone (from ``timeZoneId``).
        sessions: sorted, non-overlapping sessions (UTC ns).
        first_ns: local midnight starting the first listed day (UTC ns).
        horizon_ns: local midnight ending the last listed day, or the end
            of the last session if later (UTC ns): hours are known before it.
        source: the text parsed (for messages).
    """

    tz: str
    sessions: tuple[Session, ...]
    first_ns: int
    horizon_ns: int
    source: str = ""

    def covers(self, ts_ns: int) -> bool:
        """True when ``ts_ns`` (UTC ns) falls within the listed days."""
        return self.first_ns <= ts_ns < self.horizon_ns

    def session_at(self, ts_ns: int) -> Session | None:
        """The session open at ``ts_ns`` (UTC ns), or None."""
        i = bisect.bisect_right([s.open_ns for s in self.sessions], ts_ns) - 1
        if i >= 0 and ts_ns < self.sessions[i].close_ns:
            return self.sessions[i]
        return None

    def is_open(self, ts_ns: int) -> bool:
        """True when a session is open at ``ts_ns`` (UTC ns); False outside
        the sessions and outside the listed days."""
        return self.session_at(ts_ns) is not None

    def next_open(self, ts_ns: int) -> int | None:
        """The opening (UTC ns) of the first session starting after
        ``ts_ns``, or None if IB listed none."""
        for s in self.sessions:
            if s.open_ns > ts_ns:
                return s.open_ns
        return None


def _local_ns(zone: ZoneInfo, day: date, hhmm: str, field: str, item: str) -> int:
    if len(hhmm) != 4 or not hhmm.isdigit():
        raise ValueError(f"{field}: bad time {hhmm!r} in {item!r} (expected HHMM)")
    h, m = int(hhmm[:2]), int(hhmm[2:])
    if h == 24 and m == 0:  # "2400": the end of the day
        day, h = day + timedelta(days=1), 0
    if h > 23 or m > 59:
        raise ValueError(f"{field}: bad time {hhmm!r} in {item!r}")
    local = datetime.combine(day, time(h, m), tzinfo=zone)
    return int(local.astimezone(timezone.utc).timestamp()) * NANOS


def _day(text: str, field: str, item: str) -> date:
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"{field}: bad date {text!r} in {item!r} (expected YYYYMMDD)")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ValueError(f"{field}: bad date {text!r} in {item!r}") from None


def _point(text: str, default_day: date, field: str, item: str) -> tuple[date, str]:
    if ":" in text:
        d, _, hhmm = text.partition(":")
        return _day(d, field, item), hhmm
    return default_day, text


def parse_hours(text: str, tz_id: str, field: str = "liquidHours") -> TradingHours:
    """Parse IB's trading-hours text (``tradingHours``/``liquidHours``) in the
    zone ``tz_id`` (``timeZoneId``) into :class:`TradingHours`.

    Example: ``parse_hours("20240102:0930-20240102:1600;20240103:CLOSED",
    "US/Eastern")`` has one session, 14:30 to 21:00 UTC on 2 January 2024
    (New York is UTC-5 in winter), and covers 2-3 January local time.

    Raises:
        ValueError: naming ``field`` and the offending item for text that is
            empty or not in either IB format, or an unknown ``tz_id``.
    """
    zone = exchange_zone(tz_id)
    items = [s.strip() for s in (text or "").split(";") if s.strip()]
    if not items:
        raise ValueError(f"{field}: empty; IB sent no trading hours")
    sessions: list[Session] = []
    days: list[date] = []
    last_close = 0
    for item in items:
        head, sep, rest = item.partition(":")
        if not sep:
            raise ValueError(f"{field}: cannot parse {item!r} (expected YYYYMMDD:...)")
        day = _day(head, field, item)
        days.append(day)
        if rest.strip().upper() == "CLOSED":
            continue
        for rng in rest.split(","):
            a, dash, b = rng.partition("-")
            if not dash:
                raise ValueError(f"{field}: cannot parse range {rng!r} in {item!r} (expected open-close)")
            d_open, hh_open = _point(a.strip(), day, field, item)
            d_close, hh_close = _point(b.strip(), day, field, item)
            open_ns = _local_ns(zone, d_open, hh_open, field, item)
            close_ns = _local_ns(zone, d_close, hh_close, field, item)
            if close_ns <= open_ns and ":" not in b:  # older format: ends on the next day
                close_ns = _local_ns(zone, d_close + timedelta(days=1), hh_close, field, item)
            if close_ns <= open_ns:
                raise ValueError(f"{field}: session {rng!r} in {item!r} closes before it opens")
            sessions.append(Session(open_ns, close_ns))
            last_close = max(last_close, close_ns)
    sessions.sort(key=lambda s: s.open_ns)
    merged: list[Session] = []
    for s in sessions:  # adjacent or overlapping ranges (1830-1830) form one session
        if merged and s.open_ns <= merged[-1].close_ns:
            merged[-1] = Session(merged[-1].open_ns, max(merged[-1].close_ns, s.close_ns))
        else:
            merged.append(s)
    first = _local_ns(zone, min(days), "0000", field, items[0])
    horizon = max(_local_ns(zone, max(days) + timedelta(days=1), "0000", field, items[-1]), last_close)
    return TradingHours(tz=zone.key, sessions=tuple(merged), first_ns=first, horizon_ns=horizon, source=text)


def utc_text(ts_ns: int) -> str:
    """``YYYY-MM-DD HH:MM UTC`` of UTC nanoseconds, for messages."""
    return datetime.fromtimestamp(ts_ns // NANOS, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
