"""Binance adapter start-up through the real ccxt code path against the local
fake Binance: instruments and filters from exchangeInfo's exact strings, symbol
status, credentials, the key's permissions, --live, and which endpoints a spot
desk calls. Filter values below were read by hand from the exchangeInfo files in
../shared/data/exchange-info/."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.identifiers import InstrumentId
from tests.venues.binance_server import FakeBinance
from tests.venues.conftest import ENV, EXCHANGE_INFO_2021, KEY, SECRET, Recorder, venue_for
from venues.binance.adapter import BinanceConfig, BinanceVenue
from venues.binance.errors import BinanceStartupError

BTC = InstrumentId("BTCUSDT", "BINANCE")
ETH = InstrumentId("ETHUSDT", "BINANCE")


async def test_filters_from_the_2023_exchange_info_notional(server, clock):
    v = venue_for(server, clock, symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"))
    lines = await v.start()
    try:
        btc, eth, xrp = v.instruments[BTC], v.instruments[ETH], v.instruments[InstrumentId("XRPUSDT", "BINANCE")]
        # binance-spot-exchangeInfo-2023-09-08-subset.json: PRICE_FILTER.tickSize "0.01000000",
        # LOT_SIZE.stepSize/minQty "0.00001000", maxQty "9000.00000000", NOTIONAL.minNotional "5.00000000"
        assert (btc.tick_size, btc.step_size, btc.min_qty, btc.max_qty) == (
            Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal("9000"))
        assert (btc.min_notional, btc.max_notional) == (Decimal("5"), Decimal("9000000"))
        assert (eth.tick_size, eth.step_size, eth.min_notional) == (Decimal("0.01"), Decimal("0.0001"), Decimal("5"))
        # XRPUSDT: tickSize "0.00010000", stepSize "1.00000000", maxQty "9222449.00000000"
        assert (xrp.tick_size, xrp.step_size, xrp.max_qty) == (Decimal("0.0001"), Decimal("1"), Decimal("9222449"))
        assert btc.base == "BTC" and btc.quote == "USDT" and btc.filters_source == "exchange-info"
        assert v.quote == "USDT"
        # rateLimits REQUEST_WEIGHT 6000 per minute in the 2023 response
        assert v.budget.limit == 6000
        assert any("REQUEST_WEIGHT 6000/1 MINUTE" in ln for ln in lines)
        assert any(ln.startswith("BTCUSDT.BINANCE: tick 0.01, step 0.00001") for ln in lines)
    finally:
        await v.close()


async def test_filters_from_the_2021_exchange_info_min_notional(shared, clock):
    srv = await FakeBinance(clock, EXCHANGE_INFO_2021, api_key=KEY, secret=SECRET).start()
    v = venue_for(srv, clock, symbols=("BTCUSDT", "ETHUSDT"))
    try:
        await v.start()
        # binance-spot-exchangeInfo-2021-10-22-BTCUSDT-ETHUSDT.json: MIN_NOTIONAL.minNotional "10.00000000"
        # (the older filter name), tickSize "0.01000000", stepSize "0.00001000" / "0.00010000"
        assert (v.instruments[BTC].min_notional, v.instruments[BTC].tick_size, v.instruments[BTC].step_size) == (
            Decimal("10"), Decimal("0.01"), Decimal("0.00001"))
        assert (v.instruments[ETH].min_notional, v.instruments[ETH].step_size) == (Decimal("10"), Decimal("0.0001"))
        assert v.instruments[BTC].max_notional is None  # MIN_NOTIONAL has no maximum
        assert v.budget.limit == 1200  # REQUEST_WEIGHT 1200 per minute in 2021
    finally:
        await v.close()
        await srv.close()


async def test_a_symbol_in_break_status_is_refused(server, clock):
    # BCCUSDT has "status": "BREAK" in the 2023-09-08 subset
    v = venue_for(server, clock, symbols=("BTCUSDT", "BCCUSDT"))
    with pytest.raises(BinanceStartupError, match="BCCUSDT has status BREAK in exchangeInfo, not TRADING"):
        await v.start()
    await v.close()


async def test_an_unknown_symbol_is_refused(server, clock):
    v = venue_for(server, clock, symbols=("NOPEUSDT",))
    with pytest.raises(BinanceStartupError, match="'NOPEUSDT' is not a Binance spot market"):
        await v.start()
    await v.close()


async def test_a_spot_desk_calls_no_futures_or_margin_endpoint_and_signs_every_request(server, clock, rec):
    v = venue_for(server, clock, rec)
    await v.start()
    await v.poll()
    await v.close()
    paths = server.paths()
    assert paths[0] == "/api/v3/exchangeInfo"
    assert not [p for p in paths if p.startswith(("/fapi", "/dapi", "/sapi/v1/margin", "/sapi/v1/capital", "/eapi"))]
    assert "/sapi/v1/account/apiRestrictions" in paths
    assert server.signed_total > 0 and server.signed_ok == server.signed_total


async def test_a_key_that_can_withdraw_is_refused(server, clock):
    server.can_withdraw = True
    v = venue_for(server, clock)
    with pytest.raises(BinanceStartupError, match="withdrawals enabled"):
        await v.start()
    await v.close()
    assert ("GET", "/api/v3/order") not in server.requests and ("POST", "/api/v3/order") not in server.requests


def test_a_venue_that_is_not_a_testnet_needs_live(clock):
    cfg = BinanceConfig(testnet=False, symbols=("BTCUSDT",))
    with pytest.raises(BinanceStartupError, match="without --live"):
        BinanceVenue(cfg, clock, env=ENV)
    BinanceVenue(cfg, clock, env=ENV, live=True)  # accepted with --live


async def test_missing_credentials_name_the_variable_not_a_value(server, clock):
    v = venue_for(server, clock, env={"BINANCE_API_KEY": KEY})
    with pytest.raises(BinanceStartupError, match="BINANCE_API_SECRET") as err:
        await v.start()
    assert KEY not in str(err.value)
    assert server.requests == []


def test_config_from_the_yaml_mapping_and_bad_fields():
    cfg = BinanceConfig.from_mapping({"kind": "binance", "name": "BINANCE", "market": "spot", "testnet": True,
                                      "symbols": ["btcusdt"], "recv_window_ms": 5000,
                                      "api_key_env": "BINANCE_API_KEY", "api_secret_env": "BINANCE_API_SECRET"})
    assert cfg.symbols == ("BTCUSDT",) and cfg.recv_window_ms == 5000 and cfg.testnet
    with pytest.raises(BinanceStartupError, match="recv_window_ms: must be 1..60000, got 70000"):
        BinanceConfig(recv_window_ms=70000)
    with pytest.raises(BinanceStartupError, match="market: expected 'spot' or 'usdm', got 'margin'"):
        BinanceConfig(market="margin")


async def test_start_up_lines_show_account_and_no_secret(server, clock):
    v = venue_for(server, clock)
    lines = await v.start()
    await v.close()
    text = "\n".join(lines)
    assert "balances BTC 1, USDT 10000" in text
    assert "withdrawals disabled" in text
    assert KEY not in text and SECRET not in text


async def test_no_secret_in_the_logs_even_at_debug(server, clock, caplog):
    import logging

    from tests.venues.test_binance_orders import order

    caplog.set_level(logging.DEBUG)
    v = venue_for(server, clock)
    await v.start()
    await v.submit_order(order("NHD-z-0-0", "BUY", "0.001", "60741.68"))
    server.fail_next(429, retry_after_s=5)
    with pytest.raises(Exception):
        await v.poll()
    await v.close()
    assert caplog.records  # the desk did log
    assert KEY not in caplog.text and SECRET not in caplog.text and "signature=" not in caplog.text
