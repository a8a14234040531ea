"""Request-weight budget for Binance spot and USD-M futures, kept on the
engine clock.

Binance limits the *weight* of REST requests per IP per minute
(``exchangeInfo.rateLimits``: ``REQUEST_WEIGHT`` / ``MINUTE`` / 1, 1200 in
the 2021 responses, 6000 since August 2023), counted per calendar minute
(the ``X-MBX-USED-WEIGHT-1M`` response header resets at each minute). Going
over earns HTTP 429 with ``Retry-After``; repeating while throttled earns
HTTP 418 and an IP ban. The desk therefore counts the weight of each request
*before* sending it and refuses (with the time until the next minute) one
that would cross the limit, so it stays under the venue's count; ccxt's own
sleeping rate limiter is turned off (``enableRateLimit=False``) because it
sleeps on the wall clock and knows nothing of the engine's.

Endpoint weights (:data:`SPOT_WEIGHTS`) are Binance's documented request
weights for the spot API (Binance Spot API docs, "General endpoints",
"Market data endpoints", "Account endpoints", "Trading endpoints"; the same
numbers ccxt 4.5 encodes as ``cost`` = weight x 0.2 in ``binance.describe``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from core.clock import Clock

NANOS_PER_MINUTE = 60_000_000_000

#: (api section, HTTP method, path) -> request weight; ``("private", "GET",
#: "openOrders")`` weighs 6 with a symbol and 80 without (see :func:`weight_of`)
SPOT_WEIGHTS: Mapping[tuple[str, str, str], int] = {
    ("public", "GET", "ping"): 1,
    ("public", "GET", "time"): 1,
    ("public", "GET", "exchangeInfo"): 20,
    ("public", "GET", "klines"): 2,
    ("public", "GET", "uiKlines"): 2,
    ("public", "GET", "ticker/bookTicker"): 2,
    ("public", "GET", "ticker/price"): 2,
    ("public", "GET", "depth"): 5,
    ("public", "POST", "userDataStream"): 2,
    ("public", "PUT", "userDataStream"): 2,
    ("public", "DELETE", "userDataStream"): 2,
    ("private", "GET", "account"): 20,
    ("private", "GET", "order"): 4,
    ("private", "GET", "openOrders"): 6,
    ("private", "GET", "allOrders"): 20,
    ("private", "GET", "myTrades"): 20,
    ("private", "GET", "orderList"): 4,
    ("private", "GET", "openOrderList"): 6,
    ("private", "POST", "order"): 1,
    ("private", "POST", "orderList/oco"): 1,
    ("private", "DELETE", "order"): 1,
    ("private", "DELETE", "openOrders"): 1,
    ("private", "DELETE", "orderList"): 1,
    ("sapi", "GET", "account/apiRestrictions"): 1,
}

#: USD-M futures (``/fapi``) request weights (Binance Derivatives docs,
#: "USDⓈ-M Futures" REST endpoints, each page's "Request Weight"); new
#: orders weigh 0 on the IP weight limit (they count on the order limits).
#: ``klines`` weighs 5 for limit 500..1000 (1 below 100, 2 below 500): 5 is
#: charged whatever the limit (the heavy side).
FAPI_WEIGHTS: Mapping[tuple[str, str, str], int] = {
    ("fapiPublic", "GET", "ping"): 1,
    ("fapiPublic", "GET", "time"): 1,
    ("fapiPublic", "GET", "exchangeInfo"): 1,
    ("fapiPublic", "GET", "klines"): 5,
    ("fapiPublic", "GET", "ticker/bookTicker"): 2,
    ("fapiPublic", "GET", "premiumIndex"): 1,
    ("fapiPrivateV2", "GET", "account"): 5,
    ("fapiPrivateV2", "GET", "positionRisk"): 5,
    ("fapiPrivate", "GET", "positionSide/dual"): 30,
    ("fapiPrivate", "POST", "marginType"): 1,
    ("fapiPrivate", "POST", "leverage"): 1,
    ("fapiPrivate", "GET", "leverageBracket"): 1,
    ("fapiPrivate", "POST", "listenKey"): 1,  # the user data stream's key: create, keep alive, close
    ("fapiPrivate", "PUT", "listenKey"): 1,
    ("fapiPrivate", "DELETE", "listenKey"): 1,
    ("fapiPrivate", "POST", "order"): 0,
    ("fapiPrivate", "GET", "order"): 1,
    ("fapiPrivate", "DELETE", "order"): 1,
    ("fapiPrivate", "GET", "openOrders"): 1,
    ("fapiPrivate", "GET", "allOrders"): 5,
    ("fapiPrivate", "GET", "userTrades"): 5,
    ("fapiPrivate", "GET", "income"): 30,
}

#: weights that depend on whether a symbol is given (with, without)
_NO_SYMBOL_WEIGHTS: Mapping[tuple[str, str, str], int] = {
    ("private", "GET", "openOrders"): 80,
    ("public", "GET", "ticker/bookTicker"): 4,
    ("public", "GET", "ticker/price"): 4,
    ("fapiPrivate", "GET", "openOrders"): 40,
    ("fapiPublic", "GET", "ticker/bookTicker"): 5,
}

#: weight assumed for an endpoint missing from the table (errs on the heavy side)
UNKNOWN_ENDPOINT_WEIGHT = 20


def weight_of(api: str, method: str, path: str, params: Mapping[str, Any] | None = None) -> int:
    """The request weight of one call (see :data:`SPOT_WEIGHTS`).

    ``api`` is ccxt's section name (``public``, ``private``, ``sapi``...),
    ``method`` the HTTP verb, ``path`` the endpoint path after the version
    (``openOrders``). ``GET /api/v3/klines`` with ``limit`` > 1000 does not
    exist; its weight is 2 whatever the limit. An endpoint not in the table
    weighs :data:`UNKNOWN_ENDPOINT_WEIGHT`.
    """
    key = (api, method.upper(), path)
    if key in _NO_SYMBOL_WEIGHTS and not (params and ("symbol" in params or "symbols" in params)):
        return _NO_SYMBOL_WEIGHTS[key]
    if key in FAPI_WEIGHTS:
        return FAPI_WEIGHTS[key]
    return SPOT_WEIGHTS.get(key, UNKNOWN_ENDPOINT_WEIGHT)


def request_weight_limit(exchange_info: Mapping[str, Any] | None, default: int = 1200) -> int:
    """The per-minute ``REQUEST_WEIGHT`` limit from an exchangeInfo response
    (``rateLimits`` entry with ``rateLimitType`` REQUEST_WEIGHT, interval
    MINUTE; ``limit`` divided by ``intervalNum``), else ``default``.

    Raises:
        ValueError: naming the value when the entry's limit is not a
            positive integer.
    """
    for entry in (exchange_info or {}).get("rateLimits", []) or []:
        if entry.get("rateLimitType") == "REQUEST_WEIGHT" and entry.get("interval") == "MINUTE":
            limit = entry.get("limit")
            n = entry.get("intervalNum", 1) or 1
            if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
                raise ValueError(f"exchangeInfo rateLimits REQUEST_WEIGHT limit: expected a positive integer, "
                                 f"got {limit!r}")
            return limit // int(n)
    return default


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not be sent now: ``retry_after_ns`` until the next
    minute window (engine clock), and a line for the log."""

    retry_after_ns: int
    detail: str


