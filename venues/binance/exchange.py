"""ccxt's async ``binance`` exchange, subclassed for the desk.

What the subclass changes (ccxt 4.5.90, ``ccxt/async_support/binance.py``):

* **Time** comes from the injected clock: ``milliseconds()`` (which ccxt's
  ``nonce()`` uses for the signed ``timestamp``, less
  ``options['timeDifference']``) reads ``clock.timestamp_ns()``.
* **Every request passes a gate first** (``request()`` is the one entry of
  ccxt's implicit API methods, below every unified method): the adapter's
  callback refuses it while the venue is throttled or banned, or when its
  weight would exceed the desk's per-minute budget, so nothing is sent.
* **Errors are typed from the HTTP status, the headers and Binance's code**
  (``handle_errors`` is ccxt's hook, called with the status, the response
  headers and the body of every response). ccxt 4.5 raises the same
  ``DDoSProtection`` for 429 and 418 and drops the ``Retry-After`` header;
  here they become :class:`~venues.binance.errors.BinanceRateLimited` and
  :class:`~venues.binance.errors.BinanceBanned` carrying ``retry_after_ns``.
  The ``X-MBX-USED-WEIGHT-1M`` header is handed to the weight budget.
* ccxt's own logger (which writes request headers, so the API key, and
  signed queries at DEBUG) is replaced by one held at WARNING.
* The raw ``exchangeInfo`` response is kept (``exchange_info``) for its
  ``rateLimits``, which ccxt's ``fetch_markets`` drops.

Settings made by :func:`make_exchange`: ``enableRateLimit=False`` (the desk's
weight budget on the engine clock keeps the limit, not ccxt's wall-clock
sleeper), ``options['recvWindow']`` explicit (5000 ms by default),
``options['fetchMarkets'] = {'types': [<the market in use>]}``,
``fetchMargins=False`` and ``fetchCurrencies=False`` so a spot desk calls no
futures, margin or ``sapi/capital`` endpoint while loading markets,
``timeDifference`` 0 until measured.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable

import ccxt.pro as ccxt_pro

from core.clock import Clock
from core.venue_errors import DuplicateClientOrderId
from venues.binance.errors import (
    BinanceAuthError,
    BinanceBanned,
    BinanceInsufficientFunds,
    BinanceOrderNotFound,
    BinanceRateLimited,
    BinanceRejected,
    BinanceTimestampError,
    BinanceUnknownOutcome,
    retry_after_ns,
)

#: ccxt ``urls['api']`` keys a spot desk uses: ``public`` (/api/v3 market
#: data, time, exchangeInfo), ``private`` (/api/v3 signed: account, orders,
#: trades, OCO), ``v1`` (/api/v1), ``sapi`` (/sapi/v1: key permissions)
SPOT_API_KEYS = ("public", "private", "v1", "sapi")

#: ccxt ``urls['api']`` keys a USD-M desk uses: ``fapiPublic`` (/fapi/v1
#: market data, time, exchangeInfo), ``fapiPrivate`` (/fapi/v1 signed:
#: orders, trades, income, margin type, leverage, brackets, position mode),
#: ``fapiPrivateV2`` (/fapi/v2 signed: account, positionRisk), ``sapi``
#: (key permissions; absent on demo trading)
USDM_API_KEYS = ("fapiPublic", "fapiPrivate", "fapiPrivateV2", "sapi")

#: Retry-After assumed when Binance omits it (seconds): 60 s for 429 (one
#: weight window), 120 s for 418 (Binance bans start at 2 minutes)
DEFAULT_RETRY_AFTER_429_S = 60
DEFAULT_RETRY_AFTER_418_S = 120

_QUERY_RE = re.compile(r"\?\S*")

#: ccxt's request/response log lines carry the API key header and signed queries: kept at WARNING
_QUIET = logging.getLogger("desk.venues.binance.ccxt")
_QUIET.setLevel(logging.WARNING)

Gate = Callable[[str, str, str, dict], None]


def redact(text: str) -> str:
    """Drop query strings (signed parameters, signatures) from a message
    before it is logged or shown."""
    return _QUERY_RE.sub("?…", text)


class _DeskExchange:
    """What the desk adds to a ccxt Binance exchange class (spot
    :class:`DeskBinance`, USD-M :class:`DeskBinanceUsdm`): the injected
    clock, the request gate, the typed errors and the raw-payload capture
    (see the module docstring). A mixin: it comes before the ccxt class in
    the bases, so its methods override ccxt's.

    Attributes:
        clock: the injected clock (UTC ns).
        venue_name: the desk's venue name used in errors (``BINANCE``).
        The gate (``gate(api, method, path, params)``, called before each
        request; it raises to refuse it, so nothing is sent) and the
        used-weight hook (called with ``X-MBX-USED-WEIGHT-1M`` of each
        response) are set with :meth:`set_hooks` (private attributes: ccxt's
        constructor turns public underscored bound methods into camelCase
        class attributes).
        exchange_info: the last raw ``GET /api/v3/exchangeInfo`` response.
        requests: requests that passed the gate and were sent, as
            ``(method, api, path)``.
        closed_klines: the raw ``k`` objects of closed klines received on the
            WebSocket streams (``"x": true``), exact strings, in arrival
            order; the adapter drains it.
        book_tickers: the last raw ``bookTicker`` event per Binance symbol.
        exec_reports: raw ``executionReport`` events of the user data stream
            (exact strings), in arrival order; the adapter drains it.
        user_subscriptions: confirmed user-data-stream subscriptions so far
            (one more after every reconnect).
    """

    def __init__(self, config: dict[str, Any] | None = None, *, clock: Clock, venue_name: str = "BINANCE",
                 gate: Gate | None = None, on_used_weight: Callable[[int], None] | None = None) -> None:
        self.clock = clock
        self.venue_name = venue_name
        self._gate = gate
        self._on_used_weight = on_used_weight
        self.exchange_info: dict[str, Any] | None = None
        self.requests: list[tuple[str, str, str]] = []
        self.closed_klines: list[dict[str, Any]] = []
        self.book_tickers: dict[str, dict[str, Any]] = {}
        self.exec_reports: list[dict[str, Any]] = []
        self.user_subscriptions = 0
        super().__init__(config or {})  # type: ignore[call-arg]
        # ccxt logs every request's headers (X-MBX-APIKEY) and signed query at DEBUG: never let that through
        self.logger = _QUIET

    def set_hooks(self, gate: Gate | None, on_used_weight: Callable[[int], None] | None) -> None:
        """Set the request gate and the used-weight hook (see the class docstring)."""
        self._gate = gate
        self._on_used_weight = on_used_weight

    # ------------------------------------------------------------ time
    def milliseconds(self) -> int:  # type: ignore[override]
        """Engine-clock milliseconds (ccxt's ``nonce()`` subtracts
        ``options['timeDifference']`` from this for the signed timestamp)."""
        return self.clock.timestamp_ns() // 1_000_000

    def seconds(self) -> int:  # type: ignore[override]
        """Engine-clock seconds."""
        return self.clock.timestamp_ns() // 1_000_000_000

    def microseconds(self) -> int:  # type: ignore[override]
        """Engine-clock microseconds."""
        return self.clock.timestamp_ns() // 1_000

    # ------------------------------------------------------------ requests
    async def request(self, path: str, api: Any = ["public"], method: str = "GET", params: dict | None = None,  # noqa: B006
                      config: dict | None = None) -> Any:
        """ccxt's request, after the gate (which may raise to refuse it)."""
        params = {} if params is None else params
        section = api[0] if isinstance(api, (list, tuple)) else str(api)
        if self._gate is not None:
            self._gate(section, method.upper(), path, params)
        self.requests.append((method.upper(), section, path))
        response = await super().request(path, api, method, params, config or {})  # type: ignore[misc]
        if path == "exchangeInfo" and section in ("public", "fapiPublic") and isinstance(response, dict):
            self.exchange_info = response
        return response

    # ------------------------------------------------------------ streams
    def handle_ohlcv(self, client: Any, message: dict) -> None:  # type: ignore[override]
        """ccxt.pro's kline handler (floats), plus the raw closed kline kept
        with its exact strings."""
        super().handle_ohlcv(client, message)  # type: ignore[misc]
        k = message.get("k") if isinstance(message, dict) else None
        if isinstance(k, dict) and k.get("x") is True and message.get("e") == "kline":
            self.closed_klines.append(k)

    def handle_bids_asks(self, client: Any, message: Any) -> None:  # type: ignore[override]
        """ccxt.pro's bookTicker handler, plus the raw event kept per symbol."""
        super().handle_bids_asks(client, message)  # type: ignore[misc]
        if isinstance(message, dict) and "s" in message and "b" in message:
            self.book_tickers[str(message["s"])] = message

    def handle_order_update(self, client: Any, message: dict) -> None:  # type: ignore[override]
        """ccxt.pro's order-update handler, plus the raw spot
        ``executionReport`` kept with its exact strings."""
        if isinstance(message, dict) and message.get("e") == "executionReport":
            self.exec_reports.append(message)
        super().handle_order_update(client, message)  # type: ignore[misc]

    def handle_user_data_stream_subscribe(self, client: Any, message: dict) -> None:  # type: ignore[override]
        """ccxt.pro's subscription acknowledgement, counted."""
        if isinstance((message or {}).get("result"), dict) and "subscriptionId" in message["result"]:
            self.user_subscriptions += 1
        super().handle_user_data_stream_subscribe(client, message)  # type: ignore[misc]

    # ------------------------------------------------------------ errors
    def handle_errors(self, code: int, reason: str, url: str, method: str, headers: dict, body: str,  # type: ignore[override]
                      response: Any, requestHeaders: Any, requestBody: Any) -> None:
        """Type the error of one response (see the module docstring).

        Raises:
            BinanceRateLimited: HTTP 429 (``retry_after_ns`` from ``Retry-After``).
            BinanceBanned: HTTP 418.
            BinanceTimestampError: ``-1021``.
            DuplicateClientOrderId: ``-2010`` "Duplicate order sent.".
            DuplicateClientOrderId: ``-4116`` (USD-M) "ClientOrderId is duplicated.".
            BinanceInsufficientFunds: ``-2010`` insufficient balance, ``-2019`` (USD-M) margin insufficient.
            BinanceOrderNotFound: ``-2011``, ``-2013``.
            BinanceAuthError: ``-1022``, ``-2014``, ``-2015``, HTTP 401.
            BinanceUnknownOutcome: ``-1007``, ``-1006``, HTTP 5xx.
            BinanceRejected: any other error code or HTTP 4xx.
        """
        if headers and self._on_used_weight is not None:
            for k, v in headers.items():
                if k.lower() == "x-mbx-used-weight-1m":
                    try:
                        self._on_used_weight(int(v))
                    except ValueError:
                        pass
        venue = self.venue_name
        bcode, msg = _code_and_msg(response, body)
        if code == 429:
            raise BinanceRateLimited(venue, retry_after_ns(headers, DEFAULT_RETRY_AFTER_429_S),
                                     f"HTTP 429 {msg or 'too many requests'}", status=429, code=bcode)
        if code == 418:
            raise BinanceBanned(venue, retry_after_ns(headers, DEFAULT_RETRY_AFTER_418_S),
                                f"HTTP 418 {msg or 'IP banned'}", code=bcode)
        if bcode is None or bcode in (0, 200):
            if code >= 500:
                raise BinanceUnknownOutcome(venue, f"HTTP {code} {reason}: execution status unknown")
            if code >= 400:
                raise BinanceRejected(venue, f"HTTP {code} {reason}: {redact(str(body))[:300]}", 0, code)
            return None
        detail = f"{bcode} {msg}"
        if bcode == -1021:
            raise BinanceTimestampError(venue, detail)
        if bcode in (-1006, -1007):
            raise BinanceUnknownOutcome(venue, detail)
        if bcode == -2010:
            if "duplicate" in msg.lower():
                raise DuplicateClientOrderId(venue, _client_id_of(requestBody, url))
            if "insufficient balance" in msg.lower():
                raise BinanceInsufficientFunds(venue, detail)
            raise BinanceRejected(venue, detail, bcode, code)
        if bcode == -4116:  # USD-M futures: "ClientOrderId is duplicated."
            raise DuplicateClientOrderId(venue, _client_id_of(requestBody, url))
        if bcode == -2019:  # USD-M futures: "Margin is insufficient."
            raise BinanceInsufficientFunds(venue, detail)
        if bcode in (-2011, -2013):
            raise BinanceOrderNotFound(venue, detail)
        if bcode in (-1022, -2014, -2015) or code == 401:
            raise BinanceAuthError(venue, detail)
        if code >= 500:
            raise BinanceUnknownOutcome(venue, detail)
        raise BinanceRejected(venue, detail, bcode, code)


