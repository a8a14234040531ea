"""Partial fills on the paper venue and the contingent orders built on them
(OCO, brackets) and the emulated cancel/replace, with values worked out by
hand in the comments (issue 4).

The ``Desk`` below is the OMS part of the engine in miniature: it applies
the venue's reports to its orders, then hands them to the
:class:`OrderEmulator`; the emulator's requests are queued and sent to the
paper venue after the current event, as the engine sends after its commit.
It can also hold back chosen reports to replay a race.

Paper venue: fees 0.1 % (in the asset received), slippage 1 bp on
market-priced fills rounded against the trader; ETH step 0.0001, tick 0.01.
"""

import asyncio
from decimal import Decimal

import pytest

from core.clock import TestClock
from core.data import Bar
from core.emulator import OrderEmulator, child_order_id
from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import OrderPendingCancel, OrderPendingUpdate, OrderSubmitted
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import ContingencyType, Order
from venues.paper import PaperConfig, PaperVenue

D = Decimal
IID = InstrumentId("ETHUSDT", "BINANCE")
ETH = Instrument(IID, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))


class Desk:
    """Orders, a paper venue and an emulator, wired as the engine wires them."""

    def __init__(self, tmp_path, *, native_modify=True, **cfg):
        self.clock = TestClock(100)
        self.reports = []  # every venue/emulator report, in the order produced
        self.orders: dict[str, Order] = {}
        self.queue = []
        self.held = []
        self.hold_types: set[str] = set()
        self.venue = PaperVenue(tmp_path / "v.sqlite", "BINANCE", "USDT", {IID: ETH}, self.clock,
                                PaperConfig(**cfg), self._on_venue_event)
        self.em = OrderEmulator(self, {IID: ETH}, self.clock, native_modify=native_modify)
        self.seq = 0

    # OrderActions
    def _common(self, order):
        now = self.clock.timestamp_ns()
        return dict(ts_event=now, ts_init=now, client_order_id=order.client_order_id,
                    instrument_id=order.instrument_id, model_id=order.model_id)

    def submit(self, order):
        self.orders[order.client_order_id] = order
        order.apply(OrderSubmitted(**self._common(order)))
        self.queue.append(lambda: self.venue.submit_order(order))

    def cancel(self, order, reason):
        if order.is_working:
            order.apply(OrderPendingCancel(**self._common(order), reason=reason))
        self.queue.append(lambda: self.venue.cancel_order(order, reason))

    def modify(self, order, quantity, price, trigger_price):
        order.apply(OrderPendingUpdate(**self._common(order), quantity=quantity, price=price,
                                       trigger_price=trigger_price))
        self.queue.append(lambda: self.venue.modify_order(order, quantity, price, trigger_price))

    def report(self, event):
        self._on_venue_event(event)

    # the OMS
    def _on_venue_event(self, event):
        self.reports.append(event)
        if event.type in self.hold_types:
            self.held.append(event)
            return
        self.deliver(event)

    def deliver(self, event):
        order = self.orders.get(event.client_order_id)
        if order is not None and order.apply(event):
            self.em.on_event(event)

    def release(self):
        self.hold_types = set()
        held, self.held = self.held, []
        for ev in held:
            self.deliver(ev)

    def pump(self):
        while self.queue:
            asyncio.run(self.queue.pop(0)())

    def new(self, side, qty, price=None, otype=OrderType.LIMIT, **kw):
        self.seq += 1
        return Order(f"NHD-{self.seq}-0-0", "m", IID, side, otype, D(qty), None if price is None else D(price),
                     TimeInForce.GTC, self.clock.timestamp_ns(), self.seq, **kw)

    def place(self, order):
        self.submit(order)
        self.pump()
        return order

    def bar(self, o, h, low, c, v="100"):
        t = self.clock.timestamp_ns() + 60
        self.clock.set_time(t)
        self.venue.on_bar(Bar(IID, D(o), D(h), D(low), D(c), D(v), t - 60, t))
        self.pump()

    def of(self, coid, *types):
        return [e for e in self.reports if e.client_order_id == coid and (not types or e.type in types)]


def holding(tmp_path, qty="1.0020", **kw):
    """A desk holding ETH: a LIMIT buy of ``qty`` at 2000.00 filled in one bar
    (volume 100 is ample). 1.0020 - 0.1 % fee 0.001002 = 1.000998 ETH held."""
    desk = Desk(tmp_path, **kw)
    desk.place(desk.new(OrderSide.BUY, qty, "2000.00"))
    desk.bar("2000", "2001", "1990", "2000")
    return desk


