"""A fault plan for simulated venues (issue 5): the test hook and config
that make the paper venue misbehave the way real venues do.

Off by default: a venue without a plan (``PaperVenue.faults is None``)
behaves exactly as before. With a :class:`PaperFaults` attached, the venue
counts every request it receives and consults the plan at its edge:

* **a submit that times out although the venue accepted it**
  (:meth:`PaperFaults.timeout_submit` with ``accepted=True``): the venue
  accepts and persists the order, at once or ``accept_after_ns`` of engine
  clock later (a request still travelling through the venue's backend), and
  the adapter raises :class:`~core.venue_errors.TransientVenueError`
  (``kind="timeout"``) to the engine; the acceptance report is withheld
  (``withhold="ack"``) or every report of the order is (``"all"``), so only a
  lookup by ``ClientOrderId`` can tell the engine what happened;
* **a submit that times out and was not accepted** (``accepted=False``);
* **a cancel that times out** (:meth:`PaperFaults.timeout_cancel`), applied
  at the venue with its acknowledgement withheld, or not applied;
* **a disconnect** for N ns of engine clock (:meth:`PaperFaults.disconnect`):
  every call raises ``TransientVenueError(kind="disconnected")`` until then,
  and the reports the venue produces meanwhile (fills on bars) are lost, as
  on a dropped user-data stream;
* **HTTP-429 throttling** (:meth:`PaperFaults.throttle`): every call raises
  :class:`~core.venue_errors.VenueThrottled` with the time left until the
  retry-after (ns of engine clock); nothing is executed;
* **venue-side cancels and fills the engine did not ask for** are venue
  actions, not call faults: ``PaperVenue.inject_cancel``,
  ``PaperVenue.inject_fill`` and ``PaperVenue.inject_foreign_order``.

Sources of the timing rules: Binance spot API, "Timing security" (a signed
request is accepted only if it reaches the venue within ``recvWindow``,
default 5000 ms, of its ``timestamp``) and the ``-1007`` error "Timeout
waiting for response from backend server. Send status unknown; execution
status unknown." returned after 10 s while the matching engine may still
execute the order. A delayed acceptance therefore happens at most
``RECV_WINDOW_NS + BACKEND_TIMEOUT_NS`` after the request.

All times are engine-clock nanoseconds (DESIGN.md section 4); nothing here
sleeps or reads the wall clock.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.clock import Clock
from core.venue_errors import BACKEND_TIMEOUT_NS, RECV_WINDOW_NS, TransientVenueError, VenueThrottled

if TYPE_CHECKING:
    from core.events import Event
    from core.orders import Order

__all__ = ["BACKEND_TIMEOUT_NS", "RECV_WINDOW_NS", "PaperFaults", "SubmitFault", "CancelFault", "DelayedSubmit"]

#: the operations a plan can fail (the venue's request types)
OPERATIONS = ("submit", "cancel", "modify", "lookup", "order_ids", "open_orders")


@dataclass(slots=True)
class SubmitFault:
    """One planned submit timeout.

    Attributes:
        client_order_id: the order it applies to, or ``None`` for the next
            submit whatever its id.
        accepted: whether the venue executes the request despite the timeout.
        accept_after_ns: engine-clock delay between the request and its
            acceptance (0: at once).
        withhold: ``"ack"`` withholds the acceptance (or rejection) report,
            ``"all"`` every report of the order until released.
    """

    client_order_id: str | None
    accepted: bool
    accept_after_ns: int = 0
    withhold: str = "ack"


@dataclass(slots=True)
class CancelFault:
    """One planned cancel timeout: ``applied`` tells whether the venue
    canceled the order anyway (its acknowledgement is then withheld)."""

    client_order_id: str | None
    applied: bool


@dataclass(slots=True)
class DelayedSubmit:
    """A submit request still travelling through the venue's backend: it is
    executed at ``due_ns`` (engine clock) from a copy of the order as sent."""

    due_ns: int
    order: "Order"
    withhold: str


@dataclass(slots=True)
class PaperFaults:
    """The fault plan of one simulated venue (see the module docstring).

    Tests build one, attach it (``PaperVenue(..., faults=plan)`` or
    ``venue.set_faults(plan)``), plan faults, and read what the venue saw:

    Attributes:
        calls: requests received per operation (``calls["submit"]``),
            including the ones that failed.
        requests: requests received per ``(operation, client_order_id)``.
        withheld: reports the venue produced but did not deliver (muted, or
            lost while disconnected), in order; ``PaperVenue.release_withheld``
            delivers them late.
        down_until_ns: end of the current disconnect (engine clock) or None.
        throttled_until_ns: end of the current throttle (engine clock) or None.
        retry_after_ns: the ``Retry-After`` the current throttle answers with.

    Raises:
        ValueError: from the planning methods, on impossible plans (negative
            durations, an acceptance later than recvWindow + backend timeout).
    """

    calls: Counter[str] = field(default_factory=Counter)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    withheld: list[Any] = field(default_factory=list)
    down_until_ns: int | None = None
    throttled_until_ns: int | None = None
    submits: list[SubmitFault] = field(default_factory=list)
    cancels: list[CancelFault] = field(default_factory=list)
    delayed: list[DelayedSubmit] = field(default_factory=list)
    muted: dict[str, frozenset[str] | None] = field(default_factory=dict)
    clock: Clock | None = None
    venue: str = "SIM"

    # ------------------------------------------------------------ planning
    def bind(self, clock: Clock, venue: str) -> None:
        """Attach to a venue's engine clock and name (done by the venue)."""
        self.clock = clock
        self.venue = venue

    def _now(self) -> int:
        if self.clock is None:
            raise RuntimeError("PaperFaults: not attached to a venue (bind first)")
        return self.clock.timestamp_ns()

    def timeout_submit(self, *, accepted: bool, accept_after_ns: int = 0, withhold: str = "ack",
                       client_order_id: str | None = None) -> None:
        """Plan a submit timeout for the next submit (or the one of
        ``client_order_id``).

        Args:
            accepted: True: the venue accepts (and persists) the order even
                though the engine gets a timeout; False: nothing happens.
            accept_after_ns: delay of the acceptance in engine-clock ns, at
                most ``RECV_WINDOW_NS + BACKEND_TIMEOUT_NS`` (15 s).
            withhold: ``"ack"`` or ``"all"`` (see :class:`SubmitFault`).

        Raises:
            ValueError: a negative or too-late delay, or an unknown ``withhold``.
        """
        if accept_after_ns < 0 or accept_after_ns > RECV_WINDOW_NS + BACKEND_TIMEOUT_NS:
            raise ValueError(
                f"accept_after_ns: must be within 0..{RECV_WINDOW_NS + BACKEND_TIMEOUT_NS} "
                f"(recvWindow + backend timeout), got {accept_after_ns}")
        if withhold not in ("ack", "all"):
            raise ValueError(f"withhold: 'ack' or 'all', got {withhold!r}")
        self.submits.append(SubmitFault(client_order_id, accepted, int(accept_after_ns), withhold))

    def timeout_cancel(self, *, applied: bool, client_order_id: str | None = None) -> None:
        """Plan a cancel timeout for the next cancel (or the one of
        ``client_order_id``); ``applied``: the venue cancels anyway and
        withholds the acknowledgement."""
        self.cancels.append(CancelFault(client_order_id, applied))

    def disconnect(self, duration_ns: int) -> None:
        """Disconnect from now for ``duration_ns`` of engine clock.

        Raises:
            ValueError: when ``duration_ns`` is not positive.
        """
        if duration_ns <= 0:
            raise ValueError(f"duration_ns: must be positive, got {duration_ns}")
        self.down_until_ns = self._now() + int(duration_ns)

    def throttle(self, retry_after_ns: int) -> None:
        """Answer every call with HTTP 429 for ``retry_after_ns`` of engine
        clock from now (Binance: ``Retry-After`` header).

        Raises:
            ValueError: when ``retry_after_ns`` is not positive.
        """
        if retry_after_ns <= 0:
            raise ValueError(f"retry_after_ns: must be positive, got {retry_after_ns}")
        self.throttled_until_ns = self._now() + int(retry_after_ns)

    # ------------------------------------------------------------ used by the venue
    def connected(self) -> bool:
        """False while a disconnect lasts (engine clock)."""
        return self.down_until_ns is None or self._now() >= self.down_until_ns

    def gate(self, operation: str, client_order_id: str = "") -> None:
        """Count a request, then fail it if the venue is down or throttled.

        Raises:
            TransientVenueError: ``kind="disconnected"`` during a disconnect.
            VenueThrottled: during a throttle, with the ns left until its end.
        """
        self.calls[operation] += 1
        if client_order_id:
            self.requests[(operation, client_order_id)] += 1
        now = self._now()
        if self.down_until_ns is not None:
            if now < self.down_until_ns:
                raise TransientVenueError(self.venue, f"{operation}: disconnected until {self.down_until_ns}",
                                          kind="disconnected")
            self.down_until_ns = None
        if self.throttled_until_ns is not None:
            if now < self.throttled_until_ns:
                raise VenueThrottled(self.venue, self.throttled_until_ns - now)
            self.throttled_until_ns = None

    def take_submit(self, client_order_id: str) -> SubmitFault | None:
        """Remove and return the planned submit fault for this order, if any."""
        for i, f in enumerate(self.submits):
            if f.client_order_id in (None, client_order_id):
                return self.submits.pop(i)
        return None

    def take_cancel(self, client_order_id: str) -> CancelFault | None:
        """Remove and return the planned cancel fault for this order, if any."""
        for i, f in enumerate(self.cancels):
            if f.client_order_id in (None, client_order_id):
                return self.cancels.pop(i)
        return None

    def delay(self, order: "Order", after_ns: int, withhold: str) -> None:
        """Hold a copy of ``order`` as sent; the venue executes it at
        now + ``after_ns``."""
        self.delayed.append(DelayedSubmit(self._now() + after_ns, dataclasses.replace(order), withhold))

    def due(self) -> list[DelayedSubmit]:
        """Remove and return the delayed submits whose time has come, oldest first."""
        now = self._now()
        ready = [d for d in self.delayed if d.due_ns <= now]
        self.delayed = [d for d in self.delayed if d.due_ns > now]
        return sorted(ready, key=lambda d: d.due_ns)

    def mute(self, client_order_id: str, types: frozenset[str] | None) -> None:
        """Withhold reports of ``client_order_id``: those of ``types`` (event
        type names), or all of them when ``types`` is None; adds to what is
        already muted for it."""
        if client_order_id in self.muted:
            cur = self.muted[client_order_id]
            types = None if cur is None or types is None else cur | types
        self.muted[client_order_id] = types

    def unmute(self, client_order_id: str) -> None:
        """Deliver the reports of ``client_order_id`` again."""
        self.muted.pop(client_order_id, None)

    def passes(self, event: "Event") -> bool:
        """Whether a report reaches the engine: False (and kept in
        ``withheld``) while disconnected or when muted."""
        coid = getattr(event, "client_order_id", None)
        if not self.connected():
            self.withheld.append(event)
            return False
        if coid is not None and coid in self.muted:
            types = self.muted[coid]
            if types is None or event.type in types:
                self.withheld.append(event)
                return False
        return True
