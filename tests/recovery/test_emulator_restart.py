"""Contingent orders survive a restart (``OrderEmulator.state_dict`` in the
engine's checkpoint, ``load_state_dict`` in ``Engine.restore``, before the
start-up reconciliation).

Hand-worked setting (``make``): ETHUSDT on the paper venue (tick 0.01, step
0.0001, fees 0.1 % in the asset received), capital 10000 USDT, one scripted
model ``m0`` whose target is always 0 (it never trades), orders placed by
hand for the pseudo-model ``manual``. Bars one minute apart: open = close,
high = close + 1, low as given. Bars 1-2 warm up; the desk acts after bar 3
(close 2000). A restart is a new Engine on the same ``desk.sqlite`` and
``venue.sqlite``, restored from the last checkpoint, then reconciled
(``recover``), as ``desk run`` does; nothing is fed to it but bars.

Paper rules used (venues/paper.py): a BUY LIMIT fills when the low is
strictly below its price, at min(price, open); a SELL LIMIT when the high
is strictly above, at max(price, open); a BUY stop fires when the path
reaches its trigger, at the open on a gap. The OCO pairs of (a) and (c)
are BUYs on purpose: the paper venue pools only OCO *sells* (its own
safety net cancels an exhausted sell list), so the cancel of a BUY sibling
can only come from the desk's emulator.
"""

import asyncio
import copy
import json
from decimal import Decimal

from core.audit import AuditLog
from core.clock import TestClock
from core.emulator import OrderEmulator, order_from_state, order_state
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import OrderAccepted, OrderCanceled, OrderFilled, OrderPendingCancel, OrderSubmitted
from core.faults import PaperFaults
from core.orders import Order
from core.rebuild import rebuild
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from tests.unit.test_engine import ETH, IID, MIN, bars
from venues.feeds import ReplayFeed
from venues.klines import KlineFile
from venues.paper import PaperConfig, PaperVenue

D = Decimal


class NoAmendPaper(PaperVenue):
    """The paper venue without native amends (as Binance spot or IBKR here):
    the emulator replaces by cancel-then-new."""

    supports_modify = False


def make(tmp_path, closes, lows, *, restore=False, amend=True):
    """An engine on the bars ``closes``/``lows``; ``restore``: continue from
    the store's checkpoint (a restart on the same state)."""
    clock = TestClock()
    store = Store(tmp_path / "desk.sqlite")
    feed = ReplayFeed([KlineFile("x.csv", IID, "ETHUSDT", MIN, bars(closes, lows), [])])
    models = {"m0": {IID: ScriptedModel("m0", IID, ["0"], warmup=2)}}
    venue_cls = PaperVenue if amend else NoAmendPaper
    eng = Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock, store=store,
        audit=AuditLog(tmp_path / "audit" / "orders.jsonl"), feed=feed, instruments={IID: ETH}, models=models,
        specs=[ModelSpec("m0", D("1"))], risk=RiskEngine(RiskConfig()), executor=InlineExecutor(),
        venue_factory=lambda cb: venue_cls(tmp_path / "venue.sqlite", "BINANCE", "USDT", {IID: ETH}, clock,
                                           PaperConfig(), cb),
    )
    if restore:
        cp = store.load_checkpoint()
        assert cp is not None
        eng.restore(cp[1])
    return eng


def die(eng):
    """The process ends: nothing more is committed than what is already."""
    for closer in (eng.audit.close, eng.venue.close, eng.store.close):
        closer()


def assert_store_rebuilds(tmp_path):
    """``desk check-store``: the tables equal what the journal gives (the
    emulator's restore-time and reconciliation events included)."""
    report = rebuild(tmp_path / "desk.sqlite", equity_start=D("10000"))
    assert report.ok, report.lines()


async def settle(eng, n=10):
    """Let the cancels and amends the emulator spawned run."""
    for _ in range(n):
        await asyncio.sleep(0)


