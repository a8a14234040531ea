"""USD-M accounting pinned by hand: Binance's liquidation price and
maintenance margin (core.margin), the pro-rata funding split
(Portfolio.apply_funding) and its journal replay (core.rebuild).

Every expected value is worked out in the comments from Binance's formulas
("How to Calculate Liquidation Price of USDⓈ-M Contracts"; "Leverage and
Margin of USDⓈ-M Futures"), and cross-checked by a second route: the
liquidation price is the price at which the position's margin balance
equals its maintenance margin."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.events import FundingPaid, OrderFilled, event_from_dict
from core.identifiers import InstrumentId
from core.margin import Bracket, bracket_for, brackets_from_response, liquidation_price, maintenance_margin
from core.portfolio import Portfolio
from core.rebuild import compute
from core.store import Store
from tests.venues.binance_server import BTCUSDT_BRACKETS

D = Decimal
PERP = InstrumentId("BTCUSDT-PERP", "BINANCE")


def margin_balance_minus_maintenance(qty: D, entry: D, wb: D, mmr: D, cum: D, price: D) -> D:
    """Second route: WB + unrealized PnL at ``price`` - maintenance margin at ``price``."""
    return wb + qty * (price - entry) - (abs(qty) * price * mmr - cum)


def test_isolated_long_liquidation_price():
    # 0.010 BTC long at 36567.10 (the recorded futures trade), leverage 2: isolated wallet = 365.671 / 2 = 182.8355.
    # Bracket 1 (MMR 0.4 %, cum 0). LP = (182.8355 - 0 + 0 + 0 - 1 x 0.010 x 36567.10) / (0.010 x 0.004 - 1 x 0.010)
    #    = (182.8355 - 365.671) / (0.00004 - 0.01) = -182.8355 / -0.00996 = 9141775 / 498 = 18356.9779116465...
    #    (498 x 18356 = 9141288, remainder 487; 487 / 498 = 0.97791...)
    lp = liquidation_price(quantity=D("0.010"), entry_price=D("36567.10"), wallet_balance=D("182.8355"),
                           mmr=D("0.004"), cum=D("0"))
    assert lp == D(9141775) / D(498)
    assert lp.quantize(D("0.01")) == D("18356.98")
    assert abs(margin_balance_minus_maintenance(D("0.010"), D("36567.10"), D("182.8355"), D("0.004"), D(0), lp)) \
        < D("1e-20")


def test_isolated_short_liquidation_price():
    # 0.010 BTC short at 36567.10, same wallet 182.8355: Side -1.
    # LP = (182.8355 + 0.010 x 36567.10) / (0.00004 + 0.01) = 548.5065 / 0.01004 = 27425325 / 502 = 54632.1215...
    #    (502 x 54632 = 27425264, remainder 61; 61 / 502 = 0.1215...)
    lp = liquidation_price(quantity=D("-0.010"), entry_price=D("36567.10"), wallet_balance=D("182.8355"),
                           mmr=D("0.004"), cum=D("0"))
    assert lp == D(27425325) / D(502)
    assert lp.quantize(D("0.01")) == D("54632.12")
    assert abs(margin_balance_minus_maintenance(D("-0.010"), D("36567.10"), D("182.8355"), D("0.004"), D(0), lp)) \
        < D("1e-20")


def test_cross_long_liquidation_price_counts_the_other_positions():
    # Cross wallet 1000; 0.5 BTC long at 40000 (notional 20000: bracket 1); another cross position holds maintenance
    # margin 12.5 (TMM1) and is 50 under water (UPNL1 = -50).
    # LP = (1000 - 12.5 - 50 + 0 - 0.5 x 40000) / (0.5 x 0.004 - 0.5) = -19062.5 / -0.498 = 9531250 / 249
    #    = 38278.1124497991...  (249 x 38278 = 9531222, remainder 28)
    lp = liquidation_price(quantity=D("0.5"), entry_price=D("40000"), wallet_balance=D("1000"), mmr=D("0.004"),
                           cum=D("0"), other_maintenance=D("12.5"), other_unrealized=D("-50"))
    assert lp == D(9531250) / D(249)
    assert lp.quantize(D("0.01")) == D("38278.11")


def test_cross_short_in_the_second_bracket():
    # 2 BTC short at 45000 (notional 90000: bracket 2, MMR 0.5 %, cum 50), cross wallet 5000, no other position.
    # LP = (5000 + 50 - (-1) x 2 x 45000) / (2 x 0.005 - (-1) x 2) = 95050 / 2.01 = 9505000 / 201 = 47288.5572...
    # Check: at P the margin is 5000 + 2 (45000 - P) = 95000 - 2P, the maintenance 0.01 P - 50: equal at 2.01 P = 95050.
    brackets = brackets_from_response(BTCUSDT_BRACKETS)
    b = bracket_for(brackets, D("-2") * D("45000"))
    assert (b.mmr, b.cum, b.notional_cap) == (D("0.005"), D("50.0"), D("250000"))
    lp = liquidation_price(quantity=D("-2"), entry_price=D("45000"), wallet_balance=D("5000"), mmr=b.mmr, cum=b.cum)
    assert lp == D(9505000) / D(201)
    assert lp.quantize(D("0.01")) == D("47288.56")
    assert abs(margin_balance_minus_maintenance(D("-2"), D("45000"), D("5000"), b.mmr, b.cum, lp)) < D("1e-20")


def test_maintenance_margin_by_bracket():
    brackets = brackets_from_response(BTCUSDT_BRACKETS)
    # 2 BTC at a mark of 47000: notional 94000 (bracket 2) -> 94000 x 0.005 - 50 = 420
    assert maintenance_margin(D("-2"), D("47000"), bracket_for(brackets, D("94000"))) == D("420")
    # 0.010 at 36567.05: notional 365.6705 (bracket 1) -> x 0.004 = 1.462682
    assert maintenance_margin(D("0.010"), D("36567.05"), bracket_for(brackets, D("365.6705"))) == D("1.462682")
    # 10 BTC at 30000: notional 300000 (bracket 3: MMR 1 %, cum 1300) -> 3000 - 1300 = 1700; the brackets are
    # continuous at the boundary: 250000 x 0.005 - 50 = 1200 = 250000 x 0.01 - 1300
    b3 = bracket_for(brackets, D("300000"))
    assert maintenance_margin(D("10"), D("30000"), b3) == D("1700")
    assert D("250000") * brackets[1].mmr - brackets[1].cum == D("250000") * b3.mmr - b3.cum
    assert maintenance_margin(D("0"), D("30000"), b3) == 0


def test_liquidation_price_edge_cases():
    assert liquidation_price(quantity=D("0"), entry_price=D("1"), wallet_balance=D("1"), mmr=D("0.004"),
                             cum=D("0")) is None
    # a 1x long with more wallet than notional cannot be liquidated: Binance shows no price (0)
    assert liquidation_price(quantity=D("1"), entry_price=D("100"), wallet_balance=D("200"), mmr=D("0.004"),
                             cum=D("0")) == 0
    with pytest.raises(ValueError, match="mmr"):
        liquidation_price(quantity=D("1"), entry_price=D("1"), wallet_balance=D("1"), mmr=D("1"), cum=D("0"))
    with pytest.raises(ValueError, match="maintMarginRatio"):
        brackets_from_response([{"notionalFloor": 0, "notionalCap": 1}])
    assert Bracket(D(0), D(1), D("0.1"), D(0)).initial_leverage == 0


def fill(model: str, side: str, qty: str, px: str, tid: str) -> OrderFilled:
    return OrderFilled(ts_event=0, ts_init=0, client_order_id=f"c-{tid}", instrument_id=PERP, model_id=model,
                       venue_order_id=tid, trade_id=tid, side=side, last_qty=D(qty), last_px=D(px), commission=D(0),
                       commission_currency="USDT", liquidity_side="TAKER")


def test_funding_split_three_equal_longs_last_takes_the_remainder():
    pf = Portfolio(D("1000"), allow_short=True)
    for m in ("a", "b", "c"):
        pf.apply_fill(fill(m, "BUY", "0.001", "30000", m))
    # -1 USDT paid over three equal longs: -1/3 = -0.333333333... -> -0.33333333 (8 decimals) for a and b;
    # c takes the rest: -1 + 0.66666666 = -0.33333334
    parts = pf.apply_funding(PERP, D("-1"), "9689322392")
    assert parts == {"a": D("-0.33333333"), "b": D("-0.33333333"), "c": D("-0.33333334")}
    assert sum(parts.values()) == D("-1")
    assert pf.positions[("c", PERP)].realized == D("-0.33333334")
    assert pf.positions[("c", PERP)].funding == D("-0.33333334")
    # the same transaction again books nothing
    assert pf.apply_funding(PERP, D("-1"), "9689322392") == {}
    assert pf.realized() == D("-1")


def test_funding_split_with_opposite_positions_and_a_restart():
    pf = Portfolio(D("1000"), allow_short=True)
    pf.apply_fill(fill("hmm_v1", "BUY", "0.003", "30000", "1"))
    pf.apply_fill(fill("hmm_v2", "SELL", "0.001", "30000", "2"))
    # the account is net long 0.002 and pays 0.5 USDT; per unit of net position 0.5 / 0.002 = 250 USDT/BTC:
    # hmm_v1 (long 0.003) pays 0.003 x 250 = 0.75, hmm_v2 (short 0.001) receives 0.25; -0.75 + 0.25 = -0.5
    parts = pf.apply_funding(PERP, D("-0.5"), "t1")
    assert parts == {"hmm_v1": D("-0.75"), "hmm_v2": D("0.25")}
    # the book's cash (equity_start + realized - cost) moved by exactly the amount paid
    cash = pf.equity_start + pf.realized() - sum(p.cost for p in pf.positions.values())
    assert cash == D("1000") - D("90") + D("30") - D("0.5")
    # a checkpoint keeps the ids: after a restore the same payment is not booked again
    again = Portfolio.from_dict(pf.to_dict())
    assert again.funding_seen == {"t1"}
    assert again.apply_funding(PERP, D("-0.5"), "t1") == {}
    assert again.positions[("hmm_v1", PERP)].funding == D("-0.75")
    # nobody holds ETH perps: nothing booked, the id is remembered
    assert again.apply_funding(InstrumentId("ETHUSDT-PERP", "BINANCE"), D("-1"), "t2") == {}
    with pytest.raises(TypeError, match="amount"):
        again.apply_funding(PERP, -1, "t3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tran_id"):
        again.apply_funding(PERP, D("1"), "")


def test_funding_paid_round_trips_and_rebuilds_the_same_cash(tmp_path):
    ev = FundingPaid(ts_event=1, ts_init=2, instrument_id=PERP, amount=D("-0.14626840"), asset="USDT",
                     tran_id="9689322392")
    assert event_from_dict(ev.to_dict()) == ev
    store = Store(tmp_path / "desk.sqlite")
    try:
        pf = Portfolio(D("1000"), allow_short=True)
        events = [fill("a", "BUY", "0.002", "30000", "1"), fill("b", "BUY", "0.001", "30000", "2"),
                  FundingPaid(ts_event=3, ts_init=3, instrument_id=PERP, amount=D("-0.1"), asset="USDT",
                              tran_id="x1"),
                  FundingPaid(ts_event=4, ts_init=4, instrument_id=PERP, amount=D("-0.1"), asset="USDT",
                              tran_id="x1")]  # reported twice (a restart): booked once
        for e in events:
            store.append(e)
            if isinstance(e, OrderFilled):
                pf.apply_fill(e)
            else:
                pf.apply_funding(e.instrument_id, e.amount, e.tran_id)
        store.flush()
        rebuilt = compute(store.conn, equity_start=D("1000"))
        # -0.1 x 2/3 = -0.0666666666.. -> -0.06666667 for a, b takes -0.03333333
        got = {m: p.realized for (m, _), p in rebuilt.portfolio.positions.items()}
        assert got == {"a": D("-0.06666667"), "b": D("-0.03333333")}
        assert {m: p.realized for (m, _), p in pf.positions.items()} == got
    finally:
        store.close()
