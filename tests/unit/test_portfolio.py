"""Accounting with fees in the asset received (issue 2's worked example)."""

from decimal import Decimal

import pytest

from core.events import OrderFilled
from core.identifiers import InstrumentId
from core.portfolio import AccountingError, Portfolio

D = Decimal
ETH = InstrumentId("ETHUSDT", "BINANCE")


def fill(side, qty, px, fee, ccy, model="m1", tid="t1", iid=ETH):
    return OrderFilled(ts_event=1, ts_init=1, client_order_id="NHD-1-0-0", instrument_id=iid, model_id=model,
                       venue_order_id="v", trade_id=tid, side=side, last_qty=D(qty), last_px=D(px),
                       commission=D(fee), commission_currency=ccy, liquidity_side="MAKER")


def test_buy_fee_in_eth_then_sell_fee_in_usdt():
    pf = Portfolio(D("10000"))
    pf.apply_fill(fill("BUY", "1.0000", "2000.00", "0.0010", "ETH"))
    pos = pf.position("m1", ETH)
    assert pos.quantity == D("0.9990")
    assert pos.cost == D("2000.00")
    # sell 0.9990 at 2100: proceeds 2097.90, fee 0.1% = 2.0979 USDT
    realized = pf.apply_fill(fill("SELL", "0.9990", "2100.00", "2.0979", "USDT", tid="t2"))
    assert realized == D("95.8021")
    assert pos.quantity == 0 and pos.cost == 0
    assert pf.realized() == D("95.8021")


def test_a_sell_of_more_than_held_is_refused():
    pf = Portfolio(D("10000"))
    pf.apply_fill(fill("BUY", "1.0000", "2000.00", "0.0010", "ETH"))
    with pytest.raises(AccountingError):
        pf.apply_fill(fill("SELL", "1.0000", "2100.00", "2.1", "USDT", tid="t2"))


def test_partial_sell_removes_cost_pro_rata_and_equity_identity():
    pf = Portfolio(D("10000"))
    pf.apply_fill(fill("BUY", "2", "100", "0.002", "ETH"))  # holds 1.998, cost 200
    pf.apply_fill(fill("SELL", "0.999", "110", "0.10989", "USDT", tid="t2"))
    pos = pf.position("m1", ETH)
    # cost removed = 200 * 0.999 / 1.998 = 100; net = 109.89 - 0.10989 = 109.78011
    assert pos.cost == D("100")
    assert pos.realized == D("9.78011")
    pf.mark(ETH, D("120"))
    # unrealized = 0.999 * 120 - 100 = 19.88
    assert pf.unrealized() == D("19.88")
    # cash by hand: 10000 - 200 + 109.78011 = 9909.78011; + 0.999*120 = 10029.66011
    assert pf.equity() == D("10029.66011")


def test_two_models_sum_to_the_instrument():
    pf = Portfolio(D("10000"))
    pf.apply_fill(fill("BUY", "1", "2000", "0.001", "ETH", model="a", tid="1"))
    pf.apply_fill(fill("BUY", "0.5", "2010", "0.0005", "ETH", model="b", tid="2"))
    pf.apply_fill(fill("SELL", "0.4", "2050", "0.82", "USDT", model="a", tid="3"))
    pf.mark(ETH, D("2100"))
    assert pf.quantity(ETH) == D("0.999") - D("0.4") + D("0.4995")
    assert pf.realized("a") + pf.realized("b") == pf.realized()
    assert pf.fees("a") + pf.fees("b") == pf.fees()
    assert pf.unrealized("a") + pf.unrealized("b") == pf.unrealized()
    assert pf.fills("a") + pf.fills("b") == pf.fills() == 3
