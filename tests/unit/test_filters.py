"""venues.filters: exchangeInfo filters, the built-in table, inference.

Expected values are read by hand from the exchangeInfo files in
../shared/data/exchange-info/ (quoted in comments).
"""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from core.data import Bar
from core.errors import ConfigError
from core.identifiers import InstrumentId
from venues.filters import (
    BUILTIN_SPOT_FILTERS,
    SymbolFilters,
    infer_filters,
    load_exchange_info,
    resolve_instrument,
)

from tests.conftest import SHARED_DATA  # noqa: E402

DATA = SHARED_DATA
EXI = DATA / "exchange-info"
SUBSET_2023 = EXI / "binance-spot-exchangeInfo-2023-09-08-subset.json"
FULL_2023 = EXI / "binance-spot-exchangeInfo-2023-09-08-full.json.gz"
FILE_2021 = EXI / "binance-spot-exchangeInfo-2021-10-22-BTCUSDT-ETHUSDT.json"
D = Decimal


def need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not present")


def bar(o: str, h: str, lo: str, c: str, symbol: str = "XYZUSDT") -> Bar:
    return Bar(InstrumentId(symbol, "BINANCE"), D(o), D(h), D(lo), D(c), D("1"), 0, 60, 0)


MINIMAL = {
    "symbols": [
        {
            "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                 "stepSize": "0.00001000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "maxNotional": "9000000.00000000"},
            ],
        }
    ]
}


# --- exchangeInfo files -------------------------------------------------------


def test_subset_2023_btcusdt() -> None:
    need_data()
    info = load_exchange_info(SUBSET_2023)
    f = info["BTCUSDT"]
    # PRICE_FILTER tickSize "0.01000000"; LOT_SIZE minQty "0.00001000", maxQty "9000.00000000",
    # stepSize "0.00001000"; NOTIONAL minNotional "5.00000000", maxNotional "9000000.00000000"
    assert (f.status, f.base_asset, f.quote_asset) == ("TRADING", "BTC", "USDT")
    assert f.tick_size == D("0.01")
    assert f.step_size == D("0.00001")
    assert f.min_qty == D("0.00001")
    assert f.max_qty == D("9000")
    assert f.min_notional == D("5")
    assert f.max_notional == D("9000000")
    for v in (f.tick_size, f.step_size, f.min_qty, f.max_qty, f.min_notional, f.max_notional):
        assert isinstance(v, Decimal)


def test_subset_2023_other_symbols() -> None:
    need_data()
    info = load_exchange_info(SUBSET_2023)
    assert len(info) == 12  # 10 symbols + BCCUSDT, VENUSDT
    # ETHBTC: tickSize "0.00001000", stepSize "0.00010000", NOTIONAL minNotional "0.00010000"
    eb = info["ETHBTC"]
    assert (eb.base_asset, eb.quote_asset) == ("ETH", "BTC")
    assert (eb.tick_size, eb.step_size, eb.min_notional) == (D("0.00001"), D("0.0001"), D("0.0001"))
    # XRPUSDT: stepSize "1.00000000", maxQty "9222449.00000000"
    assert info["XRPUSDT"].step_size == D("1")
    assert info["XRPUSDT"].max_qty == D("9222449")
    # BCCUSDT: status "BREAK", NOTIONAL minNotional "10.00000000"
    assert info["BCCUSDT"].status == "BREAK"
    assert info["BCCUSDT"].min_notional == D("10")


def test_file_2021_old_min_notional() -> None:
    need_data()
    info = load_exchange_info(FILE_2021)
    assert sorted(info) == ["BTCUSDT", "ETHUSDT"]
    btc, eth = info["BTCUSDT"], info["ETHUSDT"]
    # MIN_NOTIONAL minNotional "10.00000000" (no NOTIONAL filter, so no maxNotional)
    assert btc.min_notional == D("10")
    assert btc.max_notional is None
    assert (btc.tick_size, btc.step_size, btc.min_qty) == (D("0.01"), D("0.00001"), D("0.00001"))
    # ETHUSDT LOT_SIZE stepSize "0.00010000"
    assert eth.step_size == D("0.0001")
    assert eth.min_notional == D("10")