# ------------------------------------------------------------------ partial fills
def test_limit_fills_are_bounded_by_the_share_of_bar_volume(tmp_path):
    desk = Desk(tmp_path, max_volume_share=D("0.1"))
    o = desk.place(desk.new(OrderSide.BUY, "2.5000", "2000.00"))
    desk.bar("2001", "2002", "1999", "2000", v="10")  # 10 * 0.1 = 1.0 at most this bar
    desk.bar("2001", "2002", "1999", "2000", v="10")  # another 1.0
    assert o.status == OrderStatus.PARTIALLY_FILLED and o.filled_qty == D("2.0000")
    desk.bar("2001", "2002", "2001", "2001", v="10")  # low not below 2000: no fill
    desk.bar("2001", "2002", "1999", "2000", v="3.33")  # 0.333 -> floored to the step: 0.3330
    assert o.filled_qty == D("2.3330")
    desk.bar("2001", "2002", "1999", "2000", v="50")  # 5.0 available, 0.1670 left
    assert o.status == OrderStatus.FILLED and o.filled_qty == D("2.5000")
    fills = [e.last_qty for e in desk.of(o.client_order_id, "OrderFilled")]
    assert fills == [D("1.0000"), D("1.0000"), D("0.3330"), D("0.1670")]
    # cash: 2.5 * 2000.00 = 5000.00 spent, nothing left locked
    assert desk.venue.free("USDT") == desk.venue.balance("USDT") == D("5000.00")
    # ETH: 2.5 - 0.1 % fee per fill (0.001 + 0.001 + 0.000333 + 0.000167 = 0.0025) = 2.4975
    assert desk.venue.balance("ETH") == D("2.4975")


def test_two_orders_share_one_bars_volume_in_acceptance_order(tmp_path):
    desk = Desk(tmp_path, max_volume_share=D("0.1"))
    a = desk.place(desk.new(OrderSide.BUY, "0.7000", "2000.00"))
    b = desk.place(desk.new(OrderSide.BUY, "0.7000", "2000.00"))
    desk.bar("2001", "2002", "1999", "2000", v="10")  # 1.0 for both: a takes 0.7, b the remaining 0.3
    assert (a.filled_qty, b.filled_qty) == (D("0.7000"), D("0.3000"))


def test_partial_fills_are_off_by_default(tmp_path):
    desk = Desk(tmp_path)
    o = desk.place(desk.new(OrderSide.BUY, "2.5000", "2000.00"))
    desk.bar("2001", "2002", "1999", "2000", v="0.01")
    assert o.status == OrderStatus.FILLED and o.filled_qty == D("2.5000")


def test_the_issue_example_fills_40_and_20_then_cancel(tmp_path):
    """Limit BUY 100.00 at 10.00, step 0.01: fills 40.00 and 20.00, then
    canceled -> CANCELED with 60.00 filled; fees 0.04 and 0.02 in the base:
    59.94 held; cost 600.00 USDT."""
    iid = InstrumentId("XUSDT", "BINANCE")
    x = Instrument(iid, "X", "USDT", D("0.01"), D("0.01"), D("0.01"))
    clock = TestClock(100)
    ev = []
    v = PaperVenue(tmp_path / "x.sqlite", "BINANCE", "USDT", {iid: x}, clock,
                   PaperConfig(max_volume_share=D("0.1")), ev.append)
    o = Order("NHD-1-0-0", "m", iid, OrderSide.BUY, OrderType.LIMIT, D("100.00"), D("10.00"), TimeInForce.GTC, 0, 0)
    asyncio.run(v.submit_order(o))
    v.on_bar(Bar(iid, D("10.00"), D("10.10"), D("9.90"), D("10.00"), D("400"), 140, 200))  # 400 * 0.1 = 40
    v.on_bar(Bar(iid, D("10.00"), D("10.10"), D("9.90"), D("10.00"), D("200"), 200, 260))  # 20
    asyncio.run(v.cancel_order(o))
    assert [(e.type, getattr(e, "last_qty", None)) for e in ev] == [
        ("OrderAccepted", None), ("OrderFilled", D("40.00")), ("OrderFilled", D("20.00")), ("OrderCanceled", None)]
    assert [e.commission for e in ev if e.type == "OrderFilled"] == [D("0.04"), D("0.02")]
    assert ev[-1].executed_qty == D("60.00")
    assert v.balance("X") == D("59.94") and v.balance("USDT") == D("10000") - D("600.00")


