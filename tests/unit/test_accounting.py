"""Issue 4, Accounting: shorts and flips, fee assets, multi-fill orders, the
per-model and per-venue split, daily PnL by venue day, and properties
against an independent cash ledger.

Every expected value is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import calendar
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.daily_pnl import (
    DailyPnl,
    EndOfDayMarks,
    RealizedPnl,
    daily_pnl,
    day_bounds,
    realized_events,
    venue_day,
)
from core.events import OrderFilled
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.portfolio import AccountingError, MissingPriceError, Portfolio, Position

D = Decimal
ETH = InstrumentId("ETHUSDT", "BINANCE")
SOL = InstrumentId("SOLUSDT", "BINANCE")
BTC_SIM = InstrumentId("BTCUSDT", "SIM")
AAPL = InstrumentId("AAPL", "IBKR")
HOUR_NS = 3_600 * 10**9

_tid = iter(range(10**9))


def fill(side, qty, px, fee="0", ccy="USDT", model="m1", iid=ETH, ts=1):
    return OrderFilled(ts_event=ts, ts_init=ts, client_order_id="NHD-1-0-0", instrument_id=iid, model_id=model,
                       venue_order_id="v", trade_id=f"t{next(_tid)}", side=side, last_qty=D(qty), last_px=D(px),
                       commission=D(fee), commission_currency=ccy, liquidity_side="TAKER")


def utc_ns(y, mo, d, h=0, mi=0, s=0):
    """UTC nanoseconds of a wall time in UTC, integer arithmetic only."""
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 10**9


# ------------------------------------------------------------------ shorts
def test_issue_value_short_2_at_100_then_buy_10_at_90_flips_long():
    pf = Portfolio(D("10000"), allow_short=True)
    assert pf.apply_fill(fill("SELL", "2", "100")) == 0
    pos = pf.position("m1", ETH)
    # short 2 at 100: quantity -2, cost = -(proceeds 200) = -200
    assert (pos.quantity, pos.cost) == (D(-2), D(-200))
    assert pos.avg_px() == D(100)
    realized = pf.apply_fill(fill("BUY", "10", "90"))
    # close 2 at 90 against an average of 100: (100 - 90) * 2 = +20
    assert realized == D(20)
    # open the other 8 at 90: cost 8 * 90 = 720
    assert (pos.quantity, pos.cost, pos.realized) == (D(8), D(720), D(20))
    assert pos.avg_px(D("0.01")) == D("90.00")
    pf.mark(ETH, D(95))
    # unrealized = 8 * 95 - 720 = 760 - 720 = +40
    assert pf.unrealized() == D(40)
    # cash 10000 + 200 - 900 = 9300; + 8 * 95 = 760 → 10060 = 10000 + 20 + 40
    assert pf.equity() == D(10060)


def test_short_reduced_with_quote_fees_realizes_net_of_fees():
    pf = Portfolio(D("1000"), allow_short=True)
    # sell 3 at 50, fee 0.15 USDT: net proceeds 150 - 0.15 = 149.85 → cost -149.85
    pf.apply_fill(fill("SELL", "3", "50", "0.15"))
    pos = pf.position("m1", ETH)
    assert pos.cost == D("-149.85")
    # buy 1 at 40, fee 0.04: pays 40.04; removed cost -149.85 / 3 = -49.95
    # realized = -40.04 - (-49.95) = 9.91
    assert pf.apply_fill(fill("BUY", "1", "40", "0.04")) == D("9.91")
    assert (pos.quantity, pos.cost) == (D(-2), D("-99.90"))
    pf.mark(ETH, D(45))
    # unrealized = -2 * 45 - (-99.90) = 9.90
    assert pf.unrealized() == D("9.90")
    # buy the last 2 at 45, no fee: pays 90; removes -99.90; realized 9.90; flat with cost 0
    assert pf.apply_fill(fill("BUY", "2", "45")) == D("9.90")
    assert (pos.quantity, pos.cost) == (0, 0)
    assert pos.avg_px() is None
    # fees: 0.15 + 0.04 = 0.19; realized 9.91 + 9.90 = 19.81
    assert (pf.fees(), pf.realized()) == (D("0.19"), D("19.81"))


def test_long_flips_short_splitting_the_fee_by_quantity():
    pf = Portfolio(D("1000"), allow_short=True)
    pf.apply_fill(fill("BUY", "1", "100"))  # long 1, cost 100
    # sell 3 at 110, fee 0.33 USDT: cash 330 - 0.33 = 329.67
    # close share 1/3: 109.89 → realized 109.89 - 100 = 9.89
    assert pf.apply_fill(fill("SELL", "3", "110", "0.33")) == D("9.89")
    pos = pf.position("m1", ETH)
    # open share: 329.67 - 109.89 = 219.78 received for 2 short → cost -219.78
    assert (pos.quantity, pos.cost) == (D(-2), D("-219.78"))
    assert pos.avg_px() == D("109.89")


def test_spot_refuses_a_sell_beyond_the_position_and_changes_nothing():
    pf = Portfolio(D("10000"))
    pf.apply_fill(fill("BUY", "1.000", "2000", "0.001", "ETH"))  # holds 0.999
    before = pf.to_dict()
    with pytest.raises(AccountingError, match="exceeds position 0.999"):
        pf.apply_fill(fill("SELL", "1.000", "2100", "2.1"))
    # a base fee is an extra reduction: 0.999 + 0.001 = 1.000 > 0.999
    with pytest.raises(AccountingError):
        pf.apply_fill(fill("SELL", "0.999", "2100", "0.001", "ETH"))
    assert pf.to_dict() == before
    # never went short on an empty book either
    with pytest.raises(AccountingError):
        pf.apply_fill(fill("SELL", "1", "2100", model="other"))
    assert pf.quantity(ETH) == D("0.999")


def test_short_allowed_per_instrument():
    pf = Portfolio(D("10000"))
    pf.register_instrument(Instrument(AAPL, "AAPL", "USD", D("0.01"), D("1"), D("1")), allow_short=True)
    pf.apply_fill(fill("SELL", "5", "200", "1", "USD", iid=AAPL))  # short 5, cost -(1000 - 1) = -999
    assert pf.position("m1", AAPL).cost == D(-999)
    assert pf.quantity(AAPL) == D(-5)
    with pytest.raises(AccountingError):
        pf.apply_fill(fill("SELL", "1", "2000", iid=ETH))
    assert pf.shorts_allowed(AAPL) and not pf.shorts_allowed(ETH)


def test_malformed_fills_are_refused():
    pf = Portfolio(D("100"), allow_short=True)
    for bad in (fill("BUY", "0", "1"), fill("BUY", "1", "-1"), fill("BUY", "1", "1", "-0.1"), fill("HOLD", "1", "1")):
        with pytest.raises(AccountingError):
            pf.apply_fill(bad)
    assert pf.positions == {}


# ------------------------------------------------------------------ fees
def test_fee_in_quote_on_a_buy_is_part_of_the_cost():
    pf = Portfolio(D("1000"))
    pf.apply_fill(fill("BUY", "2", "100", "0.2", "USDT"))
    pos = pf.position("m1", ETH)
    # quantity not reduced; cost = 200 + 0.2 = 200.2
    assert (pos.quantity, pos.cost, pos.fees) == (D(2), D("200.2"), D("0.2"))


def test_fee_in_base_on_a_sell_is_an_extra_reduction():
    pf = Portfolio(D("1000"))
    pf.apply_fill(fill("BUY", "10", "10"))  # 10 ETH, cost 100
    # sell 4 at 12, fee 0.004 ETH: position gives 4.004
    # removed = 100 * 4.004 / 10 = 40.04; proceeds 48 → realized 48 - 40.04 = 7.96
    assert pf.apply_fill(fill("SELL", "4", "12", "0.004", "ETH")) == D("7.96")
    pos = pf.position("m1", ETH)
    # 10 - 4.004 = 5.996 left with cost 100 - 40.04 = 59.96; fee valued 0.004 * 12 = 0.048
    assert (pos.quantity, pos.cost, pos.fees) == (D("5.996"), D("59.96"), D("0.048"))


def test_fee_in_a_third_asset_is_converted_at_its_price_at_fill_time():
    pf = Portfolio(D("10000"))
    pf.set_price("BNB", D("600"))
    # buy 1 ETH at 2000, fee 0.00075 BNB * 600 = 0.45 USDT → cost 2000.45, quantity 1 (not reduced)
    pf.apply_fill(fill("BUY", "1", "2000", "0.00075", "BNB"))
    pos = pf.position("m1", ETH)
    assert (pos.quantity, pos.cost) == (D(1), D("2000.45"))
    # sell 1 at 2100, fee 0.0007875 BNB at an explicit fee_price 640 = 0.504 USDT
    # realized = 2100 - 0.504 - 2000.45 = 99.046
    assert pf.apply_fill(fill("SELL", "1", "2100", "0.0007875", "BNB"), fee_price=D("640")) == D("99.046")
    # fees = 0.45 + 0.504 = 0.954
    assert pf.fees() == D("0.954")


def test_third_asset_fee_without_a_price_names_the_asset_and_changes_nothing():
    pf = Portfolio(D("10000"))
    with pytest.raises(MissingPriceError, match="BNB") as err:
        pf.apply_fill(fill("BUY", "1", "2000", "0.00075", "BNB"))
    assert err.value.asset == "BNB"
    assert isinstance(err.value, AccountingError)
    assert pf.positions == {}
    # a zero fee in an unpriced asset needs no price
    pf.apply_fill(fill("BUY", "1", "2000", "0", "BNB"))
    assert pf.position("m1", ETH).cost == D(2000)


def test_set_price_refuses_float_and_non_positive():
    pf = Portfolio(D("1"))
    with pytest.raises(TypeError):
        pf.set_price("BNB", 600.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pf.set_price("BNB", D(0))


def test_fee_asset_kind_from_registry_and_from_symbol():
    pf = Portfolio(D("1"))
    assert pf.fee_asset_kind(ETH, "ETH") == "base"
    assert pf.fee_asset_kind(ETH, "USDT") == "quote"
    assert pf.fee_asset_kind(ETH, "BNB") == "other"
    assert pf.fee_asset_kind(InstrumentId("BTCUSDT-PERP", "BINANCE"), "USDT") == "quote"
    assert pf.fee_asset_kind(InstrumentId("BTC/USDT", "BINANCE"), "BTC") == "base"
    assert pf.fee_asset_kind(AAPL, "USD") == "other"  # not guessable: register it
    pf.register_instrument(Instrument(AAPL, "AAPL", "USD", D("0.01"), D("1"), D("1")))
    assert pf.fee_asset_kind(AAPL, "USD") == "quote"


# ------------------------------------------------------------------ multi-fill order
def test_issue_value_limit_buy_two_partial_fills_with_base_fees():
    sol = Instrument(SOL, "SOL", "USDT", tick_size=D("0.01"), step_size=D("0.01"), min_qty=D("0.01"))
    pf = Portfolio(D("10000"))
    pf.register_instrument(sol)
    # one order, BUY 100.00 at 10.00: fills 40.00 (fee 0.04 SOL) and 20.00 (fee 0.02 SOL), then canceled
    pf.apply_fill(fill("BUY", "40.00", "10.00", "0.04", "SOL", iid=SOL))
    pf.apply_fill(fill("BUY", "20.00", "10.00", "0.02", "SOL", iid=SOL))
    pos = pf.position("m1", SOL)
    # 39.96 + 19.98 = 59.94 SOL; cost 400.00 + 200.00 = 600.00 USDT
    assert pos.quantity == D("59.94")
    assert pos.cost == D("600.00")
    # 600 / 59.94 = 10.010010… → 10.0100 to 4 decimals
    assert pos.avg_px(D("0.0001")) == D("10.0100")
    assert pos.fills == 2
    # the exit is for what is held, floored to the step: 59.94
    exit_qty = sol.round_qty_down(pos.quantity)
    assert exit_qty == D("59.94")
    with pytest.raises(AccountingError):
        pf.apply_fill(fill("SELL", "60.00", "10.50", iid=SOL))
    # sell 59.94 at 10.50: proceeds 629.37, fee 0.1 % = 0.62937 → net 628.74063; realized 28.74063
    assert pf.apply_fill(fill("SELL", exit_qty, "10.50", "0.62937", "USDT", iid=SOL)) == D("28.74063")
    assert (pos.quantity, pos.cost) == (0, 0)


# ------------------------------------------------------------------ split
def test_per_model_and_per_venue_split_sums_to_totals():
    pf = Portfolio(D("10000"), allow_short=True)
    pf.apply_fill(fill("BUY", "1", "100", "0.001", "ETH", model="a", iid=ETH))
    pf.apply_fill(fill("SELL", "1", "50", "0.05", model="a", iid=BTC_SIM))
    pf.apply_fill(fill("BUY", "2", "101", "0.202", model="b", iid=ETH))
    pf.apply_fill(fill("SELL", "0.5", "110", "0.055", model="a", iid=ETH))
    pf.apply_fill(fill("BUY", "3", "40", model="b", iid=BTC_SIM))
    pf.mark(ETH, D(105))
    pf.mark(BTC_SIM, D(45))
    # a on BINANCE: long 0.999 at cost 100; sell 0.5 → removed 100 * 0.5 / 0.999 = 50.05005005 (8 dp)
    #   proceeds 55 - 0.055 = 54.945 → realized 4.89494995
    assert pf.realized("a", "BINANCE") == D("4.89494995")
    # b on SIM: long 3 at cost 120, mark 45 → unrealized 135 - 120 = 15
    assert pf.unrealized("b", "SIM") == D(15)
    # a on SIM: short 1, cost -(50 - 0.05) = -49.95; mark 45 → -45 + 49.95 = 4.95
    assert pf.unrealized("a", "SIM") == D("4.95")
    for fig in ("realized", "unrealized", "fees", "fills"):
        f = getattr(pf, fig)
        assert f("a") + f("b") == f()
        assert f(venue="BINANCE") + f(venue="SIM") == f()
        assert sum(f(m, v) for m in "ab" for v in ("BINANCE", "SIM")) == f()


def test_round_trip_of_the_new_state():
    pf = Portfolio(D("10000"), allow_short=True)
    pf.register_instrument(Instrument(AAPL, "AAPL", "USD", D("0.01"), D("1"), D("1")), allow_short=False)
    pf.set_price("BNB", D("612.5"))
    pf.apply_fill(fill("SELL", "2", "100", "0.001", "BNB"))
    back = Portfolio.from_dict(pf.to_dict())
    assert back.to_dict() == pf.to_dict()
    assert back.allow_short and not back.shorts_allowed(AAPL)
    assert back.asset_prices == {"BNB": D("612.5")}
    assert back.position("m1", ETH) == Position(D(-2), D("-199.3875"), D(0), D("0.6125"), 1)


def test_old_checkpoints_load_as_spot():
    old = {"equity_start": "100", "positions": [], "marks": {}, "equity_curve": [], "last_curve_ts": -1}
    pf = Portfolio.from_dict(old)
    assert not pf.allow_short and pf.asset_prices == {} and pf.instrument_assets == {}


# ------------------------------------------------------------------ daily PnL
ISSUE_EVENTS = [
    RealizedPnl(utc_ns(2026, 1, 1, 23, 30), "m1", ETH, D(5)),
    RealizedPnl(utc_ns(2026, 1, 2, 0, 30), "m1", ETH, D(12)),
    RealizedPnl(utc_ns(2026, 1, 2, 1, 30), "m1", ETH, D(-3)),
]


def test_issue_value_daily_pnl_in_utc():
    rows = daily_pnl(ISSUE_EVENTS)
    # 2026-01-01: +5; 2026-01-02: 12 - 3 = 9
    assert [(r.day, r.pnl) for r in rows] == [(date(2026, 1, 1), D(5)), (date(2026, 1, 2), D(9))]
    assert [r.fills for r in rows] == [1, 2]
    assert rows[0].start_ns == utc_ns(2026, 1, 1) and rows[0].end_ns == utc_ns(2026, 1, 2)


def test_issue_value_daily_pnl_in_moscow_is_one_row_dated_the_2nd():
    rows = daily_pnl(ISSUE_EVENTS, tz="Europe/Moscow")
    # UTC+3: 02:30, 03:30, 04:30 on 2026-01-02 → one row 5 + 12 - 3 = 14
    assert [(r.day, r.pnl) for r in rows] == [(date(2026, 1, 2), D(14))]
    # the Moscow day starts at 2026-01-01 21:00 UTC
    assert rows[0].start_ns == utc_ns(2026, 1, 1, 21)


def test_berlin_spring_forward_day_has_23_hours_and_is_one_row():
    start, end = day_bounds(date(2026, 3, 29), "Europe/Berlin")
    # 00:00 CET (UTC+1) = 2026-03-28 23:00Z; next midnight 00:00 CEST (UTC+2) = 2026-03-29 22:00Z
    assert (start, end) == (utc_ns(2026, 3, 28, 23), utc_ns(2026, 3, 29, 22))
    assert end - start == 23 * HOUR_NS
    assert venue_day(utc_ns(2026, 3, 29, 21, 59), "Europe/Berlin") == date(2026, 3, 29)  # 23:59 CEST
    assert venue_day(utc_ns(2026, 3, 29, 22, 0), "Europe/Berlin") == date(2026, 3, 30)   # 00:00 CEST
    assert venue_day(utc_ns(2026, 3, 28, 23) - 1, "Europe/Berlin") == date(2026, 3, 28)  # 23:59:59.999… CET
    events = [RealizedPnl(utc_ns(2026, 3, 28, 23), "m1", ETH, D(1)),        # 00:00 CET
              RealizedPnl(utc_ns(2026, 3, 29, 1, 30), "m1", ETH, D(2)),     # 03:30 CEST, after the jump
              RealizedPnl(utc_ns(2026, 3, 29, 21, 59), "m1", ETH, D(4)),    # 23:59 CEST
              RealizedPnl(utc_ns(2026, 3, 29, 22), "m1", ETH, D(8))]        # 00:00 on the 30th
    rows = daily_pnl(events, tz="Europe/Berlin")
    # 1 + 2 + 4 = 7 on the 29th, 8 on the 30th
    assert [(r.day, r.pnl) for r in rows] == [(date(2026, 3, 29), D(7)), (date(2026, 3, 30), D(8))]


def test_berlin_fall_back_day_has_25_hours_and_is_one_row():
    start, end = day_bounds(date(2026, 10, 25), "Europe/Berlin")
    # 00:00 CEST (UTC+2) = 2026-10-24 22:00Z; next midnight 00:00 CET (UTC+1) = 2026-10-25 23:00Z
    assert (start, end) == (utc_ns(2026, 10, 24, 22), utc_ns(2026, 10, 25, 23))
    assert end - start == 25 * HOUR_NS
    assert venue_day(utc_ns(2026, 10, 25, 22, 59), "Europe/Berlin") == date(2026, 10, 25)  # 23:59 CET
    assert venue_day(utc_ns(2026, 10, 25, 23, 0), "Europe/Berlin") == date(2026, 10, 26)
    # 02:30 local happens twice: 00:30Z (CEST) and 01:30Z (CET), both the 25th
    events = [RealizedPnl(utc_ns(2026, 10, 25, 0, 30), "m1", ETH, D(3)),
              RealizedPnl(utc_ns(2026, 10, 25, 1, 30), "m1", ETH, D(5)),
              RealizedPnl(utc_ns(2026, 10, 25, 22, 59), "m1", ETH, D(-1))]
    rows = daily_pnl(events, tz="Europe/Berlin")
    assert [(r.day, r.pnl) for r in rows] == [(date(2026, 10, 25), D(7))]  # 3 + 5 - 1


def test_daily_pnl_adds_the_change_of_stored_end_of_day_unrealized():
    marks = {date(2026, 1, 1): D(10), date(2026, 1, 2): D(4), date(2026, 1, 4): D(7)}
    rows = daily_pnl(ISSUE_EVENTS, marks)
    got = [(r.day, r.realized, r.unrealized_change, r.pnl) for r in rows]
    assert got == [
        (date(2026, 1, 1), D(5), D(10), D(15)),   # 5 + (10 - 0)
        (date(2026, 1, 2), D(9), D(-6), D(3)),    # 9 + (4 - 10)
        (date(2026, 1, 4), D(0), D(3), D(3)),     # 0 + (7 - 4): the 3rd had no mark and no fill
    ]
    # rows sum to realized 14 + (last mark 7 - opening 0) = 21
    assert sum(r.pnl for r in rows) == D(21)
    # with an opening unrealized of 2, the first day's change is 10 - 2 = 8
    assert daily_pnl(ISSUE_EVENTS, marks, opening_unrealized=D(2))[0].pnl == D(13)


def test_daily_pnl_filters_model_and_venue():
    events = [RealizedPnl(utc_ns(2026, 1, 1, 1), "a", ETH, D(1)),
              RealizedPnl(utc_ns(2026, 1, 1, 2), "b", ETH, D(10)),
              RealizedPnl(utc_ns(2026, 1, 1, 3), "a", BTC_SIM, D(100))]
    assert daily_pnl(events, model_id="a")[0].pnl == D(101)
    assert daily_pnl(events, venue="BINANCE")[0].pnl == D(11)
    assert daily_pnl(events, model_id="a", venue="SIM")[0].pnl == D(100)


def test_daily_pnl_rejects_unknown_zone_and_float_marks():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        daily_pnl(ISSUE_EVENTS, tz="Mars/Olympus")
    with pytest.raises(TypeError):
        daily_pnl(ISSUE_EVENTS, {date(2026, 1, 1): 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        RealizedPnl(1, "m", ETH, 1.5)  # type: ignore[arg-type]


def test_end_of_day_marks_keep_the_last_observation_of_each_local_day():
    eod = EndOfDayMarks(tz="Europe/Moscow")
    assert eod.observe(utc_ns(2026, 1, 1, 12), D(1)) is None
    assert eod.observe(utc_ns(2026, 1, 1, 20, 59), D(2)) is None   # 23:59 MSK, still the 1st
    assert eod.observe(utc_ns(2026, 1, 1, 21), D(3)) == date(2026, 1, 1)  # 00:00 MSK on the 2nd
    assert eod.snapshot() == {date(2026, 1, 1): D(2)}
    assert eod.snapshot(include_open=True) == {date(2026, 1, 1): D(2), date(2026, 1, 2): D(3)}
    back = EndOfDayMarks.from_dict(eod.to_dict())
    assert back.snapshot(include_open=True) == eod.snapshot(include_open=True)
    with pytest.raises(ValueError):
        eod.observe(utc_ns(2026, 1, 1, 12), D(0))


def test_engine_path_fills_through_portfolio_to_rows():
    pf = Portfolio(D("10000"))
    fills = [fill("BUY", "1", "100", ts=utc_ns(2026, 1, 1, 10)),
             fill("SELL", "0.5", "110", ts=utc_ns(2026, 1, 1, 23, 30)),   # realized 55 - 50 = 5
             fill("SELL", "0.5", "124", ts=utc_ns(2026, 1, 2, 0, 30))]    # realized 62 - 50 = 12
    events = realized_events(fills, pf)
    assert [e.realized for e in events] == [D(0), D(5), D(12)]
    rows = daily_pnl(events, tz="UTC")
    assert [(r.day, r.pnl, r.fills) for r in rows] == [(date(2026, 1, 1), D(5), 2), (date(2026, 1, 2), D(12), 1)]
    assert isinstance(rows[0], DailyPnl) and rows[0].to_dict()["day"] == "2026-01-01"


# ------------------------------------------------------------------ properties
INSTRUMENTS = {ETH: ("ETH", "USDT"), BTC_SIM: ("BTC", "USDT"), AAPL: ("AAPL", "USD")}
BNB_PRICE = D("612.35")

op = st.tuples(
    st.sampled_from(["a", "b"]),
    st.sampled_from(list(INSTRUMENTS)),
    st.sampled_from(["BUY", "SELL"]),
    st.integers(1, 5000).map(lambda n: D(n).scaleb(-3)),         # qty 0.001 … 5.000
    st.integers(100, 500000).map(lambda n: D(n).scaleb(-2)),     # px 1.00 … 5000.00
    st.sampled_from(["none", "base", "quote", "third", "third_arg"]),
    st.integers(0, 2000).map(lambda n: D(n).scaleb(-6)),         # third-asset fee 0 … 0.002 BNB
)


def run_against_ledger(ops, allow_short, marks):
    """Book ``ops`` and an independent ledger side by side; returns both.

    Ledger (fee handling as documented in core/portfolio.py):
      buy:  cash -= qty*px; holdings += qty, minus a base fee
      sell: cash += qty*px; holdings -= qty, minus a base fee (extra reduction)
      a quote fee: cash -= fee; a third-asset fee: cash -= fee * its price
    Quantities and prices have few decimals, so every product is exact.
    """
    pf = Portfolio(D("100000"), allow_short=allow_short)
    pf.set_price("BNB", BNB_PRICE)
    # ETHUSDT and BTCUSDT are read from their symbols; AAPL's assets are declared
    pf.register_instrument(Instrument(AAPL, "AAPL", "USD", D("0.01"), D("0.001"), D("0.001")))
    cash = D("100000")
    holdings: dict[tuple[str, InstrumentId], Decimal] = {}
    for model, iid, side, qty, px, fee_kind, third in ops:
        base, quote = INSTRUMENTS[iid]
        fee, ccy, fee_price = D(0), quote, None
        if fee_kind == "base":
            fee, ccy = qty * D("0.001"), base
        elif fee_kind == "quote":
            fee = qty * px * D("0.001")
        elif fee_kind in ("third", "third_arg"):
            fee, ccy = third, "BNB"
            fee_price = D("600.5") if fee_kind == "third_arg" else None
        held = holdings.get((model, iid), D(0))
        change = (qty if side == "BUY" else -qty) - (fee if fee_kind == "base" else 0)
        f = fill(side, qty, px, fee, ccy, model=model, iid=iid)
        if not allow_short and held + change < 0:
            before = pf.to_dict()
            with pytest.raises(AccountingError):
                pf.apply_fill(f, fee_price=fee_price)
            assert pf.to_dict() == before
            continue
        pf.apply_fill(f, fee_price=fee_price)
        holdings[(model, iid)] = held + change
        cash += -qty * px if side == "BUY" else qty * px
        if fee_kind == "quote":
            cash -= fee
        elif fee_kind in ("third", "third_arg"):
            cash -= fee * (fee_price or BNB_PRICE)
        if not allow_short:
            assert all(p.quantity >= 0 for p in pf.positions.values())
    for iid, m in zip(INSTRUMENTS, marks):
        pf.mark(iid, m)
    return pf, cash, holdings


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(op, max_size=40), st.booleans(),
       st.lists(st.integers(100, 500000).map(lambda n: D(n).scaleb(-2)), min_size=3, max_size=3))
def test_property_book_equals_independent_cash_ledger(ops, allow_short, marks):
    pf, cash, holdings = run_against_ledger(ops, allow_short, marks)
    # equity_start + realized + unrealized == cash + holdings at the marks, exactly
    ledger_equity = cash + sum((q * pf.marks[i] for (_, i), q in holdings.items()), D(0))
    assert pf.equity() == ledger_equity
    for (m, i), q in holdings.items():
        assert pf.position(m, i).quantity == q
    for iid in INSTRUMENTS:
        assert pf.quantity(iid) == sum((q for (_, i), q in holdings.items() if i == iid), D(0))
    for pos in pf.positions.values():
        if pos.quantity == 0:
            assert pos.cost == 0  # a closed position carries no cost


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(op, max_size=40), st.booleans(),
       st.lists(st.integers(100, 500000).map(lambda n: D(n).scaleb(-2)), min_size=3, max_size=3))
def test_property_splits_sum_exactly_to_totals(ops, allow_short, marks):
    pf, _, _ = run_against_ledger(ops, allow_short, marks)
    venues = {i.venue for i in INSTRUMENTS}
    for fig in ("realized", "unrealized", "fees", "fills"):
        f = getattr(pf, fig)
        assert f("a") + f("b") == f()
        assert sum(f(venue=v) for v in venues) == f()
        assert sum(f(m, v) for m in "ab" for v in venues) == f()
    assert pf.fills() == sum(p.fills for p in pf.positions.values())


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 40 * 86_400).map(lambda s: utc_ns(2026, 3, 20) + s * 10**9),
                          st.integers(-10**6, 10**6).map(lambda n: D(n).scaleb(-2))), max_size=30),
       st.sampled_from(["UTC", "Europe/Berlin", "Europe/Moscow", "America/New_York"]))
def test_property_daily_rows_partition_the_events(events, tz):
    evs = [RealizedPnl(ts, "m1", ETH, r) for ts, r in events]
    rows = daily_pnl(evs, tz=tz)
    # every event lands in exactly one row whose bounds contain it; rows sum to the total
    assert sum((r.pnl for r in rows), D(0)) == sum((e.realized for e in evs), D(0))
    assert sum(r.fills for r in rows) == len(evs)
    for e in evs:
        [row] = [r for r in rows if r.start_ns <= e.ts_ns < r.end_ns]
        assert row.day == venue_day(e.ts_ns, tz)
    for r in rows:
        assert r.end_ns - r.start_ns in (23 * HOUR_NS, 24 * HOUR_NS, 25 * HOUR_NS)