class DeskBinance(_DeskExchange, ccxt_pro.binance):  # type: ignore[misc]
    """ccxt's binance (the ``ccxt.pro`` class: async REST plus WebSocket
    streams) with the desk's clock, request gate and typed errors
    (:class:`_DeskExchange`; module docstring). Spot."""


class DeskBinanceUsdm(_DeskExchange, ccxt_pro.binanceusdm):  # type: ignore[misc]
    """ccxt's binanceusdm (USD-M futures, ``/fapi``: async REST plus
    WebSocket streams) with the same clock, gate and typed errors as
    :class:`DeskBinance`; ``exchange_info`` holds the raw ``GET
    /fapi/v1/exchangeInfo``."""


def _code_and_msg(response: Any, body: str | None) -> tuple[int | None, str]:
    doc = response
    if doc is None and body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
    if isinstance(doc, dict) and "code" in doc:
        try:
            return int(doc["code"]), str(doc.get("msg", ""))
        except (TypeError, ValueError):
            return None, str(doc.get("msg", ""))
    return None, ""


def _client_id_of(request_body: Any, url: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    for text in (request_body if isinstance(request_body, str) else "", urlsplit(url).query):
        q = parse_qs(text)
        for key in ("newClientOrderId", "origClientOrderId", "listClientOrderId"):
            if key in q:
                return q[key][0]
    return "?"


def make_exchange(*, clock: Clock, market: str = "spot", testnet: bool = True, recv_window_ms: int = 5000,
                  api_key: str | None = None, secret: str | None = None, urls: dict[str, Any] | None = None,
                  venue_name: str = "BINANCE", gate: Gate | None = None,
                  on_used_weight: Callable[[int], None] | None = None,
                  timeout_ms: int = 10_000) -> DeskBinance | DeskBinanceUsdm:
    """Build the desk's ccxt exchange (see the module docstring).

    Args:
        clock: the engine clock.
        market: ``"spot"`` or ``"usdm"`` (the only market types loaded).
        testnet: spot: ccxt's sandbox (``set_sandbox_mode(True)``,
            testnet.binance.vision); usdm: Binance demo trading
            (``enable_demo_trading(True)``; ccxt 4.5 refuses a futures sandbox).
        recv_window_ms: ``recvWindow`` sent with every signed request (1..60000).
        api_key, secret: credentials (from the environment; never logged).
        urls: replaces ``urls['api']`` entirely (tests point ccxt at a local
            server; keys as in :data:`SPOT_API_KEYS` (spot) or
            :data:`USDM_API_KEYS` (usdm), plus ``ws``: the base of the
            WebSocket streams, e.g. ``ws://127.0.0.1:9/ws``, and ``ws-api``:
            the WebSocket API, e.g. ``ws://127.0.0.1:9/ws-api/v3``).
        gate, on_used_weight: see :class:`DeskBinance`.
        timeout_ms: ccxt's HTTP timeout.

    Raises:
        ValueError: naming the field for a bad ``market`` or ``recv_window_ms``.
    """
    if market not in ("spot", "usdm"):
        raise ValueError(f"market: expected 'spot' or 'usdm', got {market!r}")
    if not 1 <= int(recv_window_ms) <= 60_000:
        raise ValueError(f"recv_window_ms: must be in 1..60000 (Binance's maximum), got {recv_window_ms}")
    config: dict[str, Any] = {
        "enableRateLimit": False,
        "timeout": int(timeout_ms),
        "options": {
            "recvWindow": int(recv_window_ms),
            "fetchMarkets": {"types": ["spot"] if market == "spot" else ["linear"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
            "adjustForTimeDifference": False,
            "timeDifference": 0,
            "defaultType": "spot" if market == "spot" else "swap",
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        },
    }
    if api_key:
        config["apiKey"] = api_key
    if secret:
        config["secret"] = secret
    cls = DeskBinance if market == "spot" else DeskBinanceUsdm
    ex = cls(config, clock=clock, venue_name=venue_name, gate=gate, on_used_weight=on_used_weight)
    if urls is not None:
        api: dict[str, Any] = dict(urls)
        ws, ws_api = api.pop("ws", None), api.pop("ws-api", None)
        if isinstance(ws, str) or isinstance(ws_api, str):
            api["ws"] = {"spot": ws, "margin": ws, "linear": ws, "ws-api": {"spot": ws_api, "linear": ws_api}}
        ex.urls["api"] = api
    elif testnet and market == "spot":
        ex.set_sandbox_mode(True)
    elif testnet:
        ex.enable_demo_trading(True)
    return ex
