"""The governance facade: the one entry for every operator command
(keys, CLI, HTTP, Telegram and policy rules alike; DESIGN.md section 3).

Every command is journaled and audited with who, when (engine clock) and
why. ``halt`` sets ``HALTED`` and cancels every working order of the desk,
concurrently (DESIGN.md section 7: 100 cancels awaited one by one took
112 ms, sent concurrently 3-5 ms). Only ``resume`` lifts a halt.
"""

from __future__ import annotations

import asyncio
import logging
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.enums import TradingState
from core.events import AlertRaised, ModelStateChanged, TradingStateChanged
from core.identifiers import is_desk_order

if TYPE_CHECKING:
    from core.engine import Engine


log = logging.getLogger("desk.governance")

#: the ``DAEMON_STOPPED`` alert's message (:meth:`Governance.daemon_stopped`), read back by
#: :mod:`core.rebuild` (the ``STOP`` governance row) and :mod:`core.audit` (actor and reason)
STOP_MESSAGE_RE = re.compile(
    r"^(?P<who>daemon) stopped by (?P<reason>.*): (?P<orders>\d+) working orders (?P<done>canceled|kept) "
    r"\(api\.on_stop=(?P<on_stop>[^)]*)\); (?P<still_working>\d+) still working\Z", re.DOTALL)


class GovernanceError(Exception):
    """An operator command that cannot apply (unknown model, bad state)."""


