"""``desk run --config <yaml> --headless`` on IBKR (issue 6), in-process
through ``desk.cli.main``, with ib_async running for real against the stand-in
gateway of tests/venues_ibkr/conftest.py (no socket; the wrapper callbacks
driven the way TWS sends them).

The gateway here also answers ``reqHistoricalData`` (1-minute bars from a
table, the bar still forming included, as IB does), fills every limit order
at its price (``orderStatus`` Submitted, ``execDetails``, ``orderStatus``
Filled, ``commissionReport``, then ``position`` with the new total) and
confirms cancels. Time is driven: the desk's clock (``desk.live.
LiveEngineClock``) is replaced by a clock that the feed's sleep moves
forward, so a bar a minute passes without waiting (tests never sleep)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ib_async import IB
from ib_async.objects import BarData

import desk.live
import venues.ibkr.adapter
import venues.ibkr.feed
from desk.cli import main
from tests.helpers.scripted import InlineExecutor
from tests.venues_ibkr.conftest import ACCOUNT, FakeGateway, commission, execution, stock_details

D = Decimal
NANOS = 1_000_000_000
MIN = 60 * NANOS
#: 2024-01-02 15:00 UTC = 10:00 in New York (a Tuesday): AAPL trades (stock_details' liquid hours)
T0 = int(datetime(2024, 1, 2, 15, 0, tzinfo=timezone.utc).timestamp()) * NANOS
WARMUP = 521  # the default models' first fit (desk.wiring._warmup_bars)


class DrivenClock:
    """A clock for the live engine that only the feed's sleep moves (the
    engine's ``set_time`` from bar times is ignored, as on the real clock)."""

    def __init__(self, start_ns: int) -> None:
        self.now = start_ns

    def timestamp_ns(self) -> int:
        return self.now

    def set_time(self, ts_ns: int) -> None:
        pass

    def advance(self, delta_ns: int) -> None:
        pass

    async def sleep(self, seconds: float) -> None:
        self.now += int(round(seconds * NANOS))
        await asyncio.sleep(0)


