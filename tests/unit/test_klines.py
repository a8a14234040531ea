"""venues.klines: Binance kline CSV reader.

Expected values are read by hand from the data files (quoted in comments) or
worked out with calendar.timegm, never copied from the reader's output.
"""

from __future__ import annotations

import calendar
import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import DataError
from core.identifiers import InstrumentId
from venues.klines import base_asset_of, epoch_to_ns, load_klines, quote_asset_of

from tests.conftest import SHARED_DATA  # noqa: E402

DATA = SHARED_DATA
NS = 1_000_000_000
HEADER = "open_time,open,high,low,close,volume\n"


def utc_ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, 0)) * NS


def need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not present")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


GOOD_ROWS = [
    "1700000000000,100.5,101,99.5,100,1.5",
    "1700000060000,100,100.25,99.75,100.25,2",
    "1700000120000,100.25,100.5,100,100.5,0",
]


def bad_file(tmp_path: Path, bad_row: str, *, header: bool = True, name: str = "BTCUSDT-1m.csv") -> Path:
    """Header (line 1), two good rows (lines 2-3), the bad row on line 4."""
    rows = GOOD_ROWS[:2] + [bad_row]
    return write(tmp_path, name, (HEADER if header else "") + "\n".join(rows) + "\n")


def error_of(path: Path) -> str:
    with pytest.raises(DataError) as ei:
        load_klines(path)
    return str(ei.value)


# --- good input -----------------------------------------------------------


def test_small_file_with_header(tmp_path: Path) -> None:
    p = write(tmp_path, "BTCUSDT-1m-2023-11-14.csv", HEADER + "\n".join(GOOD_ROWS) + "\n")
    kf = load_klines(p)
    assert kf.path == p
    assert kf.symbol == "BTCUSDT"
    assert kf.instrument_id == InstrumentId("BTCUSDT", "BINANCE")
    assert kf.interval_ns == 60 * NS
    assert kf.gaps == []
    assert len(kf.bars) == 3
    b0, b2 = kf.bars[0], kf.bars[2]
    assert (b0.open, b0.high, b0.low, b0.close, b0.volume) == (
        Decimal("100.5"), Decimal("101"), Decimal("99.5"), Decimal("100"), Decimal("1.5"))
    assert b0.ts_open == 1_700_000_000 * NS
    assert b0.ts_event == 1_700_000_060 * NS
    assert b0.line == 2 and b2.line == 4
    assert b2.volume == 0  # zero volume is allowed (real outage bars have it)
    assert str(b0.open) == "100.5"  # exact string, no float detour


def test_no_header_crlf_and_symbol_override(tmp_path: Path) -> None:
    p = write(tmp_path, "whatever.csv", "\r\n".join(GOOD_ROWS) + "\r\n")
    kf = load_klines(p, symbol="ethusdt", venue="SIM")
    assert kf.instrument_id == InstrumentId("ETHUSDT", "SIM")
    assert kf.interval_ns == 60 * NS  # inferred: every step is 60 s
    assert [b.line for b in kf.bars] == [1, 2, 3]
    assert kf.bars[1].close == Decimal("100.25")


def test_crlf_error_line_numbers(tmp_path: Path) -> None:
    p = write(tmp_path, "BTCUSDT-1m.csv",
              (HEADER + "\n".join(GOOD_ROWS[:2] + ["1700000120000,1,2,1,x,1"]) + "\n").replace("\n", "\r\n"))
    assert error_of(p).startswith(f"{p}:4: field 'close'")


def test_microsecond_timestamps(tmp_path: Path) -> None:
    # 2025-01-01T00:00Z = 1735689600 s; Binance spot files since 2025 use µs
    rows = ["1735689600000000,1,1,1,1,1", "1735689660000000,1,1,1,1,1"]
    kf = load_klines(write(tmp_path, "BTCUSDT-1m-2025-01-01.csv", "\n".join(rows) + "\n"))
    assert kf.bars[0].ts_open == utc_ns(2025, 1, 1)
    assert kf.bars[1].ts_open == utc_ns(2025, 1, 1, 0, 1)
    assert kf.bars[1].ts_event == utc_ns(2025, 1, 1, 0, 2)


def test_nanosecond_and_millisecond_magnitudes() -> None:
    assert epoch_to_ns(1_735_689_600_000) == utc_ns(2025, 1, 1)
    assert epoch_to_ns(1_735_689_600_000_000) == utc_ns(2025, 1, 1)
    assert epoch_to_ns(1_735_689_600_000_000_000) == utc_ns(2025, 1, 1)
    # exactness at a value a float64 could not hold: 2**53 + 1 µs
    assert epoch_to_ns(2**53 + 1) == (2**53 + 1) * 1000


