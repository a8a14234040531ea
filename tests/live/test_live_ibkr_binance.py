"""One live desk with an IBKR venue (AAPL, ib_async against the stand-in
gateway) and a Binance spot venue (BTCUSDT, ccxt against the fake Binance)
(issue 6, "Isolation"; ``examples/multi-venue.yaml``), run in-process
through ``desk.cli.main``.

Both fakes and the desk run on one clock (tests/live/one_clock.py): the
scenario, a task in the desk's loop, moves it one minute per bar, pushes
Binance's kline and lets the IBKR feed ask IB for the bar that closed. The
gateway's daily restart is the socket closing under ib_async
(``disconnectedEvent``) while it refuses new connections, as in
tests/venues_ibkr/test_ibkr_faults.py.

Capital and equity are one number for USD (IBKR) and USDT (Binance): the
desk treats the two alike (``core.venue_hub.VenueHub``: the quote of the
first venue names it; ``core.portfolio`` adds the two)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

import desk.live
from core.manual import submit_manual_order
from desk.cli import main
from tests.app.engines import resting_risk_file
from tests.live.one_clock import (
    SharedClock,
    binance_on,
    binance_venue,
    bar_close_ns,
    ibkr_venue,
    one_clock_desk,
)
from tests.live.test_live_binance import _root_log_handlers, creds  # noqa: F401 - fixtures
from tests.live.test_live_ibkr import T0, WARMUP

D = Decimal
NANOS = 1_000_000_000
AAPL, BTC = "AAPL.IBKR", "BTCUSDT.BINANCE"


@pytest.fixture
def desk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, creds):  # noqa: F811 - the imported fixture
    clock, made = one_clock_desk(monkeypatch)
    fake = binance_on(clock, tmp_path)
    yield clock, made, fake
    fake.close()


def write_config(tmp_path: Path, fake: Any) -> Path:
    cfg = {"capital": "10000", "tz": "UTC", "risk": str(resting_risk_file(tmp_path / "r")),
           "venues": [ibkr_venue(), binance_venue(fake)]}
    p = tmp_path / "ibkr-binance.yaml"
    p.write_text(json.dumps(cfg))
    return p


Scenario = Callable[[Any], Awaitable[None]]


def run_with(monkeypatch: pytest.MonkeyPatch, scenario: Scenario) -> None:
    """The next ``desk run`` runs ``scenario(built)`` as a task beside the
    engine (a failure stops the run and is raised by the test); the desk's
    own sleeps (order-update polls, backoffs) last a tenth."""
    orig = desk.live.run_live
    failed: list[BaseException] = []

    async def fast_sleep(s: float) -> None:
        await asyncio.sleep(s / 10)

    async def run_live(built: Any, **kw: Any) -> int:
        async def guarded() -> None:
            try:
                await scenario(built)
            except BaseException as exc:
                failed.append(exc)
                built.engine.stop()
                built.feed.stop()
                raise
        task = asyncio.create_task(guarded())
        try:
            return await orig(built, sleep=fast_sleep, **kw)
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if failed:
                raise failed[0]

    monkeypatch.setattr(desk.live, "run_live", run_live)


async def until(cond: Callable[[], Any], what: Any, timeout: float = 8.0) -> Any:
    """Wait in the desk's loop until ``cond()`` is truthy; fail naming ``what``."""
    t0 = time.monotonic()
    while not (got := cond()):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for: {what() if callable(what) else what}")
        await asyncio.sleep(0.01)
    return got


def journal(state: Path, type_: str) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "desk.sqlite") as c:
        return [json.loads(p) for (p,) in c.execute("SELECT payload FROM journal WHERE type=? ORDER BY seq", (type_,))]