def order(coid, side, otype, qty, price=None, trigger=None, ts=0):
    return Order(coid, "manual", IID, side, otype, D(qty), None if price is None else D(price), TimeInForce.GTC,
                 ts, 0, trigger_price=None if trigger is None else D(trigger))


def journal(eng, coid):
    eng.flush()
    rows = eng.store.conn.execute("SELECT payload FROM journal ORDER BY seq")
    return [p["type"] for p in (json.loads(r[0]) for r in rows) if p.get("client_order_id") == coid]


def venue_row(eng, coid):
    eng.venue.commit()
    q, f, s = eng.venue.db.conn.execute("SELECT quantity, filled, status FROM orders WHERE client_order_id=?",
                                        (coid,)).fetchone()
    return D(q), D(f), s


def fills(eng, coid):
    eng.flush()
    return eng.store.conn.execute("SELECT COUNT(*) FROM fills WHERE client_order_id=?", (coid,)).fetchone()[0]


# a BUY OCO: a dip buy LIMIT 1950 or a breakout BUY STOP 1950..2050, 0.1000 ETH
A, B = "NHD-OCO-A", "NHD-OCO-B"


async def place_buy_oco(eng):
    await eng.warm_up()
    await eng.run(max_bars=3)  # bars 1-3, close 2000
    now = eng.clock.timestamp_ns()
    a = order(A, OrderSide.BUY, OrderType.LIMIT, "0.1000", price="1950.00", ts=now)
    b = order(B, OrderSide.BUY, OrderType.STOP_MARKET, "0.1000", trigger="2050.00", ts=now)
    eng.emulator.submit_oco([a, b])
    await eng.send_pending()
    assert a.status == b.status == OrderStatus.ACCEPTED
    eng.checkpoint()


# bars 1-3 at 2000 (low 1999); bar 4 dips to 1940 (the LIMIT fills at 1950); bar 5 gaps to 2100 (a working
# BUY STOP 2050 would fire at the open 2100)
OCO_CLOSES = ["2000", "2000", "2000", "2000", "2100", "2100"]
OCO_LOWS = ["1999", "1999", "1999", "1940", "2099", "2099"]


def assert_oco_ended_once(eng):
    a, b = eng.orders[A], eng.orders[B]
    assert a.status == OrderStatus.FILLED and a.avg_px == D("1950.00") and fills(eng, A) == 1
    assert b.status == OrderStatus.CANCELED and b.filled_qty == 0 and b.reason == "OCO" and fills(eng, B) == 0
    assert journal(eng, B).count("OrderPendingCancel") == 1 and journal(eng, B).count("OrderCanceled") == 1
    assert venue_row(eng, B) == (D("0.1000"), D("0"), "CANCELED")
    # bought 0.1000 at 1950.00, fee 0.0001 ETH: holds 0.0999 ETH, paid 195.00 USDT; nothing bought twice
    assert eng.portfolio.position("manual", IID).quantity == D("0.0999")
    assert eng.venue.balance("ETH") == D("0.0999") and eng.venue.balance("USDT") == D("9805.00")
    assert not eng.working_orders() and eng.venue.working_orders() == []


def test_a_an_oco_pair_restored_cancels_the_other_leg_when_one_fills(tmp_path):
    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS)
    asyncio.run(place_buy_oco(eng))
    die(eng)

    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS, restore=True)
    g = eng.emulator.group_of(A)
    assert g is not None and g.oco and g.members == [A, B] and g.target == D("0.1000")
    assert eng.emulator.orders[A] is eng.orders[A] and eng.emulator.orders[B] is eng.orders[B]  # one object each

    async def go():
        assert await eng.recover() == []
        await eng.run(max_bars=1)  # bar 4: the LIMIT fills at 1950; the stop is canceled
        await settle(eng)
        await eng.run(max_bars=1)  # bar 5 gaps to 2100: a stop left working would have bought again

    asyncio.run(go())
    assert_oco_ended_once(eng)
    die(eng)
    assert_store_rebuilds(tmp_path)