def test_full_gz_file() -> None:
    need_data()
    info = load_exchange_info(FULL_2023)
    assert len(info) == 2292  # README: 2,292 symbols
    assert sum(f.status == "TRADING" for f in info.values()) == 1340
    # DOGEUSDT: tickSize "0.00001000", stepSize "1.00000000"; ADABTC tickSize "0.00000001"
    assert info["DOGEUSDT"].tick_size == D("0.00001")
    assert info["DOGEUSDT"].step_size == D("1")
    assert info["ADABTC"].tick_size == D("0.00000001")


def test_trailing_zeros_dropped_without_exponent(tmp_path: Path) -> None:
    p = tmp_path / "ei.json"
    p.write_text(json.dumps(MINIMAL))
    f = load_exchange_info(p)["BTCUSDT"]
    assert str(f.tick_size) == "0.01"
    assert str(f.max_qty) == "9000"
    assert str(f.max_notional) == "9000000"


def test_gz_detected_by_content(tmp_path: Path) -> None:
    p = tmp_path / "ei.bin"
    p.write_bytes(gzip.compress(json.dumps(MINIMAL).encode()))
    assert load_exchange_info(p)["BTCUSDT"].min_notional == D("5")


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"{not json", "exchange info is not valid JSON"),
        (b'{"timezone": "UTC"}', "no 'symbols' list"),
        (b"[]", "no 'symbols' list"),
        (b"\x1f\x8b\x08garbage", "not valid gzip"),
        (b'{"symbols": [{"symbol": "X", "filters": []}]}', "X: filter PRICE_FILTER.tickSize missing"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, expect: str) -> None:
    p = tmp_path / "exchangeInfo.json"
    p.write_bytes(content)
    with pytest.raises(ConfigError) as ei:
        load_exchange_info(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ")
    assert expect in msg
    assert "\n" not in msg


def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="missing.json: cannot read exchange info"):
        load_exchange_info(p)


# --- built-in table -------------------------------------------------------


