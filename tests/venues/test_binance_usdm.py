"""Binance USD-M futures (``market: usdm``) through the real ccxt
``binanceusdm`` code path against the local fake Binance's ``/fapi`` subset
(tests/venues/binance_server.py, ``FakeBinanceUsdm``): markets and filters
from the recorded USD-M exchangeInfo (2022-02-19 sample), margin type and
leverage set with the signed parameters the server verified, hedge mode
refused, submit/fill/cancel by ``newClientOrderId``, a short position,
reconciliation after a restart, funding booked once across a restart, and
-1021 / 429 / 418 on ``/fapi`` as on spot.

The book is put at the recorded futures trade (ccxt-recorded ``fetchMyTrades``
swap entry: BUY 0.010 BTCUSDT at 36567.10, commission 0.14626840 USDT, i.e.
0.04 % taker of 365.671), so the fee the fake charges equals the recorded one.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest

from core.audit import AuditLog
from core.clock import TestClock
from core.data import Bar
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderSide, OrderType, TimeInForce
from core.funding import attach_funding
from core.identifiers import InstrumentId
from core.orders import Order
from core.rebuild import compute
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.conftest import SHARED_DATA
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from tests.venues.binance_server import FakeBinanceUsdm
from tests.venues.conftest import ENV, KEY, SECRET, T0, Recorder
from venues.binance.adapter import BinanceConfig, BinanceVenue
from venues.binance.errors import BinanceBanned, BinanceRateLimited, BinanceStartupError
from venues.binance.exchange import make_exchange
from venues.binance.usdm import BinanceUsdmVenue
from venues.feeds import ReplayFeed
from venues.klines import KlineFile

D = Decimal
S = 1_000_000_000
MIN = 60 * S
USDM_INFO = SHARED_DATA / "exchange-info" / "binance-usdm-exchangeInfo-2022-02-19-sample.json"
RECORDED = SHARED_DATA / "binance" / "orders" / "ccxt-recorded" / "binance-recorded-http-responses.json"
PERP = InstrumentId("BTCUSDT-PERP", "BINANCE")
#: the recorded futures trade's price, and a bid one tick under it
ASK, BID = "36567.10", "36567.00"


@pytest.fixture
async def fsrv(clock):
    if not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    srv = await FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, wallet=D("10000"),
                                book=[("BTCUSDT", BID, "5", ASK, "5")]).start()
    yield srv
    await srv.close()


def usdm_venue(srv: FakeBinanceUsdm, clock, rec=None, **cfg) -> BinanceVenue:
    urls = cfg.pop("urls", srv.urls)
    c = BinanceConfig(market="usdm", symbols=tuple(cfg.pop("symbols", ("BTCUSDT",))), urls=urls, **cfg)
    return BinanceVenue(c, clock, rec, env=ENV)


def order(coid: str, side: OrderSide, qty: str, type_: OrderType = OrderType.MARKET, price: str | None = None,
          reduce_only: bool = False, post_only: bool = False) -> Order:
    return Order(client_order_id=coid, model_id="hmm_v1", instrument_id=PERP, side=side, order_type=type_,
                 quantity=D(qty), price=None if price is None else D(price), time_in_force=TimeInForce.GTC,
                 ts_init=0, step=0, reduce_only=reduce_only, post_only=post_only)


async def test_markets_are_the_linear_perpetuals_with_the_files_filters(fsrv, clock):
    v = usdm_venue(fsrv, clock)
    assert isinstance(v, BinanceUsdmVenue) and v.config.margin_account is True and v.reconcile_cash is False
    await v.start()
    try:
        (inst,) = v.instruments.values()
        assert inst.id == PERP and v.unified[PERP] == "BTC/USDT:USDT"
        # binance-usdm-exchangeInfo-2022-02-19-sample.json, BTCUSDT: PRICE_FILTER tickSize "0.10", LOT_SIZE
        # stepSize/minQty "0.001" maxQty "1000", MIN_NOTIONAL notional "10", MARKET_LOT_SIZE 0.001..1000
        doc = json.loads(USDM_INFO.read_text())
        f = {x["filterType"]: x for x in next(s for s in doc["symbols"] if s["symbol"] == "BTCUSDT")["filters"]}
        assert (inst.tick_size, inst.step_size, inst.min_qty, inst.max_qty, inst.min_notional) == (
            D(f["PRICE_FILTER"]["tickSize"]), D(f["LOT_SIZE"]["stepSize"]), D(f["LOT_SIZE"]["minQty"]),
            D(f["LOT_SIZE"]["maxQty"]), D(f["MIN_NOTIONAL"]["notional"]))
        assert (inst.tick_size, inst.min_notional) == (D("0.1"), D("10"))
        assert (inst.base, inst.quote) == ("BTC", "USDT")
        assert v.market_lots[PERP] == (D("0.001"), D("1000"), D("0.001"))
        # only /fapi (and the key check on /sapi): no spot, no margin, no delivery (dapi) call
        paths = fsrv.paths()
        assert paths.count("/fapi/v1/exchangeInfo") == 1
        assert all(p.startswith("/fapi/") or p == "/sapi/v1/account/apiRestrictions" for p in paths), paths
        assert fsrv.signed_ok == fsrv.signed_total > 0
    finally:
        await v.close()
    # the quarterly contract of the same file is not a perpetual: refused
    with pytest.raises(BinanceStartupError, match="BTCUSDT_220325"):
        v2 = usdm_venue(fsrv, clock, symbols=("BTCUSDT_220325",))
        try:
            await v2.start()
        finally:
            await v2.close()


async def test_margin_type_and_leverage_are_set_with_signed_params(fsrv, clock):
    v = usdm_venue(fsrv, clock, leverage=2, margin_mode="isolated")
    lines = await v.start()
    await v.close()
    assert fsrv.params_of("/fapi/v1/marginType") == [{"symbol": "BTCUSDT", "marginType": "ISOLATED"}]
    assert fsrv.params_of("/fapi/v1/leverage") == [{"symbol": "BTCUSDT", "leverage": "2"}]
    assert fsrv.margin_type["BTCUSDT"] == "isolated" and fsrv.leverage["BTCUSDT"] == 2
    assert (v.margin_mode[PERP], v.leverage[PERP]) == ("isolated", 2)
    b = v.brackets[PERP][0]
    assert (b.mmr, b.cum, b.notional_cap) == (D("0.004"), D("0"), D("50000"))
    assert any("margin isolated, leverage 2x" in x for x in lines)
    assert any("position mode one-way" in x for x in lines)
    # a restart: the margin type is already isolated, Binance answers -4046 "No need to change margin type.":
    # that is success
    v2 = usdm_venue(fsrv, clock, leverage=2, margin_mode="isolated")
    await v2.start()
    await v2.close()
    assert ("/fapi/v1/marginType", -4046) in fsrv.errors
    assert v2.margin_mode[PERP] == "isolated"
    # a leverage the venue refuses stops the start, named
    v3 = usdm_venue(fsrv, clock, leverage=125, margin_mode="isolated")
    fsrv.brackets["BTCUSDT"] = [dict(fsrv.brackets["BTCUSDT"][0], initialLeverage=20)]
    with pytest.raises(BinanceStartupError, match="leverage 125 refused"):
        await v3.start()
    await v3.close()


async def test_hedge_mode_is_refused(fsrv, clock):
    fsrv.dual_side = True
    v = usdm_venue(fsrv, clock, leverage=2, margin_mode="cross")
    with pytest.raises(BinanceStartupError, match="hedge mode"):
        await v.start()
    await v.close()
    assert "/fapi/v1/marginType" not in fsrv.paths()  # nothing was changed on the account


async def test_submit_fill_cancel_by_client_order_id(fsrv, clock):
    rec = Recorder()
    v = usdm_venue(fsrv, clock, rec, leverage=2, margin_mode="isolated")
    await v.start()
    rec.events.clear()
    try:
        await v.submit_order(order("NHD-1-a-0", OrderSide.BUY, "0.010"))
        sent = fsrv.params_of("/fapi/v1/order")[-1]
        assert (sent["newClientOrderId"], sent["type"], sent["side"], sent["quantity"]) == (
            "NHD-1-a-0", "MARKET", "BUY", "0.01")
        assert rec.types() == ["OrderAccepted", "OrderFilled"]
        fill = rec.events[1]
        # the recorded futures trade: 0.010 at 36567.10, commission 0.14626840 USDT (365.671 x 0.0004)
        recorded = next(e for e in json.loads(RECORDED.read_text())["entries"]
                        if e["description"].startswith("Swap private trade"))["httpResponse"][0]
        assert (fill.last_qty, fill.last_px, fill.commission, fill.commission_currency) == (
            D(recorded["qty"]), D(recorded["price"]), D(recorded["commission"]), recorded["commissionAsset"])
        assert fill.liquidity_side == "TAKER" and fill.side == "BUY"
        assert v.balance("BTC") == D("0.010") == v.balance("BTCUSDT-PERP")
        # a resting limit, canceled by its ClientOrderId
        await v.submit_order(order("NHD-1-a-1", OrderSide.SELL, "0.010", OrderType.LIMIT, "40000.0"))
        assert fsrv.order_by_client_id("NHD-1-a-1").status == "NEW"
        assert rec.types()[-1] == "OrderAccepted"
        await v.cancel_order(order("NHD-1-a-1", OrderSide.SELL, "0.010", OrderType.LIMIT, "40000.0"))
        assert fsrv.params_of("/fapi/v1/order")[-1] == {"symbol": "BTCUSDT", "origClientOrderId": "NHD-1-a-1"}
        assert rec.types()[-1] == "OrderCanceled" and rec.events[-1].executed_qty == 0
        # post-only that would take is GTX at Binance, refused -5022: reported as rejected, nothing rests
        await v.submit_order(order("NHD-1-a-2", OrderSide.BUY, "0.010", OrderType.LIMIT, "36567.1", post_only=True))
        assert fsrv.params_of("/fapi/v1/order")[-1]["timeInForce"] == "GTX"
        assert rec.types()[-1] == "OrderRejected" and "-5022" in rec.events[-1].reason
        # lookups and reconciliation's reads answer from the venue's figures
        assert v.lookup("NHD-1-a-0").status == "FILLED"
        await v.poll()
        assert v.balance("BTC") == D("0.010")
        assert v.balance("USDT") == D("10000") - D("0.14626840")  # the wallet paid the fee only
        assert fsrv.signed_ok == fsrv.signed_total
    finally:
        await v.close()


async def test_a_short_position_and_reduce_only(fsrv, clock):
    rec = Recorder()
    v = usdm_venue(fsrv, clock, rec, leverage=2, margin_mode="cross")
    await v.start()
    try:
        await v.submit_order(order("NHD-2-a-0", OrderSide.SELL, "0.020"))
        assert rec.types()[-1] == "OrderFilled" and rec.events[-1].last_px == D(BID)
        assert v.balance("BTC") == D("-0.020")
        assert fsrv.position("BTCUSDT").qty == D("-0.020")
        # a reduce-only buy larger than the short is refused by the venue (-2022) ...
        await v.submit_order(order("NHD-2-a-1", OrderSide.BUY, "0.030", reduce_only=True))
        assert fsrv.params_of("/fapi/v1/order")[-1]["reduceOnly"] == "true"
        assert rec.types()[-1] == "OrderRejected" and "-2022" in rec.events[-1].reason
        # ... one of the short's size closes it
        await v.submit_order(order("NHD-2-a-2", OrderSide.BUY, "0.020", reduce_only=True))
        assert rec.types()[-1] == "OrderFilled"
        await v.poll()
        assert v.balance("BTC") == 0 and fsrv.position("BTCUSDT").qty == 0
        # the short sold at 36567.00 and bought back at 36567.10: -0.002 realized; fees 0.04 % of 731.34 and of
        # 731.342 = 0.292536 + 0.2925368 -> wallet 10000 - 0.002 - 0.5850728
        assert v.balance("USDT") == D("10000") - D("0.002") - D("0.292536") - D("0.2925368")
    finally:
        await v.close()


async def test_position_risk_compares_the_venues_liquidation_price(fsrv, clock, caplog):
    v = usdm_venue(fsrv, clock, leverage=2, margin_mode="isolated")
    await v.start()
    try:
        await v.submit_order(order("NHD-3-a-0", OrderSide.BUY, "0.010"))
        fsrv.marks["BTCUSDT"] = D("36000")
        # isolated wallet 0.010 x 36567.10 / 2 = 182.8355; LP 9141775 / 498 = 18356.9779... (see
        # test_binance_usdm_margin.test_isolated_long_liquidation_price); the venue says 18356.9: within a tick
        fsrv.liquidation["BTCUSDT"] = D("18356.9")
        with caplog.at_level(logging.WARNING, logger="desk.venues.binance.usdm"):
            risk = await v.position_risk()
        p = risk[PERP]
        assert (p.quantity, p.entry_price, p.mark_price, p.leverage, p.margin_mode) == (
            D("0.01"), D("36567.10"), D("36000"), 2, "isolated")
        assert p.wallet_balance == D("182.8355")
        assert p.liquidation_price == D(9141775) / D(498)
        assert p.maintenance_margin == D("0.010") * D("36000") * D("0.004")  # 1.44
        assert p.unrealized_pnl == D("0.010") * (D("36000") - D("36567.10"))
        assert not [r for r in caplog.records if "liquidation price" in r.getMessage()]
        fsrv.liquidation["BTCUSDT"] = D("18356.8")  # 0.1779 from ours: more than the tick 0.1
        with caplog.at_level(logging.WARNING, logger="desk.venues.binance.usdm"):
            await v.position_risk()
        (w,) = [r for r in caplog.records if "liquidation price" in r.getMessage()]
        assert "18356.8" in w.getMessage() and "18356.97" in w.getMessage()
    finally:
        await v.close()


async def test_demo_trading_urls_and_no_permission_check_on_demo(fsrv, clock):
    ex = make_exchange(clock=clock, market="usdm", testnet=True)
    try:
        # ccxt 4.5's demo trading: REST at demo-fapi.binance.com, no /sapi
        assert ex.urls["api"]["fapiPrivate"] == "https://demo-fapi.binance.com/fapi/v1"
        assert ex.urls["api"]["fapiPrivateV2"] == "https://demo-fapi.binance.com/fapi/v2"
        assert "sapi" not in ex.urls["api"] and ex.options["enableDemoTrading"] is True
        assert ex.options["fetchMarkets"]["types"] == ["linear"]
    finally:
        await ex.close()
    demo_like = {k: u for k, u in fsrv.urls.items() if k != "sapi"}
    v = usdm_venue(fsrv, clock, urls=demo_like)
    lines = await v.start()
    await v.close()
    assert any("demo trading has no /sapi" in x for x in lines)
    assert "/sapi/v1/account/apiRestrictions" not in fsrv.paths()
    # with /sapi, a key that can withdraw is refused
    fsrv.can_withdraw = True
    v2 = usdm_venue(fsrv, clock)
    with pytest.raises(BinanceStartupError, match="withdrawals enabled"):
        await v2.start()
    await v2.close()


async def test_1021_429_418_on_fapi_behave_as_on_spot(fsrv, clock):
    fsrv.offset_ms = 8243  # the venue's clock is 8,243 ms ahead; recvWindow 5,000
    rec = Recorder()
    v = usdm_venue(fsrv, clock, rec)
    await v.start()
    try:
        assert fsrv.errors[0] == ("/fapi/v2/account", -1021)
        assert v.clock_offset_ms == 8243
        assert "/fapi/v1/time" in fsrv.paths()
        await v.submit_order(order("NHD-4-a-0", OrderSide.BUY, "0.010", OrderType.LIMIT, "30000.0"))
        assert rec.types()[-1] == "OrderAccepted" and len(fsrv.orders) == 1
        # 429 with Retry-After 35: nothing is sent for 35 s of clock, then it resumes
        fsrv.fail_next(429, retry_after_s=35)
        with pytest.raises(BinanceRateLimited) as err:
            await v.refresh_positions()
        assert err.value.retry_after_ns == 35 * S
        n = len(fsrv.requests)
        clock.advance(35 * S - 1)
        with pytest.raises(BinanceRateLimited):
            await v.poll()
        assert len(fsrv.requests) == n
        clock.advance(1)
        await v.poll()
        # 418: down for the ban, its orders refused with the reason, nothing sent
        fsrv.fail_next(418, retry_after_s=120)
        with pytest.raises(BinanceBanned):
            await v.poll()
        n = len(fsrv.requests)
        with pytest.raises(BinanceBanned) as ban:
            await v.submit_order(order("NHD-4-a-1", OrderSide.BUY, "0.010"))
        assert "IP banned (HTTP 418)" in ban.value.detail and len(fsrv.requests) == n
        assert rec.of("AlertRaised")[-1].code == "VENUE_BANNED"
    finally:
        await v.close()


# ---------------------------------------------------------------------------- the engine
def bars(closes: list[str], t0: int) -> list[Bar]:
    return [Bar(PERP, D(c), D(c) + 1, D(c) - 1, D(c), D("100"), t0 + k * MIN, t0 + (k + 1) * MIN, k + 2)
            for k, c in enumerate(closes)]


def make_engine(tmp_path, clock, venue, t0):
    feed = ReplayFeed([KlineFile("x.csv", PERP, "BTCUSDT", MIN, bars([ASK] * 6, t0), [])])
    models = {"m0": {PERP: ScriptedModel("m0", PERP, ["0.1"], warmup=2)},
              "m1": {PERP: ScriptedModel("m1", PERP, ["0.05"], warmup=2)}}
    return Engine(config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock,
                  store=Store(tmp_path / "desk.sqlite"), audit=AuditLog(tmp_path / "audit" / "orders.jsonl"),
                  feed=feed, instruments=dict(venue.instruments), models=models,
                  specs=[ModelSpec("m0", D("1")), ModelSpec("m1", D("1"))], risk=RiskEngine(RiskConfig()),
                  executor=InlineExecutor(), venue_factory=venue.bind)


async def test_engine_positions_reconcile_and_funding_is_booked_once_across_a_restart(tmp_path):
    if not USDM_INFO.is_file():
        pytest.skip("../shared/data is absent")
    t0 = T0
    clock = TestClock(t0)
    srv = await FakeBinanceUsdm(clock, USDM_INFO, api_key=KEY, secret=SECRET, wallet=D("10000"),
                                book=[("BTCUSDT", BID, "5", ASK, "5")]).start()
    venue = usdm_venue(srv, clock, leverage=2, margin_mode="cross")
    await venue.start()
    state_at_start = venue.state_dict()
    eng = make_engine(tmp_path, clock, venue, t0)
    attach_funding(eng)
    try:
        assert eng.margin is True  # the engine allows shorts on a margin account
        assert await eng.recover() == []
        await eng.run(max_bars=4)
        # capital 10000: m0 wants 0.1 x 10000 / 36567.10 = 0.02734... -> 0.027 BTC, m1 0.05 -> 0.01367 -> 0.013;
        # netted into one buy of 0.040 at 36567.10
        assert eng.portfolio.quantity(PERP) == D("0.040")
        held = {m: p.quantity for (m, _), p in eng.portfolio.positions.items() if p.quantity}
        assert held == {"m0": D("0.027"), "m1": D("0.013")}
        assert venue.balance("BTC") == D("0.040") == srv.position("BTCUSDT").qty
        # a funding settlement at rate 0.01 % on a mark of 36567.10: -0.040 x 36567.10 x 0.0001 = -0.146268400
        srv.marks["BTCUSDT"] = D(ASK)
        clock.advance(MIN)
        paid = srv.pay_funding("BTCUSDT", "0.0001", clock.timestamp_ns() // 1_000_000)
        assert paid == D("-0.14626840")
        assert await venue.poll_funding(force=True) == 1
        # pro rata: m0 27/40 of it = -0.09873117 (0.1462684 x 0.675, exact); m1 the rest -0.04753723
        funding = {m: p.funding for (m, _), p in eng.portfolio.positions.items() if p.quantity}
        assert funding == {"m0": D("-0.09873117"), "m1": D("-0.04753723")}
        assert await venue.poll_funding(force=True) == 0  # read again: nothing new
        eng.checkpoint()
        realized = eng.portfolio.realized()
        cp = eng.store.load_checkpoint()
    finally:
        eng.store.close()
        await venue.close()
    # the restart: a new venue whose funding cursor is the one saved before the payment (a checkpoint older
    # than the booking would hold this one), a new engine restored from the checkpoint
    venue2 = usdm_venue(srv, clock, leverage=2, margin_mode="cross")
    await venue2.start()
    venue2.load_state_dict(state_at_start)
    eng2 = make_engine(tmp_path, clock, venue2, t0)
    attach_funding(eng2)
    try:
        eng2.restore(cp[1])
        assert await eng2.recover() == []  # positions agree: the venue's 0.040 BTC is the book's
        assert eng2.session.last_report is None or eng2.session.last_report.differences == []
        assert await venue2.poll_funding(force=True) == 1  # the same tranId reported again ...
        assert eng2.portfolio.realized() == realized  # ... booked once
        eng2.flush()
        n = eng2.store.conn.execute("SELECT COUNT(*) FROM journal WHERE type='FundingPaid'").fetchone()[0]
        assert n == 2  # journaled twice, booked once: the replay books it once too
        rebuilt = compute(eng2.store.conn, equity_start=D("10000"))
        assert {m: p.realized for (m, _), p in rebuilt.portfolio.positions.items() if p.fills} == \
            {m: p.realized for (m, _), p in eng2.portfolio.positions.items() if p.fills} == \
            {"m0": D("-0.09873117"), "m1": D("-0.04753723")}  # the opening fills realize 0 (fees are in the cost)
        # a position the book does not have (someone traded 0.001 more on the account) is a difference
        from core.recovery import reconcile

        srv.position("BTCUSDT").qty += D("0.001")
        await venue2.poll()
        report = await reconcile(eng2, 5 * S, mode="periodic")
        assert report.differences == ["BTCUSDT-PERP.BINANCE: the venue holds 0.041 BTC, the store 0.040"]
    finally:
        eng2.store.close()
        await venue2.close()
        await srv.close()


def test_the_usdm_demo_example_builds_the_futures_venue():
    from pathlib import Path

    from desk.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "binance-usdm-demo.yaml")
    (vc,) = cfg.venues
    b = BinanceConfig.from_mapping(vc)
    assert (b.market, b.testnet, b.symbols, b.leverage, b.margin_mode, b.margin_account) == (
        "usdm", True, ("BTCUSDT",), 2, "isolated", True)
    v = BinanceVenue(b, TestClock(0), env=ENV)  # what desk.live's _make_venue does
    assert isinstance(v, BinanceUsdmVenue) and v.reconcile_cash is False
    with pytest.raises(BinanceStartupError, match="leverage: only for market usdm"):
        BinanceConfig(market="spot", leverage=2)
    with pytest.raises(BinanceStartupError, match="margin_mode"):
        BinanceConfig(market="usdm", margin_mode="portfolio")


async def test_the_feed_checkpoints_the_funding_cursor_and_reads_fapi_klines(fsrv, clock):
    from tests.venues.conftest import KLINES
    from venues.binance.feed import BinanceLiveFeed

    fsrv.klines = json.loads(KLINES.read_text())  # recorded 12-field klines, served on /fapi/v1/klines
    v = usdm_venue(fsrv, clock)
    await v.start()
    try:
        # T0 is one minute after the last recorded kline closed: of the last 3 closed bars the file holds 2
        feed = BinanceLiveFeed(v, warmup_bars=3)
        assert await feed.prepare() == 2 and "/fapi/v1/klines" in fsrv.paths()
        (b1, b2) = feed.warmup()
        assert b2.instrument_id == PERP and b2.close == D(fsrv.klines[-1][4])
        state = feed.state_dict()
        assert state["venue"] == {"funding_since_ms": T0 // 1_000_000, "funding_ids": []}
        # a restart restores the cursor through the feed's state (the engine checkpoint holds it)
        v.funding_since_ms = 0
        feed.load_state_dict(json.loads(json.dumps(state)))
        assert v.funding_since_ms == T0 // 1_000_000
    finally:
        await v.close()