class WeightBudget:
    """The desk's count of request weight in the current calendar minute of
    the engine clock.

    ``limit`` is the venue's per-minute limit; ``headroom`` (a fraction,
    default 0.1) of it is kept free for the requests the desk cannot plan
    (cancels during a halt use :meth:`charge` with ``force=True`` and are
    never refused by the budget). Binance's own count (the
    ``X-MBX-USED-WEIGHT-1M`` header) is taken in with :meth:`observe_used`
    when it is higher than ours (another process on the same IP).

    Raises:
        ValueError: at construction for a limit < 1 or a headroom outside
            [0, 1).
    """

    def __init__(self, clock: Clock, limit: int = 1200, headroom: float = 0.1) -> None:
        if limit < 1:
            raise ValueError(f"weight limit: must be >= 1, got {limit}")
        if not 0 <= headroom < 1:
            raise ValueError(f"weight headroom: must be in [0, 1), got {headroom}")
        self.clock = clock
        self.limit = int(limit)
        self.headroom = headroom
        self._window = -1
        self.used = 0
        #: weight refused so far (requests not sent), for the metrics
        self.refused = 0

    @property
    def budget(self) -> int:
        """The weight the desk allows itself per minute: ``limit`` less the headroom."""
        return max(1, int(self.limit * (1 - self.headroom)))

    def _roll(self) -> int:
        now = self.clock.timestamp_ns()
        window = now // NANOS_PER_MINUTE
        if window != self._window:
            self._window = window
            self.used = 0
        return now

    def check(self, weight: int, force: bool = False) -> Refusal | None:
        """A :class:`Refusal` when ``weight`` more would exceed the budget in
        this minute (unless ``force``), else None; nothing is charged."""
        now = self._roll()
        if force or self.used + weight <= self.budget:
            return None
        wait = (self._window + 1) * NANOS_PER_MINUTE - now
        return Refusal(wait, f"request weight budget: {self.used} + {weight} > {self.budget} of "
                             f"{self.limit} per minute; next window in {wait / 1e9:g} s")

    def charge(self, weight: int, force: bool = False) -> Refusal | None:
        """Charge ``weight`` if the budget allows it (or ``force``); returns
        the :class:`Refusal` otherwise (and charges nothing)."""
        refusal = self.check(weight, force)
        if refusal is None:
            self.used += weight
        else:
            self.refused += weight
        return refusal

    def observe_used(self, used: int) -> None:
        """Take in the venue's own count for this minute (``X-MBX-USED-WEIGHT-1M``)
        when it is above ours."""
        self._roll()
        if used > self.used:
            self.used = used
