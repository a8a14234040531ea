"""Start-up reconciliation with the venue (DESIGN.md section 5; issue 5).

After the engine rebuilt its state from its store, it asks the venue about
every order it believes may still trade, and about every order of the desk
the venue knows, then compares balances:

* an order the venue knows better wins: its acknowledgement, its fills (a
  missed fill is applied once, by ``TradeId``) and its final status;
* an order the venue has never seen was written but never sent (the
  process died in between): it is sent once, under the same
  ``ClientOrderId``, if its age on the engine clock is at most
  ``max_resend_age_ns`` (the replay clock does not advance while the process
  is dead); older, it is marked ``REJECTED`` with reason
  ``STALE_AFTER_RESTART``. Never two orders;
* a desk order the venue knows and the store does not, or a balance the
  store cannot explain, raises an alert and halts trading until the
  operator decides (a headless finite run exits 3).

Reference: NautilusTrader's execution reconciliation (mass status at start,
then continuous checks); Binance's guidance to query an order by
``origClientOrderId`` after an unknown submit outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from core.enums import OrderStatus
from core.events import OrderAccepted, OrderCanceled, OrderFilled, OrderRejected
from core.identifiers import is_desk_order

if TYPE_CHECKING:
    from core.engine import Engine


@dataclass(frozen=True, slots=True)
class VenueOrderReport:
    """What a venue says about one order.

    Attributes:
        client_order_id: ours.
        venue_order_id: the venue's id.
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
    """The lookups reconciliation needs from a venue adapter."""

    def lookup(self, client_order_id: str) -> VenueOrderReport | None:
        """The venue's view of one order, or None if it never saw it."""
        ...

    def order_ids(self) -> list[str]:
        """Every ClientOrderId the venue has seen (open or closed)."""
        ...


@dataclass(slots=True)
class ReconcileReport:
    """What reconciliation did, for the log, the alerts and the TUI.

    ``differences`` lists what it could not explain (non-empty means the
    venue stays halted until the operator decides)."""

    acknowledged: list[str] = field(default_factory=list)
    fills_applied: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    rejected_stale: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when reconciliation corrected anything."""
        return bool(self.acknowledged or self.fills_applied or self.canceled or self.resent
                    or self.rejected_stale or self.differences)

    def lines(self) -> list[str]:
        """Human-readable lines, one per non-empty category."""
        out = []
        for name in ("acknowledged", "fills_applied", "canceled", "resent", "rejected_stale"):
            items = getattr(self, name)
            if items:
                out.append(f"{name.replace('_', ' ')}: {', '.join(items)}")
        out += [f"UNRECONCILED: {d}" for d in self.differences]
        return out


async def reconcile(engine: "Engine", max_resend_age_ns: int) -> ReconcileReport:
    """Reconcile ``engine`` with its venue (see the module docstring).

    Venue events go through the engine's normal path (``_on_venue_event``),
    so they are journaled, audited and booked exactly like live ones, and a
    fill already applied (same ``TradeId``) changes nothing.
    """
    venue = engine.venue
    report = ReconcileReport()
    now = engine.clock.timestamp_ns()
    to_resend = []
    for order in list(engine.working_orders()):
        coid = order.client_order_id
        known = venue.lookup(coid)  # type: ignore[attr-defined]
        if known is None:
            if order.status == OrderStatus.SUBMITTED:
                age = now - order.ts_init
                if age <= max_resend_age_ns:
                    to_resend.append(order)
                    report.resent.append(coid)
                else:
                    engine._on_venue_event(OrderRejected(
                        ts_event=now, ts_init=now, client_order_id=coid, instrument_id=order.instrument_id,
                        model_id=order.model_id, reason="STALE_AFTER_RESTART"))
                    report.rejected_stale.append(coid)
            else:
                report.differences.append(f"{coid} is {order.status.value} in the store but unknown to the venue")
            continue
        common = dict(ts_event=now, ts_init=now, client_order_id=coid, instrument_id=order.instrument_id,
                      model_id=order.model_id)
        if order.status == OrderStatus.SUBMITTED:
            engine._on_venue_event(OrderAccepted(**common, venue_order_id=known.venue_order_id))
            report.acknowledged.append(coid)
        for fill in known.fills:
            if fill.trade_id not in order.trade_ids:
                engine._on_venue_event(fill)
                report.fills_applied.append(f"{coid}/{fill.trade_id}")
        if known.status in ("CANCELED", "EXPIRED") and order.is_working:
            engine._on_venue_event(OrderCanceled(**common, reason=known.reason or known.status))
            report.canceled.append(coid)
        elif known.status == "REJECTED" and order.is_working:
            engine._on_venue_event(OrderRejected(**common, reason=known.reason or "REJECTED"))
    engine.flush()
    stored = {r[0] for r in engine.store.conn.execute("SELECT client_order_id FROM orders")}
    for coid in venue.order_ids():  # type: ignore[attr-defined]
        if is_desk_order(coid) and coid not in engine.orders and coid not in stored:
            report.differences.append(f"the venue has desk order {coid} that the store does not know")
    engine.flush()
    for order in to_resend:
        await venue.submit_order(order)
    for iid, inst in engine.instruments.items():
        venue_qty = venue.balance(inst.base)
        book_qty = engine.portfolio.quantity(iid)
        if venue_qty != book_qty:
            report.differences.append(f"{iid}: the venue holds {venue_qty} {inst.base}, the store {book_qty}")
    pf = engine.portfolio
    book_cash = pf.equity_start + pf.realized() - sum((p.cost for p in pf.positions.values()), Decimal(0))
    venue_cash = venue.balance(venue.quote)
    if venue_cash != book_cash:
        report.differences.append(f"cash: the venue holds {venue_cash} {venue.quote}, the store {book_cash}")
    return report
