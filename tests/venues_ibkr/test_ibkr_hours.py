"""IB trading hours (``liquidHours``/``tradingHours`` with ``timeZoneId``),
both of IB's formats, checked against hand conversions to UTC and against
ib_async's own session parser (a second method)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from ib_async.contract import ContractDetails

from venues.ibkr.hours import exchange_zone, parse_hours

NANOS = 1_000_000_000


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp()) * NANOS


def test_current_format_with_a_closed_day():
    h = parse_hours("20240102:0930-20240102:1600;20240103:CLOSED", "US/Eastern")
    # New York is UTC-5 in January: 09:30-16:00 local = 14:30-21:00 UTC
    assert [(s.open_ns, s.close_ns) for s in h.sessions] == [(utc(2024, 1, 2, 14, 30), utc(2024, 1, 2, 21, 0))]
    assert h.is_open(utc(2024, 1, 2, 14, 30)) and not h.is_open(utc(2024, 1, 2, 14, 30) - 1)
    assert h.is_open(utc(2024, 1, 2, 21, 0) - 1) and not h.is_open(utc(2024, 1, 2, 21, 0))
    assert not h.is_open(utc(2024, 1, 3, 15, 0))  # CLOSED
    # listed days: 2 and 3 January, local midnight to local midnight (05:00 UTC)
    assert (h.first_ns, h.horizon_ns) == (utc(2024, 1, 2, 5, 0), utc(2024, 1, 4, 5, 0))
    assert h.covers(utc(2024, 1, 3, 12, 0)) and not h.covers(utc(2024, 1, 4, 5, 0))
    assert h.next_open(utc(2024, 1, 2, 12, 0)) == utc(2024, 1, 2, 14, 30)
    assert h.next_open(utc(2024, 1, 2, 21, 0)) is None


def test_daylight_saving_and_legacy_zone_names():
    # June: New York is UTC-4, so 09:30 local = 13:30 UTC
    june = parse_hours("20240603:0930-20240603:1600", "US/Eastern")
    assert june.sessions[0].open_ns == utc(2024, 6, 3, 13, 30)
    # older TWS sends "EST" for New York time; IANA's "EST" is a fixed UTC-5 that would say 14:30
    legacy = parse_hours("20240603:0930-20240603:1600", "EST")
    assert legacy.sessions == june.sessions and legacy.tz == "America/New_York"
    assert exchange_zone("EST (Eastern Standard Time)").key == "America/New_York"


def test_older_format_ranges_and_overnight():
    # TWS API docs' example: 20090507:0700-1830,1830-2330;20090508:CLOSED (Chicago, UTC-5 in May)
    h = parse_hours("20090507:0700-1830,1830-2330;20090508:CLOSED", "CST", "tradingHours")
    assert [(s.open_ns, s.close_ns) for s in h.sessions] == [(utc(2009, 5, 7, 12, 0), utc(2009, 5, 8, 4, 30))]
    # a closing time before the opening one ends on the next day: 17:00-16:00 Chicago, UTC-6 in January
    night = parse_hours("20240102:1700-1600", "US/Central")
    assert (night.sessions[0].open_ns, night.sessions[0].close_ns) == (utc(2024, 1, 2, 23, 0), utc(2024, 1, 3, 22, 0))
    assert night.horizon_ns == utc(2024, 1, 3, 22, 0)  # the session outlasts its listed day


def test_futures_overnight_sessions_current_format():
    h = parse_hours("20240101:1700-20240102:1600;20240102:1700-20240103:1600", "US/Central")
    assert [(s.open_ns, s.close_ns) for s in h.sessions] == [
        (utc(2024, 1, 1, 23, 0), utc(2024, 1, 2, 22, 0)), (utc(2024, 1, 2, 23, 0), utc(2024, 1, 3, 22, 0))]
    assert not h.is_open(utc(2024, 1, 2, 22, 30))  # the daily maintenance hour
    assert h.next_open(utc(2024, 1, 2, 22, 30)) == utc(2024, 1, 2, 23, 0)


def test_agrees_with_ib_async_session_parser():
    text = ("20240721:CLOSED;20240722:0930-20240722:1600;20240723:0930-20240723:1600;"
            "20240724:0930-20240724:1600")
    cd = ContractDetails(timeZoneId="US/Eastern", liquidHours=text)
    theirs = [(int(s.start.timestamp()) * NANOS, int(s.end.timestamp()) * NANOS) for s in cd.liquidSessions()]
    ours = [(s.open_ns, s.close_ns) for s in parse_hours(text, "US/Eastern").sessions]
    assert ours == theirs and len(ours) == 3


@pytest.mark.parametrize("text, tz, message", [
    ("", "US/Eastern", "liquidHours: empty; IB sent no trading hours"),
    ("2024010:0930-1600", "US/Eastern", "liquidHours: bad date '2024010' in '2024010:0930-1600'"),
    ("20240102:0930", "US/Eastern", "liquidHours: cannot parse range '0930' in '20240102:0930'"),
    ("20240102:0930-16", "US/Eastern", "liquidHours: bad time '16' in '20240102:0930-16'"),
    ("20240102:1600-20240102:0930", "US/Eastern", "liquidHours: session '1600-20240102:0930'"),
    ("20240102:0930-1600", "Mars/Olympus", "timeZoneId: unknown time zone 'Mars/Olympus'"),
    ("20240102:0930-1600", "", "timeZoneId: empty"),
])
def test_bad_hours_name_the_field_and_item(text, tz, message):
    with pytest.raises(ValueError) as err:
        parse_hours(text, tz)
    assert str(err.value).startswith(message)
