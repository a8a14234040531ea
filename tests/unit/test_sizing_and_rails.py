"""Sizing from a budget and the min-notional / sellable rails, with the
issue's hand-worked values: step 0.00001, min notional 10, price 27777.78,
fee 0.1 % taken in the bought coin."""

from decimal import Decimal

import pytest

from core.enums import DenialReason, OrderSide, TradingState
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.risk import Denied, RiskConfig, RiskEngine, sellable_after_fee
from core.sizing import size_buy

D = Decimal
PRICE = D("27777.78")
BTC = Instrument(InstrumentId("BTCUSDT", "BINANCE"), "BTC", "USDT", D("0.01"), D("0.00001"), D("0.00001"),
                 min_notional=D("10"))


def check(qty, side=OrderSide.BUY, state=TradingState.ACTIVE, rails=None, now=0, paused=False):
    (rails or RiskEngine(RiskConfig())).check(instrument=BTC, side=side, quantity=qty, price=PRICE,
                                              trading_state=state, model_paused=paused, now_ns=now)


def test_budget_10_gives_00035_denied_for_min_notional():
    q = size_buy(D("10"), PRICE, BTC)
    assert q == D("0.00035")
    assert q * PRICE == D("9.7222230")
    with pytest.raises(Denied) as e:
        check(q)
    assert e.value.code == DenialReason.MIN_NOTIONAL
    assert "9.7222230" in e.value.message and "10" in e.value.message


def test_budget_10_01_gives_00036_denied_as_unsellable():
    q = size_buy(D("10.01"), PRICE, BTC)
    assert q == D("0.00036")
    assert q * PRICE == D("10.0000008")
    assert sellable_after_fee(q, D("0.001"), BTC.step_size) == D("0.00035")
    with pytest.raises(Denied) as e:
        check(q)
    assert e.value.code == DenialReason.UNSELLABLE_POSITION
    assert "0.00035" in e.value.message and "9.7222230" in e.value.message


def test_budget_12_gives_00043_accepted():
    q = size_buy(D("12"), PRICE, BTC)
    assert q == D("0.00043")
    assert q * PRICE == D("11.9444454")
    held = q - q * D("0.001")
    assert held == D("0.00042957")
    assert sellable_after_fee(q, D("0.001"), BTC.step_size) == D("0.00042")
    assert D("0.00042") * PRICE == D("11.6666676")
    check(q)  # no exception


def test_halted_denies_everything_reducing_denies_buys():
    with pytest.raises(Denied) as e:
        check(D("0.001"), state=TradingState.HALTED)
    assert e.value.code == DenialReason.TRADING_HALTED
    with pytest.raises(Denied) as e:
        check(D("0.001"), state=TradingState.REDUCING)
    assert e.value.code == DenialReason.REDUCE_ONLY
    check(D("0.001"), side=OrderSide.SELL, state=TradingState.REDUCING)


def test_allow_list_max_notional_and_paused_model():
    rails = RiskEngine(RiskConfig(allowed_symbols=frozenset({"ETHUSDT.BINANCE"})))
    with pytest.raises(Denied) as e:
        check(D("0.001"), rails=rails)
    assert e.value.code == DenialReason.SYMBOL_NOT_ALLOWED
    rails = RiskEngine(RiskConfig(max_order_notional=D("100")))
    with pytest.raises(Denied) as e:
        check(D("0.004"), rails=rails)  # 111.11112 > 100
    assert e.value.code == DenialReason.MAX_NOTIONAL and "100" in e.value.message
    with pytest.raises(Denied) as e:
        check(D("0.001"), paused=True)
    assert e.value.code == DenialReason.MODEL_PAUSED


def test_throttle_is_a_token_bucket_on_the_engine_clock():
    # capacity 3, refilled at 3 per 60 s = one token per 20 s
    rails = RiskEngine(RiskConfig(max_submits=3, window_ns=60_000_000_000))
    for t in (0, 1, 2):
        check(D("0.001"), rails=rails, now=t * 1_000_000_000)
    # full at 3; t=0: take -> 2; t=1: +0.05 -> 2.05, take -> 1.05; t=2: +0.05 -> 1.10, take -> 0.10
    # t=19 s: 0.10 + 17 s * 0.05/s = 0.95 < 1: denied (nothing spent)
    with pytest.raises(Denied) as e:
        check(D("0.001"), rails=rails, now=19_000_000_000)
    assert e.value.code == DenialReason.THROTTLED and "3 per 60 s" in e.value.message
    check(D("0.001"), rails=rails, now=20_000_000_000)  # 0.95 + 0.05 = 1.00: one token


def test_router_slices_an_exit_larger_than_the_max_order_notional():
    from core.router import RouterConfig, decide

    cfg = RouterConfig(capital=D("10000"), max_order_notional=D("10000"))
    # holds 0.3 BTC at 40000 = 12000 > 10000: sell 0.25000 now (10000 / 40000), the rest next bar
    intent = decide(config=cfg, instrument=BTC, budget=D("9000"), target_qty=D("0"), position=D("0.3"),
                    close=D("40000"), cash_available=lambda: D("0"))
    assert intent.side.value == "SELL" and intent.quantity == D("0.25000")
    intent = decide(config=cfg, instrument=BTC, budget=D("9000"), target_qty=D("0"), position=D("0.05"),
                    close=D("40000"), cash_available=lambda: D("0"))
    assert intent.quantity == D("0.05000")


def test_router_ignores_small_differences_and_caps_buys_by_cash():
    from core.router import RouterConfig, decide

    cfg = RouterConfig(capital=D("10000"))
    # budget 1000: threshold max(10, 10) = 10; a 0.1 % fee shortfall (~1 USDT) sends nothing
    held = D("0.03596")  # 0.036 bought, 0.1 % fee taken in BTC
    assert decide(config=cfg, instrument=BTC, budget=D("1000"), target_qty=D("0.036"), position=held,
                  close=D("27777.78"), cash_available=lambda: D("1000")) is None
    # cash caps a buy: want 0.036 (1000 USDT) but only 500 available -> 500 / 27777.78 -> 0.01799
    intent = decide(config=cfg, instrument=BTC, budget=D("1000"), target_qty=D("0.036"), position=D("0"),
                    close=D("27777.78"), cash_available=lambda: D("500"))
    assert intent.quantity == D("0.01799") and intent.price == D("27777.78")


def test_exit_sells_what_is_held_after_the_fee_never_the_bought_amount():
    from core.router import RouterConfig, decide

    eth = Instrument(InstrumentId("ETHUSDT", "BINANCE"), "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"),
                     min_notional=D("5"))
    # bought 1.0000 ETH, fee 0.0010 ETH taken from it: holds 0.9990; target 0 sells 0.9990, not 1.0000
    intent = decide(config=RouterConfig(capital=D("10000")), instrument=eth, budget=D("2000"),
                    target_qty=D("0"), position=D("0.9990"), close=D("2100.00"), cash_available=lambda: D("0"))
    assert intent.side.value == "SELL" and intent.quantity == D("0.9990")
