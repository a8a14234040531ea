"""Reconciliation with the venue and unknown submit outcomes (DESIGN.md
sections 4 and 5; issue 5).

**Reconciliation** (:func:`reconcile`) compares the engine's view of its
orders and balances with the venue's, at start (``mode="startup"``), every
``SessionConfig.reconcile_interval_ns`` of engine clock while trading
(``"periodic"``, default 60 s) and after every venue reconnect
(``"reconnect"``):

* an order the venue knows better wins: its acknowledgement, its fills (a
  missed fill is applied once, by ``TradeId``) and its final status;
* an order the venue has never seen was written but never sent (the
  process died in between): it is sent once, under the same
  ``ClientOrderId``, if its age on the engine clock is at most
  ``max_resend_age_ns`` (default 5 s; the replay clock does not advance
  while the process is dead); older, it is marked ``REJECTED`` with reason
  ``STALE_AFTER_RESTART``. Never two orders;
* a desk order the venue knows and the store does not, or a balance the
  store cannot explain, raises an alert and halts trading until the
  operator decides (a headless finite run exits 3).

**Unknown submit outcomes** (:class:`VenueSession`): a submit that raises
:class:`~core.venue_errors.TransientVenueError` (timeout, reset, disconnect)
stays in flight (``SUBMITTED``, listed in ``VenueSession.unknown``) and is
resolved by looking it up by ``ClientOrderId`` on later steps. Found: its
state and fills are applied. Not found: it stays unknown until the original
request can no longer be accepted, i.e. its timestamp plus the receive
window plus the venue's backend timeout (5 s + 10 s by default, engine
clock); only then may it be sent once more, under the same id (at most
once, not while halted, and only while the order is younger than
``resend_unknown_within_ns``); otherwise it is closed ``REJECTED``
``NOT_PLACED``. A reply that the id already exists means "look it up". **A
submit is never retried blindly**; retries with backoff are for reads and
cancels only.

Sources: NautilusTrader's execution reconciliation (startup mass status,
then continuous open-order checks; ``LiveExecEngine`` ``reconciliation``,
``open_check_interval_secs``); Binance spot API: ``newClientOrderId`` must
be unique among open orders and may be reused once the earlier order is
filled (so a blind resend can trade twice), ``recvWindow`` (default 5000 ms)
and the ``-1007`` backend timeout after 10 s ("send status unknown;
execution status unknown"), ``GET /api/v3/order`` by ``origClientOrderId``
to resolve it, HTTP 429 ``Retry-After``.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from core.enums import OrderStatus, TradingState
from core.events import OrderAccepted, OrderCanceled, OrderExpired, OrderFilled, OrderRejected
from core.identifiers import is_desk_order, is_own_order
from core.venue_errors import (
    BACKEND_TIMEOUT_NS,
    RECV_WINDOW_NS,
    DuplicateClientOrderId,
    TransientVenueError,
    VenueError,
    VenueThrottled,
    is_ban,
)

if TYPE_CHECKING:
    from core.engine import Engine
    from core.orders import Order

log = logging.getLogger("desk.recovery")

NANOS = 1_000_000_000
#: the store's meta key holding the unknown submits (survives a restart)
UNKNOWN_META_KEY = "unknown_submits"
#: the store's meta key holding the venue's balances before the desk's first fill (see :func:`balance_baseline`)
BASELINE_META_KEY = "balance_baseline"


async def _r(x: Any) -> Any:
    """The value of a venue read that may be synchronous (the paper venue,
    the adapters' cached reads) or a coroutine (an adapter that asks the
    venue): ``await x`` when it is awaitable, else ``x`` itself."""
    return await x if inspect.isawaitable(x) else x


def _balance_assets(engine: "Engine", session: "VenueSession | None" = None) -> list[str]:
    """The assets whose balances reconciliation compares: each instrument's
    base (sorted) and the venue's quote; with ``session``, only its venue's
    instruments and quote."""
    assets = sorted({inst.base for iid, inst in engine.instruments.items()
                     if session is None or session.owns(iid)})
    quote = getattr(engine.venue if session is None else session.venue, "quote", "")
    return assets + ([quote] if quote and quote not in assets else [])


def _meta_key(key: str, session: "VenueSession | None") -> str:
    """The store meta key of one venue's session: ``key`` for the only
    venue of a desk, ``key:<venue name>`` for each venue of a multi-venue
    desk."""
    name = getattr(session, "name", None)
    return key if not name else f"{key}:{name}"


async def balance_baseline(engine: "Engine", *, capture: bool = False,
                           session: "VenueSession | None" = None) -> dict[str, Decimal]:
    """The venue's balances (total; base units, quote) before the desk
    traded: asset -> amount. Reconciliation compares only the *changes*
    since this baseline with the desk's book, so what a real account already
    held does not halt the desk at start.

    Read from the store's meta (``balance_baseline``: JSON of decimal
    strings, written once per state dir). When it is absent:

    * ``capture=True`` (a live desk at start, before warm-up) and the book
      has no fill yet: the venue's current balances of every base asset and
      of the quote become the baseline; stored (committed at the next
      flush) and returned;
    * otherwise the paper venue's implicit baseline is returned (not
      stored): no base asset, and the quote at the portfolio's
      ``equity_start`` (its starting cash), which is exactly what
      reconciliation compared before baselines existed.

    With ``session`` (one venue of a multi-venue desk) the baseline is that
    venue's, under the meta key ``balance_baseline:<venue name>``.

    Raises:
        TransientVenueError, VenueThrottled: when a balance read fails
            (``capture`` only).
    """
    key = _meta_key(BASELINE_META_KEY, session)
    text = engine.store.meta_get(key)
    if text:
        return {a: Decimal(v) for a, v in json.loads(text).items()}
    venue: Any = engine.venue if session is None else session.venue
    pf = engine.portfolio
    traded = any(p.fills for (_, iid), p in pf.positions.items() if session is None or session.owns(iid))
    if not capture or traded:
        base = {a: Decimal(0) for a in _balance_assets(engine, session)}
        quote = getattr(venue, "quote", "")
        if quote:
            base[quote] = pf.equity_start
        return base
    baseline = {a: Decimal(await _r(venue.balance(a))) for a in _balance_assets(engine, session)}
    engine.store.meta_set(key, json.dumps({a: format(v, "f") for a, v in baseline.items()}, sort_keys=True))
    return baseline


@dataclass(frozen=True, slots=True)
class VenueOrderReport:
    """What a venue says about one order.

    Attributes:
        client_order_id: ours.
        venue_order_id: the venue's id (``""`` for an order rejected at submit).
        status: ``OPEN``, ``FILLED``, ``CANCELED``, ``EXPIRED`` or ``REJECTED``.
        filled_qty: executed quantity (base units).
        fills: the order's fills as ``OrderFilled`` events, in trade order.
        reason: why it was canceled or rejected, when the venue says.
    """

    client_order_id: str
    venue_order_id: str
    status: str
    filled_qty: Decimal
    fills: tuple[OrderFilled, ...] = ()
    reason: str = ""


class ReconcilingVenue(Protocol):
    """The lookups reconciliation needs from a venue adapter. Each may raise
    the typed venue errors (``core.venue_errors``); reads are retried with
    backoff by :class:`VenueSession`."""

    def lookup(self, client_order_id: str) -> VenueOrderReport | None:
        """The venue's view of one order, or None if it never saw it
        (Binance ``GET /api/v3/order`` by ``origClientOrderId``)."""
        ...

    def order_ids(self) -> list[str]:
        """Every ClientOrderId the venue has seen (open or closed)."""
        ...

    def open_orders(self) -> dict[str, Decimal]:
        """Open orders: ClientOrderId -> executed quantity (base units)
        (Binance ``GET /api/v3/openOrders``). Optional: without it the
        periodic check looks every working order up."""
        ...


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timings of the venue session, all in engine-clock nanoseconds.

    Attributes:
        recv_window_ns: the receive window a request is signed with (Binance
            ``recvWindow``, default 5000 ms).
        backend_timeout_ns: how long the venue's backend may still execute a
            request after it arrived (Binance ``-1007``: 10 s).
        reconcile_interval_ns: periodic reconciliation while trading
            (issue 5: default 60 s).
        max_resend_age_ns: a written-but-never-sent order older than this at
            reconciliation is ``REJECTED`` ``STALE_AFTER_RESTART`` (default 5 s).
        resend_unknown_within_ns: an unknown submit not found after its
            acceptance deadline is sent once more under the same id only if
            the order is younger than this (default 30 s); older, the market
            has moved on and it is ``REJECTED`` ``NOT_PLACED``.
        backoff_base_ns, backoff_max_ns: retry delay of reads and cancels
            after a transient failure: ``min(base * 2**(n-1), max)`` for the
            n-th consecutive failure (1 s, 2 s, 4 s ... 60 s).
    """

    recv_window_ns: int = RECV_WINDOW_NS
    backend_timeout_ns: int = BACKEND_TIMEOUT_NS
    reconcile_interval_ns: int = 60 * NANOS
    max_resend_age_ns: int = 5 * NANOS
    resend_unknown_within_ns: int = 30 * NANOS
    backoff_base_ns: int = NANOS
    backoff_max_ns: int = 60 * NANOS

    def acceptance_deadline_ns(self, ts_sent_ns: int) -> int:
        """The engine time after which a request sent at ``ts_sent_ns`` can no
        longer be accepted: timestamp + recvWindow + backend timeout."""
        return ts_sent_ns + self.recv_window_ns + self.backend_timeout_ns

    def backoff_ns(self, failures: int) -> int:
        """Retry delay after ``failures`` (>= 1) consecutive failures."""
        return min(self.backoff_base_ns * (2 ** max(0, failures - 1)), self.backoff_max_ns)