def test_twelve_column_file_with_gap_and_inferred_interval(tmp_path: Path) -> None:
    rows = [
        "1700000000000,1.0,1.2,0.9,1.1,10,1700000299999,11,5,4,4.4,0",
        "1700000300000,1.1,1.3,1.0,1.2,10,1700000599999,12,5,4,4.8,0",
        "1700000600000,1.2,1.3,1.1,1.1,10,1700000899999,11,5,4,4.4,0",
        "1700001500000,1.1,1.2,1.0,1.0,10,1700001799999,10,5,4,4.0,0",
    ]
    kf = load_klines(write(tmp_path, "adabtc.csv", "\n".join(rows)))  # no trailing newline
    assert kf.symbol == "ADABTC"
    assert kf.interval_ns == 300 * NS  # the most common step, 5 minutes
    assert kf.gaps == [(1_700_000_600 * NS, 1_700_001_500 * NS)]
    assert kf.bars[-1].ts_event == 1_700_001_800 * NS


def test_real_adabtc_binance_layout() -> None:
    need_data()
    p = DATA / "binance" / "klines-binance-layout" / "ADABTC-1m-2021-11-27.csv"
    kf = load_klines(p)
    assert kf.symbol == "ADABTC"
    assert kf.interval_ns == 60 * NS
    assert len(kf.bars) == 10
    assert kf.gaps == []
    first, last = kf.bars[0], kf.bars[-1]
    # line 1: 1637971200000,0.00002853,0.00002854,0.00002851,0.00002854,36304.20000000,...
    assert first.ts_open == utc_ns(2021, 11, 27)
    assert (first.open, first.high, first.low, first.close) == (
        Decimal("0.00002853"), Decimal("0.00002854"), Decimal("0.00002851"), Decimal("0.00002854"))
    assert first.volume == Decimal("36304.2")
    assert first.line == 1
    # line 10: 1637971740000,0.00002863,0.00002865,0.00002863,0.00002865,8160.50000000,...
    assert last.ts_open == utc_ns(2021, 11, 27, 0, 9)
    assert last.close == Decimal("0.00002865")
    assert last.line == 10
    assert (base_asset_of(kf.symbol), quote_asset_of(kf.symbol)) == ("ADA", "BTC")


def test_real_btcusdt_1m_60480_rows() -> None:
    need_data()
    p = DATA / "binance" / "klines" / "BTCUSDT-1m-2025-05-20_2025-06-30.csv"
    kf = load_klines(p)
    assert len(kf.bars) == 60_480  # 42 days x 1440 minutes
    assert kf.interval_ns == 60 * NS
    assert kf.gaps == []  # README: continuous
    first = kf.bars[0]
    # line 2: 1747699200000,105573.73,105597.1,105554.31,105554.32,10.82647
    assert first.open == Decimal("105573.73")
    assert first.line == 2
    assert first.ts_open == utc_ns(2025, 5, 20)
    assert kf.bars[-1].ts_open == utc_ns(2025, 6, 30, 23, 59)
    # last line: 1751327940000,107140,107176.24,107139.99,107146.5,18.78183
    assert kf.bars[-1].close == Decimal("107146.5")


def test_real_5m_file_has_the_six_outages_of_the_readme() -> None:
    need_data()
    kf = load_klines(DATA / "binance" / "klines" / "BTCUSDT-5m-2020-12-01_2021-07-17.csv")
    assert kf.interval_ns == 300 * NS
    # README: 2020-12-21 14:05→18:00, 2020-12-25 01:55→03:00, 2021-02-11 03:40→05:00,
    # 2021-03-06 01:55→03:30, 2021-04-20 01:55→04:30, 2021-04-25 04:00→08:45
    assert kf.gaps == [
        (utc_ns(2020, 12, 21, 14, 5), utc_ns(2020, 12, 21, 18, 0)),
        (utc_ns(2020, 12, 25, 1, 55), utc_ns(2020, 12, 25, 3, 0)),
        (utc_ns(2021, 2, 11, 3, 40), utc_ns(2021, 2, 11, 5, 0)),
        (utc_ns(2021, 3, 6, 1, 55), utc_ns(2021, 3, 6, 3, 30)),
        (utc_ns(2021, 4, 20, 1, 55), utc_ns(2021, 4, 20, 4, 30)),
        (utc_ns(2021, 4, 25, 4, 0), utc_ns(2021, 4, 25, 8, 45)),
    ]
    assert len(kf.bars) == 65_741


# --- bad input: one test per case, exact FILE:LINE prefix and field ----------


