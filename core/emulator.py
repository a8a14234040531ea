"""Local emulation of what a venue lacks: stop triggers evaluated on bars,
contingent orders (OCO, OTO, brackets) and the emulated cancel/replace
(issue 4, "Order management").

Two parts:

* **Stop triggers on a bar** (:func:`walk_stop`, :func:`trailing_trigger`):
  pure functions used by the paper venue to emulate STOP_MARKET,
  STOP_LIMIT and TRAILING_STOP_MARKET (and by any venue adapter that needs
  them). A bar is walked as the price path open -> high -> low -> close,
  NautilusTrader's default order for bar-driven execution in its
  ``SimulatedExchange``: a buy stop triggers when the high reaches its
  trigger (high >= trigger), a sell stop when the low does (low <=
  trigger); a gap through the trigger at the open fires at the open. A
  trailing stop's trigger ratchets with the best price seen on the path
  (the highest for a sell stop, the lowest for a buy stop) and never moves
  back (Binance trailing stops, NautilusTrader's ``TrailingStopCalculator``).

* :class:`OrderEmulator`: contingent orders managed by the desk, in the
  manner of NautilusTrader's ``OrderEmulator``/``OrderManager``, reacting
  to order events (subscribe it to the engine bus with :meth:`attach`, or
  feed :meth:`on_event`) and acting through an :class:`OrderActions`
  object (submit, cancel, modify, report).

Quantities are base units, prices quote per base unit, times UTC
nanoseconds; everything is Decimal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Callable, Protocol, Sequence

from core.clock import Clock
from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.events import (
    ORDER_EVENT_TYPES,
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderRejected,
    OrderUpdated,
)
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import ContingencyType, Order, TrailingOffsetType
from core.values import ZERO, floor_to_step, round_to_tick

BPS = Decimal(10000)


# ====================================================================== triggers
def trailing_trigger(side: OrderSide, best_px: Decimal, offset: Decimal, offset_type: TrailingOffsetType,
                     tick: Decimal) -> Decimal:
    """The trigger of a trailing stop given the best price seen.

    A SELL stop (protecting a long) sits ``offset`` below the highest price,
    a BUY stop ``offset`` above the lowest; ``offset`` is quote per base
    (``PRICE``) or basis points of ``best_px``. The result is rounded to the
    tick away from the market (down for a sell, up for a buy), so the stop is
    never tighter than asked.

    Raises:
        ValueError: if ``tick`` is not positive.
    """
    if offset_type == TrailingOffsetType.BASIS_POINTS:
        distance = best_px * offset / BPS
    else:
        distance = offset
    if side == OrderSide.SELL:
        return round_to_tick(best_px - distance, tick, ROUND_FLOOR)
    return round_to_tick(best_px + distance, tick, ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class Trailing:
    """A trailing stop's parameters: ``offset`` (quote per base, or basis
    points), its type, and the instrument's ``tick`` (quote per base)."""

    offset: Decimal
    offset_type: TrailingOffsetType
    tick: Decimal


@dataclass(frozen=True, slots=True)
class BarTrigger:
    """The outcome of walking one bar for a stop.

    Attributes:
        fired: the trigger was reached on this bar.
        fire_px: where it was reached: the bar's open on a gap through the
            trigger, else the trigger itself (quote per base); None if not.
        trigger_price: the trigger in force when it fired, or at the bar's
            end (a trailing stop's may have moved).
        best_px: a trailing stop's best price seen so far (None otherwise).
        moved: a trailing stop's trigger ratcheted during this bar.
    """

    fired: bool
    fire_px: Decimal | None
    trigger_price: Decimal
    best_px: Decimal | None
    moved: bool


def walk_stop(side: OrderSide, trigger: Decimal, bar_open: Decimal, high: Decimal, low: Decimal, close: Decimal,
              *, trailing: Trailing | None = None, best_px: Decimal | None = None) -> BarTrigger:
    """Walk a bar as open -> high -> low -> close and tell whether a stop of
    ``side`` with ``trigger`` fires, and at what price.

    Rules (NautilusTrader's bar path; Binance stop semantics):

    * at the open: a BUY stop fires if open >= trigger, a SELL stop if
      open <= trigger, at the open (a gap);
    * on each later leg the price moves continuously: a BUY stop fires on
      a rising leg that reaches the trigger, a SELL stop on a falling leg,
      at the trigger price. For a plain stop this is exactly "a buy stop
      triggers when high >= trigger, a sell stop when low <= trigger";
    * a trailing stop (``trailing`` given) is checked first at each point,
      then ratchets: the best price becomes the point if better (higher for
      a SELL stop, lower for a BUY), and the trigger moves to
      :func:`trailing_trigger` of it if that is tighter; it never loosens.
      So a sell trailing stop ratchets at the high and may then fire on the
      way down to the low within the same bar.

    Raises:
        ValueError: from :func:`trailing_trigger` on a bad tick.
    """
    trig = trigger
    best = best_px
    moved = False
    prev: Decimal | None = None
    for p in (bar_open, high, low, close):
        if side == OrderSide.BUY:
            if prev is None and p >= trig:
                return BarTrigger(True, p, trig, best, moved)
            if prev is not None and p > prev and p >= trig:
                return BarTrigger(True, trig, trig, best, moved)
        else:
            if prev is None and p <= trig:
                return BarTrigger(True, p, trig, best, moved)
            if prev is not None and p < prev and p <= trig:
                return BarTrigger(True, trig, trig, best, moved)
        if trailing is not None:
            better = best is None or (p > best if side == OrderSide.SELL else p < best)
            if better:
                best = p
                candidate = trailing_trigger(side, p, trailing.offset, trailing.offset_type, trailing.tick)
                tighter = candidate > trig if side == OrderSide.SELL else candidate < trig
                if tighter:
                    trig = candidate
                    moved = True
        prev = p
    return BarTrigger(False, None, trig, best, moved)