@dataclass(slots=True)
class UnknownSubmit:
    """A submit whose outcome is unknown.

    Attributes:
        client_order_id: the order.
        ts_sent_ns: engine time the request left (its signed timestamp).
        deadline_ns: after this engine time the request can no longer be
            accepted (:meth:`SessionConfig.acceptance_deadline_ns`).
        attempts: requests sent under this id so far (1, or 2 after the one
            resend allowed).
        detail: what the adapter said (for the log and alerts).
    """

    client_order_id: str
    ts_sent_ns: int
    deadline_ns: int
    attempts: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the store's meta)."""
        return {"ts_sent_ns": self.ts_sent_ns, "deadline_ns": self.deadline_ns, "attempts": self.attempts,
                "detail": self.detail}


@dataclass(slots=True)
class CancelRequest:
    """A cancel waiting to be sent.

    Attributes:
        client_order_id: the order.
        reason: the cancel's reason (``HALT``, ``REPRICE``...).
        due_ns: engine time from which it may be sent.
        failures: consecutive transient failures so far.
        lookup_first: look the order up before sending again (after a
            timeout the first cancel may have been applied).
        after_resolve: wait until the order's unknown submit is resolved.
    """

    client_order_id: str
    reason: str
    due_ns: int
    failures: int = 0
    lookup_first: bool = False
    after_resolve: bool = False


