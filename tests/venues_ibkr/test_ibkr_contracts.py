"""Contracts: qualified at start with ``reqContractDetails``, refused when IB
does not know them; instruments from the details (tick = ``minTick``, step
1 for stocks/ETFs/futures, FX ``sizeIncrement``, the futures multiplier);
the venue settings read from YAML with every bad field named."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from ib_async import IB
from ib_async.contract import Contract, ContractDetails

from core.clock import TestClock
from venues.ibkr import ContractError, ContractSpec, IbkrConfig, IbkrVenue, qualify
from tests.venues_ibkr.conftest import (
    AAPL_ID,
    ES_ID,
    T0,
    FakeGateway,
    es_details,
    make_config,
    stock_details,
)

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


def _venue(gw_setup, **cfg):
    ib = IB()
    gw = FakeGateway(ib)
    gw_setup(gw)
    venue = IbkrVenue(make_config(**cfg), TestClock(T0), None, ib=ib, schedule=lambda d, cb: None)
    return venue, gw


async def test_unknown_contract_refused_at_start():
    venue, gw = _venue(lambda gw: gw.add(stock_details()),
                       contracts=(ContractSpec("AAPL", "STK", "SMART", "USD"), ContractSpec("XYZQ", "STK", "SMART",
                                                                                            "USD")))
    with pytest.raises(ContractError) as err:
        await venue.start()
    msg = str(err.value)
    assert msg.startswith("contract XYZQ STK SMART USD: unknown to IB (IB error 200: No security definition has "
                          "been found for the request)")
    assert "AAPL" not in msg  # only the unknown one is named
    assert not venue.ib.isConnected()  # nothing is traded: the connection is closed again
    assert venue.state == "DISCONNECTED"


async def test_futures_multiplier_and_tick(harness):
    h = harness
    es = h.venue.contracts[ES_ID]
    inst = h.venue.instruments[ES_ID]
    assert (inst.tick_size, inst.step_size, inst.min_qty, inst.base, inst.quote) == (
        D("0.25"), D("1"), D("1"), "ES-202612", "USD")
    assert es.multiplier == D("50") and es.con_id == 495512563
    # CME: an E-mini S&P 500 contract is $50 x the index: 2 contracts at 5000.25 = 2 x 5000.25 x 50
    assert h.venue.notional(ES_ID, D("5000.25"), D("2")) == D("500025.00")
    assert es.contract.lastTradeDateOrContractMonth == "20261218" and es.contract.exchange == "CME"
    aapl = h.venue.contracts[AAPL_ID]
    assert (aapl.instrument.tick_size, aapl.multiplier, aapl.contract.exchange) == (D("0.01"), D("1"), "SMART")
    assert h.venue.notional(AAPL_ID, D("187.25"), D("100")) == D("18725.00")


def test_future_without_multiplier_is_refused():
    with pytest.raises(ContractError, match=r"^contract ES FUT CME USD 202612: IB's details give no multiplier"):
        qualify(ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612"), [es_details(multiplier="")],
                "IBKR")


def test_ambiguous_contract_lists_the_candidates():
    a = es_details()
    b = es_details(con_id=111)
    assert b.contract is not None
    b.contract.localSymbol = "ESZ6 weekly"
    with pytest.raises(ContractError) as err:
        qualify(ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612"), [a, b], "IBKR")
    assert "ambiguous, IB has 2 matches" in str(err.value) and "conId 111" in str(err.value)


def test_etf_must_be_an_etf_and_fx_steps_by_size_increment():
    with pytest.raises(ContractError, match="stockType 'COMMON', not an ETF"):
        qualify(ContractSpec("AAPL", "ETF", "SMART", "USD"), [stock_details()], "IBKR")
    spy = qualify(ContractSpec("SPY", "ETF", "SMART", "USD"), [stock_details("SPY", 756733, stock_type="ETF")],
                  "IBKR")
    assert str(spy.instrument.id) == "SPY.IBKR" and spy.instrument.step_size == D("1")
    fx = ContractDetails(contract=Contract(secType="CASH", conId=12087792, symbol="EUR", exchange="IDEALPRO",
                                           currency="USD", localSymbol="EUR.USD"),
                         minTick=5e-05, timeZoneId="US/Eastern", sizeIncrement=1000.0, minSize=20000.0,
                         tradingHours="20240101:1715-20240102:1700;20240102:1715-20240103:1700",
                         liquidHours="20240101:1715-20240102:1700;20240102:1715-20240103:1700")
    q = qualify(ContractSpec("EUR", "FX", "IDEALPRO", "USD"), [fx], "IBKR")
    assert (str(q.instrument.id), q.instrument.base, q.instrument.quote) == ("EURUSD.IBKR", "EUR", "USD")
    assert (q.instrument.tick_size, q.instrument.step_size, q.instrument.min_qty) == (
        D("0.00005"), D("1000"), D("20000"))
    assert q.hours_field == "tradingHours"


def test_example_config_loads():
    data = yaml.safe_load((ROOT / "examples" / "ibkr-paper.yaml").read_text())
    (venue,) = data["venues"]
    cfg = IbkrConfig.from_dict(venue)
    assert (cfg.name, cfg.host, cfg.port, cfg.client_id, cfg.account, cfg.quote) == (
        "IBKR", "127.0.0.1", 4002, 17, "DU0000000", "USD")
    assert cfg.contracts == (ContractSpec("AAPL", "STK", "SMART", "USD"),
                             ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612"))


@pytest.mark.parametrize("change, message", [
    ({"port": 0}, "ibkr port: must be an integer in 1..65535, got 0"),
    ({"port": "4002"}, "ibkr port: must be an integer in 1..65535, got '4002'"),
    ({"client_id": -1}, "ibkr client_id: must be an integer >= 0, got -1"),
    ({"contracts": []}, "ibkr contracts: expected a non-empty list, got []"),
    ({"hostname": "x"}, "ibkr venue: unknown field(s) hostname"),
    ({"contracts": [{"symbol": "ES", "sec_type": "FUT", "exchange": "CME", "currency": "USD"}]},
     "contract 'ES': last_trade_date must be YYYYMM or YYYYMMDD for a future, got ''"),
    ({"contracts": [{"symbol": "AAPL", "sec_type": "OPT", "exchange": "SMART", "currency": "USD"}]},
     "contract 'AAPL': sec_type must be one of STK, ETF, FUT, CASH, FX, got 'OPT'"),
    ({"contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART"}]},
     "contracts[0]: missing field(s) currency"),
    ({"contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART", "currency": "USD"},
                    {"symbol": "SAP", "sec_type": "STK", "exchange": "SMART", "currency": "EUR"}]},
     "ibkr contracts: all must share one currency (the venue's cash), got EUR, USD"),
])
def test_bad_config_names_the_field_and_value(change, message):
    base = {"kind": "ibkr", "name": "IBKR", "host": "127.0.0.1", "port": 4002, "client_id": 17,
            "account": "DU0000000",
            "contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART", "currency": "USD"}]}
    base.update(change)
    with pytest.raises(ValueError) as err:
        IbkrConfig.from_dict(base)
    assert str(err.value).startswith(message)


async def test_gateway_unreachable_at_start_names_host_and_port():
    def down(gw):
        gw.up = False

    venue, gw = _venue(down)
    with pytest.raises(Exception) as err:
        await venue.start()
    assert type(err.value).__name__ == "TransientVenueError"
    assert "cannot reach TWS/IB Gateway at 127.0.0.1:4002 (client id 17)" in str(err.value)


def test_desk_config_model_converts():
    from desk.config import IbkrVenueConfig

    model = IbkrVenueConfig.model_validate({
        "kind": "ibkr", "name": "IBKR", "host": "127.0.0.1", "port": 4002, "client_id": 17,
        "contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART", "currency": "USD"},
                      {"symbol": "ES", "sec_type": "FUT", "exchange": "CME", "currency": "USD",
                       "last_trade_date": "202612", "multiplier": "50"}]})
    cfg = IbkrConfig.from_mapping(model)
    assert (cfg.account, cfg.client_id) == ("", 17)  # account None: the login's only account
    assert cfg.contracts == (ContractSpec("AAPL", "STK", "SMART", "USD"),
                             ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612", multiplier=D("50")))


def test_configured_multiplier_must_match_ib():
    spec = ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612", multiplier=D("5"))
    with pytest.raises(ContractError, match="configured multiplier 5 but IB says 50"):
        qualify(spec, [es_details()], "IBKR")
    ok = qualify(ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612", multiplier=D("50")),
                 [es_details(multiplier="")], "IBKR")
    assert ok.multiplier == D("50")  # IB gave none: the configured one