def test_c_a_leg_filled_while_the_desk_was_down_cancels_its_sibling_at_start(tmp_path):
    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS)
    asyncio.run(place_buy_oco(eng))
    # the desk is down: the LIMIT fills at the venue at 1950.00; no report reaches anyone
    eng.venue.inject_fill(A, price=D("1950.00"), report=False)
    assert eng.orders[A].status == OrderStatus.ACCEPTED
    die(eng)

    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS, restore=True)

    async def go():
        lines = await eng.recover()  # finds the fill; the emulator cancels the stop
        await settle(eng)
        b = eng.orders[B]
        assert b.status == OrderStatus.CANCELED  # before the first bar after the restart
        await eng.run(max_bars=2)  # bars 4 and 5: nothing fills any more (the stop would fire at 2100)
        return lines

    lines = asyncio.run(go())
    assert any(A in ln for ln in lines) and not eng.unreconciled
    assert eng.trading_state.value == "ACTIVE"
    assert_oco_ended_once(eng)
    die(eng)
    assert_store_rebuilds(tmp_path)


def test_a_cancel_decided_but_not_journaled_at_the_checkpoint_is_sent_after_the_restart(tmp_path):
    """The LIMIT fills (reported) and the emulator decides to cancel the
    stop, but the checkpoint is written and the process dies before the
    cancel task ran: the stop is ACCEPTED in the checkpoint, its group
    closed. After the restart the emulator journals ``OrderPendingCancel``
    (reason ``OCO``) at restore and the reconciliation sends the cancel."""
    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS)

    async def first():
        await place_buy_oco(eng)
        eng.venue.inject_fill(A, price=D("1950.00"))  # reported: the emulator spawns the stop's cancel
        assert eng.orders[A].status == OrderStatus.FILLED and eng.orders[B].status == OrderStatus.ACCEPTED
        eng.checkpoint()  # ...and the process dies before the cancel task runs
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # never started: dead with the process

    asyncio.run(first())
    assert "OrderPendingCancel" not in journal(eng, B)
    die(eng)

    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS, restore=True)
    assert eng.orders[B].status == OrderStatus.PENDING_CANCEL and journal(eng, B)[-1] == "OrderPendingCancel"

    async def go():
        await eng.recover()  # the venue still has it open: the cancel is queued again
        await eng.run(max_bars=2)  # bars 4 and 5: the cancel goes out; the stop never fires at 2100

    asyncio.run(go())
    b = eng.orders[B]
    assert b.status == OrderStatus.CANCELED and b.filled_qty == 0 and fills(eng, B) == 0
    assert venue_row(eng, B) == (D("0.1000"), D("0"), "CANCELED")
    assert eng.portfolio.position("manual", IID).quantity == D("0.0999") == eng.venue.balance("ETH")
    assert eng.venue.working_orders() == [] and not eng.unreconciled
    die(eng)
    assert_store_rebuilds(tmp_path)


# the bracket: entry BUY LIMIT 1.0000 at 1950.00, take-profit SELL LIMIT 2100.00, stop-loss SELL STOP 1900.00
BR_CLOSES = ["2000", "2000", "2000", "2000", "2000", "2100", "2100"]
BR_LOWS = ["1999", "1999", "1999", "1940", "1999", "2099", "2099"]


