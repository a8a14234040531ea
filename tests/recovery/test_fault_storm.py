"""A replay under a storm of venue faults (issue 5): seeded random submit
timeouts (accepted at once, accepted up to 15 s later, or not at all; the
acknowledgement or every report withheld), cancel timeouts (applied or
not), disconnects, HTTP-429 throttles, and silent venue-side cancels and
fills, between and within the steps of a scripted model trading every few
bars. After the feed ends and every window has passed, the two books must
agree exactly and nothing may have been sent twice:

* no difference was ever found that reconciliation could not explain (the
  desk never halted), and a final reconciliation finds none;
* at most two submit requests per ClientOrderId (the one resend allowed
  once the first request can no longer be accepted), one venue order per id;
* the engine's fills are the venue's fills (same TradeIds, quantities,
  prices), each applied once; positions and cash equal the venue's balances;
* no order is left in flight with an unknown outcome, and every order's
  status agrees with the venue's.
"""

import asyncio
import random
from decimal import Decimal

import pytest

from core.data import Bar
from core.enums import OrderStatus, TradingState
from core.faults import PaperFaults
from core.recovery import reconcile
from tests.unit.test_engine import IID, MIN
from tests.unit.test_faults import make

D = Decimal
S = 1_000_000_000
N_BARS = 240


def walk(seed: int) -> list[Bar]:
    rng = random.Random(seed)
    px = D("2000")
    out = []
    for k in range(N_BARS):
        o = px
        px = max(D("1500"), px + D(rng.randint(-30, 30)))
        hi = max(o, px) + D(rng.randint(0, 10))
        lo = min(o, px) - D(rng.randint(0, 10))
        out.append(Bar(IID, o, hi, lo, px, D("100"), k * MIN, (k + 1) * MIN, k + 2))
    return out


def plan_faults(rng: random.Random, eng) -> None:
    """Maybe plan one fault before the next step."""
    f = eng.venue.faults
    r = rng.random()
    if r < 0.15:
        accepted = rng.random() < 0.7
        f.timeout_submit(accepted=accepted, accept_after_ns=rng.choice([0, 0, 3 * S, 11 * S, 15 * S]),
                         withhold=rng.choice(["ack", "all"]))
    elif r < 0.22:
        f.timeout_cancel(applied=rng.random() < 0.5)
    elif r < 0.26:
        f.disconnect(rng.choice([20, 90, 200]) * S)
    elif r < 0.30:
        f.throttle(rng.choice([5, 30, 100]) * S)
    elif r < 0.34 and eng.venue.working_orders():
        coid = rng.choice(eng.venue.working_orders())
        try:
            eng.venue.inject_cancel(coid, report=rng.random() < 0.5)
        except Exception:  # noqa: BLE001 - a cancel on a vanished order is fine
            pass
    elif r < 0.38 and eng.venue.working_orders():
        coid = rng.choice(eng.venue.working_orders())
        vo = eng.venue._working[coid]
        qty = max(D("0.0001"), (vo.leaves / 2).quantize(D("0.0001")))
        if qty <= vo.leaves and vo.price is not None:
            eng.venue.inject_fill(coid, qty, vo.price, report=rng.random() < 0.5)


def venue_books(eng):
    v = eng.venue
    rows = v.db.conn.execute("SELECT trade_id, client_order_id, qty, px FROM fills ORDER BY trade_id").fetchall()
    fills = sorted((t, c, D(q), D(p)) for t, c, q, p in rows)
    orders = dict(v.db.conn.execute("SELECT client_order_id, status FROM orders").fetchall())
    return fills, orders


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_fault_storm_leaves_the_books_equal_and_nothing_sent_twice(tmp_path, seed):
    rng = random.Random(seed)
    eng = make(tmp_path, targets=("1", "1", "1", "0", "0", "0"), n=N_BARS)
    eng.feed.bars = walk(seed)
    eng.feed.cursor = 0
    f = eng.venue.faults
    halted_by = []
    eng.bus.subscribe("TradingStateChanged", lambda ev: halted_by.append(ev.reason))

    async def storm():
        await eng.warm_up()
        while True:
            plan_faults(rng, eng)
            if rng.random() < 0.3:  # a few seconds within the minute: a lookup between bars
                eng.clock.advance(rng.choice([2, 6, 12, 16]) * S)
                await eng.session.tick()
            before = eng.stats.bars
            await eng.run(max_bars=1)
            if eng.stats.bars == before:
                break
        # the feed ended: let every window pass and every queue drain
        f.down_until_ns = f.throttled_until_ns = None
        for _ in range(6):
            eng.clock.advance(61 * S)
            await eng.session.tick()
        report = await reconcile(eng, 5 * S, mode="periodic")
        eng.checkpoint()  # what the run loop does after a step's tick
        return report

    final = asyncio.run(storm())
    assert halted_by == [] and eng.trading_state == TradingState.ACTIVE, halted_by
    assert not eng.unreconciled and not final.differences, final.differences
    assert not eng.session.unknown and not eng.session.cancels
    # nothing sent twice, blindly or otherwise
    submits = {c: n for (op, c), n in f.requests.items() if op == "submit"}
    assert submits and max(submits.values()) <= 2
    fills, vorders = venue_books(eng)
    assert len(vorders) == len(set(vorders))
    # every fill once, the same on both sides
    mine = sorted((r[0], r[1], D(r[2]), D(r[3])) for r in eng.store.conn.execute(
        "SELECT trade_id, client_order_id, last_qty, last_px FROM fills WHERE trade_id NOT LIKE 'X-%'"))
    assert mine == fills and len(fills) >= 10
    assert sum(len(o.trade_ids) for o in eng.orders.values()) == len(fills)
    assert eng.portfolio.quantity(IID) == eng.venue.balance("ETH")
    pf = eng.portfolio
    assert pf.equity_start + pf.realized() - sum((p.cost for p in pf.positions.values()), D(0)) \
        == eng.venue.balance("USDT")
    # statuses agree; nothing left in flight
    for coid, o in eng.orders.items():
        assert o.status != OrderStatus.SUBMITTED, coid
        if coid in vorders:
            want = {"OPEN": o.is_working, "FILLED": o.status == OrderStatus.FILLED,
                    "CANCELED": o.status == OrderStatus.CANCELED, "EXPIRED": o.status == OrderStatus.EXPIRED}
            assert want[vorders[coid]], (coid, vorders[coid], o.status)
        else:
            assert o.status in (OrderStatus.REJECTED, OrderStatus.DENIED, OrderStatus.CANCELED), (coid, o.status)
    # the storm did happen
    assert {"SUBMIT_UNKNOWN", "VENUE_DISCONNECTED", "VENUE_RECONNECTED"} <= set(eng.alerts)


