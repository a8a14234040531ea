"""A perpetual's funding payment is split by the positions held at its
funding time, not at the time the desk reads it (Binance charges the
position at 00:00/08:00/16:00 UTC and lists the payment in
``/fapi/v1/income`` afterwards; fills may come in between). Values worked
by hand in the comments; the journal replay (``desk check-store``) and the
PnL export give the same split."""

from __future__ import annotations

from decimal import Decimal

from core.events import FundingPaid, OrderFilled
from core.identifiers import InstrumentId
from core.portfolio import POSITION_LOG_NS, Portfolio
from core.rebuild import compute
from core.store import Store

D = Decimal
PERP = InstrumentId("BTCUSDT-PERP", "BINANCE")
H = 3600 * 1_000_000_000
T8 = 8 * H  # the funding time


def fill(model: str, side: str, qty: str, ts: int, tid: str) -> OrderFilled:
    return OrderFilled(ts_event=ts, ts_init=ts, client_order_id=f"c-{tid}", instrument_id=PERP, model_id=model,
                       venue_order_id=tid, trade_id=tid, side=side, last_qty=D(qty), last_px=D("30000"),
                       commission=D(0), commission_currency="USDT", liquidity_side="TAKER")


def scenario() -> list:
    # 07:00 m1 buys 0.010; 08:00 funding (-1.00 USDT on the account's 0.010); 08:00:30 m2 buys 0.030;
    # 08:01 the desk reads the payment. At 08:00 only m1 held the perp: m1 pays all of it, -1.00.
    # (Split by the positions at 08:01 it would be m1 -0.25, m2 -0.75: m2 paying for a position it did not hold.)
    return [fill("m1", "BUY", "0.010", 7 * H, "1"), fill("m2", "BUY", "0.030", T8 + 30 * 10**9, "2"),
            FundingPaid(ts_event=T8, ts_init=T8 + 60 * 10**9, instrument_id=PERP, amount=D("-1.00"), asset="USDT",
                        tran_id="f1")]


def test_split_by_the_positions_at_the_funding_time():
    pf = Portfolio(D("10000"), allow_short=True)
    pf.track_positions([PERP])
    for e in scenario():
        if isinstance(e, OrderFilled):
            pf.apply_fill(e)
        else:
            parts = pf.apply_funding(e.instrument_id, e.amount, e.tran_id, at_ns=e.ts_event)
    assert parts == {"m1": D("-1.00")}
    assert pf.positions_at(PERP, T8) == {"m1": D("0.010"), "m2": D("0")}
    assert pf.positions_at(PERP, T8 + H) == {"m1": D("0.010"), "m2": D("0.030")}
    # a checkpoint keeps the log
    again = Portfolio.from_dict(pf.to_dict())
    assert again.positions_at(PERP, T8) == {"m1": D("0.010"), "m2": D("0")}
    # without the funding time (or an untracked instrument) the split is by the positions now: 1/4, 3/4
    now = Portfolio(D("10000"), allow_short=True)
    for e in scenario()[:2]:
        now.apply_fill(e)
    assert now.apply_funding(PERP, D("-1.00"), "f1") == {"m1": D("-0.25"), "m2": D("-0.75")}


def test_a_funding_time_older_than_the_log_falls_back_to_the_positions_now():
    pf = Portfolio(D("10000"), allow_short=True)
    pf.track_positions([PERP])
    pf.apply_fill(fill("m1", "BUY", "0.010", 0, "1"))
    pf.apply_fill(fill("m2", "BUY", "0.030", POSITION_LOG_NS + 2 * H, "2"))  # m1's change is trimmed
    assert pf.positions_at(PERP, H) is None  # before what the log covers
    assert pf.apply_funding(PERP, D("-1.00"), "f1", at_ns=H) == {"m1": D("-0.25"), "m2": D("-0.75")}


def test_the_journal_replay_splits_the_same_way(tmp_path):
    store = Store(tmp_path / "desk.sqlite")
    try:
        for e in scenario():
            store.append(e)
        store.flush()
        rebuilt = compute(store.conn, equity_start=D("10000"))
        got = {m: p.realized for (m, _), p in rebuilt.portfolio.positions.items()}
        assert got == {"m1": D("-1.00"), "m2": D("0")}
    finally:
        store.close()