# ====================================================================== contingent orders
class OrderActions(Protocol):
    """What the :class:`OrderEmulator` asks its owner (the engine, or a test
    harness) to do. Calls are synchronous; the owner may queue them and act
    after the current event (the engine sends after its next commit).

    * ``submit(order)``: journal ``OrderInitialized``, run the rails, mark it
      submitted and send it (``Engine.submit``'s path, for a prepared order).
    * ``cancel(order, reason)``: journal ``OrderPendingCancel`` and send the
      cancel (``Engine.cancel``).
    * ``modify(order, quantity, price, trigger_price)``: journal
      ``OrderPendingUpdate`` and send a native amend (``Engine.modify``);
      ``quantity`` is the new total (filled included); ``None`` = unchanged.
    * ``report(event)``: apply, journal and publish an order event the
      emulator generated (``Engine._on_venue_event``'s path).
    """

    def submit(self, order: Order) -> None:
        """Send a new order."""
        ...

    def cancel(self, order: Order, reason: str) -> None:
        """Cancel a working order."""
        ...

    def modify(self, order: Order, quantity: Decimal | None, price: Decimal | None,
               trigger_price: Decimal | None) -> None:
        """Amend a working order natively."""
        ...

    def report(self, event: OrderEvent) -> None:
        """Apply and record an emulator-generated order event."""
        ...


_COID_OK = re.compile(r"^[A-Za-z0-9\-_.]{1,36}$")
_REPLACE_SUFFIX = re.compile(r"\.R\d+$")


def child_order_id(parent_id: str, tag: str) -> str:
    """A derived ClientOrderId ``<parent>.<tag>`` (``NHD-1a-0-0.TP``): it
    keeps the desk prefix and is the same when a bar is re-processed
    (DESIGN.md section 4).

    Raises:
        ValueError: if the result is longer than 36 characters (Binance
            ``newClientOrderId``) or not ``[A-Za-z0-9-_.]``.
    """
    coid = f"{parent_id}.{tag}"
    if not _COID_OK.match(coid):
        raise ValueError(f"client order id {coid!r}: at most 36 characters of [A-Za-z0-9-_.]")
    return coid


@dataclass(slots=True)
class ContingentGroup:
    """Orders that trade one quantity together.

    Attributes:
        group_id: the id of its first member.
        oco: members cancel each other (one fills or is canceled -> the others
            are canceled; a partial fill reduces them).
        target: what the members should trade in total (base units): the
            OCO quantity, or an OTO child group's share of its parent's net
            fill.
        members: live member ids (an emulated replace swaps the new id in).
        history: every id that ever belonged (replaced members' fills count).
        parent_id: the OTO parent whose fills size the group, or None.
        held: OTO children not yet released (the parent has not filled).
        closed: nothing more will be done for the group.
    """

    group_id: str
    oco: bool
    target: Decimal
    members: list[str]
    history: list[str]
    parent_id: str | None = None
    held: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Bracket:
    """The ids of a bracket: the entry, its take-profit and stop-loss (an
    OCO pair released once the entry fills) and their group."""

    entry_id: str
    take_profit_id: str
    stop_loss_id: str
    group_id: str


@dataclass(slots=True)
class _Replace:
    total: Decimal  # the new total of the logical order (filled included)
    price: Decimal | None
    trigger_price: Decimal | None
    group_driven: bool


def effective_filled(order: Order) -> Decimal:
    """What an order has executed as far as the desk knows: its booked
    fills, or the executed quantity of its cancel/expiry acknowledgement
    if that is larger (the fills are still on their way). Base units."""
    acked = order.venue_executed_qty
    return order.filled_qty if acked is None else max(order.filled_qty, acked)


def order_state(o: Order) -> dict[str, Any]:
    """Every field of an :class:`~core.orders.Order`, JSON-ready (Decimals as
    strings: quantities in base units, prices quote per base; times UTC ns),
    for the emulator's checkpoint of orders the engine does not hold (OTO
    children not yet released). :func:`order_from_state` reads it back."""

    def dec(v: Decimal | None) -> str | None:
        return None if v is None else format(v, "f")

    return {
        "client_order_id": o.client_order_id, "model_id": o.model_id, "instrument_id": str(o.instrument_id),
        "side": o.side.value, "order_type": o.order_type.value, "quantity": format(o.quantity, "f"),
        "price": dec(o.price), "time_in_force": o.time_in_force.value, "ts_init": o.ts_init, "step": o.step,
        "reduce_only": o.reduce_only, "status": o.status.value, "filled_qty": format(o.filled_qty, "f"),
        "avg_px": dec(o.avg_px), "venue_order_id": o.venue_order_id, "ts_last": o.ts_last, "reason": o.reason,
        "trade_ids": sorted(o.trade_ids),
        "allocation": None if o.allocation is None else {m: format(q, "f") for m, q in o.allocation.items()},
        "trigger_price": dec(o.trigger_price), "trailing_offset": dec(o.trailing_offset),
        "trailing_offset_type": o.trailing_offset_type.value, "expire_time_ns": o.expire_time_ns,
        "post_only": o.post_only, "contingency": o.contingency.value, "linked_order_ids": list(o.linked_order_ids),
        "parent_order_id": o.parent_order_id, "ts_triggered": o.ts_triggered,
        "venue_executed_qty": dec(o.venue_executed_qty),
        "status_before_update": None if o.status_before_update is None else o.status_before_update.value,
    }