class Governance:
    """Operator commands against one engine."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    def _record(self, seq: int, ts: int, who: str, action: str, reason: str, details: dict[str, Any]) -> None:
        """Buffer the ``governance_actions`` row of the event journaled at
        ``seq``; ``ts`` (UTC ns) is that event's ``ts_event``, never a second
        clock read, so :mod:`core.rebuild` derives the same row."""
        self.engine.store.record_governance(seq, ts, who, action, reason, details)

    def daemon_stopped(self, why: str, on_stop: str, orders: int, still_working: int) -> tuple[int, str]:
        """Journal the daemon's stop (``desk.daemon``): a ``DAEMON_STOPPED``
        alert (WARNING) and its governance row (who ``daemon``, action
        ``STOP``, reason ``why``, details ``{"on_stop", "orders",
        "still_working"}``), both at one clock read, so the row is the one
        :mod:`core.rebuild` derives from the alert's message
        (:data:`STOP_MESSAGE_RE`). Nothing is committed here.

        Args:
            why: what stopped it (the signal name, ``failure`` or ``stop``).
            on_stop: ``cancel`` (the desk's working orders were canceled) or
                ``keep`` (any other value reads as kept: the stop's last
                commit must not fail over a label; ``desk.config`` checks it).
            orders: how many working orders were canceled (or kept).
            still_working: working orders left after the cancels.

        Returns:
            ``(seq, message)``: the alert's journal sequence and its message.

        Raises:
            ValueError: naming the field, for a negative or non-int count.
        """
        for name, n in (("orders", orders), ("still_working", still_working)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{name}: expected a count (int >= 0), got {n!r}")
        e = self.engine
        done = "canceled" if on_stop == "cancel" else "kept"
        msg = (f"daemon stopped by {why}: {orders} working orders {done} (api.on_stop={on_stop}); "
               f"{still_working} still working")
        now = e.clock.timestamp_ns()
        seq = e.emit(AlertRaised(ts_event=now, ts_init=now, level="WARNING", code="DAEMON_STOPPED", message=msg))
        self._record(seq, now, "daemon", "STOP", why,
                     {"on_stop": on_stop, "orders": orders, "still_working": still_working})
        return seq, msg

    def _set_state(self, state: TradingState, who: str, reason: str) -> bool:
        e = self.engine
        prev = e.trading_state
        if prev == state:
            return False
        e.trading_state = state
        e.store.meta_set("trading_state", state.value)  # survives a restart; only resume lifts it
        now = e.clock.timestamp_ns()
        seq = e.emit(TradingStateChanged(ts_event=now, ts_init=now, state=state.value, previous=prev.value,
                                         who=who, reason=reason))
        self._record(seq, now, who, state.value, reason, {"previous": prev.value})
        return True

    async def halt(self, who: str, reason: str, cancel_stops: bool = False) -> int:
        """Set ``HALTED`` and cancel every working order of the desk
        concurrently, except reduce-only protective stops, which stay unless
        ``cancel_stops`` ("cancel all, stops too"). Orders queued but not
        yet sent never leave: they are canceled locally. Returns the number
        of cancels sent. Idempotent: a halt while halted still cancels
        anything left working."""
        from core.events import OrderCanceled
        from core.orders import STOP_TYPES

        e = self.engine
        self._set_state(TradingState.HALTED, who, reason)
        queued, e._to_send = e._to_send, []
        now = e.clock.timestamp_ns()
        for o in queued:  # written, never sent: nothing to ask the venue
            e._on_venue_event(OrderCanceled(ts_event=now, ts_init=now, client_order_id=o.client_order_id,
                                            instrument_id=o.instrument_id, model_id=o.model_id,
                                            reason="HALT before send"))
        working = [o for o in e.working_orders()
                   if is_desk_order(o.client_order_id) and o.client_order_id not in e.exempt_orders
                   and (cancel_stops or not (o.reduce_only and o.order_type in STOP_TYPES))]
        await asyncio.gather(*(e.cancel(o, "HALT") for o in working))
        e.flush()
        log.warning("trading state HALTED (stored) by %s: %s; %d cancels sent", who, reason, len(working))
        return len(working)

    async def halt_venue(self, venue: str, who: str, reason: str) -> int:
        """A per-venue halt beside the global one: no new order to ``venue``
        (the rails deny them, TRADING_HALTED naming the venue) and every
        working desk order there canceled (protective stops kept). Stored:
        it survives a restart. Returns the number of cancels sent.

        Raises:
            GovernanceError: for a venue the desk does not trade.
        """
        e = self.engine
        venues = {i.venue for i in e.instruments}
        if venue not in venues:
            raise GovernanceError(f"venue: unknown {venue!r}; known: {', '.join(sorted(venues))}")
        from core.orders import STOP_TYPES

        e.halted_venues.add(venue)
        e.store.meta_set("halted_venues", ",".join(sorted(e.halted_venues)))
        now = e.clock.timestamp_ns()
        seq = e.emit(AlertRaised(ts_event=now, ts_init=now, level="WARNING", code="VENUE_HALTED",
                                 message=f"{venue} halted by {who}: {reason}"))
        self._record(seq, now, who, "VENUE_HALTED", reason, {"venue": venue})
        working = [o for o in e.working_orders() if o.instrument_id.venue == venue
                   and is_desk_order(o.client_order_id) and not (o.reduce_only and o.order_type in STOP_TYPES)]
        await asyncio.gather(*(e.cancel(o, f"HALT venue {venue}") for o in working))
        e.flush()
        return len(working)

    def resume_venue(self, venue: str, who: str, reason: str) -> None:
        """Lift a per-venue halt (the global state is not touched)."""
        e = self.engine
        if venue not in e.halted_venues:
            return
        e.halted_venues.discard(venue)
        e.store.meta_set("halted_venues", ",".join(sorted(e.halted_venues)))
        now = e.clock.timestamp_ns()
        seq = e.emit(AlertRaised(ts_event=now, ts_init=now, level="INFO", code="VENUE_RESUMED",
                                 message=f"{venue} resumed by {who}: {reason}"))
        self._record(seq, now, who, "VENUE_RESUMED", reason, {"venue": venue})
        e.flush()

    async def halt_model(self, model_id: str, who: str, reason: str) -> int:
        """A per-model halt: pause the model and cancel its working orders;
        an order netted for several models that includes it is canceled too,
        and the router re-nets it without the model on the next bar.
        Returns the number of cancels sent.

        Raises:
            GovernanceError: for an unknown model id.
        """
        e = self.engine
        self.pause_model(model_id, who, f"HALT: {reason}")
        working = [o for o in e.working_orders()
                   if o.model_id == model_id or (o.allocation and o.allocation.get(model_id))]
        await asyncio.gather(*(e.cancel(o, f"MODEL_HALT {model_id}") for o in working))
        e.flush()
        return len(working)

    async def flatten(self, who: str, reason: str) -> list[dict[str, str]]:
        """Halt, then close each of the desk's positions with a reduce-only
        MARKET order, exempt from the halt gate and the throttles but not
        from the instrument filters. Dust below the step or the minimums is
        reported, not retried.

        Returns one report per (model, instrument) position:
        ``{"model", "instrument", "quantity", "order", "status", "detail"}``.
        """
        from core.enums import OrderSide, OrderType
        from core.values import floor_to_step

        e = self.engine
        # cancel everything, protective stops too: they hold the base the market sells need
        await self.halt(who, f"FLATTEN: {reason}", cancel_stops=True)
        report: list[dict[str, str]] = []
        for (model_id, iid), pos in sorted(e.portfolio.positions.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            if pos.quantity <= 0:
                continue
            inst = e.instruments[iid]
            qty = floor_to_step(pos.quantity, inst.step_size)
            mark = e.portfolio.marks.get(iid)
            row = {"model": model_id, "instrument": str(iid), "quantity": format(pos.quantity, "f"),
                   "order": "", "status": "", "detail": ""}
            if qty <= 0 or mark is None:
                row.update(status="DUST", detail=f"{pos.quantity} is below the step {inst.step_size}")
            else:
                order = e.submit(model_id, iid, OrderSide.SELL, qty, None, mark, OrderType.MARKET,
                                 tags="FLATTEN", exempt=True)
                row.update(order=order.client_order_id, status=order.status.value,
                           detail=order.reason if order.status.value == "DENIED" else f"market sell {qty}")
                if order.status.value == "DENIED":
                    row["status"] = "DUST"
            report.append(row)
        await e.send_pending()
        now = e.clock.timestamp_ns()
        summary = "; ".join(f"{r['model']} {r['instrument']} {r['quantity']}: {r['status']}" for r in report)
        seq = e.emit(AlertRaised(ts_event=now, ts_init=now, level="WARNING", code="FLATTEN",
                                 message=f"flatten by {who}: {summary or 'no positions'}"))
        self._record(seq, now, who, "FLATTEN", reason, {"positions": report})
        e.flush()
        return report

    def reduce_only(self, who: str, reason: str) -> None:
        """Set ``REDUCING``: only exposure-reducing orders pass."""
        self._set_state(TradingState.REDUCING, who, reason)
        self.engine.flush()

    def resume(self, who: str, reason: str) -> None:
        """Return to ``ACTIVE`` (the only way out of a halt)."""
        self._set_state(TradingState.ACTIVE, who, reason)
        self.engine.flush()

    def _model_state(self, model_id: str, paused: bool, who: str, reason: str) -> None:
        e = self.engine
        if model_id not in e.models:
            raise GovernanceError(f"model: unknown {model_id!r}; known: {', '.join(sorted(e.models))}")
        if (model_id in e.paused) == paused:
            return
        (e.paused.add if paused else e.paused.discard)(model_id)
        now = e.clock.timestamp_ns()
        state = "PAUSED" if paused else "ACTIVE"
        seq = e.emit(ModelStateChanged(ts_event=now, ts_init=now, model_id=model_id, state=state, who=who, reason=reason))
        self._record(seq, now, who, f"MODEL_{state}", reason, {"model_id": model_id})
        e.lifecycle.set_paused(model_id, paused, who, reason)
        e.flush()

    def pause_model(self, model_id: str, who: str, reason: str) -> None:
        """Pause a model: it opens no new exposure (its sells still pass).

        Raises:
            GovernanceError: for an unknown model id.
        """
        self._model_state(model_id, True, who, reason)

    def resume_model(self, model_id: str, who: str, reason: str) -> None:
        """Resume a paused model.

        Raises:
            GovernanceError: for an unknown model id.
        """
        self._model_state(model_id, False, who, reason)

    # ------------------------------------------------------------ model lifecycle (issue 7)
    async def promote(self, model_id: str, who: str, reason: str) -> None:
        """Promote a canary to live by hand: the previous live version is
        retired (its position unwound by the router, crossed internally with
        the new live version where they overlap). Logged as ``[CANARY]
        PROMOTED <id>``, journaled and audited with who and why.

        Raises:
            GovernanceError: unknown model, or not a canary.
        """
        self._lifecycle_command("promote", model_id, who, reason)

    async def rollback(self, model_id: str, who: str, reason: str) -> None:
        """Roll a canary back by hand (retired; its position unwound).
        Logged as ``[CANARY] ROLLED BACK <id>``.

        Raises:
            GovernanceError: unknown model, or not a canary.
        """
        self._lifecycle_command("rollback", model_id, who, reason)

    def _lifecycle_command(self, action: str, model_id: str, who: str, reason: str) -> None:
        from core.lifecycle import LifecycleError

        try:
            self.engine.lifecycle.decide_by_hand(action, model_id, who, reason)
        except LifecycleError as exc:
            raise GovernanceError(str(exc)) from None
        self.engine.flush()

    def set_weights(self, weights: dict[str, Decimal | None], who: str, reason: str) -> None:
        """Pin stage weights by hand (fractions 0..1; DESIGN.md section 3):
        each pins the model's stage weight and pauses canary stepping for it
        until cleared with ``None``. All ids and values are checked before
        anything changes.

        Raises:
            GovernanceError: an unknown or retired model, or a weight outside
                [0, 1]; nothing is changed.
        """
        from core.lifecycle import LifecycleError

        lc = self.engine.lifecycle
        for mid, w in weights.items():
            try:
                rec = lc.record(mid)
            except LifecycleError as exc:
                raise GovernanceError(str(exc)) from None
            if rec.stage == "retired":
                raise GovernanceError(f"model {mid}: retired; its weight cannot be set")
            if w is not None and (not isinstance(w, Decimal) or not w.is_finite() or not 0 <= w <= 1):
                raise GovernanceError(f"weights.{mid}: expected a fraction in [0, 1] or null, got {w!r}")
        for mid, w in weights.items():
            lc.set_weight(mid, w, who, reason)
        self.engine.flush()