def test_b_a_bracket_restored_before_its_entry_filled_releases_the_pair_sized_to_the_net_fill(tmp_path):
    eng = make(tmp_path, BR_CLOSES, BR_LOWS)

    async def first():
        await eng.warm_up()
        await eng.run(max_bars=3)  # bars 1-3
        entry = order("NHD-BR-1", OrderSide.BUY, OrderType.LIMIT, "1.0000", price="1950.00",
                      ts=eng.clock.timestamp_ns())
        br = eng.emulator.submit_bracket(entry, take_profit_price=D("2100.00"), stop_trigger_price=D("1900.00"))
        await eng.send_pending()
        assert entry.status == OrderStatus.ACCEPTED
        eng.checkpoint()
        return br

    br = asyncio.run(first())
    die(eng)

    eng = make(tmp_path, BR_CLOSES, BR_LOWS, restore=True)
    em = eng.emulator
    tp, sl = em.orders[br.take_profit_id], em.orders[br.stop_loss_id]
    # held children: rebuilt from the emulator's state, never sent, unknown to the OMS
    assert tp.status == sl.status == OrderStatus.INITIALIZED and br.take_profit_id not in eng.orders
    assert tp.order_type == OrderType.LIMIT and tp.price == D("2100.00") and tp.reduce_only
    assert sl.order_type == OrderType.STOP_MARKET and sl.trigger_price == D("1900.00") and sl.reduce_only
    assert em.group_of(br.take_profit_id).held

    async def go():
        assert await eng.recover() == []
        await eng.run(max_bars=1)  # bar 4: the entry fills 1.0000 at 1950.00, fee 0.0010 ETH
        await eng.send_pending()
        # released as an OCO sized to the net fill: 1.0000 - 0.0010 = 0.9990
        assert eng.orders[br.take_profit_id] is tp and tp.status == sl.status == OrderStatus.ACCEPTED
        assert tp.quantity == sl.quantity == D("0.9990")
        # the take-profit fills 0.4000 at 2100.00 (reported): the stop is cut to the rest, 0.5990
        eng.venue.inject_fill(br.take_profit_id, D("0.4000"), D("2100.00"))
        await settle(eng)
        assert sl.quantity == D("0.5990") and venue_row(eng, br.stop_loss_id)[0] == D("0.5990")
        await eng.run(max_bars=2)  # bar 5 quiet; bar 6 high 2101 > 2100: the take-profit fills the rest
        await settle(eng)

    asyncio.run(go())
    assert tp.status == OrderStatus.FILLED and tp.filled_qty == D("0.9990")
    assert sl.status == OrderStatus.CANCELED and sl.filled_qty == 0
    pos = eng.portfolio.position("manual", IID)
    # sold 0.4000 and 0.5990 at 2100.00: 840.00 - 0.84 + 1257.90 - 1.2579 = 2095.8021; paid 1950.00
    assert pos.quantity == 0 and pos.realized == D("145.8021")
    assert eng.venue.balance("ETH") == 0 and eng.venue.balance("USDT") == D("10145.8021")
    assert not eng.working_orders()
    die(eng)
    assert_store_rebuilds(tmp_path)


# the replace: a BUY LIMIT 0.1000 at 1950.00 moved to 1960.00 by cancel-then-new
RP_CLOSES = ["2000", "2000", "2000", "2000", "2000", "2000"]
RP_LOWS = ["1999", "1999", "1999", "1999", "1955", "1999"]
X = "NHD-RP-1"


