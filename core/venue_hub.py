"""Several venues under one engine (issue 6, "Isolation"; DESIGN.md section
5, Venues): a venue that fails is isolated, its orders are marked unknown and
reconciled when it comes back, the other venues keep trading.

* :class:`VenueHub` is the engine's one execution client
  (``core.engine.ExecutionClient``) over several venue adapters: each order,
  cancel, amend and bar goes to the adapter that trades its instrument.
* :class:`SessionGroup` is the engine's ``session`` on such a desk: one
  :class:`core.recovery.VenueSession` per venue (its own unknown submits,
  queued cancels, throttle or ban, disconnect, periodic reconciliation,
  reconciliation baseline), each ticked on its own so an exception in one
  venue's reads never stops another's. A reconciliation difference halts
  only that venue (``Governance.halt_venue``).

The venue's background work (its bar feed, its order updates, its
housekeeping) runs in one task group per venue, supervised by
``desk.live``; a failing or hanging group calls
:meth:`SessionGroup.mark_fault` and the header reads ``<venue> DEGRADED``.

Names: a venue is named by its adapter's ``venue`` (the ``VENUE`` part of
``SYMBOL.VENUE``); two adapters of one desk must have different names.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterable

from core.data import Bar
from core.events import Event
from core.identifiers import InstrumentId

if TYPE_CHECKING:  # pragma: no cover
    from core.engine import Engine
    from core.orders import Order
    from core.recovery import ReconcileReport, SessionConfig, UnknownSubmit, VenueSession

log = logging.getLogger("desk.core.venue_hub")

#: seconds one engine step waits for a venue's submits, cancels or reads (``SessionGroup.step_budget_s``)
STEP_BUDGET_S = 1.0


class VenueHub:
    """One execution client over several venue adapters (module docstring).

    Args:
        members: the adapters (each with ``venue``, ``instruments``,
            ``quote``, ``bind``, ``submit_order``, ``cancel_order``), in the
            order the header lists them.

    Attributes:
        members: venue name -> adapter.
        owner: instrument -> venue name.
        venue: the names joined with ``+`` (logs; never an instrument's venue).
        quote: the members' common quote currency, or the first one's when
            they differ (the engine's capital and equity are one number: the
            desk treats USD and USDT alike, as ``core.portfolio`` does).
        supports_modify: False: amends go to each adapter's ``modify_order``
            when it has one (the emulator then cancels and replaces).

    Raises:
        ValueError: no member, two members with one name, or an instrument
            traded at two members (naming them).
    """

    supports_modify = False

    def __init__(self, members: Iterable[Any]) -> None:
        self.members: dict[str, Any] = {}
        for m in members:
            name = str(m.venue)
            if name in self.members:
                raise ValueError(f"venues: two venues are named {name!r}; give each its own name")
            self.members[name] = m
        if not self.members:
            raise ValueError("venues: no venue")
        self.owner: dict[InstrumentId, str] = {}
        for name, m in self.members.items():
            for iid in m.instruments:
                if iid in self.owner:
                    raise ValueError(f"venues: {iid} is traded at both {self.owner[iid]} and {name}")
                self.owner[iid] = name
        self.venue = "+".join(self.members)
        quotes = [str(getattr(m, "quote", "")) for m in self.members.values()]
        self.quote = quotes[0]

    # ------------------------------------------------------------ the client
    @property
    def instruments(self) -> dict[InstrumentId, Any]:
        """Every member's instruments (instrument id -> ``Instrument``)."""
        out: dict[InstrumentId, Any] = {}
        for m in self.members.values():
            out.update(m.instruments)
        return out

    def member(self, instrument_id: InstrumentId) -> Any:
        """The adapter trading ``instrument_id``.

        Raises:
            KeyError: an instrument no member trades (naming it)."""
        try:
            return self.members[self.owner[instrument_id]]
        except KeyError:
            raise KeyError(f"no venue of this desk trades {instrument_id}") from None

    def bind(self, on_event: Callable[[Event], None]) -> "VenueHub":
        """Bind every member to the engine's report callback; returns the hub
        (the engine's ``venue_factory``)."""
        for m in self.members.values():
            m.bind(on_event)
        return self

    async def submit_order(self, order: "Order") -> None:
        """Send ``order`` to its instrument's venue (errors are that venue's)."""
        await self.member(order.instrument_id).submit_order(order)

    async def cancel_order(self, order: "Order", reason: str = "") -> None:
        """Cancel ``order`` at its instrument's venue."""
        await self.member(order.instrument_id).cancel_order(order, reason)

    async def modify_order(self, order: "Order", quantity: Decimal | None, price: Decimal | None,
                           trigger_price: Decimal | None = None) -> None:
        """Amend at the order's venue.

        Raises:
            VenueRejected: that venue cannot amend (the engine reports a
                modify rejection)."""
        amend = getattr(self.member(order.instrument_id), "modify_order", None)
        if amend is None:
            from core.venue_errors import VenueRejected

            raise VenueRejected(f"venue {self.owner[order.instrument_id]} cannot amend")
        await amend(order, quantity, price, trigger_price)

    def on_bar(self, bar: Bar) -> None:
        """Hand ``bar`` to its venue (a paper venue matches on it)."""
        m = self.members.get(self.owner.get(bar.instrument_id, ""))
        hook = getattr(m, "on_bar", None)
        if hook is not None:
            hook(bar)

    def cancel_all(self, reason: str) -> int:
        """Each member's ``cancel_all``; the number canceled in total."""
        return sum(int(m.cancel_all(reason)) for m in self.members.values() if hasattr(m, "cancel_all"))

    def balance(self, asset: str) -> Decimal:
        """The sum of the members' cached balances of ``asset`` (base units
        or quote; summaries only: reconciliation asks each venue itself).
        The hub's :attr:`quote` is the desk's one cash currency: asked for
        it, each member counts its own quote (IBKR's USD plus Binance's USDT,
        as the equity adds them), not only the members quoted in it."""
        total = Decimal(0)
        for m in self.members.values():
            own = str(getattr(m, "quote", "") or asset) if asset == self.quote else asset
            try:
                v = m.balance(own)
            except (KeyError, ValueError):
                continue
            if isinstance(v, Decimal):
                total += v
        return total

    def commit(self) -> None:
        """Commit every member's own ledger (the paper venue's books)."""
        for m in self.members.values():
            commit = getattr(m, "commit", None)
            if commit is not None:
                commit()

    async def close(self) -> None:
        """Close every member (its sessions or connection); a failure to
        close one is logged and the others are still closed."""
        import inspect

        for name, m in self.members.items():
            close = getattr(m, "close", None)
            if close is None:
                continue
            try:
                r = close()
                if inspect.isawaitable(r):
                    await r
            except Exception as exc:  # noqa: BLE001 - the others must still be closed
                log.warning("closing venue %s: %s", name, exc)

    def is_connected(self) -> bool:
        """True when every member with a connection state is connected."""
        return all(bool(getattr(m, "is_connected", lambda: True)()) for m in self.members.values())


class SessionGroup:
    """The engine's ``session`` on a multi-venue desk: one
    ``core.recovery.VenueSession`` per venue, with the surface the engine,
    the API, the policy and the TUI use (module docstring).

    Args:
        engine: the engine (its ``venue`` is a :class:`VenueHub`).
        config: the sessions' timings (``core.recovery.SessionConfig``).

    Attributes:
        sessions: venue name -> its session, in the hub's order.
    """

    def __init__(self, engine: "Engine", config: "SessionConfig | None" = None) -> None:
        from core.recovery import VenueSession

        hub: VenueHub = engine.venue
        self.engine = engine
        self.sessions: dict[str, VenueSession] = {
            name: VenueSession(engine, config, venue=m, name=name,
                               scope=frozenset(i for i, n in hub.owner.items() if n == name))
            for name, m in hub.members.items()
        }
        self.config = next(iter(self.sessions.values())).config
        #: seconds a step waits for one venue's submits, cancels or reads before it goes on without them
        self.step_budget_s = STEP_BUDGET_S
        #: venue name -> its last submit/tick task: a venue's submits and reads run one after the other
        #: (a reconciliation never looks at an order whose submit is still on its way), apart from the others
        self._tails: dict[str, asyncio.Task[None]] = {}
        #: venue name -> the task still running past the budget (the venue is slow: DEGRADED)
        self._slow: dict[str, asyncio.Task[None]] = {}

    def of(self, instrument_id: InstrumentId) -> "VenueSession":
        """The session of ``instrument_id``'s venue."""
        return self.sessions[self.engine.venue.owner[instrument_id]]

    # ------------------------------------------------------------ isolation in time
    async def _guarded(self, name: str, coro: Any) -> None:
        """Run one venue's work; its failure stays its own: ``StoreError``
        halts the desk (``on_store_failure``), anything else is logged and
        marks that venue DEGRADED."""
        from core.store import StoreError

        try:
            await coro
        except StoreError as exc:
            await self.on_store_failure(exc)
        except Exception as exc:  # noqa: BLE001 - one venue's failure must not stop the others
            log.exception("venue %s: session work failed", name)
            self.sessions[name].mark_fault(f"session failed: {type(exc).__name__}: {exc}")

    def _chain(self, name: str, make: Callable[[], Any]) -> "asyncio.Task[None]":
        """Start ``make()`` on venue ``name`` after its previous submit or
        tick has finished (one at a time per venue); returns the task."""
        prev = self._tails.get(name)

        async def run() -> None:
            if prev is not None and not prev.done():
                await asyncio.wait({prev})
            await self._guarded(name, make())

        task = asyncio.ensure_future(run())
        self._tails[name] = task
        return task

    async def _within_budget(self, tasks: dict[str, "asyncio.Task[None]"]) -> None:
        """Wait for ``tasks`` (venue name -> its work) at most
        ``step_budget_s``: a venue whose work is still running after that is
        slow (DEGRADED, :meth:`venue_states`); it goes on in the background
        and the step goes on without it."""
        if not tasks:
            return
        _, pending = await asyncio.wait(set(tasks.values()), timeout=self.step_budget_s)
        for name, t in tasks.items():
            if t in pending:
                if name not in self._slow:
                    self.sessions[name].slow_since_ns = self.engine.clock.timestamp_ns()
                    log.warning("venue %s: its requests take longer than %g s; the other venues go on",
                                name, self.step_budget_s)
                self._slow[name] = t
                t.add_done_callback(lambda _t, n=name: self._unslow(n, _t))

    def _unslow(self, name: str, task: "asyncio.Task[None]") -> None:
        if self._slow.get(name) is task:
            del self._slow[name]
            self.sessions[name].slow_since_ns = None

    # ------------------------------------------------------------ sending
    async def submit(self, order: "Order") -> None:
        """``VenueSession.submit`` at the order's venue, after that venue's
        earlier submits and reads; waits at most ``step_budget_s`` (a venue
        that hangs does not hold the others' orders: see :meth:`submit_batch`)."""
        name = self.engine.venue.owner[order.instrument_id]
        await self._within_budget({name: self._chain(name, lambda: self.sessions[name].submit(order))})

    async def submit_batch(self, orders: list["Order"]) -> None:
        """Send a step's orders: each venue's in order, one after the other,
        the venues side by side; waits at most ``step_budget_s`` for the
        slowest (the rest goes on in the background, the venue reads
        DEGRADED meanwhile). Raises nothing from the venues."""
        by_venue: dict[str, list["Order"]] = {}
        for o in orders:
            by_venue.setdefault(self.engine.venue.owner[o.instrument_id], []).append(o)

        def sender(name: str, batch: list["Order"]) -> Callable[[], Any]:
            async def send() -> None:
                for o in batch:
                    await self.sessions[name].submit(o)
            return send

        await self._within_budget({n: self._chain(n, sender(n, b)) for n, b in by_venue.items()})

    async def cancel(self, order: "Order", reason: str) -> None:
        """``VenueSession.cancel`` at the order's venue, at once (cancels are
        not queued behind submits: a kill reaches every venue in parallel);
        waits at most ``step_budget_s``."""
        name = self.engine.venue.owner[order.instrument_id]
        task = asyncio.ensure_future(self._guarded(name, self.sessions[name].cancel(order, reason)))
        await self._within_budget({name: task})

    def note_error(self, exc: Exception, instrument_id: InstrumentId | None = None) -> None:
        """``VenueSession.note_error`` at ``instrument_id``'s venue (every
        venue's when it is not given)."""
        targets = [self.of(instrument_id)] if instrument_id is not None else list(self.sessions.values())
        for s in targets:
            s.note_error(exc)  # type: ignore[arg-type]

    def forget(self, client_order_id: str) -> None:
        """Drop an unknown submit wherever it is kept."""
        for s in self.sessions.values():
            s.forget(client_order_id)

    # ------------------------------------------------------------ the step
    async def tick(self) -> None:
        """Each venue's ``tick`` (queued cancels, unknown submits,
        reconciliation), the venues side by side, each after its own earlier
        submits; a venue whose previous tick still runs is skipped. Waits at
        most ``step_budget_s``; an unexpected error in one venue's is logged
        and marks that venue DEGRADED, the others still run. Raises nothing
        (a ``StoreError`` halts through ``on_store_failure``)."""
        tasks = {}
        for name, s in self.sessions.items():
            if name in self._slow:
                continue  # still busy with the last step's work
            tasks[name] = self._chain(name, s.tick)
        await self._within_budget(tasks)

    async def reconcile(self, mode: str = "periodic") -> "ReconcileReport":
        """Reconcile every venue (``VenueSession.reconcile``); one report
        with every venue's findings. A venue whose read fails is skipped
        (logged) and the others reconcile.

        Raises:
            VenueError: only when every venue's read failed (the last one)."""
        from core.recovery import ReconcileReport
        from core.venue_errors import VenueError

        merged = ReconcileReport(mode=mode)
        failed: VenueError | None = None
        for name, s in self.sessions.items():
            try:
                r = await s.reconcile(mode)
            except VenueError as exc:
                log.warning("reconciliation of %s: %s", name, exc)
                failed = exc
                continue
            for f in ("acknowledged", "fills_applied", "canceled", "resent", "rejected_stale", "unknown",
                      "differences"):
                getattr(merged, f).extend(getattr(r, f))
        if failed is not None and len(self.sessions) == 1:
            raise failed
        return merged

    async def recover(self, max_resend_age_ns: int) -> list[str]:
        """The start-up reconciliation of each venue (``core.recovery.
        reconcile`` in ``startup`` mode, scoped to it): a venue that cannot
        be reached is deferred (treated as down, reconciled when it answers)
        while the others go on; a difference halts that venue only. Returns
        the report lines, each prefixed with its venue."""
        from core.recovery import reconcile
        from core.venue_errors import VenueError

        e = self.engine
        out: list[str] = []
        for name, s in self.sessions.items():
            if not s._reconciling():
                continue
            try:
                report = await reconcile(e, max_resend_age_ns, session=s)
            except VenueError as exc:
                out.append(f"{name}: {s.defer_startup(exc)}")
                continue
            lines = report.lines()
            for line in lines:
                log.warning("reconciliation %s: %s", name, line)
            if report.changed:
                e.alert("WARNING" if not report.differences else "ERROR",
                        "UNRECONCILED" if report.differences else "RECONCILED",
                        f"{name}: " + "; ".join(lines)[:2000])
            if report.differences:
                e.unreconciled.extend(report.differences)
                await e.governance.halt_venue(name, "reconciliation", "unreconciled difference with the venue: "
                                              + "; ".join(report.differences)[:500])
            out += [f"{name}: {ln}" for ln in lines]
        return out

    async def on_store_failure(self, exc: BaseException) -> None:
        """Every session refuses to send; the first one halts the engine and
        cancels the desk's working orders (each at its own venue)."""
        for s in self.sessions.values():
            s.store_failed = True
        await next(iter(self.sessions.values())).on_store_failure(exc)

    def defer_startup(self, exc: Exception) -> str:
        """Every venue treated as unreachable at start (the engine's
        ``recover`` uses :meth:`recover` instead)."""
        return "; ".join(s.defer_startup(exc) for s in self.sessions.values())  # type: ignore[arg-type]

    # ------------------------------------------------------------ faults
    def mark_fault(self, name: str, detail: str) -> None:
        """Venue ``name``'s task group failed or hangs (``VenueSession.mark_fault``)."""
        self.sessions[name].mark_fault(detail)

    def clear_fault(self, name: str) -> None:
        """Venue ``name``'s task group runs again (``VenueSession.clear_fault``)."""
        self.sessions[name].clear_fault()

    def suspect_venues(self) -> set[str]:
        """Venues whose working orders are unknown until reconciled (a fault
        or a disconnect not reconciled yet)."""
        return {n for n, s in self.sessions.items() if s.suspect or s.down or s.fault is not None}

    # ------------------------------------------------------------ views
    @property
    def unknown(self) -> dict[str, "UnknownSubmit"]:
        """Every venue's unknown submits (ClientOrderId -> record)."""
        out: dict[str, Any] = {}
        for s in self.sessions.values():
            out.update(s.unknown)
        return out

    @property
    def cancels(self) -> dict[str, Any]:
        """Every venue's queued cancels."""
        out: dict[str, Any] = {}
        for s in self.sessions.values():
            out.update(s.cancels)
        return out

    @property
    def down(self) -> bool:
        """True when every venue is down (one venue down is a DEGRADED desk,
        not a down one: ``venue_states`` says which)."""
        return all(s.down for s in self.sessions.values())

    @property
    def store_failed(self) -> bool:
        """True once the store failed."""
        return any(s.store_failed for s in self.sessions.values())

    @property
    def blocked_until_ns(self) -> int | None:
        """The latest block when every venue is throttled or banned, else None
        (``venue_states`` says which venue is blocked until when)."""
        blocks = [s.blocked_until_ns for s in self.sessions.values()]
        if any(b is None for b in blocks):
            return None
        return max(b for b in blocks if b is not None)

    @property
    def reconciles(self) -> int:
        """Reconciliations run, all venues."""
        return sum(s.reconciles for s in self.sessions.values())

    @property
    def reconnects(self) -> int:
        """Reconnections seen, all venues."""
        return sum(s.reconnects for s in self.sessions.values())

    @property
    def last_report(self) -> "ReconcileReport | None":
        """The most recent report of any venue."""
        reports = [s for s in self.sessions.values() if s.last_report is not None]
        if not reports:
            return None
        return max(reports, key=lambda s: s.last_reconcile_ns or 0).last_report

    def venue_states(self) -> dict[str, tuple[str, int | None]]:
        """Venue name -> ``VenueSession.venue_state()`` (``CONNECTED``,
        ``DEGRADED``, ``THROTTLED``, ``BANNED``, ``DISCONNECTED`` and the
        time it refers to)."""
        return {n: s.venue_state() for n, s in self.sessions.items()}

    def status(self) -> str:
        """The header line: each venue's ``VenueSession.status()`` parts, the
        first naming the venue and its state (an adapter without a connection
        state reads ``<name> OK``), the others (unknown submits, queued
        cancels) prefixed with the venue's name; all joined with ``"; "``
        (the header tones each part)."""
        parts: list[str] = []
        for n, s in self.sessions.items():
            own = [p for p in s.status().split("; ") if p and p != "STORE FAILED"]
            if not own or not own[0].startswith(n + " "):
                own.insert(0, f"{n} OK")
            parts += [own[0]] + [f"{n} {p}" for p in own[1:]]
        if self.store_failed:
            parts.insert(0, "STORE FAILED")
        return "; ".join(parts)
