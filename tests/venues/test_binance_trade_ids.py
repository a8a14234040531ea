"""Binance trade ids on a desk with a spot and a USD-M futures venue.

Binance numbers spot trades and futures trades separately, and the fake
(tests/venues/binance_server.py) numbers each market's trades from 1, as the
venue does for a new account: spot trade 1 and futures trade 1 are two
different trades. The store keys fills by ``trade_id`` (``core.store``'s
``fills`` table, ``INSERT OR IGNORE``; ``core.rebuild``), so the USD-M
adapter reports every futures trade id with the prefix ``F-``
(``venues/binance/usdm.py``, "Trade ids"), on every path a futures fill
takes (user data stream ``t``, REST ``userTrades`` ``id``, the lookups of
reconciliation); spot ids stay bare.

Symptom pinned (a break test): 31 fill events became 19 rows, check-store
found 17 false differences and export-pnl's realized PnL was wrong."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

import pytest

from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.orders import Order
from core.rebuild import rebuild
from desk.cli import main
from tests.live.test_live_binance import creds  # noqa: F401 - fixture
from tests.live.test_live_multi import (  # noqa: F401 - fixtures
    PERP,
    SPOT,
    drive,
    one,
    pushing,
    summary_of,
    write_multi_config,
)
from tests.venues.binance_server import FakeBinanceUsdm
from tests.venues.conftest import ENV, KEY, SECRET, Recorder, venue_for
from tests.venues.test_binance_usdm import ASK, BID, USDM_INFO, order
from tests.venues.test_binance_usdm_stream import connect
from venues.binance.adapter import BinanceConfig, BinanceVenue

D = Decimal


@pytest.fixture
async def fsrv(clock):
    if not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    srv = await FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, wallet=D("10000"),
                                book=[("BTCUSDT", BID, "5", ASK, "5")]).start()
    yield srv
    await srv.close()


@pytest.fixture
async def fv(fsrv, clock):
    rec = Recorder()
    v = BinanceVenue(BinanceConfig(market="usdm", symbols=("BTCUSDT",), urls=fsrv.urls), clock, rec, env=ENV)
    await v.start()
    rec.events.clear()
    v.rec = rec  # type: ignore[attr-defined]
    yield v
    await v.close()


async def test_spot_and_futures_trade_1_get_different_desk_ids(server, clock, fv, fsrv):
    # spot: a market buy of 0.001 BTC fills at once (the fake's first spot trade: id 1)
    spot_rec = Recorder()
    spot = venue_for(server, clock, spot_rec, symbols=("BTCUSDT",))
    await spot.start()
    try:
        await spot.submit_order(Order(
            client_order_id="NHD-s-0-0", model_id="m", instrument_id=InstrumentId("BTCUSDT", "BINANCE"),
            side=OrderSide.BUY, order_type=OrderType.MARKET, quantity=D("0.001"), price=None,
            time_in_force=TimeInForce.GTC,
            ts_init=0, step=0))
    finally:
        await spot.close()
    # futures: a market buy of 0.002 fills at once (the fake's first futures trade: id 1 too)
    await fv.submit_order(order("NHD-f-0-0", OrderSide.BUY, "0.002"))
    assert [t.id for t in server.trades] == [1] and [t.id for t in fsrv.trades] == [1]
    (s,) = spot_rec.of("OrderFilled")
    (f,) = fv.rec.of("OrderFilled")
    assert (s.trade_id, f.trade_id) == ("1", "F-1")  # spot ids unchanged (existing state dirs), futures prefixed
    # the order lookups of reconciliation (GET /fapi/v1/order + userTrades) give the same id
    report = await fv.lookup_async("NHD-f-0-0")
    assert report is not None and [x.trade_id for x in report.fills] == ["F-1"]
    assert len(fv.rec.of("OrderFilled")) == 1  # the lookup found nothing new


async def test_a_futures_fill_seen_by_the_stream_then_by_rest_is_reported_once(fv, fsrv):
    rec = fv.rec
    await fv.submit_order(order("NHD-f-1-0", OrderSide.BUY, "0.002", OrderType.LIMIT, "36000.0"))
    task = await connect(fv, fsrv)
    fsrv.set_book("BTCUSDT", "35990.0", "35990.1")  # through the buy: filled at 36000.0 (futures trade 1)
    assert await asyncio.wait_for(task, 3) == 1  # by the stream (ORDER_TRADE_UPDATE t = 1)
    sent = [e["o"]["t"] for e in fsrv.user_events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert sent == [1] and [t.id for t in fsrv.trades] == [1]
    # then the same trade over REST: a poll (userTrades of the order) and a lookup
    await fv.poll()
    report = await fv.lookup_async("NHD-f-1-0")
    assert [(f.trade_id, f.last_qty, f.last_px) for f in rec.of("OrderFilled")] == [("F-1", D("0.002"),
                                                                                     D("36000.0"))]
    assert report is not None and [x.trade_id for x in report.fills] == ["F-1"]
    assert fv.balance("BTC") == D("0.002")  # the position moved once


def _fills(state) -> list[tuple[str, str, str]]:
    with sqlite3.connect(state / "desk.sqlite") as c:
        return sorted(c.execute("SELECT trade_id, instrument_id, last_qty FROM fills"))


def test_spot_and_futures_fills_with_the_same_trade_id_both_reach_the_store(tmp_path, one, creds, drive, capsys):
    # both books sit below every price: each venue's buys cross and fill
    one.run(lambda: one.fut.set_book("BTCUSDT", "20000.0", "20000.1"))
    cfg = write_multi_config(tmp_path, one)
    state = tmp_path / "state"
    drive(one, pushing(range(6)))
    code = main(["run", "--config", str(cfg), "--headless", "--state-dir", str(state), "--bars", "12"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    spot_trades = one.run(lambda: list(one.spot.trades))
    fut_trades = one.run(lambda: list(one.fut.trades))
    # the venues numbered their trades independently from 1: the same numbers on both
    assert spot_trades and fut_trades and {t.id for t in spot_trades} & {t.id for t in fut_trades}
    # every trade of each venue is one row of the store, spot ids bare, futures ids F-<id>
    expected = sorted([(str(t.id), SPOT, t.qty) for t in spot_trades]
                      + [(f"F-{t.id}", PERP, t.qty) for t in fut_trades])
    rows = _fills(state)
    assert len(rows) == len(spot_trades) + len(fut_trades)
    assert [(tid, iid, D(q)) for tid, iid, q in rows] == expected
    assert summary_of(out)["fills"] == len(spot_trades) + len(fut_trades)
    # the tables equal the journal replayed (core.rebuild): no difference
    report = rebuild(state / "desk.sqlite")
    assert report.ok, report.lines()
    assert main(["check-store", "--state-dir", str(state)]) == 0, capsys.readouterr()
    capsys.readouterr()
    # the engine's positions are each venue's holding: spot BTC bought - sold - BTC fees, the perpetual's amount
    pos = {k: D(v["quantity"]) for k, v in summary_of(out)["positions"].items()}
    spot_net = sum((t.qty if t.is_buyer else -t.qty for t in spot_trades), D(0))
    spot_fee = sum((t.commission for t in spot_trades if t.commission_asset == "BTC"), D(0))
    assert pos[SPOT] == spot_net - spot_fee == one.run(lambda: one.spot.free["BTC"]
                                                       + one.spot.locked.get("BTC", D(0))) - D(1)
    assert pos[PERP] == sum((t.qty if t.is_buyer else -t.qty for t in fut_trades), D(0)) \
        == one.run(lambda: one.fut.position("BTCUSDT").qty)
