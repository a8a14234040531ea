"""Reader for Binance public-data kline (candlestick) CSV files.

Layout (https://github.com/binance/binance-public-data, "Klines" section):
``open_time, open, high, low, close, volume, close_time, quote_asset_volume,
number_of_trades, taker_buy_base_asset_volume, taker_buy_quote_asset_volume,
ignore``. Binance's own files have no header; the desk's recorded files
(``../shared/data/binance/klines/``) keep only the first six columns under the
header ``open_time,open,high,low,close,volume``. Both are accepted; columns
after the sixth are ignored.

``open_time`` is Unix epoch milliseconds, except in Binance's spot files from
2025-01-01 on, which use microseconds (binance-public-data changelog,
2025-01-01: "timestamps for SPOT data from January 1st 2025 onwards will be
in microseconds"). The unit is told apart per row by magnitude (see
:func:`epoch_to_ns`).

The whole file is validated before anything is returned; the first problem
raises :class:`core.errors.DataError` as ``FILE:LINE: field 'NAME': ...``
with the 1-based physical line (a header line counts).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from core.data import Bar
from core.errors import DataError
from core.identifiers import InstrumentId

#: the six columns the reader uses, in file order
KLINE_FIELDS = ("open_time", "open", "high", "low", "close", "volume")

_NS_PER_S = 1_000_000_000

#: Binance kline interval codes with a fixed length, in nanoseconds
#: (GET /api/v3/klines "Kline intervals"; ``1M`` (month) has no fixed length
#: and is left to inference from the data).
INTERVALS_NS: Mapping[str, int] = MappingProxyType({
    "1s": 1 * _NS_PER_S,
    "1m": 60 * _NS_PER_S,
    "3m": 3 * 60 * _NS_PER_S,
    "5m": 5 * 60 * _NS_PER_S,
    "15m": 15 * 60 * _NS_PER_S,
    "30m": 30 * 60 * _NS_PER_S,
    "1h": 3600 * _NS_PER_S,
    "2h": 2 * 3600 * _NS_PER_S,
    "4h": 4 * 3600 * _NS_PER_S,
    "6h": 6 * 3600 * _NS_PER_S,
    "8h": 8 * 3600 * _NS_PER_S,
    "12h": 12 * 3600 * _NS_PER_S,
    "1d": 86400 * _NS_PER_S,
    "1w": 7 * 86400 * _NS_PER_S,
})

#: accepted names of the first column in a header (lower case, spaces as _)
_TIME_HEADER_NAMES = frozenset({"open_time", "opentime", "timestamp", "time", "date", "ts", "ts_open"})

#: quote assets of Binance spot symbols, longest first so that ``BTCFDUSD``
#: splits as BTC/FDUSD and ``BTCTUSD`` as BTC/TUSD. Checked against every one
#: of the 2,292 symbols of the 2023-09-08 exchangeInfo (tests/unit/test_klines.py).
#: ``AEUR`` is deliberately absent: it would split ``ADAEUR`` as AD/AEUR.
KNOWN_QUOTE_ASSETS: tuple[str, ...] = tuple(
    sorted(
        {
            "USDT", "FDUSD", "USDC", "BUSD", "TUSD", "USDP", "USDS", "UST", "DAI", "PAX", "VAI",
            "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", "DOT",
            "EUR", "TRY", "GBP", "BRL", "RUB", "AUD", "UAH", "ZAR", "PLN", "RON", "NGN", "ARS",
            "JPY", "MXN", "COP", "CZK", "BIDR", "IDRT", "BKRW", "BVND",
        },
        key=lambda q: (-len(q), q),
    )
)


@dataclass(frozen=True)
class KlineFile:
    """A validated kline file.

    Attributes:
        path: the file as given to :func:`load_klines`, as a ``Path``.
        instrument_id: ``SYMBOL.VENUE``.
        symbol: the venue symbol, upper case (``BTCUSDT``).
        interval_ns: bar length in nanoseconds (from the file name, else the
            most common step between consecutive open times).
        bars: the bars in file order (ascending ``ts_open``), ``len == rows``.
        gaps: one ``(ts_open_before, ts_open_after)`` pair in UTC nanoseconds
            per place where consecutive bars are more than one interval apart
            (missing bars, e.g. an exchange outage); for the caller to log.
    """

    path: Path
    instrument_id: InstrumentId
    symbol: str
    interval_ns: int
    bars: list[Bar]
    gaps: list[tuple[int, int]]


def epoch_to_ns(value: int) -> int:
    """Convert an integer epoch timestamp to nanoseconds, by magnitude.

    ``value < 1e14`` is milliseconds (1e14 ms is the year 5138),
    ``1e14 <= value < 1e17`` microseconds, ``value >= 1e17`` nanoseconds.
    Integer arithmetic only: the result is exact.

    Raises:
        ValueError: if ``value`` is negative.
    """
    if value < 0:
        raise ValueError(f"negative epoch timestamp {value}")
    if value >= 10**17:
        return value
    if value >= 10**14:
        return value * 1_000
    return value * 1_000_000


def symbol_from_filename(path: str | Path) -> str:
    """The symbol of a Binance public-data file name: the part before the
    first ``-``, upper-cased (``BTCUSDT-1m-2025-05-20.csv`` → ``BTCUSDT``)."""
    stem = Path(path).name.split(".", 1)[0]
    return stem.split("-", 1)[0].strip().upper()


def interval_from_filename(path: str | Path) -> int | None:
    """Bar length in ns from the second ``-``-separated part of the file name
    (``BTCUSDT-5m-….csv`` → 300 s), or ``None`` if absent or not one of
    :data:`INTERVALS_NS` (case-sensitive: Binance's ``1M`` means a month)."""
    parts = Path(path).name.split(".", 1)[0].split("-")
    if len(parts) < 2:
        return None
    return INTERVALS_NS.get(parts[1].strip())


def quote_asset_of(symbol: str) -> str:
    """The quote asset of a Binance spot symbol (``BTCUSDT`` → ``USDT``).

    Matches the longest known quote asset (:data:`KNOWN_QUOTE_ASSETS`) that
    ends the symbol and leaves a non-empty base.

    Raises:
        ValueError: naming the symbol when no known quote asset matches.
    """
    sym = symbol.strip().upper()
    for quote in KNOWN_QUOTE_ASSETS:
        if len(sym) > len(quote) and sym.endswith(quote):
            return quote
    raise ValueError(f"symbol {symbol!r}: cannot tell its quote asset (known: {', '.join(KNOWN_QUOTE_ASSETS)})")


def base_asset_of(symbol: str) -> str:
    """The base asset of a Binance spot symbol (``BTCUSDT`` → ``BTC``).

    Raises:
        ValueError: naming the symbol when no known quote asset matches.
    """
    sym = symbol.strip().upper()
    return sym[: -len(quote_asset_of(sym))]


def _bad(path: str, line: int, field: str, message: str) -> DataError:
    return DataError(path, line, f"field {field!r}: {message}")


def _parse_price(path: str, line: int, field: str, text: str, allow_zero: bool) -> Decimal:
    """Parse one OHLCV field exactly; DataError on garbage, NaN/inf, sign."""
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise _bad(path, line, field, f"not a number: {text!r}") from None
    if not value.is_finite():
        raise _bad(path, line, field, f"not a finite number: {text!r}")
    if value < 0:
        raise _bad(path, line, field, f"negative: {text!r}")
    if not allow_zero and value == 0:
        raise _bad(path, line, field, f"zero price: {text!r}")
    return value


def _raise_row_error(path: str, line: int, row: list[str]) -> None:
    """Validate one row field by field, in file order, and raise the first
    problem as DataError (the fast path in :func:`load_klines` found one)."""
    t_txt = row[0].strip()
    if not (t_txt.isascii() and t_txt.isdigit()):
        if t_txt.startswith("-") and t_txt[1:].isascii() and t_txt[1:].isdigit():
            raise _bad(path, line, "open_time", f"negative: {t_txt!r}")
        raise _bad(path, line, "open_time", f"not an integer epoch timestamp: {row[0]!r}")
    o = _parse_price(path, line, "open", row[1], False)
    h = _parse_price(path, line, "high", row[2], False)
    lo = _parse_price(path, line, "low", row[3], False)
    c = _parse_price(path, line, "close", row[4], False)
    _parse_price(path, line, "volume", row[5], True)
    if h < lo:
        raise _bad(path, line, "high", f"{row[2]!r} is below low {row[3]!r}")
    if o < lo or o > h:
        raise _bad(path, line, "open", f"{row[1]!r} is outside [low {row[3]!r}, high {row[2]!r}]")
    if c < lo or c > h:
        raise _bad(path, line, "close", f"{row[4]!r} is outside [low {row[3]!r}, high {row[2]!r}]")
    raise DataError(path, line, f"invalid row {row[:6]!r}")  # not reached


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except (InvalidOperation, ValueError):
        return False
    return True


def _check_header(path: str, line: int, row: list[str]) -> None:
    names = [c.strip().lstrip("\ufeff").lower().replace(" ", "_") for c in row]
    if len(names) < len(KLINE_FIELDS):
        raise DataError(
            path, line,
            f"header: {len(names)} columns {row!r}, need at least {len(KLINE_FIELDS)}: {','.join(KLINE_FIELDS)}",
        )
    if names[0] not in _TIME_HEADER_NAMES:
        raise DataError(path, line, f"header: column 1 is {row[0]!r}, expected 'open_time'")
    for i, (got, want) in enumerate(zip(names[1:6], KLINE_FIELDS[1:]), start=2):
        if got != want:
            raise DataError(path, line, f"header: column {i} is {row[i - 1]!r}, expected {want!r}")


def load_klines(path: str | Path, symbol: str | None = None, venue: str = "BINANCE") -> KlineFile:
    """Read and validate a Binance kline CSV.

    Args:
        path: the CSV file (``LF`` or ``CRLF``, optional header line, optional
            trailing newline, >= 6 columns per row).
        symbol: the venue symbol; default: from the file name (part before
            the first ``-``, upper-cased).
        venue: venue of the instrument id (``BINANCE``).

    Returns:
        A :class:`KlineFile`; prices and volume are Decimal from the file's
        exact strings; ``Bar.ts_open`` is ``open_time`` in ns, ``Bar.ts_event``
        is ``ts_open + interval_ns``, ``Bar.line`` the 1-based physical line.

    Raises:
        DataError: ``FILE:LINE: field 'NAME': ...`` for the first bad row:
            fewer than 6 fields (missing column), a field that is not a
            number, NaN/Infinity, a negative price or volume, a zero price,
            ``high < low``, open or close outside ``[low, high]``, an
            ``open_time`` that goes backwards or repeats, consecutive bars
            closer than one interval; ``FILE: ...`` (no line) for an
            unreadable file, no data rows, a bad symbol, or a file name whose
            interval disagrees with most of the data.
    """
    spath = str(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(spath, 0, f"cannot read: {exc.strerror or exc}") from None

    sym = (symbol if symbol is not None else symbol_from_filename(path)).strip().upper()
    try:
        instrument_id = InstrumentId(sym, venue)
    except ValueError as exc:
        fh.close()
        raise DataError(spath, 0, f"symbol: {exc}") from None

    # Pass 1: parse and validate each row; keep (ts_ns, o, h, l, c, v, line).
    rows: list[tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal, int]] = []
    append = rows.append
    D = Decimal
    last_ts = -1
    last_line = 0
    seen_first = False
    with fh:
        reader = csv.reader(fh)
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line (e.g. a second trailing newline)
                if not seen_first:
                    seen_first = True
                    row[0] = row[0].lstrip("\ufeff")
                    if not any(_is_number(c) for c in row[:6]):
                        _check_header(spath, line, row)
                        continue
                if len(row) < 6:
                    raise _bad(spath, line, KLINE_FIELDS[len(row)],
                               f"missing (row has {len(row)} fields, need at least 6)")
                t_txt = row[0].strip()
                if not (t_txt.isascii() and t_txt.isdigit()):
                    _raise_row_error(spath, line, row)
                ts = epoch_to_ns(int(t_txt))
                # fast path: exact Decimal parse plus every invariant in one
                # expression; on any doubt the slow path names the problem.
                # (An ordering comparison with NaN raises InvalidOperation.)
                try:
                    o = D(row[1]); h = D(row[2]); lo = D(row[3]); c = D(row[4]); v = D(row[5])
                    ok = (lo > 0 and lo <= o <= h and lo <= c <= h and h.is_finite()
                          and v >= 0 and v.is_finite())
                except (InvalidOperation, ValueError):
                    ok = False
                if not ok:
                    _raise_row_error(spath, line, row)
                if ts <= last_ts:
                    what = "repeated timestamp" if ts == last_ts else "goes backwards"
                    raise _bad(spath, line, "open_time", f"{t_txt}: {what} (previous row on line {last_line})")
                last_ts, last_line = ts, line
                append((ts, o, h, lo, c, v, line))
        except csv.Error as exc:
            raise DataError(spath, reader.line_num, f"CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise DataError(spath, 0, f"not UTF-8 text: {exc.reason}") from None

    if not rows:
        raise DataError(spath, 0, "no data rows")

    # Pass 2: interval and gaps.
    diffs = Counter(b[0] - a[0] for a, b in zip(rows, rows[1:]))
    named = interval_from_filename(path)
    if named is not None:
        interval = named
        if diffs:
            mode, count = diffs.most_common(1)[0]
            total = len(rows) - 1
            if mode != interval and count * 2 > total:
                raise DataError(
                    spath, 0,
                    f"interval: the file name says {interval // _NS_PER_S} s but {count} of {total} "
                    f"consecutive bars are {mode / _NS_PER_S:g} s apart",
                )
    elif diffs:
        # most common step; ties go to the smaller step
        interval = min(diffs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    else:
        raise DataError(spath, 0, "interval: a single bar and no interval in the file name (e.g. BTCUSDT-1m-….csv)")

    gaps: list[tuple[int, int]] = []
    bars: list[Bar] = []
    bar_append = bars.append
    prev_ts = None
    prev_line = 0
    for ts, o, h, lo, c, v, line in rows:
        if prev_ts is not None:
            step = ts - prev_ts
            if step < interval:
                raise _bad(
                    spath, line, "open_time",
                    f"only {step / _NS_PER_S:g} s after the bar on line {prev_line}, the interval is "
                    f"{interval / _NS_PER_S:g} s",
                )
            if step > interval:
                gaps.append((prev_ts, ts))
        prev_ts, prev_line = ts, line
        bar_append(Bar(instrument_id, o, h, lo, c, v, ts, ts + interval, line))

    return KlineFile(Path(path), instrument_id, sym, interval, bars, gaps)
