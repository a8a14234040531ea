"""Binance errors, typed at the venue edge (DESIGN.md section 4).

Every class here subclasses one of :mod:`core.venue_errors`, so the engine
(``core.recovery.VenueSession``) treats it by its core meaning, and carries
what Binance said (HTTP status, error code, message) for the log and alerts.
ccxt exceptions never leave :mod:`venues.binance`.

Mapping (Binance Spot API docs, "Error codes" and "LIMITS"; ccxt 4.5
``binance.handle_errors`` for the shapes of the responses):

=====================================  ==========================================
what Binance answers                   raised here
=====================================  ==========================================
HTTP 429 + ``Retry-After`` (seconds)   :class:`BinanceRateLimited` (``VenueThrottled``)
HTTP 418 + ``Retry-After`` (IP ban)    :class:`BinanceBanned` (``VenueThrottled``)
``-1021`` timestamp outside recvWindow :class:`BinanceTimestampError` (``VenueRejected``; the request was
                                       refused before execution)
``-1007`` backend timeout, HTTP 5xx    :class:`BinanceUnknownOutcome` (``TransientVenueError``)
``-2010`` "Duplicate order sent."      ``core.venue_errors.DuplicateClientOrderId``
``-2010`` insufficient balance         :class:`BinanceInsufficientFunds` (``InsufficientFunds``)
``-2011`` / ``-2013`` unknown order    :class:`BinanceOrderNotFound` (``OrderNotFound``)
``-2014``/``-2015``/``-1022`` key      :class:`BinanceAuthError` (``VenueRejected``)
any other code                         :class:`BinanceRejected` (``VenueRejected``)
network error / timeout (ccxt)         ``TransientVenueError`` (outcome unknown)
=====================================  ==========================================

Start-up refusals (a key that can withdraw, a non-testnet venue without
``--live``, a symbol not ``TRADING``, missing credentials) raise
:class:`BinanceStartupError`, a :class:`core.errors.ConfigError` (exit 2).
"""

from __future__ import annotations

from core.errors import ConfigError
from core.venue_errors import (
    InsufficientFunds,
    OrderNotFound,
    TransientVenueError,
    VenueBanned,
    VenueRejected,
    VenueThrottled,
)

NANOS_PER_SECOND = 1_000_000_000


class BinanceStartupError(ConfigError):
    """The Binance venue refused to start (exit 2): the message names the
    field or the check and its value, never a secret."""


class BinanceRateLimited(VenueThrottled):
    """HTTP 429: a rate limit was exceeded; nothing was executed. Nothing may
    be sent for ``retry_after_ns`` (Binance ``Retry-After`` header, seconds).

    Attributes:
        status: the HTTP status (429, or 0 when the desk's own weight budget
            refused the request before it was sent).
        code: Binance's error code (``-1003``) or 0.
    """

    def __init__(self, venue: str, retry_after_ns: int, detail: str = "rate limited (HTTP 429)",
                 status: int = 429, code: int = 0) -> None:
        self.status = status
        self.code = code
        super().__init__(venue, retry_after_ns, detail)


class BinanceBanned(BinanceRateLimited, VenueBanned):
    """HTTP 418: the IP is banned for ``retry_after_ns`` after repeated 429s.
    The venue is marked down for the ban period and its orders are refused
    with this reason (a ``VenueThrottled``, so the engine sends nothing until
    it has passed). Core has no separate "banned" base class; see the report
    of the Binance adapter for the suggestion."""

    def __init__(self, venue: str, retry_after_ns: int, detail: str = "IP banned (HTTP 418)", code: int = 0) -> None:
        super().__init__(venue, retry_after_ns, detail, status=418, code=code)


class BinanceTimestampError(VenueRejected):
    """``-1021``: the request's ``timestamp`` was outside ``recvWindow`` of the
    server's clock; the request was refused before it was executed. The
    adapter measures the clock offset (``GET /api/v3/time``) on it."""

    code = -1021


class BinanceUnknownOutcome(TransientVenueError):
    """``-1007`` ("Timeout waiting for response from backend server. Send
    status unknown; execution status unknown.") or an HTTP 5xx: the request
    may have been executed; a submit is resolved by lookup."""


class BinanceInsufficientFunds(InsufficientFunds):
    """``-2010`` "Account has insufficient balance for requested action."."""


class BinanceOrderNotFound(OrderNotFound):
    """``-2011`` "Unknown order sent." (cancel) or ``-2013`` "Order does not
    exist." (query)."""


class BinanceAuthError(VenueRejected):
    """The key or signature was refused (``-2014`` API-key format invalid,
    ``-2015`` invalid API-key, IP, or permissions, ``-1022`` signature not
    valid)."""


class BinanceRejected(VenueRejected):
    """Any other Binance error code: a definite refusal (filters such as
    ``-1013``, parameters such as ``-1102``/``-1111``, ``-2010`` reasons other
    than balance and duplicates).

    Attributes:
        code: Binance's error code (negative int), 0 when absent.
        status: the HTTP status.
    """

    def __init__(self, venue: str, detail: str, code: int = 0, status: int = 400) -> None:
        self.code = code
        self.status = status
        super().__init__(venue, detail)


def retry_after_ns(headers: dict[str, str] | None, default_s: int) -> int:
    """The ``Retry-After`` header (seconds, an integer per RFC 9110; Binance
    sends seconds) as nanoseconds; ``default_s`` when it is absent or not a
    number (Binance documents that it is always sent with 418 and 429).

    >>> retry_after_ns({"Retry-After": "35"}, 60)
    35000000000
    """
    if headers:
        for key, value in headers.items():
            if key.lower() == "retry-after":
                try:
                    seconds = int(str(value).strip())
                except ValueError:
                    break
                if seconds >= 0:
                    return seconds * NANOS_PER_SECOND
                break
    return default_s * NANOS_PER_SECOND
