"""An IBKR-style margin account on the paper venue: a model can go short;
realized PnL on the reduction and on the flip through zero (issue 4's
right value): short 2 at 100, then buy 10 at 90 -> realized +20, a new
long of 8 at 90 (cost 720), unrealized +40 at a mark of 95."""

import asyncio
from decimal import Decimal

from core.audit import AuditLog
from core.clock import TestClock
from core.data import Bar
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderSide, OrderStatus, OrderType
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.helpers.scripted import InlineExecutor
from venues.feeds import ReplayFeed
from venues.klines import KlineFile
from venues.paper import PaperConfig, PaperVenue

D = Decimal
IID = InstrumentId("AAPL", "SIM")
AAPL = Instrument(IID, "AAPL", "USD", D("0.01"), D("1"), D("1"), min_notional=D("1"))
MIN = 60_000_000_000


def test_short_then_flip_long_by_hand(tmp_path):
    # bar k: (open, high, low, close); orders placed after bar 1 match from bar 2 on
    ohlc = [("100", "100", "100", "100"), ("100", "101", "99", "100"), ("92", "92", "90", "90"),
            ("90", "91", "89", "90"), ("95", "95", "95", "95")]
    bars = [Bar(IID, D(o), D(h), D(lo), D(c), D("1000"), k * MIN, (k + 1) * MIN) for k, (o, h, lo, c) in enumerate(ohlc)]
    clock = TestClock()
    paper = PaperConfig(margin_account=True, maker_fee=D("0"), taker_fee=D("0"), starting_cash=D("10000"))
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock,
        store=Store(tmp_path / "desk.sqlite"), audit=AuditLog(tmp_path / "audit.jsonl"),
        feed=ReplayFeed([KlineFile(tmp_path / "x.csv", IID, "AAPL", MIN, bars, [])]), instruments={IID: AAPL},
        models={}, specs=[ModelSpec("manual", D("1"))], risk=RiskEngine(RiskConfig()), executor=InlineExecutor(),
        venue_factory=lambda cb: PaperVenue(tmp_path / "v.sqlite", "SIM", "USD", {IID: AAPL}, clock, paper, cb),
    )
    assert eng.margin and eng.portfolio.allow_short

    async def go():
        await eng.run(max_bars=1)
        short = eng.submit("manual", IID, OrderSide.SELL, D("2"), D("100.00"), D("100"), OrderType.LIMIT)
        assert not short.reduce_only  # opening a short is an entry, not a reduction
        await eng.send_pending()
        await eng.run(max_bars=1)  # bar 2: high 101 > 100 -> sold 2 at 100
        buy = eng.submit("manual", IID, OrderSide.BUY, D("10"), D("90.00"), D("100"), OrderType.LIMIT)
        assert not buy.reduce_only  # 10 > the short of 2: it flips through zero
        await eng.send_pending()
        await eng.run()  # bar 3: open 92, low 90 is not below 90; bar 4: low 89 < 90 -> bought 10 at 90
        return short, buy

    short, buy = asyncio.run(go())
    assert short.status == OrderStatus.FILLED and buy.status == OrderStatus.FILLED and buy.avg_px == D("90.00")
    pos = eng.portfolio.position("manual", IID)
    assert pos.realized == D("20")  # (100 - 90) x 2
    assert pos.quantity == D("8") and pos.cost == D("720")  # 8 x 90
    assert eng.portfolio.marks[IID] == D("95")
    assert pos.unrealized(D("95")) == D("40")  # 8 x (95 - 90)
    # the venue's ledger agrees: 10000 + 200 - 900 = 9300 USD and 8 AAPL
    assert eng.venue.balance("USD") == D("9300") and eng.venue.balance("AAPL") == D("8")
    assert eng.portfolio.equity() == D("9300") + D("8") * D("95")