# ------------------------------------------------------------------ the emulated replace (issue's right value)
def test_emulated_replace_while_0_165_fills_sends_0_835(tmp_path):
    desk = holding(tmp_path, native_modify=False, max_volume_share=D("0.1"))
    sell = desk.place(desk.new(OrderSide.SELL, "1.000", "2100.00"))
    desk.em.replace(sell, price=D("2090.00"))  # cancel requested, not yet sent (queued)
    assert sell.status == OrderStatus.PENDING_CANCEL
    assert desk.of(sell.client_order_id, "OrderPendingUpdate")  # the replace showed as PENDING_UPDATE first
    # the bar before the cancel reaches the venue: high 2101 > 2100, volume 1.65 * 0.1 = 0.165 fills
    desk.bar("2095", "2101", "2094", "2100", v="1.65")
    ack = desk.of(sell.client_order_id, "OrderCanceled")[0]
    assert ack.executed_qty == D("0.165")  # the cancel acknowledgement's executed quantity
    new_id = desk.em.replacements[sell.client_order_id]
    assert new_id == child_order_id(sell.client_order_id, "R1")
    new = desk.orders[new_id]
    assert new.quantity == D("0.835") and new.price == D("2090.00")  # 1.000 - 0.165
    desk.bar("2095", "2100", "2094", "2100", v="100")  # high 2100 > 2090: the replacement fills
    assert new.status == OrderStatus.FILLED
    assert sell.filled_qty + new.filled_qty == D("1.000")  # never above 1.000


def test_emulated_replace_when_the_fill_arrives_after_the_cancel_ack(tmp_path):
    desk = holding(tmp_path, native_modify=False, max_volume_share=D("0.1"))
    sell = desk.place(desk.new(OrderSide.SELL, "1.000", "2100.00"))
    desk.em.replace(sell, price=D("2090.00"))
    desk.hold_types = {"OrderFilled"}  # the fill report lags the REST answer to the cancel
    desk.bar("2095", "2101", "2094", "2100", v="1.65")
    assert sell.status == OrderStatus.CANCELED and sell.filled_qty == 0 and sell.venue_executed_qty == D("0.165")
    new = desk.orders[desk.em.replacements[sell.client_order_id]]
    assert new.quantity == D("0.835")  # sized from the ack, not from the fills seen so far
    desk.release()  # the late fill of 0.165 is honored on the canceled order
    assert sell.status == OrderStatus.CANCELED and sell.filled_qty == D("0.165")
    desk.bar("2095", "2100", "2094", "2100", v="100")
    assert sell.filled_qty + new.filled_qty == D("1.000")


def test_native_replace_keeps_the_total_quantity(tmp_path):
    desk = holding(tmp_path, max_volume_share=D("0.1"))
    sell = desk.place(desk.new(OrderSide.SELL, "1.000", "2100.00"))
    desk.bar("2095", "2101", "2094", "2100", v="1.65")  # 0.165 fills
    desk.em.replace(sell, price=D("2090.00"))
    assert sell.status == OrderStatus.PENDING_UPDATE
    desk.pump()
    assert sell.status == OrderStatus.PARTIALLY_FILLED and sell.price == D("2090.00")
    assert sell.quantity == D("1.000") and sell.leaves_qty == D("0.835")  # same order, same total
    assert desk.of(sell.client_order_id, "OrderUpdated")[0].quantity == D("1.000")


def test_a_replace_overtaken_by_the_full_fill_is_abandoned(tmp_path):
    desk = holding(tmp_path, native_modify=False)
    sell = desk.place(desk.new(OrderSide.SELL, "1.000", "2100.00"))
    desk.em.replace(sell, price=D("2090.00"))
    desk.bar("2095", "2101", "2094", "2100")  # fills in full before the cancel arrives
    assert sell.status == OrderStatus.FILLED and sell.client_order_id not in desk.em.replacements
    assert ("REPLACE_ABANDONED", f"{sell.client_order_id}: filled before its replace took effect") in desk.em.alerts