def test_d_a_replace_in_flight_at_the_checkpoint_gives_one_replacement_after_restart(tmp_path):
    eng = make(tmp_path, RP_CLOSES, RP_LOWS, amend=False)

    async def first():
        await eng.warm_up()
        await eng.run(max_bars=3)  # bars 1-3
        x = order(X, OrderSide.BUY, OrderType.LIMIT, "0.1000", price="1950.00", ts=eng.clock.timestamp_ns())
        eng.submit_prepared(x)
        await eng.send_pending()
        assert x.status == OrderStatus.ACCEPTED
        eng.venue.set_faults(PaperFaults())
        eng.venue.faults.mute(X, frozenset({"OrderCanceled"}))  # the cancel's acknowledgement will be lost
        eng.emulator.replace(x, price=D("1960.00"))
        await settle(eng)  # the cancel is sent and applied at the venue; its ack never arrives
        assert x.status == OrderStatus.PENDING_CANCEL and venue_row(eng, X)[2] == "CANCELED"
        eng.checkpoint()

    asyncio.run(first())
    assert X in eng.store.load_checkpoint()[1]["emulator"]["replacing"]
    die(eng)

    eng = make(tmp_path, RP_CLOSES, RP_LOWS, restore=True, amend=False)
    x = eng.orders[X]
    assert x.status == OrderStatus.PENDING_CANCEL

    async def go():
        await eng.recover()  # the venue says CANCELED (executed 0): the ack, once
        await eng.send_pending()
        # the same ack again (a late copy) changes nothing
        eng.emulator.on_event(OrderCanceled(ts_event=1, ts_init=1, client_order_id=X, instrument_id=IID,
                                            model_id="manual", reason="REPLACE", executed_qty=D("0")))
        await eng.send_pending()
        await eng.run(max_bars=2)  # bar 4 quiet; bar 5 low 1955 < 1960: the replacement fills at 1960.00

    asyncio.run(go())
    r1 = eng.orders[X + ".R1"]
    assert x.status == OrderStatus.CANCELED
    assert r1.quantity == D("0.1000") and r1.price == D("1960.00") and r1.status == OrderStatus.FILLED
    assert r1.avg_px == D("1960.00")
    assert eng.venue.order_ids() == [X, X + ".R1"]  # exactly one replacement ever reached the venue
    assert [c for c in eng.orders if c.startswith(X)] == [X, X + ".R1"]
    assert journal(eng, X + ".R1").count("OrderInitialized") == 1
    assert eng.portfolio.position("manual", IID).quantity == D("0.0999")  # 0.1000 less the 0.0001 fee
    die(eng)
    assert_store_rebuilds(tmp_path)


def test_d_the_replace_sequence_survives_a_restart_so_an_id_is_never_reused(tmp_path):
    """A replace done before the checkpoint (``X.R1`` working), a restart,
    then a second replace: the new order is ``X.R2``; ``X.R1`` again would
    be a duplicate ClientOrderId."""
    eng = make(tmp_path, RP_CLOSES, ["1999"] * 6, amend=False)

    async def first():
        await eng.warm_up()
        await eng.run(max_bars=3)
        x = order(X, OrderSide.BUY, OrderType.LIMIT, "0.1000", price="1950.00", ts=eng.clock.timestamp_ns())
        eng.submit_prepared(x)
        await eng.send_pending()
        eng.emulator.replace(x, price=D("1960.00"))
        await settle(eng)
        await eng.send_pending()
        assert eng.orders[X + ".R1"].status == OrderStatus.ACCEPTED
        eng.checkpoint()

    asyncio.run(first())
    die(eng)
    eng = make(tmp_path, RP_CLOSES, ["1999"] * 6, restore=True, amend=False)

    async def go():
        await eng.recover()
        eng.emulator.replace(eng.orders[X + ".R1"], price=D("1970.00"))
        await settle(eng)
        await eng.send_pending()

    asyncio.run(go())
    r2 = eng.orders[X + ".R2"]
    assert r2.status == OrderStatus.ACCEPTED and r2.price == D("1970.00") and r2.quantity == D("0.1000")
    assert eng.venue.order_ids() == [X, X + ".R1", X + ".R2"]
    die(eng)
    assert_store_rebuilds(tmp_path)


