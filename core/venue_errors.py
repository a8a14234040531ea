"""Venue errors, typed at the venue edge (DESIGN.md section 4).

A venue adapter translates whatever its SDK raises (ccxt's ``RequestTimeout``,
``NetworkError``, ``DDoSProtection``, ``InsufficientFunds``, ``OrderNotFound``,
``InvalidOrder``; ib_async's error codes; the paper venue's faults) into one
of these before it leaves the adapter, so nothing in ``core`` ever imports or
catches an SDK exception.

How the engine treats each (``core.recovery.VenueSession``):

* :class:`TransientVenueError` on a **submit**: the outcome is unknown. The
  order stays in flight (``SUBMITTED``, flagged unknown) and is resolved by
  looking it up by ``ClientOrderId``; **a submit is never retried blindly**.
  On a read or a cancel: retried with backoff on the engine clock.
* :class:`DuplicateClientOrderId` on a submit: the venue already holds an
  order under that id, so the answer is "look it up", never "rejected"
  (Binance ``-2010 Duplicate order sent`` for a ``newClientOrderId`` that is
  still open).
* :class:`VenueThrottled`: the request was refused, not executed (Binance
  HTTP 429 with ``Retry-After``; a repeat while throttled earns HTTP 418 and
  an IP ban). The engine sends nothing to that venue until the retry-after
  has passed on the engine clock; cancels queue meanwhile.
* :class:`VenueBanned` (a ``VenueThrottled``): the venue has banned the
  desk for a while (Binance HTTP 418, an IP ban after repeated 429s). Treated
  like a throttle (nothing sent until it has passed), but the session and
  the header say ``BANNED``.
* :class:`InsufficientFunds`, :class:`VenueRejected`: a definite refusal; the
  order is ``REJECTED`` with the venue's reason.
* :class:`OrderNotFound`: the venue does not know the order (Binance
  ``-2011 Unknown order sent`` on a cancel or a query); the engine looks
  the order up and applies what the venue says.
"""

from __future__ import annotations

#: Binance ``recvWindow`` default (5000 ms): a signed request reaching the venue
#: later than this after its ``timestamp`` is refused, so it can no longer be accepted
RECV_WINDOW_NS = 5_000_000_000
#: Binance: the API answers ``-1007`` ("Send status unknown; execution status
#: unknown") after 10 s while the matching engine may still execute the order
BACKEND_TIMEOUT_NS = 10_000_000_000


class VenueError(Exception):
    """Base of the typed venue errors.

    Attributes:
        venue: the venue's name (``SIM``, ``BINANCE``...).
        detail: what the venue (or the adapter) said, for the log and alerts;
            never a secret.
    """

    def __init__(self, venue: str, detail: str) -> None:
        self.venue = venue
        self.detail = detail
        super().__init__(f"{venue}: {detail}")


class TransientVenueError(VenueError):
    """The call's outcome is unknown or the venue is unreachable for now
    (timeout, connection reset, disconnected, HTTP 5xx, Binance ``-1007``
    "Timeout waiting for response from backend server. Send status unknown;
    execution status unknown.").

    Attributes:
        kind: ``"timeout"`` (the request may have been executed) or
            ``"disconnected"`` (the session is down; every call fails until it
            is back, and the engine reconciles after the reconnect).
    """

    def __init__(self, venue: str, detail: str, kind: str = "timeout") -> None:
        self.kind = kind
        super().__init__(venue, detail)


class OrderNotFound(VenueError):
    """The venue knows no order under the id (Binance ``-2011``/``-2013``)."""


class InsufficientFunds(VenueError):
    """The account lacks the balance for the order (Binance ``-2010`` "Account
    has insufficient balance for requested action")."""


class VenueRejected(VenueError):
    """The venue refused the request for a reason of its own (a filter, a
    closed market, an invalid parameter). A definite answer: nothing was
    executed."""


class DuplicateClientOrderId(VenueError):
    """The venue already holds an order under this ``ClientOrderId``
    (Binance: ``newClientOrderId`` must be unique among open orders, and is
    reusable once the earlier order is filled). Means "look it up", never
    "rejected": the earlier request under that id was executed.

    Attributes:
        client_order_id: the id the venue already holds.
    """

    def __init__(self, venue: str, client_order_id: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(venue, f"an order with client order id {client_order_id} already exists")


class VenueThrottled(VenueError):
    """The venue refused the request for exceeding a rate limit (HTTP 429).
    Nothing was executed.

    Attributes:
        retry_after_ns: how long to send nothing to this venue, in engine-clock
            nanoseconds from the moment the error was raised (Binance's
            ``Retry-After`` header is in seconds).
    """

    #: True for a ban (:class:`VenueBanned`); adapters whose own ban error
    #: cannot subclass ``VenueBanned`` may set it on their class instead
    banned = False

    def __init__(self, venue: str, retry_after_ns: int, detail: str = "rate limited (HTTP 429)") -> None:
        if retry_after_ns < 0:
            raise ValueError(f"retry_after_ns: must be >= 0, got {retry_after_ns}")
        self.retry_after_ns = int(retry_after_ns)
        super().__init__(venue, f"{detail}; retry after {retry_after_ns / 1e9:g} s")


class VenueBanned(VenueThrottled):
    """The venue banned the desk for ``retry_after_ns`` (Binance HTTP 418 "Way
    too many requests; IP banned", sent to a client that keeps sending while
    rate limited; ``Retry-After`` in seconds, bans start at 2 minutes and
    grow up to 3 days). Nothing was executed; the engine sends nothing to the
    venue until it has passed, exactly as for :class:`VenueThrottled`, and
    reports the venue ``BANNED`` (``VenueSession.status``).

    Raises:
        ValueError: a negative ``retry_after_ns`` (from ``VenueThrottled``).
    """

    banned = True

    def __init__(self, venue: str, retry_after_ns: int, detail: str = "IP banned (HTTP 418)") -> None:
        super().__init__(venue, retry_after_ns, detail)


def is_ban(exc: BaseException) -> bool:
    """True when ``exc`` is a venue ban: a :class:`VenueBanned`, or a
    :class:`VenueThrottled` whose class says ``banned = True`` or that carries
    HTTP status 418 (an adapter's own subclass of the 429 error, such as
    ``venues.binance.errors.BinanceBanned``)."""
    if not isinstance(exc, VenueThrottled):
        return False
    return bool(getattr(exc, "banned", False)) or getattr(exc, "status", None) == 418
