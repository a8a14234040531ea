"""Rounding of quantities and prices: values worked out by hand (issue 2)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.values import dec_str, floor_to_step, to_decimal


def inst(step: str, tick: str = "0.01") -> Instrument:
    return Instrument(InstrumentId("BTCUSDT", "SIM"), "BTC", "USDT", Decimal(tick), Decimal(step), Decimal(step))


@pytest.mark.parametrize(
    "value,step,expected",
    [
        (0.29, "0.01", "0.29"),
        (0.57, "0.01", "0.57"),
        (4.35, "0.01", "4.35"),
        (2.2504, "0.0001", "2.2504"),
        (0.1 + 0.2, "0.1", "0.3"),
        (0.0000001, "0.00000001", "0.00000010"),
    ],
)
def test_quantity_rounds_down_from_shortest_repr(value, step, expected):
    q = inst(step).round_qty_down(value)
    assert dec_str(q) == expected
    assert q == Decimal(expected) and q.as_tuple().exponent == Decimal(step).as_tuple().exponent


def test_float_flooring_would_be_wrong():
    # the bugs to avoid: plain float flooring gives these
    import math

    assert math.floor(0.29 / 0.01) * 0.01 != 0.29
    assert Decimal(0.29) != Decimal("0.29")


def test_to_decimal_rejects_non_finite_naming_the_field():
    for bad in (float("nan"), float("inf"), "NaN", "Infinity", "abc", True, None):
        with pytest.raises(ValueError, match="quote"):
            to_decimal(bad, "quote")


def test_price_rounding_against_the_trader():
    i = inst("0.00001", "0.01")
    assert i.round_price_against(Decimal("100.001"), True) == Decimal("100.01")
    assert i.round_price_against(Decimal("100.009"), False) == Decimal("100.00")


@given(st.decimals(min_value=0, max_value=10**6, places=10), st.sampled_from(["0.1", "0.001", "0.00001", "1"]))
def test_floor_to_step_properties(value, step):
    s = Decimal(step)
    r = floor_to_step(value, s)
    assert r <= value < r + s
    assert (r / s) == (r / s).to_integral_value()
