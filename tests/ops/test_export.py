"""``desk export-pnl`` (issue 8): the daily PnL CSV per model and
instrument plus a total row, realized by fill time in the venue-day zone,
unrealized as the change between stored end-of-day marks; every cell worked
out by hand below. The store is read while a writer holds it open."""

from __future__ import annotations

import csv
import json
from decimal import Decimal

import pytest

from core.daily_pnl import EXPORT_COLUMNS
from core.events import EndOfDayMarked, FillAllocated, OrderAccepted, OrderFilled, OrderInitialized, OrderSubmitted
from core.identifiers import InstrumentId
from core.store import Store
from desk.export import ExportError, export_pnl, export_pnl_main

D = Decimal
IID = InstrumentId.parse("BTCUSDT.SIM")
H = 3600 * 1_000_000_000
# 2026-01-01T00:00:00Z = 20454 days after 1970-01-01 (56 years, 14 leap days) = 1_767_225_600 s
JAN1 = 1_767_225_600 * 1_000_000_000
BERLIN = "Europe/Berlin"  # UTC+1 in January: a Berlin day runs 23:00Z the day before to 23:00Z


def order(store, coid, model, side, qty, px, ts, fee, fee_ccy, parts=None):
    """An order initialized, submitted, accepted and filled at ``ts``;
    ``parts`` {model: (qty, fee)} for a netted order's allocations."""
    common = dict(client_order_id=coid, instrument_id=IID, model_id=model)
    store.append(OrderInitialized(ts_event=ts, ts_init=ts, side=side, order_type="MARKET", quantity=D(qty),
                                  price=None, time_in_force="GTC", **common))
    store.append(OrderSubmitted(ts_event=ts, ts_init=ts, **common))
    store.append(OrderAccepted(ts_event=ts, ts_init=ts, venue_order_id="V" + coid, **common))
    store.append(OrderFilled(ts_event=ts, ts_init=ts, venue_order_id="V" + coid, trade_id="T" + coid, side=side,
                             last_qty=D(qty), last_px=D(px), commission=D(fee), commission_currency=fee_ccy,
                             liquidity_side="TAKER", **common))
    for m, (q, f) in (parts or {}).items():
        store.append(FillAllocated(ts_event=ts, ts_init=ts, client_order_id=coid, instrument_id=IID, model_id=m,
                                   trade_id="T" + coid, last_qty=D(q), commission=D(f), commission_currency=fee_ccy))


def marks(store, day, ts, rows):
    store.append(EndOfDayMarked(ts_event=ts, ts_init=ts, day=day, tz=BERLIN, rows=[
        {"model_id": m, "instrument_id": str(IID), "quantity": q, "mark": px, "unrealized": u, "realized": "0",
         "fees": "0"} for m, q, px, u in rows]))