class Killed(Exception):
    """The process dies here (raised from a crash point in-process)."""


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_a_fault_storm_with_crashes_and_restarts_still_leaves_the_books_equal(tmp_path, seed):
    """The same storm, and now and then the engine dies at a named point
    (after an order is written, after a send, before a fill is committed)
    or between steps, and restarts on its store against the same venue
    (whose backend, with its delayed requests, outlives the engine)."""
    rng = random.Random(seed)
    f = PaperFaults()
    bars = walk(seed)
    restarts = [0]

    def start(restore):
        eng = make(tmp_path, targets=("1", "1", "1", "0", "0", "0"), n=N_BARS, faults=f, restore=restore)
        eng.feed.bars = bars
        if not restore:
            eng.feed.cursor = 0
        return eng

    def arm(eng):
        point = rng.choice(["after_order_written", "after_send", "before_fill_commit", None])

        def crash_point(name):
            if name == point:
                raise Killed(name)
        eng.crash_point = crash_point

    async def storm():
        eng = start(False)
        await eng.warm_up()
        while True:
            if rng.random() < 0.08:
                arm(eng)
            plan_faults(rng, eng)
            before = eng.stats.bars
            try:
                await eng.run(max_bars=1)
            except Killed:
                pass
            else:
                if eng.stats.bars == before:
                    break
                if rng.random() > 0.05:
                    continue
            # die: nothing buffered reaches the store; the venue keeps what it committed
            eng.venue.close()
            eng.store.close()
            restarts[0] += 1
            eng = start(True)
            await eng.recover()
            assert eng.trading_state == TradingState.ACTIVE, eng.unreconciled
        eng.crash_point = lambda name: None  # the storm is over
        f.down_until_ns = f.throttled_until_ns = None
        for _ in range(6):
            eng.clock.advance(61 * S)
            await eng.session.tick()
        report = await reconcile(eng, 5 * S, mode="periodic")
        eng.checkpoint()
        return eng, report

    eng, final = asyncio.run(storm())
    assert restarts[0] >= 3
    assert eng.trading_state == TradingState.ACTIVE and not eng.unreconciled, eng.unreconciled
    assert not final.differences, final.differences
    submits = {c: n for (op, c), n in f.requests.items() if op == "submit"}
    assert max(submits.values()) <= 2
    fills, vorders = venue_books(eng)
    mine = sorted((r[0], r[1], D(r[2]), D(r[3])) for r in eng.store.conn.execute(
        "SELECT trade_id, client_order_id, last_qty, last_px FROM fills WHERE trade_id NOT LIKE 'X-%'"))
    assert mine == fills and len(fills) >= 10
    assert eng.portfolio.quantity(IID) == eng.venue.balance("ETH")
    stored = dict(eng.store.conn.execute("SELECT client_order_id, status FROM orders"))
    assert "SUBMITTED" not in stored.values()
    for coid, st in vorders.items():
        want = {"OPEN": ("ACCEPTED", "PARTIALLY_FILLED", "PENDING_CANCEL"), "FILLED": ("FILLED",),
                "CANCELED": ("CANCELED",), "EXPIRED": ("EXPIRED",)}[st]
        assert stored.get(coid) in want, (coid, st, stored.get(coid))