@dataclass(slots=True)
class ReconcileReport:
    """What reconciliation did, for the log, the alerts and the TUI.

    ``differences`` lists what it could not explain (non-empty means the
    venue stays halted until the operator decides); ``unknown`` the orders
    still in flight with an unknown outcome (not a difference)."""

    mode: str = "startup"
    acknowledged: list[str] = field(default_factory=list)
    fills_applied: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    rejected_stale: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when reconciliation corrected anything."""
        return bool(self.acknowledged or self.fills_applied or self.canceled or self.resent
                    or self.rejected_stale or self.differences)

    def lines(self) -> list[str]:
        """Human-readable lines, one per non-empty category."""
        out = []
        for name in ("acknowledged", "fills_applied", "canceled", "resent", "rejected_stale", "unknown"):
            items = getattr(self, name)
            if items:
                label = "still unknown" if name == "unknown" else name.replace("_", " ")
                out.append(f"{label}: {', '.join(items)}")
        out += [f"UNRECONCILED: {d}" for d in self.differences]
        return out


# ---------------------------------------------------------------- applying the venue's view
def _deferred_balance_changes(engine: "Engine") -> dict[str, Decimal]:
    """What the fills waiting for their bar (``Engine.deferred_fills``) did
    to the venue's balances, per asset: a buy adds its quantity of the base
    and takes its notional of the quote, a sell the reverse; each fee comes
    off the asset it was charged in."""
    out: dict[str, Decimal] = {}
    for fills in getattr(engine, "deferred_fills", {}).values():
        for f in fills:
            inst = engine.instruments[f.instrument_id]
            sign = Decimal(1) if f.side == "BUY" else Decimal(-1)
            out[inst.base] = out.get(inst.base, Decimal(0)) + sign * f.last_qty
            out[inst.quote] = out.get(inst.quote, Decimal(0)) - sign * inst.notional(f.last_px, f.last_qty)
            out[f.commission_currency] = out.get(f.commission_currency, Decimal(0)) - f.commission
    return out



def apply_venue_report(engine: "Engine", order: "Order", known: VenueOrderReport, now_ns: int,
                       report: ReconcileReport | None = None, defer_after_ns: int | None = None) -> None:
    """Bring ``order`` to what the venue says (the venue knows better):
    acknowledge it (``OrderAccepted`` with the venue's id) if the engine
    never heard of its acceptance, apply each fill it has not applied (by
    ``TradeId``, so a fill arriving twice is applied once), then the final
    status (``CANCELED``, ``EXPIRED``, ``REJECTED``). Events go through the
    engine's normal path (``Engine._on_venue_event``): journaled, audited
    and booked exactly like live ones. ``now_ns`` (engine clock) stamps the
    synthesized events. With ``defer_after_ns`` (a replay restarting from
    its checkpoint), a fill of an order the venue still has open or filled
    whose ``ts_event`` is after that time happened in the step the process
    died in: it is handed to the engine when that step's bar of its
    instrument is processed again (``Engine.deferred_fills``), so the
    restarted run sees it at the same point as an uninterrupted one. Raises
    nothing; a refused transition is an alert."""
    coid = order.client_order_id
    common: dict[str, Any] = dict(ts_event=now_ns, ts_init=now_ns, client_order_id=coid,
                                  instrument_id=order.instrument_id, model_id=order.model_id)
    if known.venue_order_id and not order.venue_order_id and order.status in (
            OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL):
        engine._on_venue_event(OrderAccepted(**common, venue_order_id=known.venue_order_id))
        if report is not None:
            report.acknowledged.append(coid)
    defer = defer_after_ns is not None and known.status not in ("CANCELED", "EXPIRED", "REJECTED")
    for fill in known.fills:
        if fill.trade_id not in order.trade_ids:
            if defer and fill.ts_event > defer_after_ns:  # type: ignore[operator]
                pending = engine.deferred_fills.setdefault(fill.instrument_id, [])
                if all(f.trade_id != fill.trade_id for f in pending):
                    pending.append(fill)
                if report is not None:
                    report.fills_applied.append(f"{coid}/{fill.trade_id} (at its bar)")
                continue
            engine._on_venue_event(fill)
            if report is not None:
                report.fills_applied.append(f"{coid}/{fill.trade_id}")
    if not order.is_working:
        return
    if known.status in ("CANCELED", "EXPIRED"):
        cls = OrderExpired if known.status == "EXPIRED" else OrderCanceled
        engine._on_venue_event(cls(**common, reason=known.reason or known.status, executed_qty=known.filled_qty))
        if report is not None:
            report.canceled.append(coid)
    elif known.status == "REJECTED":
        if order.status == OrderStatus.SUBMITTED:
            engine._on_venue_event(OrderRejected(**common, reason=known.reason or "REJECTED"))
        else:
            engine._on_venue_event(OrderCanceled(**common, reason=known.reason or "REJECTED"))


def close_unplaced(engine: "Engine", order: "Order", reason: str, now_ns: int) -> None:
    """Close an order the venue never placed: ``REJECTED`` from
    ``SUBMITTED``; ``CANCELED`` from ``PENDING_CANCEL`` (a cancel was asked
    before it was placed). ``reason`` names the rule."""
    if not order.is_working:
        return
    common: dict[str, Any] = dict(ts_event=now_ns, ts_init=now_ns, client_order_id=order.client_order_id,
                                  instrument_id=order.instrument_id, model_id=order.model_id)
    if order.status == OrderStatus.SUBMITTED:
        engine._on_venue_event(OrderRejected(**common, reason=reason))
    else:
        engine._on_venue_event(OrderCanceled(**common, reason=reason))


def _hms(ts_ns: int | None) -> str:
    """Engine-clock UTC ns as ``YYYY-MM-DD HH:MM:SS UTC`` for the operator."""
    if ts_ns is None:
        return "?"
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


async def reconcile(engine: "Engine", max_resend_age_ns: int, *, mode: str = "startup",
                    session: "VenueSession | None" = None) -> ReconcileReport:
    """Reconcile ``engine`` with its venue (see the module docstring).

    ``mode="startup"`` looks up every working order and every id the venue
    has seen, and commits what it applied; ``"periodic"`` and
    ``"reconnect"`` compare the venue's open orders (mass status) with the
    engine's working orders and look up only those that differ (orders
    queued to send, in an unknown submit, or waiting for a cancel are the
    session's), commit nothing themselves (the step's checkpoint does), and
    run while trading. Balances are compared in every mode against what the
    venue should hold: its balance before the desk traded
    (:func:`balance_baseline`) plus the book's change, i.e. per base asset
    baseline + the book's position (summed over the instruments with that
    base), and for the quote baseline + ``realized - cost of positions``
    (quote currency). A difference reads ``<item>: the venue holds <venue>
    <asset>, the store <expected>``. A venue whose attribute
    ``reconcile_cash`` is False (IBKR: several currencies, a future's cost
    is not cash) has its cash left out.
    Venue reads may be synchronous or coroutines (:func:`_r`).

    ``session`` (default ``engine.session``) names the venue: on a
    multi-venue desk each venue's session reconciles its own orders,
    instruments and balances (``VenueSession.owns``) against its own
    adapter, and the cash against the realized PnL less the position cost
    of its own instruments.

    Raises:
        TransientVenueError, VenueThrottled: when a read fails (the session
            retries later with backoff; what was applied stays applied).
        StoreError: at startup, when the commit fails.
    """
    scoped = session is not None and session.scope is not None
    if session is None:
        session = getattr(engine, "session", None)
        if session is not None and not isinstance(session, VenueSession):
            session = None  # a group of sessions: each reconciles its own venue (core.venue_hub)
    venue: Any = engine.venue if session is None else session.venue
    unknown = session.unknown if session is not None else {}
    report = ReconcileReport(mode=mode)
    now = engine.clock.timestamp_ns()
    startup = mode == "startup"
    queued = {o.client_order_id for o in engine._to_send}
    open_now: dict[str, Decimal] | None = None
    if not startup and hasattr(venue, "open_orders"):
        open_now = await _r(venue.open_orders())
    to_resend = []
    for order in list(engine.working_orders()):
        if scoped and not session.owns(order.instrument_id):  # type: ignore[union-attr]
            continue
        coid = order.client_order_id
        if coid in queued:
            continue
        if not startup:
            if coid in unknown:
                continue  # the session resolves it (looked up just before, in the same tick)
            cancel_queued = session is not None and coid in session.cancels
            if (open_now is not None and open_now.get(coid) == order.filled_qty and order.venue_order_id
                    and order.status != OrderStatus.SUBMITTED
                    and (order.status != OrderStatus.PENDING_CANCEL or cancel_queued)):
                continue  # the venue agrees (a queued cancel is the session's)
        known = await _r(venue.lookup(coid))
        u = unknown.get(coid)
        if known is None:
            if u is not None and now < u.deadline_ns:
                report.unknown.append(coid)  # may still be accepted: stays in flight
                continue
            if u is not None and session is not None:
                session.forget(coid)
            if order.status == OrderStatus.SUBMITTED:
                if now - order.ts_init <= max_resend_age_ns:
                    to_resend.append(order)
                    report.resent.append(coid)
                else:
                    close_unplaced(engine, order, "STALE_AFTER_RESTART" if startup else "STALE_NOT_SENT", now)
                    report.rejected_stale.append(coid)
            elif order.status == OrderStatus.PENDING_CANCEL and not order.venue_order_id:
                close_unplaced(engine, order, "NOT_SENT: canceled before it reached the venue", now)
                report.canceled.append(coid)
            else:
                report.differences.append(f"{coid} is {order.status.value} in the store but unknown to the venue")
            continue
        if u is not None and session is not None:
            session.forget(coid)
        # a replay restarting from its checkpoint: fills of the step it died in wait for their bar
        from core.clock import TestClock  # the engine clock of a replay or the SIM market (bars re-run)

        defer = now if startup and isinstance(engine.clock, TestClock) else None
        apply_venue_report(engine, order, known, now, report, defer_after_ns=defer)
        if session is not None:
            if not order.is_working:
                session.cancels.pop(coid, None)  # closed at the venue: nothing left to cancel
            elif (known.status == "OPEN" and order.status == OrderStatus.PENDING_CANCEL
                    and coid not in session.cancels):
                session.cancels[coid] = CancelRequest(coid, "RECONCILE", now)  # the cancel was lost: ask again
    if startup:
        engine.flush()
        stored = {r[0] for r in engine.store.conn.execute("SELECT client_order_id FROM orders")}
        ids = await _r(venue.order_ids())
    else:
        stored = set()
        ids = list(open_now) if open_now is not None else []
    tag = getattr(engine, "coid_tag", "")
    for coid in ids:
        if not is_own_order(coid, tag):
            continue  # another application's (or another state dir's) order on the account: not ours to judge
        mine = engine.orders.get(coid)
        if mine is None and coid not in stored:
            report.differences.append(f"the venue has desk order {coid} that the store does not know")
        elif mine is not None and not startup and mine.is_closed:
            report.differences.append(f"the venue has {coid} open, the store has it {mine.status.value}")
    if session is not None and session.outstanding:
        # closed orders whose acknowledgement reported more executed than filled: fetch the rest
        for coid in sorted(session.outstanding):
            order = engine.orders.get(coid)
            if order is not None and order.venue_executed_qty is not None \
                    and order.filled_qty < order.venue_executed_qty:
                known = await _r(venue.lookup(coid))
                if known is not None:
                    apply_venue_report(engine, order, known, now, report)
                if order.filled_qty < order.venue_executed_qty:
                    continue
            session.outstanding.discard(coid)
    if startup:
        engine.flush()
    for order in to_resend:
        if session is not None:
            await session.submit(order)
        else:
            await venue.submit_order(order)
    baseline = await balance_baseline(engine, session=session if scoped else None)
    pf = engine.portfolio
    by_base: dict[str, list[Any]] = {}
    for iid, inst in sorted(engine.instruments.items(), key=lambda kv: str(kv[0])):
        if not scoped or session.owns(iid):  # type: ignore[union-attr]
            by_base.setdefault(inst.base, []).append(iid)
    pending = _deferred_balance_changes(engine)
    for asset, iids in by_base.items():
        # what the venue should hold: its balance before the desk traded plus the book's position
        # (plus the fills that wait for their bar: the venue has them already)
        venue_qty = Decimal(await _r(venue.balance(asset)))
        expected = baseline.get(asset, Decimal(0)) + sum((pf.quantity(i) for i in iids), Decimal(0)) \
            + pending.get(asset, Decimal(0))
        if venue_qty != expected:
            where = str(iids[0]) if len(iids) == 1 else f"{asset} ({', '.join(str(i) for i in iids)})"
            report.differences.append(f"{where}: the venue holds {venue_qty} {asset}, the store {expected}")
    if getattr(venue, "reconcile_cash", True):
        if scoped:  # this venue's share of the book's cash: its instruments' realized PnL less their cost
            mine = [p for (_, iid), p in pf.positions.items() if session.owns(iid)]  # type: ignore[union-attr]
            book_cash = pf.equity_start + sum((p.realized - p.cost for p in mine), Decimal(0))
        else:
            book_cash = pf.equity_start + pf.realized() - sum((p.cost for p in pf.positions.values()), Decimal(0))
        expected_cash = baseline.get(venue.quote, pf.equity_start) + (book_cash - pf.equity_start) \
            + pending.get(venue.quote, Decimal(0))
        venue_cash = Decimal(await _r(venue.balance(venue.quote)))
        if venue_cash != expected_cash:
            where = f"cash at {venue.venue}" if scoped else "cash"
            report.differences.append(f"{where}: the venue holds {venue_cash} {venue.quote}, the store {expected_cash}")
    if session is not None:
        session.last_reconcile_ns = now
        session.reconciles += 1
        session.last_report = report
    return report


# ---------------------------------------------------------------- the session
class VenueSession:
    """The engine's link to its venue: sends submits and cancels, keeps the
    unknown submits and the queued cancels, knows whether the venue is
    throttled or down, and runs reconciliation periodically and after a
    reconnect (see the module docstring for the rules and their sources).

    The engine calls :meth:`submit` (from ``send_pending``, after the commit:
    write-before-send), :meth:`cancel`, and :meth:`tick` once per step. All
    times are engine-clock nanoseconds; nothing sleeps.

    Attributes:
        unknown: ClientOrderId -> :class:`UnknownSubmit`; persisted in the
            store's meta (``unknown_submits``) so a restart keeps waiting.
        cancels: ClientOrderId -> :class:`CancelRequest` (queued while the
            venue is throttled or down, after a cancel timeout, or until an
            unknown submit is resolved).
        throttled_until_ns: engine time until which nothing is sent (HTTP
            429 ``Retry-After``, or an HTTP 418 ban), or None.
        banned: True when that block is a ban (:class:`~core.venue_errors.
            VenueBanned`, HTTP 418), not a rate limit.
        down: True after a disconnect, until a read succeeds again.
        reconciles, reconnects: counters.
        store_failed: True once the store failed: nothing is sent any more.
    """

    def __init__(self, engine: "Engine", config: SessionConfig | None = None, *, venue: Any = None,
                 name: str | None = None, scope: frozenset[Any] | None = None) -> None:
        self.engine = engine
        self.config = config or SessionConfig()
        self._venue: Any = venue
        #: the venue's name on a multi-venue desk (its meta keys carry it), None for the only venue
        self.name = name
        #: the instruments this session's venue trades (None: all of the engine's)
        self.scope = scope
        #: why the venue's task group is failing (``mark_fault``), or None: the header reads DEGRADED
        self.fault: str | None = None
        self.fault_since_ns: int | None = None
        #: True from a fault until the next reconciliation that completes: its working orders are unknown
        self.suspect = False
        #: engine time since which this venue's requests run past the step's budget (``core.venue_hub``), or None
        self.slow_since_ns: int | None = None
        self.unknown: dict[str, UnknownSubmit] = {}
        self.cancels: dict[str, CancelRequest] = {}
        self.throttled_until_ns: int | None = None
        self.banned = False
        self.down = False
        self.down_since_ns: int | None = None
        self.read_failures = 0
        self.retry_at_ns = 0
        self.last_reconcile_ns: int | None = None
        self.reconciles = 0
        self.reconnects = 0
        self.store_failed = False
        self.last_report: ReconcileReport | None = None
        #: closed orders whose cancel/expiry acknowledgement reported more executed than filled:
        #: their fills are still to come (live, or found by reconciliation)
        self.outstanding: set[str] = set()
        self._load_unknown()
        engine.bus.subscribe("OrderCanceled", self._on_closed)
        engine.bus.subscribe("OrderExpired", self._on_closed)

    # ------------------------------------------------------------ state
    @property
    def venue(self) -> Any:
        """The venue adapter this session talks to: its own on a multi-venue
        desk, else the engine's one venue (looked up each time)."""
        return self.engine.venue if self._venue is None else self._venue

    def owns(self, instrument_id: Any) -> bool:
        """True when ``instrument_id`` trades at this session's venue."""
        return self.scope is None or instrument_id in self.scope

    def suspect_venues(self) -> set[str]:
        """``{venue name}`` while this venue's working orders are unknown
        (down, a fault, or not reconciled since), else empty."""
        return {str(self.venue.venue)} if (self.suspect or self.down or self.fault is not None) else set()

    def mark_fault(self, detail: str) -> None:
        """The venue's task group failed or hangs (``desk.live``'s venue
        runner): the header reads DEGRADED, its working orders are shown as
        unknown until a reconciliation completes, an alert says why (once per
        fault). Other venues are not touched."""
        if self.fault is None:
            self.fault_since_ns = self._now()
            working = [o.client_order_id for o in self.engine.working_orders() if self.owns(o.instrument_id)]
            self.engine.alert("WARNING", "VENUE_DEGRADED", (
                f"{self.venue.venue}: {detail}; "
                + (f"working orders unknown until reconciled: {', '.join(working)}" if working
                   else "no working orders")))
        self.fault = detail
        self.suspect = True

    def clear_fault(self) -> None:
        """The venue's task group runs again: reconcile at the next tick
        (the working orders stay unknown until then)."""
        if self.fault is not None:
            self.fault = None
            self.fault_since_ns = None
            self.last_reconcile_ns = None  # due at once

    def _on_closed(self, event: Any) -> None:
        o = self.engine.orders.get(event.client_order_id)
        if o is not None and not self.owns(o.instrument_id):
            return
        if o is not None and o.venue_executed_qty is not None and o.filled_qty < o.venue_executed_qty:
            self.outstanding.add(o.client_order_id)

    def _now(self) -> int:
        return self.engine.clock.timestamp_ns()

    def _load_unknown(self) -> None:
        text = self.engine.store.meta_get(_meta_key(UNKNOWN_META_KEY, self))
        if not text:
            return
        for coid, d in json.loads(text).items():
            self.unknown[coid] = UnknownSubmit(coid, int(d["ts_sent_ns"]), int(d["deadline_ns"]),
                                               int(d["attempts"]), str(d.get("detail", "")))

    def _persist_unknown(self) -> None:
        self.engine.store.meta_set(_meta_key(UNKNOWN_META_KEY, self), json.dumps(
            {c: u.to_json() for c, u in sorted(self.unknown.items())}, sort_keys=True))

    def forget(self, client_order_id: str) -> None:
        """Drop an unknown submit (resolved); persisted at the next commit."""
        if self.unknown.pop(client_order_id, None) is not None:
            self._persist_unknown()

    @property
    def blocked_until_ns(self) -> int | None:
        """Engine time until which nothing may be sent to the venue (HTTP
        429 ``Retry-After``), or None when it is not throttled."""
        t = self.throttled_until_ns
        return t if t is not None and self._now() < t else None

    def venue_state(self) -> tuple[str, int | None]:
        """The venue's connection state as the header shows it, and the
        engine time it refers to (until when for a throttle or a ban, since
        when for a disconnect; None otherwise):

        * ``BANNED`` / ``THROTTLED``: nothing is sent until then (the
          session's block, or the adapter's own ``state`` with its
          ``banned_until_ns`` / ``throttled_until_ns``);
        * ``DISCONNECTED``: the session saw it go down (or the adapter says so);
        * ``DEGRADED``: it answers, but reads are failing and retried, a
          submit's outcome is unknown, or the adapter's market data or order
          updates fell back from their streams to REST polling;
        * ``CONNECTED``: the adapter says so and none of the above;
        * ``""``: a venue without a connection state of its own (the paper
          venue) that is neither blocked nor down.
        """
        v: Any = self.venue
        until = self.blocked_until_ns
        if until is not None:
            return ("BANNED" if self.banned else "THROTTLED"), until
        if self.down:
            return "DISCONNECTED", self.down_since_ns
        if self.fault is not None:
            return "DEGRADED", self.fault_since_ns
        if self.slow_since_ns is not None:
            return "DEGRADED", self.slow_since_ns
        state = getattr(v, "state", None)
        if not isinstance(state, str) or not state:
            return "", None
        if state in ("BANNED", "THROTTLED"):
            t = getattr(v, "banned_until_ns" if state == "BANNED" else "throttled_until_ns", None)
            if isinstance(t, int) and t > self._now():
                return state, t
            state = "CONNECTED"
        if state == "DISCONNECTED":
            return state, getattr(v, "down_since_ns", None)
        streams_down = getattr(v, "md_mode", "ws") == "rest" or getattr(v, "user_mode", "ws") == "rest"
        if state == "CONNECTED" and (self.read_failures or self.unknown or streams_down or self.suspect):
            return "DEGRADED", None  # (suspect: back, but its orders are unknown until the reconciliation)
        return state, None

    def status(self) -> str:
        """One line for the TUI header: ``""`` when all is well on a venue
        without a connection state (paper), else ``"; "``-separated parts:
        ``STORE FAILED``, the venue's state (:meth:`venue_state`: ``BINANCE
        CONNECTED``, ``BINANCE DEGRADED``, ``BINANCE THROTTLED until
        2025-01-01 00:01:00 UTC``, ``BINANCE BANNED until …``, ``IBKR
        DISCONNECTED since …``), the unknown submits and the queued cancels
        (engine clock, UTC)."""
        parts = []
        if self.store_failed:
            parts.append("STORE FAILED")
        name = self.venue.venue
        state, ts = self.venue_state()
        if state in ("BANNED", "THROTTLED"):
            parts.append(f"{name} {state} until {_hms(ts)}")
        elif state == "DISCONNECTED":
            parts.append(f"{name} DISCONNECTED since {_hms(ts)}")
        elif state == "DEGRADED" and self.fault is not None:
            parts.append(f"{name} DEGRADED since {_hms(ts)}")
        elif state == "DEGRADED" and self.slow_since_ns is not None:
            parts.append(f"{name} DEGRADED (slow) since {_hms(ts)}")
        elif state:
            parts.append(f"{name} {state}")
        if self.unknown:
            parts.append(f"{len(self.unknown)} unknown")
        if self.cancels:
            parts.append(f"{len(self.cancels)} cancels queued")
        return "; ".join(parts)

    def _reconciling(self) -> bool:
        v = self.venue
        return hasattr(v, "lookup") and hasattr(v, "order_ids")

    # ------------------------------------------------------------ submits
    async def submit(self, order: "Order") -> None:
        """Send a written (committed) order once.

        Outcomes: sent; ``REJECTED`` without sending when the store failed,
        the venue is throttled or down (the reason says until when); unknown
        on :class:`TransientVenueError` (kept in flight, looked up later, the
        record committed at once); looked up at once on
        :class:`DuplicateClientOrderId`; ``REJECTED`` on 429 (nothing was
        executed), :class:`InsufficientFunds`, :class:`VenueRejected`.
        Raises nothing from the venue; ``StoreError`` when committing an
        unknown record fails.
        """
        await self._send(order, attempt=1)

    def _refusal(self, now: int) -> str | None:
        if self.store_failed:
            return "STORE_FAILED: the desk never trades without its journal"
        until = self.blocked_until_ns
        if until is not None:
            return f"VENUE_THROTTLED: nothing is sent to {self.venue.venue} until {until} ns (Retry-After)"
        if self.down:
            return f"VENUE_DISCONNECTED since {self.down_since_ns} ns: not sent"
        return None

    async def _send(self, order: "Order", attempt: int) -> None:
        e = self.engine
        now = self._now()
        why = self._refusal(now)
        if why is not None:
            close_unplaced(e, order, why, now)
            return
        try:
            await self.venue.submit_order(order)
        except DuplicateClientOrderId as exc:
            self._mark_unknown(order, now, attempt, exc.detail + " (looked up)", commit=False)
            try:
                await self._resolve_one(order, now)
            except VenueError as exc2:
                log.warning("lookup of %s after a duplicate-id reply failed: %s", order.client_order_id, exc2)
        except VenueThrottled as exc:
            self._throttle(now, exc)
            close_unplaced(e, order, f"VENUE_THROTTLED: {exc.detail}", now)
        except TransientVenueError as exc:
            self._mark_unknown(order, now, attempt, exc.detail, commit=True)
            if exc.kind == "disconnected":
                self._went_down(now, exc.detail)
        except VenueError as exc:  # InsufficientFunds, VenueRejected, OrderNotFound: a definite no
            close_unplaced(e, order, f"{type(exc).__name__}: {exc.detail}", now)

    def _mark_unknown(self, order: "Order", now: int, attempt: int, detail: str, commit: bool) -> None:
        coid = order.client_order_id
        u = UnknownSubmit(coid, now, self.config.acceptance_deadline_ns(now), attempt, detail)
        self.unknown[coid] = u
        self._persist_unknown()
        self.engine.alert("WARNING", "SUBMIT_UNKNOWN", (
            f"{coid}: {detail}; it stays in flight and is looked up by ClientOrderId, never resent before "
            f"{u.deadline_ns} ns (request time + recvWindow + backend timeout)"))
        if commit:
            self.engine.flush()  # a crash now must not make it look written-but-never-sent

    async def _resolve_one(self, order: "Order", now: int) -> bool:
        """Look an unknown order up; True when the venue knew it (applied)."""
        known = await _r(self.venue.lookup(order.client_order_id))
        if known is None:
            return False
        apply_venue_report(self.engine, order, known, now)
        self.forget(order.client_order_id)
        req = self.cancels.get(order.client_order_id)
        if req is not None and req.after_resolve:
            del self.cancels[order.client_order_id]
            if order.is_working:
                await self.engine.cancel(order, req.reason)
        return True

    async def _resolve_unknowns(self, now: int) -> None:
        e = self.engine
        cfg = self.config
        for coid, u in list(self.unknown.items()):
            order = e.orders.get(coid)
            if order is None or not order.is_working:
                self.forget(coid)
                continue
            if await self._resolve_one(order, now):
                continue
            if now < u.deadline_ns:
                continue  # not found, but the request may still be accepted: stays unknown
            self.forget(coid)
            waited = (now - u.ts_sent_ns) / NANOS
            req = self.cancels.pop(coid, None)
            why = None
            if req is not None or order.status != OrderStatus.SUBMITTED:
                why = "canceled before it was placed"
            elif e.trading_state == TradingState.HALTED:
                why = "trading is HALTED"
            elif u.attempts >= 2:
                why = "already sent twice"
            elif now - order.ts_init > cfg.resend_unknown_within_ns:
                why = f"older than {cfg.resend_unknown_within_ns / NANOS:g} s"
            if why is not None:
                close_unplaced(e, order, f"NOT_PLACED: not found {waited:g} s after the request "
                                         f"(recvWindow + backend timeout passed); {why}", now)
                continue
            e.alert("WARNING", "SUBMIT_RESENT", (
                f"{coid}: not found {waited:g} s after the request, which can no longer be accepted; "
                f"sent once more under the same ClientOrderId"))
            await self._send(order, attempt=u.attempts + 1)

    # ------------------------------------------------------------ cancels
    async def cancel(self, order: "Order", reason: str) -> None:
        """Send a cancel, or queue it: while the venue is throttled (sent
        when the retry-after has passed), down (sent after the reconnect),
        or the order's submit outcome is unknown (sent once it is found; an
        order never placed is closed instead). A timeout is retried with
        backoff, looking the order up first. Raises nothing from the venue."""
        now = self._now()
        coid = order.client_order_id
        if coid in self.unknown:
            self.cancels[coid] = CancelRequest(coid, reason, now, after_resolve=True)
            return
        until = self.blocked_until_ns
        if until is not None or self.down:
            self.cancels[coid] = CancelRequest(coid, reason, until or now)
            return
        await self._send_cancel(order, reason, 0)

    async def _send_cancel(self, order: "Order", reason: str, failures: int) -> None:
        coid = order.client_order_id
        now = self._now()
        try:
            await self.venue.cancel_order(order, reason)
        except VenueThrottled as exc:
            self._throttle(now, exc)
            self.cancels[coid] = CancelRequest(coid, reason, self.throttled_until_ns or now, failures)
        except TransientVenueError as exc:
            n = failures + 1
            self.cancels[coid] = CancelRequest(coid, reason, now + self.config.backoff_ns(n), n, lookup_first=True)
            log.warning("cancel %s: %s; retried in %g s", coid, exc.detail, self.config.backoff_ns(n) / NANOS)
            if exc.kind == "disconnected":
                self._went_down(now, exc.detail)
        except VenueError as exc:  # OrderNotFound, VenueRejected: the venue's view decides
            log.warning("cancel %s: %s; looking it up", coid, exc.detail)
            self.cancels[coid] = CancelRequest(coid, reason, now, failures, lookup_first=True)
        else:
            self.cancels.pop(coid, None)

    async def _flush_cancels(self, now: int) -> None:
        e = self.engine
        for coid, req in list(self.cancels.items()):
            if req.after_resolve or req.due_ns > now:
                continue
            if self.blocked_until_ns is not None or self.down:
                return
            order = e.orders.get(coid)
            if order is None or not order.is_working:
                del self.cancels[coid]
                continue
            if req.lookup_first and self._reconciling():
                known = await _r(self.venue.lookup(coid))  # raises to tick(): retried with backoff
                if known is None:
                    del self.cancels[coid]
                    close_unplaced(e, order, "NOT_SENT: canceled before it reached the venue", now)
                    continue
                if known.status != "OPEN":
                    del self.cancels[coid]
                    apply_venue_report(e, order, known, now)
                    continue
            del self.cancels[coid]
            await self._send_cancel(order, req.reason, req.failures)

    # ------------------------------------------------------------ throttle, disconnect
    def _throttle(self, now: int, exc: VenueThrottled) -> None:
        until = now + exc.retry_after_ns
        ban = is_ban(exc)
        if self.throttled_until_ns is None or until > self.throttled_until_ns or (ban and not self.banned):
            fresh = self.blocked_until_ns is None or (ban and not self.banned)
            self.throttled_until_ns = max(until, self.throttled_until_ns or until)
            self.banned = ban or (self.banned and not fresh)
            if fresh:  # one code for both (policy rules count it); the text says BANNED for a ban
                self.engine.alert("WARNING", "VENUE_THROTTLED", (
                    f"{self.venue.venue}: {'BANNED: ' if ban else ''}{exc.detail}; nothing is sent until "
                    f"{until} ns ({_hms(until)}), cancels queue"))

    def _went_down(self, now: int, detail: str) -> None:
        if not self.down:
            self.down = True
            self.down_since_ns = now
            e = self.engine
            working = [o.client_order_id for o in e.working_orders() if self.owns(o.instrument_id)]
            self.suspect = True
            if getattr(self.venue, "cancel_on_disconnect", False):
                fate = (f"the venue cancels on disconnect: {', '.join(working)} canceled there"
                        if working else "no working orders")
            else:
                fate = (f"may still be working at the venue: {', '.join(working)}" if working
                        else "no working orders")
            e.alert("WARNING", "VENUE_DISCONNECTED", (
                f"{self.venue.venue}: {detail}; {fate}; its orders are reconciled when it is back"))

    def defer_startup(self, exc: VenueError) -> str:
        """The venue could not be reached for the start-up reconciliation:
        treat it as down (or throttled), so nothing is sent to it and the
        reconciliation runs on the first step it answers again (mode
        ``reconnect``). Returns a line for the log."""
        now = self._now()
        if isinstance(exc, VenueThrottled):
            self._throttle(now, exc)
            self.down, self.down_since_ns = True, now  # reconcile once the retry-after has passed
        else:
            self._went_down(now, f"unreachable at start ({exc.detail})")
        line = f"venue unavailable at start ({exc}); reconciliation deferred until it answers"
        log.warning("reconciliation: %s", line)
        return line

    def note_error(self, exc: VenueError, instrument_id: Any = None) -> None:
        """Take note of a venue error met outside the session (e.g. an
        amend): a throttle blocks the venue, a disconnect marks it down.
        ``instrument_id`` is for a group of sessions (ignored here)."""
        now = self._now()
        if isinstance(exc, VenueThrottled):
            self._throttle(now, exc)
        elif isinstance(exc, TransientVenueError) and exc.kind == "disconnected":
            self._went_down(now, exc.detail)
        elif isinstance(exc, TransientVenueError):
            self.read_failures = max(self.read_failures, 1)  # DEGRADED until a tick's reads succeed again

    def _read_failed(self, now: int, exc: TransientVenueError) -> None:
        self.read_failures += 1
        self.retry_at_ns = now + self.config.backoff_ns(self.read_failures)
        log.warning("venue read failed (%d in a row): %s; retry at %d", self.read_failures, exc.detail,
                    self.retry_at_ns)
        if exc.kind == "disconnected":
            self._went_down(now, exc.detail)

    # ------------------------------------------------------------ the step
    async def tick(self) -> None:
        """Once per engine step: send the queued cancels that are due,
        resolve unknown submits by lookup, and reconcile when the interval
        has passed or the venue has just come back. Does nothing while the
        venue is throttled; while it is down it probes with a read after a
        backoff. Read failures are retried with backoff; nothing raises from
        the venue."""
        if not self._reconciling():
            return
        now = self._now()
        if self.throttled_until_ns is not None:
            if now < self.throttled_until_ns:
                return
            self.throttled_until_ns = None
        v: Any = self.venue
        is_connected = getattr(v, "is_connected", None)
        if is_connected is not None and not is_connected():
            since = getattr(v, "down_since_ns", None)  # when the adapter saw it drop (the session sees it now)
            self._went_down(since if isinstance(since, int) and since <= now else now, "the venue session is down")
            return
        if now < self.retry_at_ns:
            return
        try:
            reconnect = self.down
            if reconnect:
                if hasattr(v, "open_orders"):
                    await _r(v.open_orders())
                else:
                    await _r(v.order_ids())
                self.down = False
                self.reconnects += 1
                self.engine.alert("WARNING", "VENUE_RECONNECTED", (
                    f"{v.venue}: back after {(now - (self.down_since_ns or now)) / NANOS:g} s; reconciling"))
            await self._flush_cancels(now)
            await self._resolve_unknowns(now)
            due = self.last_reconcile_ns is None or now - self.last_reconcile_ns >= self.config.reconcile_interval_ns
            if reconnect or due:
                await self.reconcile("reconnect" if reconnect or self.suspect else "periodic")
                if self.fault is None:
                    self.suspect = False  # reconciled after the fault: its orders are known again
            self.read_failures = 0
        except VenueThrottled as exc:
            self._throttle(now, exc)
        except TransientVenueError as exc:
            self._read_failed(now, exc)

    async def reconcile(self, mode: str = "periodic") -> ReconcileReport:
        """Run :func:`reconcile` now and act on it: corrections are logged
        (``reconciliation: ...``) and raised as one alert; a difference not
        seen before halts trading (``governance.halt``) and is added to
        ``engine.unreconciled``.

        Raises:
            TransientVenueError, VenueThrottled: a read failed.
        """
        e = self.engine
        report = await reconcile(e, self.config.max_resend_age_ns, mode=mode, session=self)
        new = [d for d in report.differences if d not in e.unreconciled]
        corrected = report.changed and (new or len(report.lines()) > len(report.differences))
        if corrected:  # a difference already reported (and halted on) is not logged again every check
            lines = [ln for ln in report.lines() if not any(ln.endswith(d) for d in e.unreconciled)]
            for line in lines:
                log.warning("reconciliation (%s): %s", mode, line)
            e.alert("WARNING" if not new else "ERROR", "UNRECONCILED" if new else "RECONCILED",
                    f"{mode}: " + "; ".join(lines)[:2000])
        if new:
            e.unreconciled.extend(new)
            why = "unreconciled difference with the venue: " + "; ".join(new)[:500]
            if self.name is not None:  # one venue of several: only it halts (DESIGN.md section 5)
                await e.governance.halt_venue(self.venue.venue, "reconciliation", why)
            else:
                await e.governance.halt("reconciliation", why)
        return report

    # ------------------------------------------------------------ the store
    async def on_store_failure(self, exc: BaseException) -> None:
        """The store failed (full disk, I/O error): halt trading with an
        alert; the desk never trades without its journal (DESIGN.md section
        5). Sets ``HALTED`` (journaled in memory; the store may never take
        it), drops the queued orders, refuses every later submit, writes the
        ``HALT`` file of the state dir when it can (so a restart stays
        halted until the operator resumes), and cancels the desk's working
        orders at the venue (cancels always pass). Raises nothing."""
        e = self.engine
        self.store_failed = True
        queued, e._to_send = e._to_send, []
        now = self._now()
        for o in queued:  # written (perhaps not even that), never sent: closed here, nothing to ask the venue
            close_unplaced(e, o, "STORE_FAILED: never sent, the journal cannot be written", now)
        log.error("store failed, trading halted: %s", exc)
        try:
            e.governance._set_state(TradingState.HALTED, "store", f"store failed: {exc}")
        except Exception:  # noqa: BLE001 - the halt itself must hold
            e.trading_state = TradingState.HALTED
        e.trading_state = TradingState.HALTED
        try:
            e.alert("ERROR", "STORE_FAILED", f"the journal cannot be written ({exc}); trading HALTED, "
                                             "nothing is sent until the store works and the operator resumes")
        except Exception:  # noqa: BLE001
            log.exception("alert on store failure")
        halt_file = getattr(e, "halt_file", None)
        if halt_file is not None:
            try:
                halt_file.write_text(f"store failed: {exc}\n")
            except OSError:
                pass
        for o in list(e.working_orders()):
            if is_desk_order(o.client_order_id) and o.client_order_id not in e.exempt_orders:
                try:
                    await e.cancel(o, "STORE_FAILED")
                except Exception:  # noqa: BLE001 - best effort
                    log.exception("cancel %s after the store failed", o.client_order_id)
