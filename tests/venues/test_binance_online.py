"""The same scenarios against the real Binance spot testnet
(https://testnet.binance.vision). Deselected unless asked for with
``-m online``, skipped unless BINANCE_TESTNET_KEY and BINANCE_TESTNET_SECRET are
set. They place tiny orders on the testnet account."""

from __future__ import annotations

import time
from decimal import ROUND_DOWN, ROUND_UP, Decimal

import pytest

from core.clock import LiveClock
from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.orders import Order
from tests.venues.conftest import Recorder
from venues.binance.adapter import BinanceConfig, BinanceVenue

pytestmark = pytest.mark.online
BTC = InstrumentId("BTCUSDT", "BINANCE")


class BehindClock:
    """The system clock, ``lag_ms`` behind."""

    def __init__(self, lag_ms: int) -> None:
        self.lag_ns = lag_ms * 1_000_000

    def timestamp_ns(self) -> int:
        return time.time_ns() - self.lag_ns


def _order(coid: str, side: OrderSide, qty: Decimal, price: Decimal | None) -> Order:
    t = OrderType.LIMIT if price is not None else OrderType.MARKET
    return Order(client_order_id=coid, model_id="online", instrument_id=BTC, side=side, order_type=t, quantity=qty,
                 price=price, time_in_force=TimeInForce.GTC if price is not None else TimeInForce.IOC,
                 ts_init=time.time_ns(), step=0)


async def test_testnet_limit_accept_lookup_cancel(online_env):
    rec = Recorder()
    v = BinanceVenue(BinanceConfig(symbols=("BTCUSDT",)), LiveClock(), rec, env=online_env)
    lines = await v.start()
    try:
        assert any("key permissions not checked" in ln for ln in lines)
        inst = v.instruments[BTC]
        bid, _, ask, _ = await v.fetch_best_bid_ask(BTC)
        price = (bid * Decimal("0.8")).quantize(inst.tick_size, ROUND_DOWN)
        qty = (inst.min_notional * 2 / price).quantize(inst.step_size, ROUND_UP)
        coid = f"NHD-online-{time.time_ns() % 10**9}"
        await v.submit_order(_order(coid, OrderSide.BUY, qty, price))
        assert rec.of("OrderAccepted")[0].client_order_id == coid
        rep = await v.lookup_async(coid)
        assert rep is not None and rep.status == "OPEN"
        await v.cancel_order(_order(coid, OrderSide.BUY, qty, price), "TEST")
        assert rec.of("OrderCanceled")[0].executed_qty == 0
        assert (await v.lookup_async(coid)).status == "CANCELED"
    finally:
        await v.close()


async def test_testnet_clock_8243_ms_behind_is_measured(online_env):
    rec = Recorder()
    v = BinanceVenue(BinanceConfig(symbols=("BTCUSDT",), recv_window_ms=5000), BehindClock(8243), rec, env=online_env)
    try:
        await v.start()  # the account read is refused with -1021, the offset measured, the read retried
        assert 8000 <= v.clock_offset_ms <= 9500
        assert any(e.type == "AlertRaised" and e.code == "CLOCK_OFFSET" for e in rec.events)
    finally:
        await v.close()


async def test_testnet_market_buy_reports_the_fee_as_charged(online_env):
    rec = Recorder()
    v = BinanceVenue(BinanceConfig(symbols=("BTCUSDT",)), LiveClock(), rec, env=online_env)
    await v.start()
    try:
        inst = v.instruments[BTC]
        _, _, ask, _ = await v.fetch_best_bid_ask(BTC)
        qty = (inst.min_notional * 2 / ask).quantize(inst.step_size, ROUND_UP)
        await v.submit_order(_order(f"NHD-online-m-{time.time_ns() % 10**9}", OrderSide.BUY, qty, None))
        fills = rec.of("OrderFilled")
        assert fills and sum(f.last_qty for f in fills) == qty
        assert all(f.commission_currency in ("BTC", "BNB") for f in fills)
    finally:
        await v.close()