# ------------------------------------------------------------------ the state itself
class Harness:
    """The emulator's owner without an engine: submits are accepted at once,
    cancels recorded and journaled (``PENDING_CANCEL``; acknowledged by the
    test) unless ``journal_cancels`` is off, reports applied."""

    def __init__(self):
        self.journal_cancels = True
        self.submitted: list[tuple[str, Decimal, Decimal | None, Decimal | None]] = []
        self.canceled: list[tuple[str, str]] = []
        self.reported: list[str] = []
        self.em: OrderEmulator | None = None

    def submit(self, o):
        o.apply(OrderSubmitted(ts_event=1, ts_init=1, client_order_id=o.client_order_id, instrument_id=IID,
                               model_id=o.model_id))
        o.apply(OrderAccepted(ts_event=1, ts_init=1, client_order_id=o.client_order_id, instrument_id=IID,
                              model_id=o.model_id, venue_order_id="V-" + o.client_order_id))
        self.submitted.append((o.client_order_id, o.quantity, o.price, o.trigger_price))

    def cancel(self, o, reason):
        self.canceled.append((o.client_order_id, reason))
        if self.journal_cancels:
            o.apply(OrderPendingCancel(ts_event=1, ts_init=1, client_order_id=o.client_order_id, instrument_id=IID,
                                       model_id=o.model_id, reason=reason))

    def modify(self, o, quantity, price, trigger_price):
        raise AssertionError("no native amend here")

    def report(self, event):
        self.reported.append(f"{event.type} {event.client_order_id} {getattr(event, 'reason', '')}")
        self.em.orders[event.client_order_id].apply(event)


def new_em():
    h = Harness()
    h.em = OrderEmulator(h, {IID: ETH}, TestClock(), native_modify=False)
    return h, h.em


def fill(em, coid, qty, px, trade, fee=D("0")):
    o = em.orders[coid]
    ev = OrderFilled(ts_event=2, ts_init=2, client_order_id=coid, instrument_id=IID, model_id="manual",
                     venue_order_id="V-" + coid, trade_id=trade, side=o.side, last_qty=D(qty), last_px=D(px),
                     commission=fee, commission_currency="ETH" if o.side == OrderSide.BUY else "USDT",
                     liquidity_side=LiquiditySide.MAKER)
    o.apply(ev)
    em.on_event(ev)


def ack_cancel(em, coid, executed="0"):
    o = em.orders[coid]
    ev = OrderCanceled(ts_event=3, ts_init=3, client_order_id=coid, instrument_id=IID, model_id="manual",
                       reason="REPLACE", executed_qty=D(executed))
    o.apply(ev)
    em.on_event(ev)


def busy_state():
    """An OCO pair working; a bracket whose entry filled 0.5000 of 1.0000
    (fee 0.0005 ETH: pair released at 0.4995), whose take-profit filled
    0.2000 and was then replaced (``E.TP`` closed, ``E.TP.R1`` for 0.2995),
    whose stop was cut to 0.2995 by a replace (``E.SL.R1``) and is being
    replaced again (in flight); a second bracket still held."""
    h, em = new_em()
    em.submit_oco([order("O-A", OrderSide.BUY, OrderType.LIMIT, "0.1000", price="1950.00"),
                   order("O-B", OrderSide.BUY, OrderType.STOP_MARKET, "0.1000", trigger="2050.00")])
    em.submit_bracket(order("E", OrderSide.BUY, OrderType.LIMIT, "1.0000", price="1950.00"),
                      take_profit_price=D("2100.00"), stop_trigger_price=D("1900.00"))
    em.submit_bracket(order("H", OrderSide.BUY, OrderType.LIMIT, "0.3000", price="1940.00"),
                      take_profit_price=D("2000.00"), stop_trigger_price=D("1800.00"))
    fill(em, "E", "0.5000", "1950.00", "t1", fee=D("0.0005"))
    assert em.orders["E.TP"].quantity == em.orders["E.SL"].quantity == D("0.4995")
    fill(em, "E.TP", "0.2000", "2100.00", "t2")  # the stop is cut: an emulated replace E.SL -> E.SL.R1
    assert h.canceled[-1] == ("E.SL", "REPLACE")
    ack_cancel(em, "E.SL")
    assert em.orders["E.SL.R1"].quantity == D("0.2995")
    em.replace(em.orders["E.TP"], price=D("2110.00"))  # E.TP -> E.TP.R1 for 0.4995 - 0.2000
    ack_cancel(em, "E.TP", executed="0.2000")
    assert em.orders["E.TP.R1"].quantity == D("0.2995") and em.orders["E.TP.R1"].price == D("2110.00")
    em.replace(em.orders["E.SL.R1"], trigger_price=D("1890.00"))  # in flight: cancel asked, no ack yet
    assert h.canceled[-1] == ("E.SL.R1", "REPLACE")
    return h, em