def test_ibkr_and_binance_on_one_desk_isolated_through_the_gateway_restart(tmp_path, desk_env, monkeypatch, capsys):
    clock, made, fake = desk_env
    rec: dict[str, Any] = {}

    async def minute(built: Any, k: int, ib: bool = True) -> None:
        """Bar k: the clock moves to 6 s after its close (IB's feed asks 5 s
        after), Binance's kline is pushed; wait until the engine took the
        step of each venue that is up."""
        eng = built.engine
        before = eng.stats.bars
        await clock.step_to(bar_close_ns(k) + 6 * NANOS)
        await fake.push(k)
        await until(lambda: eng.stats.bars >= before + (2 if ib else 1), f"bar {k} ({eng.session.status()})")

    async def scenario(built: Any) -> None:
        eng = built.engine
        await until(lambda: eng.stats.warmup_bars > 0, "the warm-up")
        for k in range(6):  # both venues trade
            await minute(built, k)
        rec["status_up"] = eng.session.status()
        (gw,) = made
        rec["placed_before"] = len(gw.placed)
        # a manual AAPL buy far below the market: it rests at IB
        o = submit_manual_order(eng, instrument_id=AAPL, side="BUY", quantity=D("5"), order_type="LIMIT",
                                price=D("150.00"), who="test", reason="rests at IB")
        await eng.send_pending()
        await until(lambda: o.status.value == "ACCEPTED", lambda: o.status)
        rec["resting"] = o.client_order_id
        rec["resting_ib_id"] = gw.placed[-1][0]
        # 23:45 New York: the gateway's daily restart
        rec["bars_at_drop"] = eng.stats.bars
        gw.restart()
        rec["adapter_state"] = built.venue.members["IBKR"].state
        # Binance trades on: its bar processed, a manual BTC buy filled there
        await minute(built, 6, ib=False)
        rec["down"] = eng.session.status()
        rec["suspect"] = eng.session.suspect_venues()
        b = submit_manual_order(eng, instrument_id=BTC, side="BUY", quantity=D("0.001"), order_type="LIMIT",
                                price=D("20000.01"), who="test", reason="Binance trades on")
        a = submit_manual_order(eng, instrument_id=AAPL, side="BUY", quantity=D("1"), order_type="LIMIT",
                                price=D("150.00"), who="test", reason="IB is away")
        await eng.send_pending()
        await until(lambda: b.status.value == "FILLED", lambda: b.status)
        rec["btc_manual"] = b.client_order_id
        rec["aapl_while_down"] = (a.status.value, a.reason)
        rec["placed_while_down"] = len(gw.placed) - rec["placed_before"] - 1
        # meanwhile at IB the resting buy fills at its price (the desk cannot see it)
        gw.fill_resting(rec["resting_ib_id"], live=False)
        rec["working_while_down"] = eng.orders[rec["resting"]].status.value
        # the gateway is back: bar 7's step pumps the adapter, which reconnects (its back-off is due), IB's
        # synchronisation is read, the session reconciles, and the IBKR feed catches bars 6 and 7 up (before
        # the watchdog's 180 s without an IBKR bar: the last came at 15:06:06)
        gw.up = True
        await minute(built, 7, ib=False)

        def back() -> bool:  # time passes, a second per look: the IBKR feed looks again every second
            if not clock.inflight:
                clock.move_to(min(clock.now + NANOS, bar_close_ns(7) + 50 * NANOS))
            return not eng.session.suspect_venues() and eng.stats.bars >= rec["bars_at_drop"] + 4

        await until(back, lambda: f"IBKR back ({eng.session.status()}, {eng.stats.bars} bars)")
        o = eng.orders[rec["resting"]]
        rec["after"] = (eng.session.status(), o.status.value, o.filled_qty)
        await minute(built, 8)
        eng.stop()
        built.feed.stop()

    run_with(monkeypatch, scenario)
    cfg = write_config(tmp_path, fake)
    state = tmp_path / "state"
    code = main(["run", "--config", str(cfg), "--headless", "--bars", "100", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    s = json.loads(out.strip().splitlines()[-1])
    (gw,) = made
    srv = fake.srv
    # both venues up and trading before the restart; start-up lines name both, capital one number
    assert rec["status_up"] == "IBKR CONNECTED; BINANCE CONNECTED"
    assert "desk: IBKR (ibkr, paper account), BINANCE (binance, testnet); config" in err
    assert "desk: capital 10000 USD/USDT" in err
    # each instrument's orders went to its own venue, under its ClientOrderId: IB's orderRef, Binance's
    # newClientOrderId; the AAPL buy refused while IB was away never left the desk
    inits = {j["client_order_id"]: j["instrument_id"] for j in journal(state, "OrderInitialized")}
    submitted = [j["client_order_id"] for j in journal(state, "OrderSubmitted")]
    refused = [c for c in submitted if inits[c] == AAPL and c not in {o.orderRef for _, _, o in gw.placed}]
    # (since when the adapter saw the gateway drop, 15:06:06, a bar before the session's first step after it)
    assert rec["aapl_while_down"] == ("REJECTED", "VENUE_DISCONNECTED since "
                                      f"{bar_close_ns(6) + 6 * NANOS - 60 * NANOS} ns: not sent")
    assert len(refused) == 1 and rec["placed_while_down"] == 0
    assert sorted(o.orderRef for _, _, o in gw.placed) == sorted(c for c in submitted if inits[c] == AAPL
                                                                 and c not in refused)
    assert sorted(o.client_order_id for o in srv.orders.values()) == sorted(c for c in submitted if inits[c] == BTC)
    assert {inits[c] for c in submitted} == {AAPL, BTC} and rec["placed_before"] >= 1 and len(srv.orders) >= 2
    assert srv.signed_ok == srv.signed_total > 0  # every signed request within recvWindow of the one clock
    # the restart: IBKR DISCONNECTED (since the drop), its working order named, BINANCE CONNECTED
    assert rec["adapter_state"] == "DISCONNECTED"
    assert rec["down"] == "IBKR DISCONNECTED since 2024-01-02 15:06:06 UTC; BINANCE CONNECTED"
    assert rec["suspect"] == {"IBKR"}
    alerts = journal(state, "AlertRaised")
    down = [a["message"] for a in alerts if a["code"] == "VENUE_DISCONNECTED"]
    assert down == [f"IBKR: the venue session is down; may still be working at the venue: {rec['resting']}; "
                    "its orders are reconciled when it is back"]
    # Binance traded on: its manual buy filled at the ask, 0.001 BTC at 20000.01, fee 0.1 % in BTC
    (t,) = [t for t in srv.trades if srv.orders[t.order_id].client_order_id == rec["btc_manual"]]
    assert (t.price, t.qty, t.commission, t.commission_asset) == (D("20000.01"), D("0.001"), D("0.000001"), "BTC")
    # back: the fill IB made while away (5 AAPL at 150.00, 1.00 USD) booked once, reconciled, CONNECTED
    assert rec["working_while_down"] == "ACCEPTED"
    assert rec["after"] == ("IBKR CONNECTED; BINANCE CONNECTED", "FILLED", D("5"))
    assert "IBKR_RECONNECTED" in {a["code"] for a in alerts}
    fills = [f for f in journal(state, "OrderFilled") if f["client_order_id"] == rec["resting"]]
    assert [(D(f["last_qty"]), D(f["last_px"]), D(f["commission"])) for f in fills] == [(D("5"), D("150.00"), D("1"))]
    assert s["venue_state"] == "IBKR CONNECTED; BINANCE CONNECTED"
    assert "unreconciled" not in s and s["trading_state"] == "ACTIVE"
    # the books are each venue's holding: AAPL what IB holds, BTC the fake's BTC above the 1 BTC it started with
    pos = {k: D(v["quantity"]) for k, v in s["positions"].items()}
    assert pos[AAPL] == D(str(gw.held)) > 5
    btc_held = srv.free["BTC"] + srv.locked.get("BTC", D(0))
    assert pos[BTC] == btc_held - 1 > 0
    # the marks are the last bars' closes: AAPL bar 8 of IB's table, BTC live row 8
    marks = {k: D(v["last_price"]) for k, v in s["positions"].items()}
    assert marks == {AAPL: D(str(gw.prices[WARMUP + 10 + 8])), BTC: D(fake.live_rows[8][4])}
    # the summary adds up, by hand from the venues' own records: one equity for USD and USDT =
    # 10,000 + what each venue's trades paid and received (net of commissions in the quote) + holdings at the marks
    usd = sum(((D(str(ex.price)) * D(str(ex.shares))) * (1 if ex.side == "SLD" else -1) - D(str(rep.commission))
               for _, ex, rep in gw.executions), D(0))
    usdt = sum((t.price * t.qty * (-1 if t.is_buyer else 1) - (t.commission if t.commission_asset == "USDT" else 0)
                for t in srv.trades), D(0))
    equity = D("10000") + usd + usdt + pos[AAPL] * marks[AAPL] + pos[BTC] * marks[BTC]
    assert D(s["equity_start"]) == D("10000") and D(s["equity_end"]) == equity
    assert D(s["equity_end"]) == D(s["equity_start"]) + D(s["realized_pnl"]) + D(s["unrealized_pnl"])
    # fees: 1.00 USD per IB execution, Binance's BTC fees valued at their fill price
    # (each fee valued at its fill and quantized there to 8 decimals, half even: DESIGN.md section 4)
    fees = len(gw.executions) * D("1.00") + sum(((t.commission * (t.price if t.commission_asset == "BTC" else 1))
                                                 .quantize(D("1e-8"), ROUND_HALF_EVEN) for t in srv.trades), D(0))
    assert D(s["fees"]) == fees
    for key in ("realized", "unrealized", "fees"):
        assert sum(D(m[key]) for m in s["per_model"].values()) == D(s[key if key == "fees" else key + "_pnl"])
    assert D(s["per_model"]["manual"]["fees"]) == D("1.00") + D("0.000001") * D("20000.01")
    # cash at the venues: IB's USD cash balance and Binance's USDT, one number as the equity
    usdt_held = srv.free["USDT"] + srv.locked.get("USDT", D(0))
    assert s["quote_currency"] == "USD" and D(s["cash_end"]) == D("100000.00") + usdt_held