def order_from_state(d: dict[str, Any]) -> Order:
    """The :class:`~core.orders.Order` written by :func:`order_state`.

    Raises:
        KeyError, ValueError: on a missing field or a bad enum/decimal value.
    """

    def dec(v: str | None) -> Decimal | None:
        return None if v is None else Decimal(v)

    return Order(
        client_order_id=d["client_order_id"], model_id=d["model_id"],
        instrument_id=InstrumentId.parse(d["instrument_id"]), side=OrderSide(d["side"]),
        order_type=OrderType(d["order_type"]), quantity=Decimal(d["quantity"]), price=dec(d["price"]),
        time_in_force=TimeInForce(d["time_in_force"]), ts_init=int(d["ts_init"]), step=int(d["step"]),
        reduce_only=bool(d["reduce_only"]), status=OrderStatus(d["status"]), filled_qty=Decimal(d["filled_qty"]),
        avg_px=dec(d["avg_px"]), venue_order_id=d["venue_order_id"], ts_last=int(d["ts_last"]), reason=d["reason"],
        trade_ids=set(d["trade_ids"]),
        allocation=None if d["allocation"] is None else {m: Decimal(q) for m, q in d["allocation"].items()},
        trigger_price=dec(d["trigger_price"]), trailing_offset=dec(d["trailing_offset"]),
        trailing_offset_type=TrailingOffsetType(d["trailing_offset_type"]), expire_time_ns=d["expire_time_ns"],
        post_only=bool(d["post_only"]), contingency=ContingencyType(d["contingency"]),
        linked_order_ids=tuple(d["linked_order_ids"]), parent_order_id=d["parent_order_id"],
        ts_triggered=d["ts_triggered"], venue_executed_qty=dec(d["venue_executed_qty"]),
        status_before_update=None if d["status_before_update"] is None else OrderStatus(d["status_before_update"]),
    )