def closes(n: int) -> list[float]:
    """Calm rises and turbulent falls, 20 bars each, then a calm rise."""
    out, p = [], 187.0
    for k in range(n):
        if k < WARMUP + 10 and (k // 20) % 2 == 1:
            p *= 0.999 + 0.006 * math.sin(1.7 * k)
        else:
            p *= 1.001 + 0.0002 * math.sin(k)
        out.append(round(p, 2))
    return out


class LiveGateway(FakeGateway):
    """The stand-in gateway, plus historical bars and fills (module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        client = self.ib.client
        self.first_open = T0 - (WARMUP + 10) * MIN
        self.prices = closes(WARMUP + 10 + 60)
        self.history: list[tuple[str, str]] = []
        self.clock: DrivenClock | None = None
        self.held = 0.0
        self.next_exec = 1
        real_hist, real_place, real_cancel = client.reqHistoricalData, client.placeOrder, client.cancelOrder

        def hist(*args: Any) -> Any:
            self.history.append((args[3], args[5]))  # durationStr, whatToShow
            self._later(self._answer_history, args[0], args[3])
            return real_hist(*args)

        def place(*args: Any) -> Any:
            r = real_place(*args)
            self._later(self._fill, args[0], args[1], args[2])
            return r

        def cancel(*args: Any) -> Any:
            r = real_cancel(*args)
            self._later(self.status, args[0], "Cancelled", 0.0, 0.0, 9000 + args[0])
            return r

        client.reqHistoricalData, client.placeOrder, client.cancelOrder = hist, place, cancel

    def _answer_history(self, req_id: int, duration: str) -> None:
        assert self.clock is not None and duration.endswith(" S")
        now = self.clock.now
        start = now - int(duration[:-2]) * NANOS
        w = self.ib.wrapper
        for k, c in enumerate(self.prices):
            t = self.first_open + k * MIN
            if start <= t <= now:  # the bar still forming (t + 1 min > now) too, as IB sends it
                o = self.prices[k - 1] if k else c
                w.historicalData(req_id, BarData(date=str(t // NANOS), open=o, high=max(o, c), low=min(o, c),
                                                 close=c, volume=1000.0, average=c, barCount=10))
        w.historicalDataEnd(req_id, "", "")

    def _fill(self, order_id: int, contract: Any, order: Any) -> None:
        perm = 9000 + order_id
        qty, px = float(order.totalQuantity), float(order.lmtPrice)
        side = "BOT" if order.action == "BUY" else "SLD"
        exec_id = f"0000e0d5.{self.next_exec:08x}.01.01"
        self.next_exec += 1
        at = self.clock.now if self.clock is not None else T0
        self.status(order_id, "Submitted", 0.0, qty, perm)
        self.exec(contract, execution(exec_id, order_id, perm, side, qty, px, order.orderRef, qty, px, at_ns=at))
        self.status(order_id, "Filled", qty, 0.0, perm, avg_fill=px, last_fill=px)
        self.commission(commission(exec_id, 1.0))
        self.held += qty if side == "BOT" else -qty
        self.ib.wrapper.position(ACCOUNT, contract, self.held, px)


@pytest.fixture(autouse=True)
def _root_log_handlers():
    import logging

    saved = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = saved


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch):
    clock = DrivenClock(T0 + 30 * NANOS)
    made: list[LiveGateway] = []

    def make_ib() -> IB:
        ib = IB()
        gw = LiveGateway(ib)
        gw.add(stock_details())
        gw.cash = {"USD": "100000.00"}
        gw.clock = clock
        made.append(gw)
        return ib

    class Feed(venues.ibkr.feed.IbkrLiveFeed):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, sleep=clock.sleep, **kw)

    monkeypatch.setattr(venues.ibkr.adapter, "IB", make_ib)
    monkeypatch.setattr(venues.ibkr.feed, "IbkrLiveFeed", Feed)
    monkeypatch.setattr(desk.live, "LiveEngineClock", lambda: clock)
    monkeypatch.setattr(desk.live, "default_executor", InlineExecutor)
    return made, clock


def write_config(tmp_path: Path, **venue: Any) -> Path:
    v = {"kind": "ibkr", "name": "IBKR", "host": "127.0.0.1", "port": 4002, "client_id": 17, "account": ACCOUNT,
         "contracts": [{"symbol": "AAPL", "sec_type": "STK", "exchange": "SMART", "currency": "USD"}], **venue}
    p = tmp_path / "ibkr.yaml"
    p.write_text(json.dumps({"capital": "10000", "venues": [v]}))
    return p


def test_desk_run_config_trades_through_ib_async(tmp_path, gateway, capsys):
    made, clock = gateway
    cfg = write_config(tmp_path)
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "10", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["warmup_bars"] == WARMUP and summary["bars"] == 10
    (gw,) = made
    # warm-up: one request for 523 minutes (31,380 s) of TRADES; then one per bar, 5 s after its close,
    # from the open of the last bar seen: e.g. at T0 + 65 s after the bar opened at T0 - 1 min:
    # (65 + 60) s back to that open + 60 s = 185 s
    assert gw.history[0] == ("31380 S", "TRADES")
    assert gw.history[1:11] == [("185 S", "TRADES")] * 10
    # the models bought AAPL: every order carried its ClientOrderId in orderRef
    refs = [o.orderRef for _, _, o in gw.placed]
    assert refs and all(r.startswith("NHD-") for r in refs)
    book = D(summary["positions"]["AAPL.IBKR"]["quantity"])
    assert book == D(str(int(gw.held))) and book > 0
    # one commission of 1.00 USD per fill, in the books' fees
    assert D(summary["fees"]) == D(summary["fills"]) * D("1.00000000")
    assert "unreconciled" not in summary and summary["venue_state"] == "IBKR CONNECTED"
    assert "IBKR (ibkr, paper account)" in err and "sha256=" in err
    # 10 bars: the clock moved about 10 minutes (each bar asked for 5 s after its close)
    assert T0 + 10 * MIN <= clock.now <= T0 + 11 * MIN


def test_a_live_ib_port_without_live_flag_exit_2(tmp_path, gateway, capsys):
    made, _ = gateway
    cfg = write_config(tmp_path, port=4001)
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "5", "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "--live" in err and "4001" in err
    assert made == []  # nothing was connected


def test_an_unknown_contract_exit_2_naming_it(tmp_path, gateway, capsys):
    cfg = write_config(tmp_path, contracts=[{"symbol": "ZZZZ", "sec_type": "STK", "exchange": "SMART",
                                             "currency": "USD"}])
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "5", "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "ZZZZ STK SMART USD" in err and "unknown to IB" in err


# ---------------------------------------------------------------- a future's multiplier (CME ES: 50 USD per point)
def _es(**kw: Any):
    from core.identifiers import InstrumentId
    from core.instruments import Instrument

    return Instrument(InstrumentId("ES-202612", "IBKR"), "ES-202612", "USD", D("0.25"), D("1"), D("1"),
                      multiplier=D("50"), **kw)


def _fill(side: str, px: str, fee: str, trade: str):
    from core.events import OrderFilled

    es = _es()
    return OrderFilled(ts_event=T0, ts_init=T0, client_order_id="NHD-1-0-0", instrument_id=es.id, model_id="m",
                       venue_order_id="1", trade_id=trade, side=side, last_qty=D("1"), last_px=D(px),
                       commission=D(fee), commission_currency="USD", liquidity_side="TAKER")


def test_future_notional_rails_and_books_scale_by_the_multiplier():
    from core.enums import DenialReason, OrderSide, TradingState
    from core.portfolio import Portfolio
    from core.risk import Denied, RiskConfig, RiskEngine

    es = _es()
    # 2 contracts at 5000.25: 5000.25 x 2 x 50 = 500,025.00 USD; a stock (multiplier 1) stays price x quantity
    assert es.notional(D("5000.25"), D("2")) == D("500025.00")
    with pytest.raises(ValueError, match="ES-202612.IBKR multiplier: must be a positive Decimal"):
        type(es)(es.id, "ES", "USD", D("0.25"), D("1"), D("1"), multiplier=D("0"))
    risk = RiskEngine(RiskConfig(max_order_notional=D("400000")))
    with pytest.raises(Denied) as d:
        risk.check(instrument=es, side=OrderSide.BUY, quantity=D("2"), price=D("5000.25"),
                   trading_state=TradingState.ACTIVE, model_paused=False, now_ns=T0)
    assert d.value.code == DenialReason.MAX_NOTIONAL and d.value.message == "notional 500025.00000000 > max notional 400000"
    risk.check(instrument=es, side=OrderSide.BUY, quantity=D("1"), price=D("5000.25"),
               trading_state=TradingState.ACTIVE, model_paused=False, now_ns=T0)  # 250,012.50: passes
    pf = Portfolio(D("300000"), allow_short=True)
    pf.register_instrument(es)
    assert pf.apply_fill(_fill("BUY", "5000.00", "2.25", "t1")) == 0
    pf.mark(es.id, D("5002.00"))
    # cost 1 x 5000.00 x 50 + 2.25 = 250,002.25; at 5002.00: 250,100.00 - 250,002.25 = +97.75
    assert pf.unrealized() == D("97.75")
    # sold at 5001.25: 250,062.50 - 2.25 = 250,060.25 received; realized 250,060.25 - 250,002.25 = +58.00
    assert pf.apply_fill(_fill("SELL", "5001.25", "2.25", "t2")) == D("58.00")
    again = Portfolio.from_dict(pf.to_dict())
    assert again.multipliers == {es.id: D("50")} and again.realized() == D("58.00")


def test_the_live_desk_gives_an_ib_future_its_multiplier():
    from types import SimpleNamespace

    from core.instruments import Instrument

    es = _es()
    plain = Instrument(es.id, es.base, es.quote, es.tick_size, es.step_size, es.min_qty)
    venue = SimpleNamespace(instruments={es.id: plain}, contracts={es.id: SimpleNamespace(multiplier=D("50"))})
    assert desk.live._with_multipliers(venue)[es.id].multiplier == D("50")