def restored(em):
    """What a restart gives: the state through JSON, loaded into a new
    emulator bound to copies of the working orders (the engine's restored
    objects; closed orders are not restored)."""
    state = json.loads(json.dumps(em.state_dict()))
    engine_orders = {c: copy.deepcopy(o) for c, o in em.orders.items() if o.is_working}
    h2, em2 = new_em()
    em2.load_state_dict(state, engine_orders)
    return h2, em2, engine_orders, state


def test_e_a_state_round_trip_equals_the_original_on_every_field():
    h, em = busy_state()
    h2, em2, engine_orders, state = restored(em)
    assert em2.groups == em.groups  # members, history, targets, parent, held, closed: all equal
    assert em2.groups["E.TP"].target == D("0.4995") and em2.groups["E.TP"].members == ["E.TP.R1", "E.SL.R1"]
    assert em2.groups["E.TP"].history == ["E.TP", "E.SL", "E.SL.R1", "E.TP.R1"]
    for name in ("replacements", "discarded", "_group_of", "_child_groups", "_root", "_net", "_trades",
                 "_expected_cancels", "_replacing", "_replace_seq"):
        assert getattr(em2, name) == getattr(em, name), name
    assert em2._net == {"E": D("0.4995"), "H": D("0")}
    assert em2._replace_seq == {"E.SL": 1, "E.TP": 1}
    # managed orders: the working ones are the engine's objects, the held ones rebuilt equal, the closed
    # ones (E.TP filled 0.2000 then canceled, E.SL canceled with nothing) kept as what they executed
    assert set(em2.orders) == {c for c, o in em.orders.items() if not o.is_closed}
    for c, o in em2.orders.items():
        assert o == em.orders[c]
        if c in engine_orders:
            assert o is engine_orders[c]
    assert {c for c, o in em2.orders.items() if o.status == OrderStatus.INITIALIZED} == {"H.TP", "H.SL"}
    assert em2._closed_filled == {"E.TP": D("0.2000"), "E.SL": D("0")}
    assert em2.state_dict() == state  # a fixed point: saving again writes the same
    assert not h2.reported  # the in-flight cancel was already journaled (PENDING_CANCEL): not asked again


def test_e_the_restored_emulator_acts_as_the_original_would():
    """The same events after the restore lead to the same requests. The
    take-profit's last fill closes the pair only because the group's sum
    counts the closed ``E.TP``'s 0.2000 (0.2000 + 0.2995 = 0.4995, the
    target); without it the stop would be cut to 0.2000 and left working
    on a flat position."""
    h, em = busy_state()
    h2, em2, _, _ = restored(em)
    for e, hh in ((em, h), (em2, h2)):
        hh.submitted.clear()
        ack_cancel(e, "E.SL.R1")
    assert h.submitted == h2.submitted == [("E.SL.R2", D("0.2995"), None, D("1890.00"))]
    # then the take-profit fills its 0.2995: the stop is canceled, the entry's rest too (BRACKET_EXITED)
    for e, hh in ((em, h), (em2, h2)):
        hh.canceled.clear()
        fill(e, "E.TP.R1", "0.2995", "2110.00", "t3")
    assert h.canceled == h2.canceled == [("E.SL.R2", "OCO"), ("E", "BRACKET_EXITED")]
    # the held bracket's entry fills 0.3000 (fee 0.0003): its pair is released at 0.2997 in both
    for e, hh in ((em, h), (em2, h2)):
        hh.submitted.clear()
        fill(e, "H", "0.3000", "1940.00", "t4", fee=D("0.0003"))
    assert h.submitted == h2.submitted == [("H.TP", D("0.2997"), D("2000.00"), None),
                                           ("H.SL", D("0.2997"), None, D("1800.00"))]