@pytest.fixture
def state(tmp_path):
    """The store of a Berlin-day run with these fills (fees: a buy's in
    BTC, a sell's in USDT, as on Binance; one buy's fee in USDT):

    F1 m1 BUY 1 @ 100, fee 0.001 BTC, 2026-01-01 10:00Z (Berlin Jan 1)
       -> m1 0.999 BTC, cost 100; fee value 0.001*100 = 0.1
    F2 m2 BUY 2 @ 100, fee 0.2 USDT, 2026-01-01 22:59:59.999999999Z (Berlin Jan 1, 23:59:59.999999999)
       -> m2 2 BTC, cost 200 + 0.2 = 200.2
    marks of Jan 1 at 100 -> 101: m1 0.999*101 - 100 = 0.899; m2 2*101 - 200.2 = 1.8
    F3 m1 SELL 0.5 @ 110, fee 0.055 USDT, 2026-01-01 23:30Z (Berlin Jan 2 00:30)
       -> removed 100*0.5/0.999 = 50.05005005|005 -> 50.05005005; realized 55 - 0.055 - 50.05005005
          = 4.89494995; m1 0.499 BTC, cost 49.94994995
    F4 m2 SELL 2 @ 105, fee 0.21 USDT, 2026-01-02 09:00Z -> realized 210 - 0.21 - 200.2 = 9.59; m2 flat
    F6 NET BUY 0.3 @ 100, fee 0.0003 BTC, 2026-01-02 10:00Z, allocated m1 0.2 (fee 0.0002), m2 0.1 (0.0001)
       -> m1 0.6988 BTC, cost 69.94994995, fee value 0.02; m2 0.0999 BTC, cost 10, fee value 0.01
    marks of Jan 2 at 104: m1 0.6988*104 - 69.94994995 = 72.6752 - 69.94994995 = 2.72525005;
       m2 0.0999*104 - 10 = 0.3896
    F5 m1 SELL 0.1 @ 90, 2026-01-02 23:10Z (Berlin Jan 3 00:10): not in Jan 2
    """
    sd = tmp_path / "state"
    sd.mkdir()
    store = Store(sd / "desk.sqlite")
    store.meta_set("setup", json.dumps({"mode": "sim", "day_tz": BERLIN, "capital": "10000"}))
    order(store, "1", "m1", "BUY", "1", "100", JAN1 + 10 * H, "0.001", "BTC")
    order(store, "2", "m2", "BUY", "2", "100", JAN1 + 23 * H - 1, "0.2", "USDT")
    marks(store, "2026-01-01", JAN1 + 23 * H, [("m1", "0.999", "101", "0.899"), ("m2", "2", "101", "1.8")])
    order(store, "3", "m1", "SELL", "0.5", "110", JAN1 + 23 * H + H // 2, "0.055", "USDT")
    order(store, "4", "m2", "SELL", "2", "105", JAN1 + 33 * H, "0.21", "USDT")
    order(store, "6", "NET", "BUY", "0.3", "100", JAN1 + 34 * H, "0.0003", "BTC",
          parts={"m1": ("0.2", "0.0002"), "m2": ("0.1", "0.0001")})
    marks(store, "2026-01-02", JAN1 + 47 * H, [("m1", "0.6988", "104", "2.72525005"),
                                               ("m2", "0.0999", "104", "0.3896")])
    order(store, "5", "m1", "SELL", "0.1", "90", JAN1 + 47 * H + H // 6, "0.009", "USDT")
    store.flush()
    yield sd, store
    store.close()


def read(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(EXPORT_COLUMNS)
    for r in rows[1:]:
        assert not any("E" in c for c in r[3:]), r  # plain decimals, never an exponent
    return rows[1:]


def same(got, want):
    """Rows equal cell by cell; money compared as Decimal (0.1 == 0.10000000)."""
    assert len(got) == len(want), got
    for g, w in zip(got, want):
        assert g[:3] == w[:3] and g[7] == w[7], (g, w)
        for i in (3, 4, 5, 6, 8):
            assert D(g[i]) == D(w[i]), (EXPORT_COLUMNS[i], g, w)


def test_default_date_is_the_last_complete_berlin_day_by_hand(state, capsys):
    sd, _ = state  # the writer keeps the store open, as a running daemon does
    # the engine clock: the last journal time, F5 at 2026-01-02 23:10Z = Berlin Jan 3 00:10 -> Jan 2
    assert export_pnl_main(sd, None, None) == 0
    path = sd / "exports" / "pnl_2026-01-02.csv"
    assert capsys.readouterr().out.strip() == str(path)
    same(read(path), [
        # date, model, instrument, realized, unrealized, fees, pnl, trades, volume
        # m1: F3 + its part of F6; unrealized 2.72525005 - 0.899; fees 0.055 + 0.02; volume 55 + 20
        ["2026-01-02", "m1", "BTCUSDT.SIM", "4.89494995", "1.82625005", "0.075", "6.7212", "2", "75"],
        # m2: F4 + its part of F6; unrealized 0.3896 - 1.8; fees 0.21 + 0.01; volume 210 + 10
        ["2026-01-02", "m2", "BTCUSDT.SIM", "9.59", "-1.4104", "0.22", "8.1796", "2", "220"],
        ["2026-01-02", "TOTAL", "", "14.48494995", "0.41585005", "0.295", "14.9008", "4", "295"],
    ])


def test_first_day_unrealized_against_a_flat_book(state):
    sd, _ = state
    res = export_pnl(sd, "2026-01-01")
    assert res.tz == BERLIN and res.warnings == []
    same(read(res.path), [
        ["2026-01-01", "m1", "BTCUSDT.SIM", "0", "0.899", "0.1", "0.899", "1", "100"],
        ["2026-01-01", "m2", "BTCUSDT.SIM", "0", "1.8", "0.2", "1.8", "1", "200"],  # F2 on the last ns
        ["2026-01-01", "TOTAL", "", "0", "2.699", "0.3", "2.699", "2", "300"],
    ])


def test_utc_days_move_the_23_30_fill_and_leave_the_berlin_marks_out(state):
    sd, _ = state
    res = export_pnl(sd, "2026-01-01", "UTC")
    # UTC Jan 1 holds F1, F2 and F3 (23:30Z); the marks are of Berlin days: unrealized 0, with a warning
    same(read(res.path), [
        ["2026-01-01", "m1", "BTCUSDT.SIM", "4.89494995", "0", "0.155", "4.89494995", "2", "155"],
        ["2026-01-01", "m2", "BTCUSDT.SIM", "0", "0", "0.2", "0", "1", "200"],
        ["2026-01-01", "TOTAL", "", "4.89494995", "0", "0.355", "4.89494995", "3", "355"],
    ])
    assert any("Europe/Berlin, not UTC" in w for w in res.warnings)


def test_a_day_without_trades_writes_the_zero_total_row(state):
    sd, _ = state
    res = export_pnl(sd, "2025-12-31")  # before the first fill: nothing traded that day
    assert read(res.path) == [["2025-12-31", "TOTAL", "", "0", "0", "0", "0", "0", "0"]]
    assert res.warnings == ["no end-of-day mark stored for 2025-12-31 (Europe/Berlin): the unrealized column is 0"]


def test_a_day_after_the_engine_clock_is_refused(state):
    # the journal's last event is on Berlin 2026-01-03: 2026-01-05 has not happened on the engine clock
    sd, _ = state
    with pytest.raises(ExportError, match="2026-01-05 is after the engine clock's day 2026-01-03"):
        export_pnl(sd, "2026-01-05")


def test_reads_beside_an_open_write_transaction_without_the_lock(state):
    sd, store = state
    from desk.wiring import StateDir

    lock = StateDir(sd)  # a running desk holds desk.lock
    try:
        store.conn.execute("BEGIN IMMEDIATE")
        store.conn.execute("INSERT INTO journal VALUES (9999, ?, ?, 'EndOfDayMarked', ?)",
                           (JAN1 + 200 * H, JAN1 + 200 * H,
                            json.dumps({"type": "EndOfDayMarked", "day": "2026-01-08", "tz": BERLIN, "rows": []})))
        res = export_pnl(sd, None)  # uncommitted: the engine clock is still F5's
        assert res.day.isoformat() == "2026-01-02"
        store.conn.execute("ROLLBACK")
    finally:
        lock.release()


@pytest.mark.parametrize("date, tz, needle", [("2026-1-2", None, "--date: expected YYYY-MM-DD, got '2026-1-2'"),
                                              ("2026-01-02", "Mars/Olympus", "--tz: not an IANA zone name")])
def test_bad_input_exit_2_naming_the_option(state, capsys, date, tz, needle):
    sd, _ = state
    assert export_pnl_main(sd, date, tz) == 2
    assert needle in capsys.readouterr().err


def test_no_store_and_empty_journal(tmp_path, capsys):
    assert export_pnl_main(tmp_path / "nothing", None, "UTC") == 2
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()  # nothing created
    Store(tmp_path / "desk.sqlite").close()
    assert export_pnl_main(tmp_path, None, "UTC") == 2
    assert "give --date" in capsys.readouterr().err
    assert export_pnl_main(tmp_path, "2026-01-02", "UTC") == 0  # with a date: the zero total row
    assert read(tmp_path / "exports" / "pnl_2026-01-02.csv") == [["2026-01-02", "TOTAL", "", "0", "0", "0", "0",
                                                                  "0", "0"]]


def test_funding_payments_are_realized_on_their_day_and_are_not_trades(tmp_path):
    from core.events import FundingPaid

    perp = InstrumentId.parse("BTCUSDT-PERP.BINANCE")
    sd = tmp_path / "state"
    sd.mkdir()
    store = Store(sd / "desk.sqlite")
    store.meta_set("setup", json.dumps({"mode": "live", "day_tz": "UTC", "capital": "10000"}))
    for coid, model, qty in (("1", "m1", "0.010"), ("2", "m2", "0.030")):
        common = dict(client_order_id=coid, instrument_id=perp, model_id=model)
        ts = JAN1 + H
        store.append(OrderInitialized(ts_event=ts, ts_init=ts, side="BUY", order_type="MARKET", quantity=D(qty),
                                      price=None, time_in_force="GTC", **common))
        store.append(OrderSubmitted(ts_event=ts, ts_init=ts, **common))
        store.append(OrderAccepted(ts_event=ts, ts_init=ts, venue_order_id="V" + coid, **common))
        store.append(OrderFilled(ts_event=ts, ts_init=ts, venue_order_id="V" + coid, trade_id="T" + coid,
                                 side="BUY", last_qty=D(qty), last_px=D("36567.10"), commission=D("0"),
                                 commission_currency="USDT", liquidity_side="TAKER", **common))
    # 08:00Z funding: the account pays 1.00 USDT on its 0.040 BTC; m1 holds 0.010 (1/4), m2 0.030 (3/4)
    fund = FundingPaid(ts_event=JAN1 + 8 * H, ts_init=JAN1 + 8 * H, instrument_id=perp, amount=D("-1.00"),
                       asset="USDT", tran_id="9001")
    store.append(fund)
    store.append(fund)  # reported twice (a restart read the income history again): booked once
    store.flush()
    store.close()
    res = export_pnl(sd, "2026-01-01", "UTC")
    # realized: m1 -1.00 x 0.010/0.040 = -0.25, m2 -0.75; no fee; trades 1 each, volume 0.010 x 36567.10 =
    # 365.671 and 0.030 x 36567.10 = 1097.013 (the funding adds no trade and no volume)
    same(read(res.path), [
        ["2026-01-01", "m1", "BTCUSDT-PERP.BINANCE", "-0.25", "0", "0", "-0.25", "1", "365.671"],
        ["2026-01-01", "m2", "BTCUSDT-PERP.BINANCE", "-0.75", "0", "0", "-0.75", "1", "1097.013"],
        ["2026-01-01", "TOTAL", "", "-1.00", "0", "0", "-1.00", "2", "1462.684"],
    ])
