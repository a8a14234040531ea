"""The tiered kill switch on the engine (issue 4): halt with an order in
flight and a strategy tick queued, flatten with its report and dust, the
repeated-execution throttle, the HALT file, and a halt that survives a
restart."""

import asyncio
import json
from decimal import Decimal

from core.enums import OrderSide, OrderStatus, OrderType, TradingState
from core.risk import Limits, RiskConfig, RiskEngine
from desk.cli import main
from tests.unit.test_engine import IID, build

D = Decimal


class GatedVenue:
    """Wraps the paper venue: submits wait for a gate (an order in flight)."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = asyncio.Event()
        self.sent = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def submit_order(self, order):
        self.sent.append(order.client_order_id)
        await self.gate.wait()
        await self.inner.submit_order(order)


def test_halt_with_an_order_in_flight_and_a_tick_queued(tmp_path):
    eng = build(tmp_path, ["2000"] * 6, ["0"])
    asyncio.run(eng.warm_up())

    async def scenario():
        await eng.run(max_bars=3)
        gated = GatedVenue(eng.venue)
        eng.venue = gated
        eng.submit("m0", IID, OrderSide.BUY, D("1"), D("1500.00"), D("2000"), OrderType.LIMIT)
        sending = asyncio.create_task(eng.send_pending())
        await asyncio.sleep(0)  # the submit is now in flight, waiting for the venue
        queued = eng.submit("m0", IID, OrderSide.BUY, D("1"), D("1400.00"), D("2000"), OrderType.LIMIT)
        n = await eng.governance.halt("test", "kill")
        assert eng.trading_state == TradingState.HALTED
        gated.gate.set()  # the venue acknowledges the in-flight order now
        await sending
        for _ in range(5):
            await asyncio.sleep(0)
        await eng.send_pending()
        return gated, queued, n

    gated, queued, n = asyncio.run(scenario())
    assert len(gated.sent) == 1  # nothing was sent after the halt
    first = eng.orders[gated.sent[0]]
    assert first.status == OrderStatus.CANCELED and first.reason == "HALT"
    assert queued.client_order_id not in gated.sent
    eng.flush()
    assert eng.store.meta_get("trading_state") == "HALTED"
    statuses = dict(eng.store.conn.execute("SELECT client_order_id, status FROM orders"))
    assert statuses[first.client_order_id] == "CANCELED"


def test_flatten_closes_positions_and_reports_dust(tmp_path):
    # target 1 from bar 3: buys 5.0000 ETH at 2000 (fills on bar 4), holds 4.995
    eng = build(tmp_path, ["2000"] * 3 + ["2000", "2010", "2010", "2010"], ["1"],
                lows=["1999"] * 3 + ["1990", "2009", "2009", "2009"])
    asyncio.run(eng.warm_up())

    async def scenario():
        await eng.run(max_bars=5)
        assert eng.portfolio.position("m0", IID).quantity == D("4.995")
        report = await eng.governance.flatten("ops", "test")
        await eng.run()  # the market order fills on the next bar's open
        return report

    report = asyncio.run(scenario())
    assert eng.trading_state == TradingState.HALTED
    assert len(report) == 1 and report[0]["status"] == "SUBMITTED" and D(report[0]["quantity"]) == D("4.995")
    pos = eng.portfolio.position("m0", IID)
    assert pos.quantity == 0  # 4.995 is a multiple of the step 0.0001: nothing left
    flat = eng.orders[report[0]["order"]]
    assert flat.order_type == OrderType.MARKET and flat.status == OrderStatus.FILLED
    # the market sell filled at the next open 2010 minus 1 bp: 2010 - 0.201 = 2009.799 -> down to 2009.79
    assert flat.avg_px == D("2009.79")
    gov = [r[0] for r in eng.store.conn.execute("SELECT action FROM governance_actions")]
    assert gov == ["HALTED", "FLATTEN"]


def test_repeated_execution_pauses_the_model(tmp_path):
    # flip-flopping targets fill every other bar; more than 2 fills in 10 minutes pauses the model
    eng = build(tmp_path, ["2000", "2000"] + ["2000", "2000"] * 6, ["1", "0"],
                lows=["1999", "1999"] + ["1990", "1999"] * 6)
    eng.risk = RiskEngine(RiskConfig(defaults=Limits(max_fills_per_window=2, fills_window_ns=600 * 10**9)))
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    assert "m0" in eng.paused
    reasons = [r[0] for r in eng.store.conn.execute("SELECT reason FROM governance_actions")]
    assert any("repeated execution" in r for r in reasons)


def test_halt_file_halts_and_the_halt_survives_a_restart(tmp_path, capsys):
    state = tmp_path / "s"
    state.mkdir()
    (state / "HALT").write_text("maintenance\n")
    code = main(["run", "--headless", "--bars", "200", "--state-dir", str(state)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["trading_state"] == "HALTED" and out["fills"] == 0
    (state / "HALT").unlink()
    code = main(["run", "--headless", "--bars", "400", "--state-dir", str(state)])  # the whole run: 200 more
    out = json.loads(capsys.readouterr().out)
    assert out["trading_state"] == "HALTED"  # only an explicit resume lifts it
    assert out["fills"] == 0 and out["bars"] == 400


def _bracket_engine(tmp_path):
    from core.enums import TimeInForce
    from core.orders import Order

    closes = ["2000", "2000", "2000", "2000", "2050", "2050"]
    lows = ["1999", "1999", "1999", "1990", "2040", "2040"]
    eng = build(tmp_path, closes, ["0"], lows=lows)
    asyncio.run(eng.warm_up())

    async def setup():
        await eng.run(max_bars=3)
        entry = Order("NHD-B-1", "m0", IID, OrderSide.BUY, OrderType.LIMIT, D("1.0000"), D("2000.00"),
                      TimeInForce.GTC, eng.clock.timestamp_ns(), eng.stats.bars)
        br = eng.emulator.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
        await eng.send_pending()
        await eng.run(max_bars=2)  # the entry fills; the legs are released
        await eng.send_pending()
        return br

    return eng, asyncio.run(setup())


def test_halt_keeps_protective_stops_unless_told(tmp_path):
    eng, br = _bracket_engine(tmp_path)
    tp, sl = eng.orders[br.take_profit_id], eng.orders[br.stop_loss_id]
    assert tp.is_working and sl.is_working and sl.order_type == OrderType.STOP_MARKET and sl.reduce_only
    asyncio.run(eng.governance.halt("test", "kill"))
    assert tp.status == OrderStatus.CANCELED  # a take-profit limit is not a protective stop
    assert sl.is_working  # the reduce-only stop stays
    asyncio.run(eng.governance.halt("test", "cancel all, stops too", cancel_stops=True))
    assert sl.status == OrderStatus.CANCELED


def test_halt_model_cancels_and_renets_without_it(tmp_path):
    # two models want to buy on bar 3 (a NET order); the low never reaches the limit, so it rests
    eng = build(tmp_path, ["2000"] * 6, ["1"], lows=["2000"] * 6, weights=("0.5", "0.5"))
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=3))
    net = [o for o in eng.working_orders()]
    assert len(net) == 1 and net[0].model_id == "NET" and set(net[0].allocation) == {"m0", "m1"}
    n = asyncio.run(eng.governance.halt_model("m1", "test", "bad model"))
    assert n == 1 and net[0].status == OrderStatus.CANCELED and "m1" in eng.paused
    asyncio.run(eng.run(max_bars=1))  # the next bar re-nets without m1: m0 alone, 5000 / 2000 = 2.5
    again = eng.working_orders()
    assert len(again) == 1 and again[0].model_id == "m0" and again[0].quantity == D("2.5")


def test_flatten_cancels_protective_stops_first(tmp_path):
    eng, br = _bracket_engine(tmp_path)
    sl = eng.orders[br.stop_loss_id]
    assert sl.is_working and eng.venue.free("ETH") == 0  # the stop holds the 0.9990 ETH

    async def go():
        report = await eng.governance.flatten("ops", "test")
        await eng.run()
        return report

    report = asyncio.run(go())
    assert sl.status == OrderStatus.CANCELED
    assert [r["status"] for r in report] == ["SUBMITTED"] and D(report[0]["quantity"]) == D("0.999")
    assert eng.orders[report[0]["order"]].status == OrderStatus.FILLED
    assert eng.portfolio.position("m0", IID).quantity == 0 and eng.venue.balance("ETH") == 0


def test_per_venue_halt(tmp_path):
    closes = [str(2000 + 10 * k) for k in range(10)]
    eng = build(tmp_path, closes, ["1"], lows=closes)
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=4))
    working = eng.working_orders()
    assert len(working) == 1
    n = asyncio.run(eng.governance.halt_venue("BINANCE", "ops", "exchange incident"))
    assert n == 1 and working[0].status == OrderStatus.CANCELED
    assert eng.trading_state == TradingState.ACTIVE  # the global state is untouched
    denied = eng.submit("m0", IID, OrderSide.BUY, D("0.01"), D("1000.00"), D("2000"), OrderType.LIMIT)
    assert denied.status == OrderStatus.DENIED and "venue BINANCE is HALTED" in denied.reason
    eng.flush()
    assert eng.store.meta_get("halted_venues") == "BINANCE"
    eng.governance.resume_venue("BINANCE", "ops", "back")
    ok = eng.submit("m0", IID, OrderSide.BUY, D("0.01"), D("1000.00"), D("2000"), OrderType.LIMIT)
    assert ok.status != OrderStatus.DENIED
    actions = [r[0] for r in eng.store.conn.execute("SELECT action FROM governance_actions")]
    assert actions == ["VENUE_HALTED", "VENUE_RESUMED"]
