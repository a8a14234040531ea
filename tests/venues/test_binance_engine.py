"""The engine (core.engine, its VenueSession and reconciliation) trading
through BinanceVenue -> ccxt -> the local fake Binance: start-up
reconciliation, a model's buy filled with its fee in the base asset, books that
reconcile with the venue's balances, and a 418 ban that denies the next order
with the reason while nothing more reaches the venue."""

from __future__ import annotations

from decimal import Decimal

from core.audit import AuditLog
from core.clock import TestClock
from core.data import Bar
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderStatus
from core.identifiers import InstrumentId
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from tests.venues.binance_server import FakeBinance
from tests.venues.conftest import EXCHANGE_INFO_2023, KEY, SECRET, Recorder, venue_for
from venues.feeds import ReplayFeed
from venues.klines import KlineFile

D = Decimal
IID = InstrumentId("ETHUSDT", "BINANCE")
MIN = 60_000_000_000


def bars(closes):
    return [Bar(IID, D(c), D(c) + 1, D(c) - 1, D(c), D("100"), k * MIN, (k + 1) * MIN, k + 2)
            for k, c in enumerate(closes)]


async def test_engine_trades_and_reconciles_through_the_binance_adapter(shared, tmp_path):
    clock = TestClock(0)
    srv = await FakeBinance(clock, EXCHANGE_INFO_2023, api_key=KEY, secret=SECRET,
                            balances={"USDT": D("10000")}).start()
    srv.set_book("ETHUSDT", "1999.99", "2000.00")
    venue = venue_for(srv, clock, Recorder(), symbols=("ETHUSDT",))
    await venue.start()
    store = Store(tmp_path / "desk.sqlite")
    feed = ReplayFeed([KlineFile("x.csv", IID, "ETHUSDT", MIN, bars(["2000"] * 4 + ["2100"] * 2), [])])
    model = ScriptedModel("m0", IID, ["1", "1", "0"], warmup=2)
    eng = Engine(config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock, store=store,
                 audit=AuditLog(tmp_path / "audit" / "orders.jsonl"), feed=feed, instruments=dict(venue.instruments),
                 models={"m0": {IID: model}}, specs=[ModelSpec("m0", D("1"))], risk=RiskEngine(RiskConfig()),
                 executor=InlineExecutor(), venue_factory=lambda cb: venue.bind(cb))
    try:
        assert await eng.recover() == []  # nothing to reconcile: the venue and the store agree
        await eng.run(max_bars=4)
        # bar 3 (close 2000): buy floor(10000 / 2000, step 0.0001) = 5 ETH, limit 2000.00; the ask is 2000.00, so
        # it fills on arrival; fee 0.1 % of 5 ETH = 0.005 ETH; the book holds 4.995 ETH, the venue too
        (buy,) = [o for o in eng.orders.values()]
        assert (buy.status, buy.filled_qty, buy.avg_px) == (OrderStatus.FILLED, D("5"), D("2000"))
        assert srv.order_by_client_id(buy.client_order_id).client_order_id == buy.client_order_id
        assert eng.portfolio.quantity(IID) == D("4.995")
        assert (srv.free["ETH"], srv.free["USDT"]) == (D("4.995"), D("0"))
        assert venue.balance("ETH") == D("4.995") and venue.balance("USDT") == D("0")
        assert eng.session.reconciles >= 1 and eng.session.last_report.differences == []
        assert eng.unreconciled == []  # the periodic reconciliation found the venue and the books equal
        # the venue bans the desk's IP (HTTP 418) when the next order arrives: it is denied with the reason
        srv.fail_next(418, retry_after_s=120)
        n = len(srv.requests)
        await eng.run(max_bars=2)
        sells = [o for o in eng.orders.values() if o.side.value == "SELL"]
        assert sells and all(o.status == OrderStatus.REJECTED for o in sells)
        assert "IP banned" in sells[0].reason and "418" in sells[0].reason
        assert len(srv.requests) == n + 1  # the refused submit; the next order is refused by the session, unsent
        assert len(sells) == 2 and "nothing is sent to BINANCE" in sells[1].reason
        assert srv.order_by_client_id(sells[0].client_order_id) is None
        alerts = [r[0] for r in store.conn.execute("SELECT code FROM alerts")]
        assert "VENUE_BANNED" in alerts
        assert srv.signed_ok == srv.signed_total > 0
    finally:
        store.close()
        await venue.close()
        await srv.close()
