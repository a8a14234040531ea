"""The rails added for issue 4: collar, stale data, position and exposure
limits, daily loss, duplicates, and the most-specific-scope rule. Values by
hand; the desk context is a small fake so each number is visible."""

from decimal import Decimal

import pytest

from core.enums import DenialReason, OrderSide, TradingState
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.risk import Denied, Limits, RiskConfig, RiskEngine

D = Decimal
S = 1_000_000_000
IID = InstrumentId("ETHUSDT", "BINANCE")
ETH = Instrument(IID, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))


class Ctx:
    def __init__(self, price="2000", ts=0, exposure=None, day_pnl="0"):
        self.price, self.ts = D(price), ts
        self.exp = exposure or {}
        self.pnl = D(day_pnl)

    def reference_price(self, iid):
        return None if self.ts is None else (self.price, self.ts)

    def exposure(self, *, model_id=None, instrument_id=None, venue=None):
        return D(self.exp.get((model_id, None if instrument_id is None else str(instrument_id), venue), "0"))

    def day_pnl(self):
        return self.pnl


def check(cfg, qty="1", px="2000", side=OrderSide.BUY, ctx=None, now=0, model="m1", limit=True):
    RiskEngine(cfg).check(instrument=ETH, side=side, quantity=D(qty), price=D(px), trading_state=TradingState.ACTIVE,
                          model_paused=False, now_ns=now, reduce_only=side == OrderSide.SELL, model_id=model,
                          limit_price=D(px) if limit else None, ctx=ctx or Ctx())


def code_of(cfg, **kw):
    with pytest.raises(Denied) as e:
        check(cfg, **kw)
    return e.value.code, e.value.message


def test_price_collar_pct_from_last_price():
    cfg = RiskConfig(defaults=Limits(collar_pct=D("0.05")))
    check(cfg, px="2100")  # 5.00 % away: allowed (not more than 5 %)
    code, msg = code_of(cfg, px="2100.02")  # 100.02 / 2000 = 5.001 %
    assert code == DenialReason.PRICE_COLLAR and "5.00 %" in msg and "2000" in msg and "collar 5 %" in msg
    code, _ = code_of(cfg, px="1899.98", side=OrderSide.SELL)  # collars apply to exits too
    assert code == DenialReason.PRICE_COLLAR


def test_stale_data_denies_entries_and_the_collar_fails_closed():
    cfg = RiskConfig(defaults=Limits(collar_pct=D("0.05"), stale_after_ns=120 * S))
    check(cfg, ctx=Ctx(ts=0), now=120 * S)  # exactly 120 s old: not yet stale
    code, msg = code_of(cfg, ctx=Ctx(ts=0), now=121 * S)
    assert code == DenialReason.STALE_DATA and "121 s" in msg
    code, msg = code_of(cfg, ctx=Ctx(ts=0), now=121 * S, side=OrderSide.SELL)
    assert code == DenialReason.PRICE_COLLAR and "fails closed" in msg


def test_max_position_counts_working_orders():
    cfg = RiskConfig(defaults=Limits(max_position_notional=D("5000")))
    ctx = Ctx(exposure={("m1", str(IID), None): "3000"})  # 3000 held or working already
    check(cfg, qty="1", ctx=ctx)  # 3000 + 2000 = 5000: at the limit
    code, msg = code_of(cfg, qty="1.0001", ctx=ctx)  # 3000 + 2000.20 > 5000
    assert code == DenialReason.MAX_POSITION and "5000" in msg
    check(cfg, qty="3", side=OrderSide.SELL, ctx=ctx)  # exits are never limited by exposure


def test_gross_exposure_per_venue_and_model():
    cfg = RiskConfig(per_venue={"BINANCE": Limits(max_gross_exposure=D("10000"))},
                     per_model={"m2": Limits(max_gross_exposure=D("1000"))})
    ctx = Ctx(exposure={(None, None, "BINANCE"): "9000", ("m2", None, None): "0"})
    code, msg = code_of(cfg, qty="0.6", ctx=ctx)  # 9000 + 1200 > 10000
    assert code == DenialReason.MAX_EXPOSURE and "venue BINANCE" in msg
    code, msg = code_of(cfg, qty="0.5001", ctx=Ctx(), model="m2")  # 1000.20 > 1000
    assert code == DenialReason.MAX_EXPOSURE and "model m2" in msg


def test_daily_loss_limit():
    cfg = RiskConfig(defaults=Limits(daily_loss_limit=D("500")))
    check(cfg, ctx=Ctx(day_pnl="-499.99"))
    code, msg = code_of(cfg, ctx=Ctx(day_pnl="-500"))
    assert code == DenialReason.DAILY_LOSS and "-500" in msg
    check(cfg, side=OrderSide.SELL, ctx=Ctx(day_pnl="-800"))  # reducing is still allowed


def test_duplicate_orders_within_the_window():
    rails = RiskEngine(RiskConfig(defaults=Limits(duplicate_window_ns=10 * S)))
    kw = dict(instrument=ETH, side=OrderSide.BUY, quantity=D("1"), price=D("2000"), trading_state=TradingState.ACTIVE,
              model_paused=False, model_id="m1", limit_price=D("2000"), ctx=Ctx())
    rails.check(now_ns=0, **kw)
    with pytest.raises(Denied) as e:
        rails.check(now_ns=10 * S, **kw)
    assert e.value.code == DenialReason.DUPLICATE_ORDER
    rails.check(now_ns=10 * S, **{**kw, "quantity": D("1.0001")})  # another quantity is not a duplicate
    rails.check(now_ns=10 * S + 1, **kw)  # the first one left the window


def test_most_specific_scope_wins():
    cfg = RiskConfig(max_order_notional=D("100000"),
                     defaults=Limits(max_order_notional=D("50000")),
                     per_venue={"BINANCE": Limits(max_order_notional=D("20000"))},
                     per_instrument={"ETHUSDT.BINANCE": Limits(max_order_notional=D("10000"))},
                     per_model={"small": Limits(max_order_notional=D("1000"))})
    assert cfg.limit("max_order_notional", model_id="small", instrument_id=IID) == D("1000")
    assert cfg.limit("max_order_notional", model_id="other", instrument_id=IID) == D("10000")
    assert cfg.limit("max_order_notional", instrument_id=InstrumentId("BTCUSDT", "BINANCE")) == D("20000")
    assert cfg.limit("max_order_notional", instrument_id=InstrumentId("BTCUSDT", "SIM")) == D("50000")
    assert RiskConfig(max_order_notional=D("7")).limit("max_order_notional") == D("7")


def test_off_tick_price_and_off_step_quantity_are_invalid():
    code, msg = code_of(RiskConfig(), px="2000.005")
    assert code == DenialReason.INVALID_ORDER and "tick 0.01" in msg
    code, msg = code_of(RiskConfig(), qty="1.00005")
    assert code == DenialReason.INVALID_ORDER and "step 0.0001" in msg


def test_submits_cancels_and_modifies_are_throttled_separately():
    rails = RiskEngine(RiskConfig(max_submits=1, max_cancels=2, max_modifies=1, window_ns=60 * S))
    assert rails.allow_modify("BINANCE", 0) and not rails.allow_modify("BINANCE", 0)
    assert rails.allow_cancel("BINANCE", 0) and rails.allow_cancel("BINANCE", 0)
    assert not rails.allow_cancel("BINANCE", 0)
    assert rails.allow_cancel("BINANCE", 0, exempt=True)  # kill-switch cancels always pass
    assert rails.allow_modify("SIM", 0)  # per venue