class OrderEmulator:
    """Contingent orders (OCO, OTO, brackets) and the emulated cancel/replace,
    managed by the desk (NautilusTrader's ``OrderEmulator`` and
    ``OrderManager`` contingency handling; issue 4's rules).

    Rules:

    * **OCO** (:meth:`submit_oco`): the members share one quantity. When one
      fills completely the others are canceled; a partial fill reduces each
      other member so that its open quantity is the group's remainder
      (target minus everything the group filled): a sibling of 1.0 becomes
      0.6 after a fill of 0.4. When a member is canceled, expires or is
      rejected by anyone but the emulator, the others are canceled.
    * **OTO** (:meth:`submit_oto`): the children are held (never sent) until
      the parent fills; they are released sized to the parent's *net* fill
      (fills minus the commission paid in the base asset, floored to the
      child's step: what the account actually received), and re-sized on
      the parent's later fills. A parent that ends with nothing filled
      discards them.
    * **Bracket** (:meth:`submit_bracket`): an OTO whose children are an OCO
      pair, take-profit (LIMIT) and stop-loss (STOP_MARKET or STOP_LIMIT),
      both reduce-only. When the pair has closed what the entry bought
      while the entry is still working, the entry's remainder is canceled
      (reason ``BRACKET_EXITED``), so no fill is left unprotected.
    * **Replace** (:meth:`replace`): on a venue that amends natively it is
      ``actions.modify``. Otherwise it is emulated: ``OrderPendingUpdate``
      is reported, the order is canceled (reason ``REPLACE``), and on the
      cancel acknowledgement a new order (id ``<original>.R<n>``) is sent
      for ``new total - executed``, the executed quantity being the larger
      of the acknowledgement's ``executed_qty`` and the fills booked: sell
      1.000, replace requested while 0.165 fills -> the ack reports 0.165
      and the new order is for 0.835, so the total filled never exceeds
      1.000. A fill that completes the order first abandons the replace.

    Its state survives a restart: :meth:`state_dict` goes into the
    engine's checkpoint and :meth:`load_state_dict` re-binds it to the
    restored orders before the start-up reconciliation, whose fills and
    cancels then reach it as live ones would (a leg filled while the desk
    was down cancels its sibling at start).

    Feed it every order event *after* the OMS applied it (:meth:`attach`
    subscribes it to the engine's bus, which publishes after applying).
    Events of orders it does not manage are ignored, a repeated fill
    (same ``trade_id``) too.

    Raises (from the ``submit_*`` methods): ``ValueError`` for an
    inconsistent list (different instruments or quantities in an OCO,
    prices on the wrong side in a bracket, an unknown instrument, orders
    already sent).
    """

    def __init__(self, actions: OrderActions, instruments: dict[InstrumentId, Instrument], clock: Clock, *,
                 native_modify: bool = True, child_id: Callable[[str, str], str] = child_order_id,
                 on_alert: Callable[[str, str], None] | None = None) -> None:
        self.actions = actions
        self.instruments = instruments
        self.clock = clock
        self.native_modify = native_modify
        self.child_id = child_id
        self.on_alert = on_alert
        self.orders: dict[str, Order] = {}
        self.groups: dict[str, ContingentGroup] = {}
        self.replacements: dict[str, str] = {}  # replaced id -> its replacement's id
        self.discarded: list[str] = []  # OTO children never released
        self.alerts: list[tuple[str, str]] = []
        self._group_of: dict[str, str] = {}
        self._child_groups: dict[str, list[str]] = {}  # OTO parent (root) id -> its child groups
        self._root: dict[str, str] = {}  # an id -> the original id of its replace chain
        self._net: dict[str, Decimal] = {}  # root id -> net base received by the parent chain
        self._trades: set[tuple[str, str]] = set()
        self._expected_cancels: dict[str, str] = {}  # id -> reason of a cancel the emulator asked for
        #: executed quantity (base units) of closed managed orders no longer held in ``orders`` (after a
        #: restart the engine keeps only working orders): what the group sums still need
        self._closed_filled: dict[str, Decimal] = {}
        self._replacing: dict[str, _Replace] = {}
        self._replace_seq: dict[str, int] = {}

    # ------------------------------------------------------------ wiring
    def attach(self, bus: Any) -> None:
        """Subscribe :meth:`on_event` to every order event type on ``bus``
        (a :class:`core.bus.MessageBus`)."""
        for name in sorted(ORDER_EVENT_TYPES):
            bus.subscribe(name, self.on_event)

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The emulator's state for the engine's checkpoint
        (``Engine.snapshot_state``), JSON-ready: quantities and prices are
        Decimal strings (base units; quote per base), ids strings.

        Only what can still matter is kept. Groups already closed are
        dropped (with their ``group_of`` entries and any OTO parent whose
        child groups are all closed); the ids kept are those of the open
        groups' members and history, their OTO parents' replace chains and
        every managed order still working. Orders are kept by how a restart
        gets them back:

        * ``live``: managed orders working now, ``{id: executed qty}``; the
          engine's checkpoint holds them (its ``working`` list) and
          :meth:`load_state_dict` re-binds them by id;
        * ``held``: OTO children not yet released (``INITIALIZED``, never
          sent, so unknown to the engine): the whole order, as
          :func:`order_state`;
        * ``closed_filled``: closed members of an open group's history (a
          replaced member), ``{id: executed qty}`` (:func:`effective_filled`
          at the checkpoint): the engine keeps no closed order across a
          restart, and the group's remainder needs what they executed.

        Shape (version 1)::

            {"version": 1,
             "groups": [{"group_id", "oco": bool, "target": qty, "members": [id],
                         "history": [id], "parent_id": id | None, "held": bool}],
             "live": {id: qty}, "held": [order_state], "closed_filled": {id: qty},
             "group_of": {id: group_id}, "child_groups": {root id: [group_id]},
             "root": {id: root id}, "net": {root id: qty}, "replacements": {id: id},
             "discarded": [id], "trades": [[id, trade_id]], "expected_cancels": {id: reason},
             "replacing": {id: {"total": qty, "price": px | None, "trigger_price": px | None,
                                "group_driven": bool}},
             "replace_seq": {base id: n}}
        """
        groups = {gid: g for gid, g in self.groups.items() if not g.closed}
        ids: set[str] = set()
        roots: set[str] = set()
        for g in groups.values():
            ids.update(g.members, g.history)
            if g.parent_id is not None:
                roots.add(g.parent_id)
        child_groups = {r: [gid for gid in gids if gid in groups] for r, gids in self._child_groups.items()
                        if r in roots}
        child_groups = {r: gids for r, gids in child_groups.items() if gids}
        for r in child_groups:
            c = r
            ids.add(c)
            while c in self.replacements:
                c = self.replacements[c]
                ids.add(c)
        ids.update(coid for coid, o in self.orders.items() if o.is_working)
        live: dict[str, str] = {}
        held: list[dict[str, Any]] = []
        closed: dict[str, str] = {}
        for coid in sorted(ids):
            o = self.orders.get(coid)
            if o is None or o.is_closed:
                closed[coid] = format(self._filled(coid), "f")
            elif o.status == OrderStatus.INITIALIZED:
                held.append(order_state(o))
            else:
                live[coid] = format(effective_filled(o), "f")
        bases = {_REPLACE_SUFFIX.sub("", c) for c in ids}

        def px(v: Decimal | None) -> str | None:
            return None if v is None else format(v, "f")

        return {
            "version": 1,
            "groups": [{"group_id": g.group_id, "oco": g.oco, "target": format(g.target, "f"),
                        "members": list(g.members), "history": list(g.history), "parent_id": g.parent_id,
                        "held": g.held} for g in groups.values()],
            "live": live,
            "held": held,
            "closed_filled": closed,
            "group_of": {c: gid for c, gid in sorted(self._group_of.items()) if gid in groups},
            "child_groups": child_groups,
            "root": {c: r for c, r in sorted(self._root.items()) if c in ids},
            "net": {r: format(self._net.get(r, ZERO), "f") for r in child_groups},
            "replacements": {a: b for a, b in self.replacements.items() if a in ids or b in ids},
            "discarded": list(self.discarded),
            "trades": sorted([c, t] for c, t in self._trades if c in ids),
            "expected_cancels": {c: r for c, r in sorted(self._expected_cancels.items()) if c in ids},
            "replacing": {c: {"total": format(r.total, "f"), "price": px(r.price),
                              "trigger_price": px(r.trigger_price), "group_driven": r.group_driven}
                          for c, r in sorted(self._replacing.items()) if c in ids},
            "replace_seq": {b: n for b, n in sorted(self._replace_seq.items()) if b in bases},
        }

    def load_state_dict(self, d: dict[str, Any] | None, orders: dict[str, Order]) -> None:
        """Replace the emulator's state with ``d`` (from :meth:`state_dict`;
        ``None`` or ``{}``, an older checkpoint without it, gives an empty
        emulator), re-binding the managed working orders to ``orders`` (the
        engine's restored ``Order`` objects, by ClientOrderId) so the
        emulator and the OMS share one object per order again. Held OTO
        children are rebuilt from the state (the engine never had them).

        Call it after the engine's working orders are rebuilt and before the
        start-up reconciliation, whose fills and cancels then reach the
        emulator through the bus as live ones would (``Engine.restore`` then
        ``Engine.recover``).

        A cancel the emulator had asked for (an OCO sibling, a bracket's
        entry, an emulated replace) whose ``OrderPendingCancel`` was not
        journaled at the checkpoint (the process died between the decision
        and the request) is asked again: ``OrderPendingCancel`` is reported
        through ``actions.report`` (no event loop is needed at restore) and
        the reconciliation then sends it (an order ``PENDING_CANCEL`` that
        the venue still has open is canceled again, one never placed is
        closed). A ``live`` order missing from ``orders`` (a checkpoint
        that does not match) is treated as closed at its recorded executed
        quantity and raises an ``EMULATOR_ORDER_MISSING`` alert.

        Raises:
            ValueError: on a ``version`` other than 1.
        """
        self.orders = {}
        self.groups = {}
        self.replacements = {}
        self.discarded = []
        self._group_of = {}
        self._child_groups = {}
        self._root = {}
        self._net = {}
        self._trades = set()
        self._expected_cancels = {}
        self._replacing = {}
        self._replace_seq = {}
        self._closed_filled = {}
        if not d:
            return
        if d.get("version") != 1:
            raise ValueError(f"emulator state: version {d.get('version')!r} is not 1")

        def px(v: str | None) -> Decimal | None:
            return None if v is None else Decimal(v)

        self._closed_filled = {c: Decimal(q) for c, q in d["closed_filled"].items()}
        for coid, filled in d["live"].items():
            o = orders.get(coid)
            if o is None:
                self._closed_filled[coid] = Decimal(filled)
                self._alert("EMULATOR_ORDER_MISSING", f"{coid}: working at the checkpoint but not restored; "
                                                      f"counted closed at {filled} executed")
                continue
            self.orders[coid] = o
        for od in d["held"]:
            o = orders.get(od["client_order_id"]) or order_from_state(od)
            self.orders[o.client_order_id] = o
        for gd in d["groups"]:
            g = ContingentGroup(gd["group_id"], bool(gd["oco"]), Decimal(gd["target"]), list(gd["members"]),
                                list(gd["history"]), gd["parent_id"], bool(gd["held"]))
            self.groups[g.group_id] = g
        self._group_of = dict(d["group_of"])
        self._child_groups = {r: list(gids) for r, gids in d["child_groups"].items()}
        self._root = dict(d["root"])
        self._net = {r: Decimal(q) for r, q in d["net"].items()}
        self.replacements = dict(d["replacements"])
        self.discarded = list(d["discarded"])
        self._trades = {(c, t) for c, t in d["trades"]}
        self._expected_cancels = dict(d["expected_cancels"])
        self._replacing = {c: _Replace(Decimal(r["total"]), px(r["price"]), px(r["trigger_price"]),
                                       bool(r["group_driven"])) for c, r in d["replacing"].items()}
        self._replace_seq = {b: int(n) for b, n in d["replace_seq"].items()}
        # cancels decided before the checkpoint but never journaled: ask again (see the docstring)
        again = {**{c: "REPLACE" for c in self._replacing}, **self._expected_cancels}
        now = self.clock.timestamp_ns()
        for coid, reason in sorted(again.items()):
            o = self.orders.get(coid)
            if o is not None and o.is_working and o.status != OrderStatus.PENDING_CANCEL:
                self.actions.report(OrderPendingCancel(
                    ts_event=now, ts_init=now, client_order_id=coid, instrument_id=o.instrument_id,
                    model_id=o.model_id, reason=reason))

    def _alert(self, code: str, message: str) -> None:
        self.alerts.append((code, message))
        if self.on_alert is not None:
            self.on_alert(code, message)

    def group_of(self, client_order_id: str) -> ContingentGroup | None:
        """The group an order belongs to (as a member), or None."""
        gid = self._group_of.get(client_order_id)
        return None if gid is None else self.groups[gid]

    def _inst(self, iid: InstrumentId) -> Instrument:
        inst = self.instruments.get(iid)
        if inst is None:
            raise ValueError(f"emulator: unknown instrument {iid}")
        return inst

    def _register(self, order: Order) -> None:
        self.orders[order.client_order_id] = order
        self._root.setdefault(order.client_order_id, order.client_order_id)

    # ------------------------------------------------------------ lists
    def submit_oco(self, orders: Sequence[Order]) -> str:
        """Link ``orders`` (two or more, same instrument and quantity, not yet
        sent) as an OCO and submit them in order. Returns the group id.

        Raises:
            ValueError: on fewer than two orders, mixed instruments or
                quantities, or an order already sent.
        """
        if len(orders) < 2:
            raise ValueError("OCO needs at least two orders")
        first = orders[0]
        self._inst(first.instrument_id)
        for o in orders:
            if o.instrument_id != first.instrument_id or o.quantity != first.quantity:
                raise ValueError("OCO members must share instrument and quantity")
            if o.status != OrderStatus.INITIALIZED:
                raise ValueError(f"OCO member {o.client_order_id} was already sent ({o.status.value})")
        self._link_oco(orders)
        gid = first.client_order_id
        self._new_group(gid, oco=True, target=first.quantity, members=[o.client_order_id for o in orders])
        for o in orders:
            self.actions.submit(o)
        return gid

    def _link_oco(self, orders: Sequence[Order]) -> None:
        ids = [o.client_order_id for o in orders]
        for o in orders:
            o.contingency = ContingencyType.OCO
            o.linked_order_ids = tuple(i for i in ids if i != o.client_order_id)
            self._register(o)

    def _new_group(self, gid: str, *, oco: bool, target: Decimal, members: list[str], parent_id: str | None = None,
                   held: bool = False) -> ContingentGroup:
        g = ContingentGroup(gid, oco, target, list(members), list(members), parent_id, held)
        self.groups[gid] = g
        for m in members:
            self._group_of[m] = gid
        return g

    def submit_oto(self, parent: Order, children: Sequence[Order], *, oco_children: bool = False) -> list[str]:
        """Submit ``parent`` and hold ``children`` until it fills; with
        ``oco_children`` the children form one OCO group, else each child is
        its own group. Children must trade the parent's instrument. Returns
        the child group ids.

        Raises:
            ValueError: on no children, another instrument, or an order
                already sent.
        """
        if not children:
            raise ValueError("OTO needs at least one child")
        self._inst(parent.instrument_id)
        for o in (parent, *children):
            if o.status != OrderStatus.INITIALIZED:
                raise ValueError(f"{o.client_order_id} was already sent ({o.status.value})")
            if o.instrument_id != parent.instrument_id:
                raise ValueError("OTO children must trade the parent's instrument")
        parent.contingency = ContingencyType.OTO
        parent.linked_order_ids = tuple(c.client_order_id for c in children)
        self._register(parent)
        for c in children:
            c.parent_order_id = parent.client_order_id
        if oco_children and len(children) > 1:
            self._link_oco(children)
            gids = [self._new_group(children[0].client_order_id, oco=True, target=ZERO,
                                    members=[c.client_order_id for c in children],
                                    parent_id=parent.client_order_id, held=True).group_id]
        else:
            gids = []
            for c in children:
                self._register(c)
                gids.append(self._new_group(c.client_order_id, oco=False, target=ZERO, members=[c.client_order_id],
                                            parent_id=parent.client_order_id, held=True).group_id)
        self._child_groups[parent.client_order_id] = gids
        self._net[parent.client_order_id] = ZERO
        self.actions.submit(parent)
        return gids

    def submit_bracket(self, entry: Order, *, take_profit_price: Decimal, stop_trigger_price: Decimal,
                       stop_limit_price: Decimal | None = None) -> Bracket:
        """Submit ``entry`` with a take-profit LIMIT at ``take_profit_price``
        and a stop-loss at ``stop_trigger_price`` (STOP_MARKET, or
        STOP_LIMIT at ``stop_limit_price``), both reduce-only GTC on the
        other side, ids ``<entry>.TP``/``<entry>.SL``, released as an OCO
        sized to what the entry actually filled (prices quote per base).

        Raises:
            ValueError: if the stop is not on the losing side of the
                take-profit (below it for a BUY entry, above for a SELL).
        """
        buy = entry.side == OrderSide.BUY
        if (stop_trigger_price >= take_profit_price) if buy else (stop_trigger_price <= take_profit_price):
            raise ValueError(f"bracket: stop {stop_trigger_price} must be on the losing side of the take-profit "
                             f"{take_profit_price} for a {entry.side.value} entry")
        exit_side = OrderSide.SELL if buy else OrderSide.BUY
        now = self.clock.timestamp_ns()
        tp = Order(self.child_id(entry.client_order_id, "TP"), entry.model_id, entry.instrument_id, exit_side,
                   OrderType.LIMIT, entry.quantity, take_profit_price, TimeInForce.GTC, now, entry.step,
                   reduce_only=True, ts_last=now)
        sl = Order(self.child_id(entry.client_order_id, "SL"), entry.model_id, entry.instrument_id, exit_side,
                   OrderType.STOP_LIMIT if stop_limit_price is not None else OrderType.STOP_MARKET, entry.quantity,
                   stop_limit_price, TimeInForce.GTC, now, entry.step, reduce_only=True, ts_last=now,
                   trigger_price=stop_trigger_price)
        (gid,) = self.submit_oto(entry, [tp, sl], oco_children=True)
        return Bracket(entry.client_order_id, tp.client_order_id, sl.client_order_id, gid)

    # ------------------------------------------------------------ replace
    def replace(self, order: Order, quantity: Decimal | None = None, price: Decimal | None = None,
                trigger_price: Decimal | None = None) -> None:
        """Modify ``order``: ``quantity`` is the new total (filled included,
        base units), ``price``/``trigger_price`` quote per base, ``None``
        unchanged. Native amend through ``actions.modify`` when the venue
        has it, else the emulated cancel-then-new described on the class.

        Raises:
            ValueError: if the order is not working or nothing changes.
        """
        if not order.is_working:
            raise ValueError(f"replace: {order.client_order_id} is not working ({order.status.value})")
        if quantity is None and price is None and trigger_price is None:
            raise ValueError("replace: nothing to change")
        self._register(order)
        if self.native_modify:
            self.actions.modify(order, quantity, price, trigger_price)
            return
        self._start_replace(order, quantity if quantity is not None else order.quantity, price, trigger_price,
                            group_driven=False)

    def _amend_quantity(self, order: Order, total: Decimal) -> None:
        if self.native_modify:
            self.actions.modify(order, total, None, None)
        else:
            self._start_replace(order, total, None, None, group_driven=True)

    def _start_replace(self, order: Order, total: Decimal, price: Decimal | None, trigger_price: Decimal | None,
                       *, group_driven: bool) -> None:
        coid = order.client_order_id
        if coid in self._replacing:
            self._alert("REPLACE_PENDING", f"{coid}: a replace is already in progress")
            return
        self._replacing[coid] = _Replace(total, price, trigger_price, group_driven)
        now = self.clock.timestamp_ns()
        self.actions.report(OrderPendingUpdate(
            ts_event=now, ts_init=now, client_order_id=coid, instrument_id=order.instrument_id,
            model_id=order.model_id, quantity=total, price=price, trigger_price=trigger_price,
            reason="EMULATED_REPLACE"))
        self.actions.cancel(order, "REPLACE")

    def _finish_replace(self, order: Order, rep: _Replace) -> None:
        """The cancel of a replaced order was acknowledged: send the rest."""
        coid = order.client_order_id
        executed = effective_filled(order)
        g = self.group_of(coid)
        if rep.group_driven and g is not None:
            new_qty = g.target - self._group_filled(g)  # the group's remainder now, this order's fills included
        else:
            new_qty = rep.total - executed
        if new_qty <= 0:
            self._alert("REPLACE_NOTHING_LEFT", f"{coid}: {executed} executed of {rep.total}; nothing to replace")
            if g is not None:
                self._member_gone(g, coid)
            return
        base = _REPLACE_SUFFIX.sub("", coid)
        n = self._replace_seq.get(base, 0) + 1
        self._replace_seq[base] = n
        now = self.clock.timestamp_ns()
        new = Order(
            self.child_id(base, f"R{n}"), order.model_id, order.instrument_id, order.side, order.order_type,
            new_qty, rep.price if rep.price is not None else order.price, order.time_in_force, now, order.step,
            reduce_only=order.reduce_only, ts_last=now,
            trigger_price=rep.trigger_price if rep.trigger_price is not None else order.trigger_price,
            trailing_offset=order.trailing_offset, trailing_offset_type=order.trailing_offset_type,
            expire_time_ns=order.expire_time_ns, post_only=order.post_only, contingency=order.contingency,
            parent_order_id=order.parent_order_id,
        )
        self.orders[new.client_order_id] = new
        root = self._root.get(coid, coid)
        self._root[new.client_order_id] = root
        self.replacements[coid] = new.client_order_id
        if g is not None:
            g.members = [new.client_order_id if m == coid else m for m in g.members]
            g.history.append(new.client_order_id)
            self._group_of[new.client_order_id] = g.group_id
            if g.oco:
                new.linked_order_ids = tuple(m for m in g.members if m != new.client_order_id)
                for m in g.members:
                    o = self.orders.get(m)
                    if m != new.client_order_id and o is not None:
                        o.linked_order_ids = tuple(x for x in g.members if x != m)
        else:
            new.linked_order_ids = order.linked_order_ids
        self.actions.submit(new)

    # ------------------------------------------------------------ events
    def on_event(self, event: Event) -> None:
        """React to an order event the OMS has applied (see the class)."""
        if not isinstance(event, OrderEvent):
            return
        coid = event.client_order_id
        order = self.orders.get(coid)
        if order is None:
            return
        if isinstance(event, OrderFilled):
            key = (coid, event.trade_id)
            if key in self._trades:
                return
            self._trades.add(key)
            self._on_fill(order, event)
        elif isinstance(event, OrderCanceled) and coid in self._replacing:
            self._finish_replace(order, self._replacing.pop(coid))
        elif isinstance(event, (OrderCanceled, OrderExpired, OrderRejected, OrderDenied)):
            self._replacing.pop(coid, None)
            self._on_terminal(order, event)
        elif isinstance(event, (OrderUpdated, OrderAccepted)):
            g = self.group_of(coid)
            if g is not None:
                self._reconcile(g)  # a member settled: bring it to the group's remainder if that moved
        elif isinstance(event, OrderModifyRejected):
            self._alert("MODIFY_REJECTED", f"{coid}: {event.reason}")

    def _on_fill(self, order: Order, event: OrderFilled) -> None:
        coid = order.client_order_id
        if coid in self._replacing and order.status == OrderStatus.FILLED:
            self._replacing.pop(coid)
            self._alert("REPLACE_ABANDONED", f"{coid}: filled before its replace took effect")
        root = self._root.get(coid, coid)
        if root in self._child_groups:
            inst = self._inst(order.instrument_id)
            net = event.last_qty - (event.commission if event.commission_currency == inst.base else ZERO)
            self._net[root] = self._net.get(root, ZERO) + net
            for gid in self._child_groups[root]:
                self._size_children(self.groups[gid])
        g = self.group_of(coid)
        if g is not None:
            self._reconcile(g)

    def _size_children(self, g: ContingentGroup) -> None:
        """Set an OTO child group's target from its parent's net fill and
        release or re-size the children."""
        if g.closed or g.parent_id is None:
            return
        first = next((self.orders[m] for m in (*g.members, *g.history) if m in self.orders), None)
        if first is None:
            return  # every member closed and forgotten (a restart): nothing left to size
        target = floor_to_step(self._net.get(g.parent_id, ZERO), self._inst(first.instrument_id).step_size)
        if target <= g.target:
            return
        g.target = target
        if g.held:
            g.held = False
            for m in g.members:
                child = self.orders[m]
                child.quantity = target
                self.actions.submit(child)
        else:
            self._reconcile(g)

    def _group_filled(self, g: ContingentGroup) -> Decimal:
        return sum((self._filled(i) for i in g.history), ZERO)

    def _filled(self, coid: str) -> Decimal:
        """What a managed order executed (:func:`effective_filled`), or, for
        a closed order forgotten at a restart, what it had executed then."""
        o = self.orders.get(coid)
        return effective_filled(o) if o is not None else self._closed_filled.get(coid, ZERO)

    def _closed(self, coid: str) -> bool:
        """A member is closed: its order is, or it was forgotten at a restart
        (only closed orders are)."""
        o = self.orders.get(coid)
        return o is None or o.is_closed

    def _reconcile(self, g: ContingentGroup) -> None:
        """Bring every live member to the group's remainder; cancel them all
        when nothing remains."""
        if g.closed or g.held:
            return
        remaining = g.target - self._group_filled(g)
        busy = (OrderStatus.INITIALIZED, OrderStatus.PENDING_UPDATE, OrderStatus.PENDING_CANCEL)
        for mid in list(g.members):
            m = self.orders.get(mid)
            if m is None or m.is_closed or mid in self._replacing or mid in self._expected_cancels or m.status in busy:
                continue
            if remaining <= 0:
                self._cancel(m, "OCO")
            elif m.filled_qty + remaining != m.quantity:
                self._amend_quantity(m, m.filled_qty + remaining)
        if remaining <= 0:
            self._close_group(g, "BRACKET_EXITED")

    def _cancel(self, order: Order, reason: str) -> None:
        self._expected_cancels[order.client_order_id] = reason
        self.actions.cancel(order, reason)

    def _close_group(self, g: ContingentGroup, parent_reason: str) -> None:
        """Close ``g``; a bracket's entry still working is canceled."""
        if g.closed:
            return
        g.closed = True
        if g.parent_id is not None:
            parent = self._live_parent(g.parent_id)
            if parent is not None and parent.is_working and parent.client_order_id not in self._expected_cancels:
                self._cancel(parent, parent_reason)

    def _live_parent(self, root: str) -> Order | None:
        coid = root
        while coid in self.replacements:
            coid = self.replacements[coid]
        return self.orders.get(coid)

    def _member_gone(self, g: ContingentGroup, coid: str) -> None:
        if coid in g.members and self._closed(coid):
            g.members.remove(coid)

    def _on_terminal(self, order: Order, event: OrderEvent) -> None:
        coid = order.client_order_id
        expected = coid in self._expected_cancels
        self._expected_cancels.pop(coid, None)
        root = self._root.get(coid, coid)
        if root in self._child_groups and self._live_parent(root) is order:
            for gid in self._child_groups[root]:
                g = self.groups[gid]
                if g.held and not g.closed:
                    g.closed = True
                    self.discarded.extend(g.members)
        g = self.group_of(coid)
        if g is None or g.closed:
            return
        if not expected and getattr(event, "reason", "").startswith("HALT"):
            return  # the kill switch canceled it: the protective legs it keeps stay (DESIGN.md section 5)
        if not expected:
            # canceled, expired or rejected by someone else: the others go too
            for mid in g.members:
                m = self.orders.get(mid)
                if mid != coid and m is not None and not m.is_closed and mid not in self._expected_cancels:
                    self._cancel(m, "OCO")
            self._close_group(g, "BRACKET_BROKEN")
        elif all(self._closed(m) or m in self._expected_cancels for m in g.members):
            self._close_group(g, "BRACKET_EXITED")


__all__ = [
    "BarTrigger", "Bracket", "ContingentGroup", "OrderActions", "OrderEmulator", "Trailing", "child_order_id",
    "effective_filled", "order_from_state", "order_state", "trailing_trigger", "walk_stop",
]