# ------------------------------------------------------------------ OCO
def oco_pair(desk, qty="1.0000"):
    tp = desk.new(OrderSide.SELL, qty, "2100.00")
    sl = desk.new(OrderSide.SELL, qty, otype=OrderType.STOP_MARKET, trigger_price=D("1900.00"))
    desk.em.submit_oco([tp, sl])
    desk.pump()
    return tp, sl


def test_oco_partial_fill_reduces_the_sibling_then_its_fill_cancels_the_other(tmp_path):
    desk = holding(tmp_path, max_volume_share=D("0.1"))
    tp, sl = oco_pair(desk)
    assert tp.contingency == sl.contingency == ContingencyType.OCO and tp.linked_order_ids == (sl.client_order_id,)
    # one reservation for the list: 1.000998 held, 1.0000 locked once
    assert desk.venue.free("ETH") == D("0.000998")
    desk.bar("2095", "2101", "2094", "2100", v="4")  # 4 * 0.1 = 0.4 of the take-profit fills
    assert tp.filled_qty == D("0.4000")
    # the group's remainder is 1.0 - 0.4 = 0.6: the stop is cut to 0.6, the take-profit keeps its total 1.0
    assert sl.quantity == D("0.6000") and sl.status == OrderStatus.ACCEPTED and tp.quantity == D("1.0000")
    assert [e.quantity for e in desk.of(sl.client_order_id, "OrderUpdated")] == [D("0.6000")]
    desk.bar("1950", "1960", "1890", "1900")  # low 1890 <= 1900: the stop fires at 1900.00
    f = desk.of(sl.client_order_id, "OrderFilled")[0]
    # 1900.00 - 0.19 (1 bp) = 1899.81
    assert f.last_qty == D("0.6000") and f.last_px == D("1899.81")
    # the list is used up (0.4 + 0.6): the venue cancels the take-profit at once; the emulator's own
    # cancel, queued behind the fill, then finds nothing working
    assert tp.status == OrderStatus.CANCELED and tp.reason == "OCO_EXHAUSTED"
    assert tp.filled_qty + sl.filled_qty == D("1.0000")
    assert desk.venue.balance("ETH") == D("0.000998") and desk.venue.free("ETH") == D("0.000998")


def test_oco_partial_fill_with_an_emulated_replace_of_the_sibling(tmp_path):
    desk = holding(tmp_path, native_modify=False, max_volume_share=D("0.1"))
    tp, sl = oco_pair(desk)
    desk.bar("2095", "2101", "2094", "2100", v="4")  # 0.4 of the take-profit
    assert sl.status == OrderStatus.CANCELED and sl.reason == "REPLACE"
    sl2 = desk.orders[desk.em.replacements[sl.client_order_id]]
    assert sl2.quantity == D("0.6000") and sl2.order_type == OrderType.STOP_MARKET
    assert sl2.linked_order_ids == (tp.client_order_id,) and tp.linked_order_ids == (sl2.client_order_id,)
    assert desk.venue.free("ETH") == D("0.000998")  # the replacement joined the list's reservation
    desk.bar("2095", "2101", "2094", "2100", v="100")  # the take-profit fills its remaining 0.6
    assert tp.status == OrderStatus.FILLED and sl2.status == OrderStatus.CANCELED
    assert sl2.reason == "OCO_EXHAUSTED" and tp.filled_qty == D("1.0000")


def test_oco_member_canceled_by_the_operator_cancels_the_other(tmp_path):
    desk = holding(tmp_path)
    tp, sl = oco_pair(desk)
    asyncio.run(desk.venue.cancel_order(sl, "OPERATOR"))  # not through the emulator
    desk.pump()
    assert sl.status == OrderStatus.CANCELED and tp.status == OrderStatus.CANCELED and tp.reason == "OCO"
    assert desk.venue.free("ETH") == D("1.000998")


def test_oco_members_must_match(tmp_path):
    desk = Desk(tmp_path)
    with pytest.raises(ValueError):
        desk.em.submit_oco([desk.new(OrderSide.SELL, "1", "2100"), desk.new(OrderSide.SELL, "2", "2200")])
    with pytest.raises(ValueError):
        desk.em.submit_oco([desk.new(OrderSide.SELL, "1", "2100")])


