"""Contracts with a multiplier (an IB future such as ES, multiplier 50):
the router sizes on the notional and the exposure rail counts it."""

from decimal import Decimal

from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.router import target_quantity

D = Decimal
ES = Instrument(InstrumentId("ES-202612", "IBKR"), "ES", "USD", D("0.25"), D("1"), D("1"), multiplier=D("50"))


def test_a_future_is_sized_on_its_notional():
    # one contract at 5000.00 is 5000 x 50 = 250,000 USD of exposure:
    # a 500,000 budget fully long buys floor(500000 / 250000) = 2 contracts, 749,999 still 2, 750,000 three
    assert target_quantity(D("1"), D("500000"), D("5000.00"), ES) == D("2")
    assert target_quantity(D("1"), D("749999"), D("5000.00"), ES) == D("2")
    assert target_quantity(D("1"), D("750000"), D("5000.00"), ES) == D("3")
    # half the budget of 500,000 is 250,000: one contract
    assert target_quantity(D("0.5"), D("500000"), D("5000.00"), ES) == D("1")
    # spot (multiplier 1) is unchanged: 10,000 at 2,000 buys 5
    eth = Instrument(InstrumentId("ETHUSDT", "BINANCE"), "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"))
    assert target_quantity(D("1"), D("10000"), D("2000"), eth) == D("5.0000")


def test_notional_counts_the_multiplier():
    # 2 contracts at 5000.25: 2 x 5000.25 x 50 = 500,025.00
    assert ES.notional(D("5000.25"), D("2")) == D("500025.00")