def test_missing_column(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,101,99,100")
    assert error_of(p).startswith(f"{p}:4: field 'volume': missing")


def test_non_numeric_field(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,101,99,abc,1")
    assert error_of(p) == f"{p}:4: field 'close': not a number: 'abc'"


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "2023-11-14 22:15,100,101,99,100,1")
    assert error_of(p).startswith(f"{p}:4: field 'open_time': not an integer")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-inf", "nan"])
def test_nan_or_infinity(tmp_path: Path, text: str) -> None:
    p = bad_file(tmp_path, f"1700000120000,100,{text},99,100,1")
    assert error_of(p).startswith(f"{p}:4: field 'high': not a finite number: {text!r}")


def test_negative_volume(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,101,99,100,-1.5")
    assert error_of(p) == f"{p}:4: field 'volume': negative: '-1.5'"


def test_negative_price(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,101,-99,100,1")
    assert error_of(p) == f"{p}:4: field 'low': negative: '-99'"


def test_zero_price(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,0,101,99,100,1")
    assert error_of(p) == f"{p}:4: field 'open': zero price: '0'"


def test_high_below_low(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,99,101,100,1")
    assert error_of(p).startswith(f"{p}:4: field 'high': '99' is below low '101'")


def test_open_outside_range(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,102,101,99,100,1")
    assert error_of(p).startswith(f"{p}:4: field 'open': '102' is outside [low '99', high '101']")


def test_close_outside_range(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,101,99,98.5,1")
    assert error_of(p).startswith(f"{p}:4: field 'close': '98.5' is outside")


def test_timestamp_backwards(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1699999940000,100,101,99,100,1")
    assert error_of(p).startswith(f"{p}:4: field 'open_time': 1699999940000: goes backwards (previous row on line 3)")


def test_repeated_timestamp(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000060000,100,101,99,100,1")
    assert error_of(p).startswith(f"{p}:4: field 'open_time': 1700000060000: repeated timestamp")


def test_error_line_without_header(tmp_path: Path) -> None:
    p = bad_file(tmp_path, "1700000120000,100,101,99,abc,1", header=False)
    assert error_of(p).startswith(f"{p}:3: field 'close'")


def test_bars_closer_than_the_interval(tmp_path: Path) -> None:
    # named 5m, but the second bar comes 1 minute after the first
    rows = ["1700000000000,1,1,1,1,1", "1700000060000,1,1,1,1,1", "1700000360000,1,1,1,1,1",
            "1700000660000,1,1,1,1,1"]
    p = write(tmp_path, "BTCUSDT-5m.csv", "\n".join(rows) + "\n")
    assert error_of(p).startswith(f"{p}:2: field 'open_time': only 60 s after the bar on line 1")


@pytest.mark.parametrize("text", ["", HEADER, HEADER + "\n", "\r\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, "BTCUSDT-1m.csv", text)
    assert error_of(p) == f"{p}: no data rows"


def test_header_with_other_column_order_is_refused(tmp_path: Path) -> None:
    # e.g. the S&P file's Date,Open,Close,High,Low,Volume would be misread by position
    p = write(tmp_path, "SPX-1m.csv", "Date,Open,Close,High,Low,Volume\n1700000000000,1,1,1,1,0\n")
    assert error_of(p) == f"{p}:1: header: column 3 is 'Close', expected 'high'"


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "BTCUSDT-1m.csv"
    assert error_of(p).startswith(f"{p}: cannot read")


def test_file_name_interval_contradicted_by_data(tmp_path: Path) -> None:
    rows = [f"{1700000000000 + i * 300000},1,1,1,1,1" for i in range(5)]
    p = write(tmp_path, "BTCUSDT-1m.csv", "\n".join(rows) + "\n")
    assert error_of(p).startswith(f"{p}: interval: the file name says 60 s but 4 of 4")


# --- symbols --------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "base", "quote"),
    [("BTCUSDT", "BTC", "USDT"), ("BTCFDUSD", "BTC", "FDUSD"), ("ETHBTC", "ETH", "BTC"),
     ("BTCTUSD", "BTC", "TUSD"), ("ADAEUR", "ADA", "EUR"), ("BNBTRY", "BNB", "TRY"),
     ("USDCUSDT", "USDC", "USDT")],
)
def test_quote_and_base_asset(symbol: str, base: str, quote: str) -> None:
    assert quote_asset_of(symbol) == quote
    assert base_asset_of(symbol) == base


@pytest.mark.parametrize("symbol", ["AAPL", "USDT", ""])
def test_unknown_quote_asset(symbol: str) -> None:
    with pytest.raises(ValueError, match=repr(symbol).replace("'", ".")):
        quote_asset_of(symbol)
    with pytest.raises(ValueError):
        base_asset_of(symbol)


def test_quote_split_agrees_with_every_symbol_of_exchange_info() -> None:
    need_data()
    doc = json.loads(gzip.decompress(
        (DATA / "exchange-info" / "binance-spot-exchangeInfo-2023-09-08-full.json.gz").read_bytes()))
    wrong = [(s["symbol"], s["baseAsset"], s["quoteAsset"]) for s in doc["symbols"]
             if (base_asset_of(s["symbol"]), quote_asset_of(s["symbol"])) != (s["baseAsset"], s["quoteAsset"])]
    assert len(doc["symbols"]) == 2292
    assert wrong == []