# ------------------------------------------------------------------ brackets
def test_bracket_is_sized_to_what_actually_filled(tmp_path):
    desk = Desk(tmp_path, max_volume_share=D("0.1"))
    entry = desk.new(OrderSide.BUY, "1.0000", "2000.00")
    br = desk.em.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
    desk.pump()
    tp, sl = desk.em.orders[br.take_profit_id], desk.em.orders[br.stop_loss_id]
    assert (br.take_profit_id, br.stop_loss_id) == (f"{entry.client_order_id}.TP", f"{entry.client_order_id}.SL")
    assert tp.status == sl.status == OrderStatus.INITIALIZED  # held until the entry fills
    desk.bar("2000", "2001", "1999", "2000", v="4")  # 0.4 of the entry at 2000.00, fee 0.0004 ETH
    # net received 0.4 - 0.0004 = 0.3996: both legs released for 0.3996, reduce-only
    assert (tp.quantity, sl.quantity) == (D("0.3996"), D("0.3996")) and tp.reduce_only and sl.reduce_only
    assert tp.status == sl.status == OrderStatus.ACCEPTED
    desk.bar("2000", "2001", "1999", "2000", v="6")  # the other 0.6, fee 0.0006: net 0.5994
    # total net 0.3996 + 0.5994 = 0.9990: both legs raised to 0.9990 (native amend)
    assert entry.status == OrderStatus.FILLED
    assert (tp.quantity, sl.quantity) == (D("0.9990"), D("0.9990"))
    assert desk.venue.balance("ETH") == D("0.9990") and desk.venue.free("ETH") == 0
    desk.bar("2150", "2201", "2140", "2200")  # high 2201 > 2200: the take-profit fills in full
    assert tp.status == OrderStatus.FILLED and sl.status == OrderStatus.CANCELED
    # cash: 10000 - 1.0 * 2000 + 0.999 * 2200 (2197.80) - 0.1 % (2.1978) = 10195.6022; no ETH left
    assert desk.venue.balance("USDT") == D("10195.6022") and desk.venue.balance("ETH") == 0


def test_bracket_entry_canceled_after_a_partial_fill_keeps_legs_for_what_filled(tmp_path):
    desk = Desk(tmp_path, max_volume_share=D("0.1"))
    entry = desk.new(OrderSide.BUY, "1.0000", "2000.00")
    br = desk.em.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
    desk.pump()
    desk.bar("2000", "2001", "1999", "2000", v="4")
    desk.cancel(entry, "OPERATOR")
    desk.pump()
    tp, sl = desk.em.orders[br.take_profit_id], desk.em.orders[br.stop_loss_id]
    assert entry.status == OrderStatus.CANCELED and entry.filled_qty == D("0.4000")
    assert (tp.quantity, sl.quantity, tp.status, sl.status) == (D("0.3996"), D("0.3996"), OrderStatus.ACCEPTED,
                                                                OrderStatus.ACCEPTED)
    desk.bar("1950", "1960", "1850", "1860")  # stop fires at 1900: 1900 - 0.19 = 1899.81
    assert sl.status == OrderStatus.FILLED and desk.of(sl.client_order_id, "OrderFilled")[0].last_px == D("1899.81")
    assert tp.status == OrderStatus.CANCELED


def test_bracket_entry_that_never_fills_discards_its_legs(tmp_path):
    desk = Desk(tmp_path)
    entry = desk.new(OrderSide.BUY, "1.0000", "2000.00")
    br = desk.em.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
    desk.pump()
    desk.cancel(entry, "REPRICE")
    desk.pump()
    assert desk.em.discarded == [br.take_profit_id, br.stop_loss_id]
    assert br.take_profit_id not in desk.orders  # never sent


def test_bracket_exit_cancels_the_rest_of_the_entry(tmp_path):
    desk = Desk(tmp_path, max_volume_share=D("0.1"))
    entry = desk.new(OrderSide.BUY, "1.0000", "2000.00")
    br = desk.em.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
    desk.pump()
    desk.bar("2000", "2001", "1999", "2000", v="4")  # 0.4 in; legs 0.3996
    desk.bar("2150", "2201", "2140", "2200", v="100")  # the take-profit sells the 0.3996
    tp = desk.em.orders[br.take_profit_id]
    assert tp.status == OrderStatus.FILLED
    assert entry.status == OrderStatus.CANCELED and entry.reason == "BRACKET_EXITED"


def test_bracket_prices_must_be_on_the_right_sides(tmp_path):
    desk = Desk(tmp_path)
    with pytest.raises(ValueError):
        desk.em.submit_bracket(desk.new(OrderSide.BUY, "1", "2000"), take_profit_price=D("1900"),
                               stop_trigger_price=D("2100"))