def test_e_closed_groups_are_dropped_and_an_unjournaled_cancel_is_asked_again():
    """The OCO's LIMIT fills in full: the group closes and the stop's cancel
    is asked (``OCO``), but the checkpoint is taken before the engine
    journaled ``OrderPendingCancel``. The state keeps no closed group, keeps
    the stop and its expected cancel, and loading it reports
    ``OrderPendingCancel`` (reason ``OCO``) so the reconciliation sends it."""
    h, em = new_em()
    h.journal_cancels = False  # the process dies before the engine journals the cancel
    em.submit_oco([order("O-A", OrderSide.BUY, OrderType.LIMIT, "0.1000", price="1950.00"),
                   order("O-B", OrderSide.BUY, OrderType.STOP_MARKET, "0.1000", trigger="2050.00")])
    fill(em, "O-A", "0.1000", "1950.00", "t1")
    assert h.canceled == [("O-B", "OCO")] and em.groups["O-A"].closed
    h2, em2, _, state = restored(em)
    assert state["groups"] == [] and state["group_of"] == {} and em2.groups == {}
    assert state["live"] == {"O-B": "0"} and em2._expected_cancels == {"O-B": "OCO"}
    assert h2.reported == ["OrderPendingCancel O-B OCO"]
    assert em2.orders["O-B"].status == OrderStatus.PENDING_CANCEL
    ack = OrderCanceled(ts_event=3, ts_init=3, client_order_id="O-B", instrument_id=IID, model_id="manual",
                        reason="OCO", executed_qty=D("0"))
    em2.orders["O-B"].apply(ack)
    em2.on_event(ack)  # the expected cancel: nothing more is done
    assert not em2._expected_cancels and h2.canceled == [] and h2.submitted == []


def test_e_an_old_checkpoint_without_emulator_state_loads_an_empty_emulator():
    h, em = busy_state()
    em.load_state_dict(None, {})
    assert em.groups == {} and em.orders == {} and em.state_dict()["groups"] == []
    em.load_state_dict({}, {})
    assert em.replacements == {} and em._replace_seq == {}


def test_an_order_state_round_trips_every_field():
    o = Order("NHD-1-0-0.TP", "m0", IID, OrderSide.SELL, OrderType.STOP_LIMIT, D("0.9990"), D("1895.00"),
              TimeInForce.GTD, 7, 3, reduce_only=True, trigger_price=D("1900.00"), expire_time_ns=99,
              linked_order_ids=("NHD-1-0-0.SL",), parent_order_id="NHD-1-0-0", allocation={"m0": D("0.5")},
              trade_ids={"t1"}, venue_executed_qty=D("0.1"), status_before_update=OrderStatus.ACCEPTED)
    assert order_from_state(json.loads(json.dumps(order_state(o)))) == o


def test_a_buy_oco_fills_one_leg_at_max_speed_without_any_restart(tmp_path):
    # a break test: the limit 1950 filled, its sibling's cancel was spawned but the engine (yielding only
    # every 64 steps at max speed) matched the next bar first: the stop 2050 filled too, 0.1998 ETH bought.
    # Now the step waits for what the last step started: one leg, 0.0999 ETH (0.1000 less the 0.1 % fee)
    eng = make(tmp_path, OCO_CLOSES, OCO_LOWS)

    async def go():
        await eng.warm_up()
        await eng.run(max_bars=3)
        now = eng.clock.timestamp_ns()
        eng.emulator.submit_oco([order(A, OrderSide.BUY, OrderType.LIMIT, "0.1000", price="1950.00", ts=now),
                                 order(B, OrderSide.BUY, OrderType.STOP_MARKET, "0.1000", trigger="2050.00", ts=now)])
        await eng.send_pending()
        await eng.run(max_bars=3)
    asyncio.run(go())
    statuses = sorted([eng.orders[A].status.value, eng.orders[B].status.value])
    assert statuses == ["CANCELED", "FILLED"]
    assert eng.venue.balance("ETH") == D("0.0999")