def test_builtin_table_matches_the_2023_exchange_info() -> None:
    need_data()
    info = load_exchange_info(FULL_2023)
    assert sorted(BUILTIN_SPOT_FILTERS) == sorted(
        ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT", "DOGEUSDT"])
    for sym, f in BUILTIN_SPOT_FILTERS.items():
        assert f == info[sym], sym


def test_builtin_values_by_hand() -> None:
    # from the 2023-09-08 file: BTCUSDT tick 0.01 step 0.00001; ETHUSDT step 0.0001;
    # BNBUSDT tick 0.1 step 0.001; XRPUSDT tick 0.0001 step 1; DOGEUSDT tick 0.00001 step 1
    b = BUILTIN_SPOT_FILTERS
    assert (b["BTCUSDT"].tick_size, b["BTCUSDT"].step_size, b["BTCUSDT"].min_qty) == (
        D("0.01"), D("0.00001"), D("0.00001"))
    assert b["ETHUSDT"].step_size == D("0.0001")
    assert (b["BNBUSDT"].tick_size, b["BNBUSDT"].step_size) == (D("0.1"), D("0.001"))
    assert (b["XRPUSDT"].tick_size, b["XRPUSDT"].step_size) == (D("0.0001"), D("1"))
    assert (b["DOGEUSDT"].tick_size, b["DOGEUSDT"].step_size) == (D("0.00001"), D("1"))
    assert all(f.min_notional == D("5") for f in b.values())
    with pytest.raises(TypeError):
        b["FOOUSDT"] = b["BTCUSDT"]  # type: ignore[index]


# --- inference -------------------------------------------------------------


def test_infer_tick_from_finest_digit() -> None:
    bars = [bar("105573.73", "105597.1", "105554.31", "105554.32"), bar("107140", "107176.24", "107139.99", "107146.5")]
    f = infer_filters("XYZUSDT", bars)
    assert f.tick_size == D("0.01")
    assert (f.step_size, f.min_qty, f.min_notional) == (D("0.00001"), D("0.00001"), D("5"))
    assert (f.base_asset, f.quote_asset) == ("XYZ", "USDT")


def test_infer_ignores_trailing_zeros_and_caps_at_one() -> None:
    # "0.00002860" has 8 decimals on paper but its last significant digit is the 7th
    assert infer_filters("ADABTC", [bar("0.00002860", "0.00002870", "0.00002850", "0.00002860")]).tick_size == D("1E-7")
    assert infer_filters("XYZUSDT", [bar("19700", "19800", "19600", "19700")]).tick_size == D("1")


def test_infer_needs_bars_and_a_quote() -> None:
    with pytest.raises(ValueError, match="XYZUSDT"):
        infer_filters("XYZUSDT", [])
    with pytest.raises(ValueError, match="AAPL"):
        infer_filters("AAPL", [bar("1", "1", "1", "1")])


def test_infer_on_real_file() -> None:
    need_data()
    from venues.klines import load_klines

    kf = load_klines(DATA / "binance" / "klines-binance-layout" / "ADABTC-1m-2021-11-27.csv")
    # prices like 0.00002853 have 8 decimals; the 2023 exchange info agrees (tickSize 0.00000001)
    assert infer_filters("ADABTC", kf.bars).tick_size == D("0.00000001")


# --- resolve_instrument ---------------------------------------------------------


def test_resolve_from_exchange_info() -> None:
    need_data()
    info = load_exchange_info(FILE_2021)
    inst, msg = resolve_instrument("BTCUSDT", "BINANCE", [], info)
    assert inst.id == InstrumentId("BTCUSDT", "BINANCE")
    assert inst.filters_source == "exchange-info"
    assert inst.min_notional == D("10")  # 2021 MIN_NOTIONAL, not the builtin 5
    assert (inst.base, inst.quote) == ("BTC", "USDT")
    assert "exchange info" in msg


def test_resolve_refuses_a_symbol_not_trading() -> None:
    need_data()
    info = load_exchange_info(SUBSET_2023)
    with pytest.raises(ConfigError, match="BCCUSDT.*BREAK"):
        resolve_instrument("BCCUSDT", "BINANCE", [], info)


def test_resolve_falls_back_to_builtin_and_says_so() -> None:
    need_data()
    info = load_exchange_info(FILE_2021)  # lists only BTCUSDT and ETHUSDT
    inst, msg = resolve_instrument("solusdt", "BINANCE", [], info)
    assert inst.filters_source == "builtin"
    assert inst.id == InstrumentId("SOLUSDT", "BINANCE")
    assert inst.tick_size == D("0.01") and inst.step_size == D("0.01")
    assert "does not list SOLUSDT" in msg


def test_resolve_builtin_without_exchange_info() -> None:
    inst, msg = resolve_instrument("BTCUSDT", "SIM", [], None)
    assert inst.filters_source == "builtin"
    assert str(inst.id) == "BTCUSDT.SIM"
    assert "built-in" in msg and "does not list" not in msg


def test_resolve_inferred() -> None:
    bars = [bar("1.234", "1.3", "1.2", "1.25", "XYZUSDT")]
    inst, msg = resolve_instrument("XYZUSDT", "BINANCE", bars, {})
    assert inst.filters_source == "inferred"
    assert inst.tick_size == D("0.001")
    assert "inferred" in msg and "does not list XYZUSDT" in msg


def test_resolve_nothing_known_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="XYZUSDT"):
        resolve_instrument("XYZUSDT", "BINANCE", [], None)


def test_symbol_filters_is_frozen() -> None:
    f = SymbolFilters("BTCUSDT", "TRADING", "BTC", "USDT", D("0.01"), D("0.00001"), D("0.00001"))
    with pytest.raises(AttributeError):
        f.tick_size = D("1")  # type: ignore[misc]


def test_a_futures_exchange_info_is_refused_for_spot(tmp_path):
    import json as _json

    from core.errors import ConfigError
    from venues.filters import load_exchange_info

    f = tmp_path / "usdm.json"
    f.write_text(_json.dumps({"symbols": [{
        "symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL", "baseAsset": "BTC", "quoteAsset": "USDT",
        "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
                    {"filterType": "MIN_NOTIONAL", "notional": "10"}]}]}))
    with pytest.raises(ConfigError, match="futures contract"):
        load_exchange_info(f)