def test_the_emulator_follows_the_engine_bus(tmp_path):
    from core.bus import MessageBus

    bus = MessageBus()
    desk = holding(tmp_path)
    em = OrderEmulator(desk, {IID: ETH}, desk.clock)
    em.attach(bus)
    tp = desk.new(OrderSide.SELL, "1.0000", "2100.00")
    sl = desk.new(OrderSide.SELL, "1.0000", otype=OrderType.STOP_MARKET, trigger_price=D("1900.00"))
    desk.em = em  # the desk hands reports to the bus instead
    desk.deliver = lambda e: (desk.orders[e.client_order_id].apply(e) and bus.publish(e))
    em.submit_oco([tp, sl])
    desk.pump()
    desk.bar("2095", "2101", "2094", "2100")
    assert tp.status == OrderStatus.FILLED and sl.status == OrderStatus.CANCELED


def test_bracket_legs_resized_by_emulated_replace_on_a_venue_without_amend(tmp_path):
    desk = Desk(tmp_path, native_modify=False, max_volume_share=D("0.1"))
    entry = desk.new(OrderSide.BUY, "1.0000", "2000.00")
    br = desk.em.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
    desk.pump()
    desk.bar("2000", "2001", "1999", "2000", v="4")  # legs released for 0.3996
    desk.bar("2000", "2001", "1999", "2000", v="6")  # net 0.9990 in all: both legs replaced (cancel, then new)
    tp0, sl0 = desk.em.orders[br.take_profit_id], desk.em.orders[br.stop_loss_id]
    assert tp0.status == sl0.status == OrderStatus.CANCELED
    tp = desk.orders[desk.em.replacements[br.take_profit_id]]
    sl = desk.orders[desk.em.replacements[br.stop_loss_id]]
    assert (tp.client_order_id, sl.client_order_id) == (f"{br.take_profit_id}.R1", f"{br.stop_loss_id}.R1")
    assert (tp.quantity, sl.quantity) == (D("0.9990"), D("0.9990"))
    assert tp.status == sl.status == OrderStatus.ACCEPTED
    assert desk.venue.free("ETH") == 0  # one reservation of 0.9990 for the pair
    desk.bar("1950", "1960", "1850", "1860")  # the stop fires at 1900 and sells the 0.9990
    assert sl.status == OrderStatus.FILLED and tp.status == OrderStatus.CANCELED
    assert desk.venue.balance("ETH") == 0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BARS = st.lists(st.tuples(st.integers(1850, 2250), st.integers(0, 120), st.integers(0, 120), st.integers(1, 80)),
                min_size=1, max_size=14)


@settings(max_examples=80, deadline=None)
@given(BARS, st.booleans(), st.sampled_from([None, D("0.05"), D("0.2")]), st.booleans())
def test_a_bracket_never_sells_more_than_its_entry_bought(tmp_path_factory, bars, native, share, cancel_early):
    desk = Desk(tmp_path_factory.mktemp("br"), native_modify=native, max_volume_share=share)
    entry = desk.new(OrderSide.BUY, "1.0000", "2000.00")
    br = desk.em.submit_bracket(entry, take_profit_price=D("2200.00"), stop_trigger_price=D("1900.00"))
    desk.pump()
    for k, (o, up, down, vol) in enumerate(bars):
        o = D(o)
        desk.bar(o, o + up, o - down, o, v=D(vol) / 10)
        if cancel_early and k == 1 and entry.is_working:
            desk.cancel(entry, "OPERATOR")
            desk.pump()
        bought = sum((e.last_qty - e.commission for e in desk.of(entry.client_order_id, "OrderFilled")), D(0))
        sold = sum((e.last_qty for e in desk.reports if e.type == "OrderFilled" and e.side == "SELL"), D(0))
        assert sold <= bought  # exits never exceed the net entry
        assert desk.venue.balance("ETH") == bought - sold >= 0
        assert all(x >= 0 for x in desk.venue._locked.values())
        for o_ in desk.orders.values():
            assert 0 <= o_.filled_qty <= o_.quantity
    legs = [o_ for o_ in desk.orders.values() if o_.client_order_id.startswith((br.take_profit_id,
                                                                               br.stop_loss_id))]
    assert sum((o_.leaves_qty for o_ in legs if o_.is_working), D(0)) <= 2 * desk.venue.balance("ETH")
