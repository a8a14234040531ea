"""Netting and the largest-remainder split, values by hand."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core.netting import largest_remainder, net, split_fill

D = Decimal
STEP = D("0.0001")


def test_largest_remainder_by_hand():
    # 0.0003 among weights 0.3 and 0.2: exact 0.00018 / 0.00012 -> floors 0.0001 / 0.0001,
    # one unit left goes to the larger remainder (0.8 > 0.2): 0.0002 / 0.0001
    assert largest_remainder(D("0.0003"), {"a": D("0.3"), "b": D("0.2")}, STEP) == {"a": D("0.0002"), "b": D("0.0001")}
    # three equal weights of 1.0000: 0.3334 / 0.3333 / 0.3333 (tie: the first key)
    assert largest_remainder(D("1"), {"a": D(1), "b": D(1), "c": D(1)}, STEP) == {
        "a": D("0.3334"), "b": D("0.3333"), "c": D("0.3333")}


def test_net_crosses_opposite_wants_and_sends_one_order():
    # m0 wants to buy 1.0, m1 to sell 0.4: 0.4 crossed internally, one BUY of 0.6 for m0
    r = net({"m0": D("1.0")}, {"m1": D("0.4")}, STEP)
    assert r.crossed == D("0.4") and r.cross_buys == {"m0": D("0.4")} and r.cross_sells == {"m1": D("0.4")}
    assert r.side == "BUY" and r.residual == {"m0": D("0.6")}
    # two buyers, no seller: one BUY of 0.5 shared 0.3 / 0.2
    r = net({"m0": D("0.3"), "m1": D("0.2")}, {}, STEP)
    assert r.crossed == 0 and r.side == "BUY" and r.order_qty == D("0.5") and r.residual == {"m0": D("0.3"), "m1": D("0.2")}
    # equal and opposite: all crossed, nothing sent
    r = net({"m0": D("0.5")}, {"m1": D("0.5")}, STEP)
    assert r.side is None and r.order_qty == 0 and r.crossed == D("0.5")


def test_split_fill_by_hand():
    # a partial fill of 0.25 with fee 0.00025 (in base) on a shared order 0.3 / 0.2:
    # qty 0.15 / 0.10; fee 0.00015 / 0.00010
    parts = split_fill(D("0.25"), D("0.00025"), {"m0": D("0.3"), "m1": D("0.2")}, STEP, D("0.00000001"))
    assert parts == {"m0": (D("0.15"), D("0.00015")), "m1": (D("0.10"), D("0.00010"))}


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=5), st.integers(0, 10**7))
def test_parts_always_sum_to_the_whole(weights, units):
    total = D(units) * STEP
    parts = largest_remainder(total, {f"m{i}": D(w) for i, w in enumerate(weights)}, STEP)
    assert sum(parts.values()) == total
    assert all(p >= 0 and (p / STEP) == (p / STEP).to_integral_value() for p in parts.values())


def test_engine_nets_two_models_and_crosses_internally(tmp_path):
    """Two models on ETHUSDT, weights 0.5 / 0.5 of 10000, close 2000 throughout.

    bar 3: m0 target 0.5 -> 1.25 ETH, m1 target 1 -> 2.5 ETH: one NET BUY 3.75 {m0 1.25, m1 2.5}
    bar 4: low 1990 < 2000 -> fills 3.75 at 2000, fee 0.00375 ETH split 0.00125 / 0.0025:
           m0 holds 1.24875 (cost 2500), m1 2.4975 (cost 5000)
    bar 5: m0 target 1 -> wants 2.5 - 1.24875 = 1.25125, capped by the desk's cash
           (equity 9992.5 - held 7492.5 = 2500) to 1.25; m1 target 0 -> sells 2.4975.
           1.25 crossed internally at 2000 without fee; m1 sends SELL 1.2475 alone.
    bar 6: high 2001 > 2000 -> the sell fills at 2000, fee 2.495 USDT.
    m1 realized: 2500 - 5000*1.25/2.4975 (= 2502.50250250) = -2.50250250,
                 then 2495 - 2.495 - 2497.49749750 = -4.99249750: total -7.495 (its two fees)
    m0: 2.49875 ETH at cost 5000.  Venue: 3.75 - 0.00375 - 1.2475 = 2.49875 ETH,
    cash 10000 - 7500 + 2495 - 2.495 = 4992.505.
    """
    import asyncio

    from tests.unit.test_engine import IID, build

    eng = build(tmp_path, ["2000"] * 6, ["1"], lows=["1999", "1999", "1999", "1990", "1999", "1999"],
                weights=("0.5", "0.5"))
    eng.models["m0"][IID].targets = [D("0.5"), D("0.5"), D("1"), D("1")]
    eng.models["m1"][IID].targets = [D("1"), D("1"), D("0"), D("0")]
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    orders = list(eng.store.conn.execute("SELECT model_id, side, quantity, status FROM orders ORDER BY step"))
    assert [(m, s, D(q), st) for m, s, q, st in orders] == [("NET", "BUY", D("3.75"), "FILLED"), ("m1", "SELL", D("1.2475"), "FILLED")]
    internal = list(eng.store.conn.execute("SELECT model_id, side, last_qty, last_px, commission FROM fills "
                                           "WHERE trade_id LIKE 'X-%' ORDER BY side"))
    assert [(m, s, D(q), D(p), D(f)) for m, s, q, p, f in internal] == [("m0", "BUY", D("1.25"), D("2000"), 0), ("m1", "SELL", D("1.25"), D("2000"), 0)]
    m0, m1 = eng.portfolio.position("m0", IID), eng.portfolio.position("m1", IID)
    assert m0.quantity == D("2.49875") and m0.cost == D("5000")
    assert m1.quantity == 0 and m1.realized == D("-7.495")
    assert eng.venue.balance("ETH") == D("2.49875") == eng.portfolio.quantity(IID)
    assert eng.venue.balance("USDT") == D("4992.505")
    assert eng.portfolio.equity() == D("9990.005")


def test_self_match_is_denied(tmp_path):
    import asyncio

    from core.enums import OrderSide, OrderStatus, OrderType
    from tests.unit.test_engine import IID, build

    eng = build(tmp_path, ["2000"] * 4, ["0"])
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=3))
    eng.portfolio.position("m0", IID)  # nothing held; a resting buy at 1990
    buy = eng.submit("m0", IID, OrderSide.BUY, D("1"), D("1990.00"), D("2000"), OrderType.LIMIT)
    asyncio.run(eng.send_pending())
    sell = eng.submit("m1x", IID, OrderSide.SELL, D("1"), D("1989.00"), D("2000"), OrderType.LIMIT)
    assert buy.status == OrderStatus.ACCEPTED
    assert sell.status == OrderStatus.DENIED and "own BUY" in sell.reason and buy.client_order_id in sell.reason
    ok = eng.submit("m1x", IID, OrderSide.SELL, D("1"), D("1990.01"), D("2000"), OrderType.LIMIT)
    assert ok.status != OrderStatus.DENIED or "own" not in ok.reason


def test_a_netted_exit_larger_than_the_max_order_notional_goes_in_slices(tmp_path):
    """Both models hold 2.4975 ETH (bought 2.5 each at 2000, fee 0.0025 each). At 4000 both go
    flat: 4.995 ETH = 19,980 USDT > the 10,000 max per order, so the first NET SELL is
    10000 / 4000 = 2.5 ETH (1.25 each), the next bar sells the remaining 2.495 (1.2475 each)."""
    import asyncio

    from core.risk import RiskConfig, RiskEngine
    from tests.unit.test_engine import IID, build

    closes = ["2000"] * 4 + ["4000"] * 5
    lows = ["1999"] * 3 + ["1990"] + ["3999"] * 5
    eng = build(tmp_path, closes, ["1", "1", "0", "0", "0", "0", "0"], lows=lows, weights=("0.5", "0.5"))
    eng.risk = RiskEngine(RiskConfig(max_order_notional=D("10000")))
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    sells = list(eng.store.conn.execute(
        "SELECT model_id, quantity, status FROM orders WHERE side='SELL' ORDER BY step"))
    assert [(m, D(q), st) for m, q, st in sells] == [("NET", D("2.5"), "FILLED"), ("NET", D("2.495"), "FILLED")]
    denied = eng.store.conn.execute("SELECT COUNT(*) FROM orders WHERE status='DENIED'").fetchone()[0]
    assert denied == 0
    assert eng.portfolio.quantity(IID) == 0 and eng.venue.balance("ETH") == 0
