"""The Binance venue adapter (spot), through ccxt's async client.

It implements the engine's venue interface (``core.engine.ExecutionClient``
plus the reads of ``core.recovery.ReconcilingVenue``) the way
``venues.paper.PaperVenue`` does, against the real exchange:

* **Start** (:meth:`BinanceVenue.start`): refuses a venue that is not a
  testnet or demo unless ``live`` is given; reads the key and secret from the
  environment variables the config names (never from the config, never
  logged); loads only the market type in use (no futures or margin call on a
  spot desk); builds the instruments from ``market['info']['filters']``
  (exact strings, ``venues.binance.instruments``), refusing symbols not
  ``TRADING``; reads the account (the first signed request); checks the key's
  permissions (``GET /sapi/v1/account/apiRestrictions``: a key with
  ``enableWithdrawals`` is refused; the spot testnet has no ``/sapi`` and its
  keys cannot withdraw, so the check is skipped there and said so); takes a
  snapshot of the recent orders and fills of each symbol (``allOrders`` +
  ``myTrades``) so reconciliation can be answered at once; returns the
  start-up lines (venue, account, limits, instruments).
* **Orders** carry the desk's ``ClientOrderId`` as ``newClientOrderId``.
  The answer maps through ccxt's unified status (``open`` -> ACCEPTED or,
  with fills, PARTIALLY_FILLED; ``closed`` -> FILLED; ``canceled``;
  ``expired``; ``rejected``) into the events ``PaperVenue`` reports:
  ``OrderAccepted``, ``OrderFilled`` (trade id, quantity, price,
  ``commission`` and ``commissionAsset`` exactly as Binance reports them:
  the base asset on a buy, the quote on a sell, or BNB), ``OrderCanceled``
  / ``OrderExpired`` (with Binance's ``executedQty``), ``OrderRejected``.
  Amounts are read from the raw strings (``order['info']``), never ccxt's
  floats. A definite refusal (filters, balance, closed market) is reported
  as ``OrderRejected``; an unknown outcome raises ``TransientVenueError``.
* **Native OCO** (:meth:`BinanceVenue.submit_oco`, ``POST
  /api/v3/orderList/oco``); everything else is the OMS's emulation
  (``supports_oco`` says which).
* **Order updates** from the user data stream (:meth:`next_order_updates`:
  ccxt.pro ``watch_orders``, on spot a signed
  ``userDataStream.subscribe.signature`` on Binance's WebSocket API; the raw
  ``executionReport`` strings), with a REST reconciliation (:meth:`poll`)
  after every (re)subscription, and REST polling while the stream is down.
  :meth:`poll`: open orders per symbol, each changed order by
  ``origClientOrderId`` and its fills (``myTrades``), then the balances.
* **Market data**: closed bars from the kline streams (:meth:`next_bars`)
  and the best bid/ask from ``bookTicker`` (:meth:`best_bid_ask`) through
  ccxt.pro, exact strings, with REST (:meth:`fetch_bars`,
  :meth:`fetch_best_bid_ask`) as the fallback while a stream is down.
* **Faults**: ``-1021`` -> the clock offset is measured from ``GET
  /api/v3/time`` (half round trip) and applied to the signed timestamp; a
  read is retried once; a submit is resolved by looking it up
  (``GET /api/v3/order?origClientOrderId=``), never resent. HTTP 429 ->
  nothing is sent until ``Retry-After`` has passed on the injected clock;
  HTTP 418 -> the venue is marked down (``VenueStateChanged`` BANNED, an
  ERROR alert) and its orders refused with the reason until the ban ends.
  Network errors and timeouts -> ``TransientVenueError`` (outcome unknown),
  resolved by lookup. Request weight is budgeted per minute of the
  injected clock (``venues.binance.weights``).

Reads the engine calls synchronously (``lookup``, ``order_ids``,
``open_orders``, ``balance``, ``balances``) are answered from what the
adapter has learnt from the venue (start-up snapshot, order answers,
polling). A lookup the adapter cannot answer yet (an order whose submit
outcome is unknown) starts the request in the background and raises
``TransientVenueError`` (the engine's session retries it with backoff); a
"not found" for an unknown submit is only given from a query that started
after the request could no longer be accepted (its time + recvWindow +
the backend timeout). :meth:`lookup_async` is the direct form.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Awaitable, Callable, Mapping

import ccxt.async_support as ccxt_async

from core.clock import Clock
from core.data import Bar
from core.enums import LiquiditySide, OrderSide, OrderType, TimeInForce
from core.events import (
    AlertRaised,
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    VenueStateChanged,
)
from core.identifiers import InstrumentId, is_desk_order
from core.instruments import Instrument
from core.orders import Order, TrailingOffsetType
from core.recovery import VenueOrderReport
from core.values import ZERO, dec_str
from core.venue_errors import (
    BACKEND_TIMEOUT_NS,
    DuplicateClientOrderId,
    OrderNotFound,
    TransientVenueError,
    VenueError,
    VenueRejected,
    VenueThrottled,
)
from venues.binance.errors import (
    BinanceBanned,
    BinanceOrderNotFound,
    BinanceRateLimited,
    BinanceRejected,
    BinanceStartupError,
    BinanceTimestampError,
)
from venues.binance.exchange import DeskBinance, make_exchange, redact
from venues.binance.instruments import instruments_for
from venues.binance.weights import WeightBudget, request_weight_limit, weight_of
from venues.filters import canonical_decimal

log = logging.getLogger("desk.venues.binance")

NANOS_PER_MS = 1_000_000
NANOS_PER_SECOND = 1_000_000_000

#: Binance order statuses in which an order may still trade
_OPEN = frozenset({"NEW", "PARTIALLY_FILLED", "PENDING_NEW"})


@dataclass(frozen=True, slots=True)
class BinanceConfig:
    """One Binance venue, as in ``desk.yaml`` (``venues: [{kind: binance, ...}]``).

    Attributes:
        name: the desk's venue name (``BINANCE``), the ``.VENUE`` of its
            instrument ids.
        market: ``spot`` or ``usdm`` (USD-M perpetuals: the venue built is
            :class:`venues.binance.usdm.BinanceUsdmVenue`).
        testnet: spot: Binance's spot testnet (ccxt sandbox); usdm: demo trading.
        symbols: venue symbols (``BTCUSDT``).
        recv_window_ms: ``recvWindow`` of every signed request (ms, 1..60000).
        api_key_env, api_secret_env: names of the environment variables that
            hold the credentials (the values never appear in config or logs).
        urls: replaces ccxt's ``urls['api']`` (tests: a local server).
        leverage, margin_mode: USD-M settings set at start (``leverage``
            1..125 x, ``margin_mode`` ``isolated`` or ``cross``; None keeps
            the account's setting); refused on spot.
        timeout_ms: HTTP timeout.
        weight_headroom: fraction of the per-minute request-weight limit kept
            unused (0.1 = the desk uses at most 90 %).
        snapshot_orders: at start, read each symbol's recent orders and fills
            (``allOrders``, ``myTrades``: weight 40 per symbol) so that
            reconciliation's lookups are answered at once.
        margin_account: False for spot (long only), True for usdm (the
            engine reads it to allow short positions); set from ``market``.
        funding_poll_ns: usdm: the shortest clock time between two reads of
            the funding payments (``GET /fapi/v1/income``, weight 30).
    """

    name: str = "BINANCE"
    market: str = "spot"
    testnet: bool = True
    symbols: tuple[str, ...] = ("BTCUSDT",)
    recv_window_ms: int = 5000
    api_key_env: str = "BINANCE_API_KEY"
    api_secret_env: str = "BINANCE_API_SECRET"
    urls: Mapping[str, str] | None = None
    leverage: int | None = None
    margin_mode: str | None = None
    timeout_ms: int = 10_000
    weight_headroom: float = 0.1
    snapshot_orders: bool = True
    margin_account: bool = False
    funding_poll_ns: int = 60 * NANOS_PER_SECOND

    def __post_init__(self) -> None:
        if self.market not in ("spot", "usdm"):
            raise BinanceStartupError(f"venues[{self.name}].market: expected 'spot' or 'usdm', got {self.market!r}")
        object.__setattr__(self, "margin_account", self.market == "usdm")
        if self.market == "spot":
            for f in ("leverage", "margin_mode"):
                if getattr(self, f) is not None:
                    raise BinanceStartupError(f"venues[{self.name}].{f}: only for market usdm, got "
                                              f"{getattr(self, f)!r} on spot")
        if self.leverage is not None and (isinstance(self.leverage, bool) or not isinstance(self.leverage, int)
                                          or not 1 <= self.leverage <= 125):
            raise BinanceStartupError(f"venues[{self.name}].leverage: must be an integer 1..125, got "
                                      f"{self.leverage!r}")
        if self.margin_mode is not None and self.margin_mode not in ("isolated", "cross"):
            raise BinanceStartupError(f"venues[{self.name}].margin_mode: expected 'isolated' or 'cross', got "
                                      f"{self.margin_mode!r}")
        if not 1 <= int(self.recv_window_ms) <= 60_000:
            raise BinanceStartupError(f"venues[{self.name}].recv_window_ms: must be 1..60000, got {self.recv_window_ms}")
        if not self.symbols:
            raise BinanceStartupError(f"venues[{self.name}].symbols: at least one symbol is required")
        for env in (self.api_key_env, self.api_secret_env):
            if not env or not env.replace("_", "").isalnum():
                raise BinanceStartupError(f"venues[{self.name}]: {env!r} is not an environment variable name")

    @classmethod
    def from_mapping(cls, cfg: Any) -> "BinanceConfig":
        """From the YAML venue mapping or the config model (attributes of the
        same names; ``kind`` and unknown keys are ignored).

        Raises:
            BinanceStartupError: a bad value, naming the field.
        """
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
        kwargs: dict[str, Any] = {}
        for f in ("name", "market", "testnet", "recv_window_ms", "api_key_env", "api_secret_env", "urls",
                  "leverage", "margin_mode", "timeout_ms"):
            v = get(f, None)
            if v is not None:
                kwargs[f] = v
        symbols = get("symbols", None)
        if symbols is not None:
            if isinstance(symbols, str):
                raise BinanceStartupError(f"venues[{kwargs.get('name', 'BINANCE')}].symbols: expected a list, "
                                          f"got {symbols!r}")
            kwargs["symbols"] = tuple(str(s).upper() for s in symbols)
        if "urls" in kwargs:
            kwargs["urls"] = dict(kwargs["urls"])
        return cls(**kwargs)


@dataclass(slots=True)
class _Tracked:
    """The adapter's view of one desk order at the venue."""

    client_order_id: str
    model_id: str
    instrument_id: InstrumentId
    symbol: str  # ccxt unified
    side: str
    quantity: Decimal
    time_in_force: str = "GTC"
    venue_order_id: str = ""
    status: str = ""  # Binance status; "" before any answer
    executed: Decimal = ZERO
    fills: dict[str, OrderFilled] = field(default_factory=dict)
    accepted_reported: bool = False
    reported: set[str] = field(default_factory=set)  # trade ids reported through on_event
    closed_reported: bool = False
    unknown: bool = False  # the submit's outcome is unknown
    ts_sent_ns: int = 0
    expire_reason: str = ""


class BinanceVenue:
    """A Binance spot venue for the engine (see the module docstring).

    Args:
        config: :class:`BinanceConfig`.
        clock: the engine clock (signed timestamps, Retry-After, weight
            budget, event times all run on it).
        on_event: the engine's report callback; may be set later with
            :meth:`bind` (the engine builds the venue through a factory).
        live: the operator's ``--live``: required when ``testnet`` is false.
        env: where the credentials are read (default ``os.environ``).
        exchange: a prebuilt :class:`~venues.binance.exchange.DeskBinance`
            (tests); by default one is made by ``make_exchange``.

    ``BinanceVenue(config, ...)`` with ``config.market == "usdm"`` builds a
    :class:`venues.binance.usdm.BinanceUsdmVenue` (``__new__`` picks the
    class), so the wiring builds either market the same way.

    Raises:
        BinanceStartupError: at construction, a non-testnet venue without
            ``live``, or a config of the other market for a subclass.
    """

    #: the ``BinanceConfig.market`` this class trades
    MARKET = "spot"
    #: the account kind named in the start-up lines when the account read has no ``accountType``
    ACCOUNT_KIND = "SPOT"

    #: no native amend is used (Binance spot's amend only lowers quantity): the OMS emulates
    supports_modify = False
    #: native OCO (``POST /api/v3/orderList/oco``) on spot
    supports_oco = True
    #: Binance does not cancel orders when the session drops
    cancel_on_disconnect = False
    #: put before every venue trade id this class reports (``OrderFilled.trade_id``): none on spot, so existing
    #: state dirs keep their ids; USD-M's ``F-`` keeps its ids apart from spot's (both count from 1)
    TRADE_ID_PREFIX = ""

    def __new__(cls, config: BinanceConfig, *args: Any, **kwargs: Any) -> "BinanceVenue":
        if cls is BinanceVenue and getattr(config, "market", "spot") == "usdm":
            from venues.binance.usdm import BinanceUsdmVenue

            return object.__new__(BinanceUsdmVenue)
        return object.__new__(cls)

    def __init__(self, config: BinanceConfig, clock: Clock, on_event: Callable[[Event], None] | None = None, *,
                 live: bool = False, env: Mapping[str, str] | None = None, exchange: DeskBinance | None = None) -> None:
        if not config.testnet and not live:
            raise BinanceStartupError(
                f"{config.name}: testnet is false, so this venue trades real money; the desk refuses to start it "
                f"without --live")
        if config.market != self.MARKET:
            raise BinanceStartupError(
                f"venues[{config.name}].market: {config.market!r} given to {type(self).__name__}, which trades "
                f"{self.MARKET!r}")
        self.config = config
        self.venue = config.name
        self.clock = clock
        self.on_event = on_event
        self.live = live
        self._env = env if env is not None else os.environ
        self.budget = WeightBudget(clock, 1200, config.weight_headroom)
        self.ex: DeskBinance | None = exchange
        if exchange is not None:
            exchange.set_hooks(self._gate, self.budget.observe_used)
        self.instruments: dict[InstrumentId, Instrument] = {}
        self.unified: dict[InstrumentId, str] = {}
        self._by_unified: dict[str, InstrumentId] = {}
        #: Binance's symbol (``BTCUSDT``) -> the desk's instrument
        self._by_symbol: dict[str, InstrumentId] = {}
        self.quote = ""
        self.clock_offset_ms = 0
        self.throttled_until_ns: int | None = None
        self.banned_until_ns: int | None = None
        self.state = "DISCONNECTED"
        self.connected = False
        self._orders: dict[str, _Tracked] = {}
        self._reports: dict[str, VenueOrderReport] = {}
        self._absent: dict[str, int] = {}  # coid -> engine time the query that found nothing started
        self._expected: dict[str, int] = {}  # unknown submits of a previous process -> acceptance deadline
        self._open_foreign: dict[str, Decimal] = {}
        self._balances: dict[str, tuple[Decimal, Decimal]] = {}
        self._pending: dict[str, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = False
        self.account_info: dict[str, Any] = {}
        self.rate_limits: list[dict[str, Any]] = []
        #: market data source: "ws" (streams) or "rest" (polling while the streams are down)
        self.md_mode = "ws"
        self._ws_retry_at = 0
        self._last_bar_ts: dict[InstrumentId, int] = {}
        #: order updates: "ws" (user data stream) or "rest" (polling while it is down)
        self.user_mode = "ws"
        self._user_retry_at = 0
        self._user_subs_seen = 0

    # ------------------------------------------------------------ wiring
    def bind(self, on_event: Callable[[Event], None]) -> "BinanceVenue":
        """Set the report callback (the engine's ``venue_factory`` returns the
        started venue bound to the engine's callback)."""
        self.on_event = on_event
        return self

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _now(self) -> int:
        return self.clock.timestamp_ns()

    def _set_state(self, state: str, reason: str, until_ns: int = 0) -> None:
        if state == self.state:
            return
        now = self._now()
        prev, self.state = self.state, state
        self._emit(VenueStateChanged(ts_event=now, ts_init=now, venue=self.venue, state=state, previous=prev,
                                     reason=reason, until_ns=until_ns))

    def _alert(self, level: str, code: str, message: str) -> None:
        now = self._now()
        getattr(log, level.lower() if level != "ERROR" else "error", log.warning)("%s: %s", code, message)
        self._emit(AlertRaised(ts_event=now, ts_init=now, level=level, code=code, message=message))

    # ------------------------------------------------------------ the gate
    def _blocked(self) -> VenueThrottled | None:
        now = self._now()
        if self.banned_until_ns is not None:
            if now < self.banned_until_ns:
                left = self.banned_until_ns - now
                return BinanceBanned(self.venue, left, f"the venue is down: IP banned (HTTP 418) for another "
                                                       f"{left / NANOS_PER_SECOND:g} s; orders refused")
            self.banned_until_ns = None
        if self.throttled_until_ns is not None:
            if now < self.throttled_until_ns:
                left = self.throttled_until_ns - now
                return BinanceRateLimited(self.venue, left, f"rate limited (HTTP 429): nothing is sent for another "
                                                            f"{left / NANOS_PER_SECOND:g} s")
            self.throttled_until_ns = None
        return None

    def _gate(self, api: str, method: str, path: str, params: dict) -> None:
        """Called by the exchange before every request: refuse it (raise)
        while throttled or banned, or when its weight does not fit the
        budget; cancels pass the budget (they relieve risk)."""
        blocked = self._blocked()
        if blocked is not None:
            raise blocked
        w = weight_of(api, method, path, params)
        refusal = self.budget.charge(w, force=(method == "DELETE"))
        if refusal is not None:
            raise BinanceRateLimited(self.venue, refusal.retry_after_ns, refusal.detail, status=0)

    # ------------------------------------------------------------ calls
    async def _guard(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one exchange call, translating what it raises into the typed
        venue errors and keeping the throttle, ban and connection state."""
        try:
            result = await fn()
        except BinanceBanned as exc:
            if exc.status == 418:
                until = self._now() + exc.retry_after_ns
                if self.banned_until_ns is None or until > self.banned_until_ns:
                    self.banned_until_ns = until
                    self._set_state("BANNED", exc.detail, until)
                    self._alert("ERROR", "VENUE_BANNED", (
                        f"{self.venue}: {exc.detail}; the venue is down until {until} ns, its orders are refused "
                        f"with the reason"))
            raise
        except BinanceRateLimited as exc:
            if exc.status == 429:
                until = self._now() + exc.retry_after_ns
                if self.throttled_until_ns is None or until > self.throttled_until_ns:
                    self.throttled_until_ns = until
                    self._set_state("THROTTLED", exc.detail, until)
            raise
        except VenueError:
            self._mark_connected()
            raise
        except ccxt_async.NetworkError as exc:
            cause = exc.__cause__
            refused = cause is not None and type(cause).__name__ in ("ClientConnectorError", "ClientConnectorDNSError")
            kind = "disconnected" if refused else "timeout"
            if refused:  # the venue cannot be reached; a timeout alone says nothing of the session
                self.connected = False
                self._set_state("DISCONNECTED", f"{what}: {type(exc).__name__}")
            raise TransientVenueError(self.venue, f"{what}: {type(exc).__name__}: {redact(str(exc))[:200]} "
                                                  f"(outcome unknown)", kind=kind) from None
        except ccxt_async.BaseError as exc:
            self._mark_connected()
            raise BinanceRejected(self.venue, f"{what}: {type(exc).__name__}: {redact(str(exc))[:300]}") from None
        self._mark_connected()
        return result

    def _mark_connected(self) -> None:
        self.connected = True
        if self.state in ("DISCONNECTED", "THROTTLED", "BANNED") and self._blocked() is None:
            self._set_state("CONNECTED", "answering")

    async def _read(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """A read: on ``-1021`` the clock offset is measured and the read is
        retried once."""
        try:
            return await self._guard(what, fn)
        except BinanceTimestampError:
            await self.sync_clock()
            return await self._guard(what, fn)

    def _exchange(self) -> DeskBinance:
        if self.ex is None:
            raise BinanceStartupError(f"{self.venue}: not started")
        return self.ex

    async def sync_clock(self) -> int:
        """Measure the venue's clock against the injected clock (``GET
        /api/v3/time``; offset = serverTime - midpoint of the request) and
        sign from now on with ``timestamp`` = clock + offset (ccxt's
        ``options['timeDifference']`` = -offset). Returns the offset in ms
        (positive: the venue is ahead).

        Raises:
            TransientVenueError, VenueThrottled: the time could not be read.
        """
        ex = self._exchange()
        before = self._now() // NANOS_PER_MS
        server = await self._guard("time", ex.fetch_time)
        after = self._now() // NANOS_PER_MS
        offset = int(server) - (before + after) // 2
        ex.options["timeDifference"] = -offset
        changed = offset != self.clock_offset_ms
        self.clock_offset_ms = offset
        if changed:
            self._alert("WARNING", "CLOCK_OFFSET", (
                f"{self.venue}: timestamp outside recvWindow ({self.config.recv_window_ms} ms); the venue's clock "
                f"is {offset:+d} ms from ours, applied to every signed request"))
        return offset

    # ------------------------------------------------------------ start
    def check_credentials(self) -> None:
        """Refuse a start without the API key and secret in the environment
        (before anything is created: ``desk.live`` calls it before the
        store).

        Raises:
            BinanceStartupError: a variable named by ``api_key_env`` /
                ``api_secret_env`` is not set (named)."""
        self._credentials()

    def _credentials(self) -> tuple[str, str]:
        key = self._env.get(self.config.api_key_env)
        secret = self._env.get(self.config.api_secret_env)
        missing = [n for n, v in ((self.config.api_key_env, key), (self.config.api_secret_env, secret)) if not v]
        if missing:
            raise BinanceStartupError(f"{self.venue}: the environment variable(s) {', '.join(missing)} holding the "
                                      f"API credentials are not set (api_key_env / api_secret_env)")
        return str(key), str(secret)

    async def start(self) -> list[str]:
        """Connect and check everything before trading (see the module
        docstring). Returns the start-up lines (venue, account, limits,
        instruments) for the operator; no secret appears in them.

        Raises:
            BinanceStartupError: missing credentials, a symbol not TRADING or
                unknown, a key that can withdraw or cannot trade spot.
            TransientVenueError, VenueThrottled, VenueRejected: the venue
                could not be reached or refused (exit 2 at start).
        """
        cfg = self.config
        if self.ex is None:
            key, secret = self._credentials()
            self.ex = make_exchange(clock=self.clock, market=cfg.market, testnet=cfg.testnet,
                                    recv_window_ms=cfg.recv_window_ms, api_key=key, secret=secret,
                                    urls=dict(cfg.urls) if cfg.urls else None, venue_name=self.venue,
                                    gate=self._gate, on_used_weight=self.budget.observe_used,
                                    timeout_ms=cfg.timeout_ms)
        ex = self.ex
        ex.options["recvWindow"] = cfg.recv_window_ms
        markets = await self._read("load markets", ex.load_markets)
        self.rate_limits = list((ex.exchange_info or {}).get("rateLimits", []) or [])
        self.budget.limit = request_weight_limit(ex.exchange_info, self.budget.limit)
        self.instruments, self.unified = instruments_for(list(cfg.symbols), markets, self.venue, cfg.market)
        self._by_unified = {u: iid for iid, u in self.unified.items()}
        self._by_symbol = {self._venue_symbol(iid): iid for iid in self.instruments}
        self.quote = next(iter(self.instruments.values())).quote
        account = await self._read("account", self._api_account)
        self.account_info = account
        self._take_balances(account)
        perm_line = await self._check_permissions()
        market_lines = await self._prepare_market()
        if cfg.snapshot_orders:
            for iid in self.instruments:
                await self._snapshot(iid)
        await self._refresh_open_orders()
        self.started = True
        self._set_state("CONNECTED", "started")
        env = ("testnet" if cfg.testnet else "LIVE") if not cfg.urls else "custom URLs"
        lines = [f"{self.venue}: Binance {cfg.market} ({env}), recvWindow {cfg.recv_window_ms} ms, "
                 f"clock offset {self.clock_offset_ms:+d} ms"]
        bal = ", ".join(f"{a} {dec_str(canonical_decimal(f + lk))}" for a, (f, lk) in sorted(self._balances.items())
                        if f + lk != 0 and (a == self.quote or any(i.base == a for i in self.instruments.values())))
        lines.append(f"{self.venue}: account {account.get('accountType') or self.ACCOUNT_KIND}, canTrade "
                     f"{account.get('canTrade')}, balances {bal or 'none'}")
        lines.append(f"{self.venue}: {perm_line}")
        lines += [f"{self.venue}: {x}" for x in market_lines]
        limits = "; ".join(f"{r.get('rateLimitType')} {r.get('limit')}/{r.get('intervalNum')} {r.get('interval')}"
                           for r in self.rate_limits)
        lines.append(f"{self.venue}: limits {limits or 'unknown'}; the desk budgets {self.budget.budget} request "
                     f"weight per minute")
        for inst in self.instruments.values():
            lines.append(f"{inst.id}: tick {dec_str(inst.tick_size)}, step {dec_str(inst.step_size)}, min qty "
                         f"{dec_str(inst.min_qty)}, min notional {dec_str(inst.min_notional)} {inst.quote} "
                         f"(exchangeInfo)")
        for line in lines:
            log.info(line)
        return lines

    async def _prepare_market(self) -> list[str]:
        """Market-specific start-up after the account read (spot: nothing;
        USD-M: position mode, margin type, leverage, brackets); returns
        start-up lines."""
        return []

    def _venue_symbol(self, iid: InstrumentId) -> str:
        """Binance's symbol of an instrument (``BTCUSDT``)."""
        return iid.symbol

    #: the key permission this market needs (``GET /sapi/v1/account/apiRestrictions``), the market's word,
    #: and where a venue without ``/sapi`` is (its keys cannot withdraw)
    TRADE_PERMISSION = "enableSpotAndMarginTrading"
    MARKET_WORD = "spot"
    NO_SAPI_WHERE = "the spot testnet"

    async def _check_permissions(self) -> str:
        """Read the key's restrictions (Binance ``GET
        /sapi/v1/account/apiRestrictions``); returns the start-up line.

        Raises:
            BinanceStartupError: a key that can withdraw, or that cannot
                trade this market (``TRADE_PERMISSION`` false)."""
        ex = self._exchange()
        if "sapi" not in (ex.urls.get("api") or {}):
            return (f"key permissions not checked: {self.NO_SAPI_WHERE} has no /sapi endpoints (its keys cannot "
                    "withdraw)")
        r = await self._read("api restrictions", ex.sapiGetAccountApiRestrictions)
        if r.get("enableWithdrawals"):
            raise BinanceStartupError(
                f"{self.venue}: the API key has withdrawals enabled (apiRestrictions.enableWithdrawals true); the "
                f"desk refuses a key that can withdraw: create a key without the withdrawal permission")
        if r.get(self.TRADE_PERMISSION) is False:
            raise BinanceStartupError(
                f"{self.venue}: the API key cannot trade {self.MARKET_WORD} "
                f"(apiRestrictions.{self.TRADE_PERMISSION} false)")
        return f"key permissions: reading and {self.MARKET_WORD} trading, withdrawals disabled"

    def _take_balances(self, account: Mapping[str, Any]) -> None:
        self._balances = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in account.get("balances", [])}

    async def _snapshot(self, iid: InstrumentId) -> None:
        """Recent orders and fills of one symbol (``allOrders``, ``myTrades``)."""
        sym_id = self._venue_symbol(iid)
        orders = await self._read("all orders", lambda: self._api_all_orders({"symbol": sym_id, "limit": 1000}))
        trades = await self._read("my trades", lambda: self._api_my_trades({"symbol": sym_id, "limit": 1000}))
        by_order: dict[str, list[dict[str, Any]]] = {}
        for t in trades:
            by_order.setdefault(str(t["orderId"]), []).append(t)
        for o in orders:
            coid = str(o["clientOrderId"])
            fills = tuple(self._fill_from_trade(coid, iid, "", t) for t in by_order.get(str(o["orderId"]), []))
            self._reports[coid] = self._report_from_raw(o, fills)

    # ------------------------------------------------------------ mapping
    def _iid_of(self, unified: str) -> InstrumentId:
        return self._by_unified[unified]

    def _trade_id(self, raw: Any) -> str:
        """The desk's ``OrderFilled.trade_id`` of a venue trade id (``myTrades``
        ``id``, a new-order answer's ``fills[].tradeId``, a stream report's
        ``t``): :attr:`TRADE_ID_PREFIX` + its decimal string (spot: ``"1"``;
        USD-M: ``"F-1"``). Every fill this adapter reports goes through it,
        so a fill read by the stream and by REST has one id (reported once).

        Raises:
            ValueError: ``raw`` is None or empty (named).
        """
        if raw is None or str(raw) == "":
            raise ValueError(f"{self.venue}: trade id must be a venue trade id, got {raw!r}")
        return f"{self.TRADE_ID_PREFIX}{raw}"

    def _fill_from_trade(self, coid: str, iid: InstrumentId, model_id: str, t: Mapping[str, Any],
                         venue_order_id: str | None = None) -> OrderFilled:
        """An ``OrderFilled`` from a raw ``myTrades`` row (exact strings)."""
        ts = int(t["time"]) * NANOS_PER_MS
        side = "BUY" if t.get("isBuyer") else "SELL"
        return OrderFilled(
            ts_event=ts, ts_init=self._now(), client_order_id=coid, instrument_id=iid, model_id=model_id,
            venue_order_id=venue_order_id or str(t["orderId"]), trade_id=self._trade_id(t["id"]), side=side,
            last_qty=Decimal(str(t["qty"])), last_px=Decimal(str(t["price"])),
            commission=Decimal(str(t["commission"])), commission_currency=str(t["commissionAsset"]),
            liquidity_side=(LiquiditySide.MAKER if t.get("isMaker") else LiquiditySide.TAKER).value)

    @staticmethod
    def _report_status(raw_status: str) -> str:
        return {"NEW": "OPEN", "PARTIALLY_FILLED": "OPEN", "PENDING_NEW": "OPEN", "FILLED": "FILLED",
                "CANCELED": "CANCELED", "PENDING_CANCEL": "OPEN", "EXPIRED": "EXPIRED",
                "EXPIRED_IN_MATCH": "EXPIRED", "REJECTED": "REJECTED"}.get(raw_status, "OPEN")

    def _report_from_raw(self, o: Mapping[str, Any], fills: tuple[OrderFilled, ...]) -> VenueOrderReport:
        status = str(o.get("status", ""))
        return VenueOrderReport(
            client_order_id=str(o.get("clientOrderId") or o.get("origClientOrderId")),
            venue_order_id=str(o["orderId"]), status=self._report_status(status),
            filled_qty=Decimal(str(o.get("executedQty", "0"))), fills=fills,
            reason=status if status not in _OPEN and status != "FILLED" else "")

    # ------------------------------------------------------------ orders
    def _track(self, order: Order) -> _Tracked:
        t = self._orders.get(order.client_order_id)
        if t is None:
            unified = self.unified.get(order.instrument_id)
            if unified is None:
                raise VenueRejected(self.venue, f"unknown instrument {order.instrument_id}")
            t = _Tracked(order.client_order_id, order.model_id, order.instrument_id, unified, order.side.value,
                         order.quantity, order.time_in_force.value)
            self._adopt(t)
            self._orders[order.client_order_id] = t
            self._open_foreign.pop(order.client_order_id, None)  # tracked from now on: its own status says if open
        return t

    def _adopt(self, t: _Tracked) -> None:
        """Start a new tracking record of an order the venue already holds
        but this process did not send (working when a previous process
        stopped: a ``kill -9`` and a restart on the same state dir), from
        what the adapter learnt of it: the start-up snapshot, ``prefetch``
        or a lookup (``_reports``), or the open orders read (``_open_foreign``).
        The venue accepted it then and the store holds that acceptance, so
        its cancel, fills or close report no second ``OrderAccepted``; its
        status and executed quantity (base units) are the venue's, so the
        polls and :meth:`open_orders` go on from the venue's view, not from
        an empty record. An order the adapter knows nothing of is left as is
        (a new submit)."""
        known = self._reports.get(t.client_order_id)
        foreign = self._open_foreign.get(t.client_order_id)
        if known is not None and known.status != "REJECTED" and known.venue_order_id:
            t.venue_order_id = known.venue_order_id
            t.executed = known.filled_qty
            t.status = (("PARTIALLY_FILLED" if known.filled_qty > 0 else "NEW") if known.status == "OPEN"
                        else known.status)
            t.accepted_reported = True
        elif foreign is not None:
            t.executed = foreign
            t.status = "PARTIALLY_FILLED" if foreign > 0 else "NEW"
            t.accepted_reported = True

    def _order_request(self, order: Order) -> tuple[str, str | None, dict[str, Any]]:
        """``(ccxt type, price string, params)`` for ``order``; raises
        VenueRejected for what Binance spot cannot take natively."""
        params: dict[str, Any] = {"newClientOrderId": order.client_order_id}
        t = order.order_type
        tif = order.time_in_force
        if tif in (TimeInForce.GTD, TimeInForce.DAY):
            raise VenueRejected(self.venue, f"Binance spot has no {tif.value} time in force")
        price = None if order.price is None else dec_str(order.price)
        if t == OrderType.MARKET:
            return "market", None, params  # no timeInForce, no price (a price would become quoteOrderQty)
        if t == OrderType.LIMIT:
            if order.post_only:
                return "LIMIT_MAKER", price, params
            params["timeInForce"] = tif.value
            return "limit", price, params
        if t in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT):
            assert order.trigger_price is not None
            params["stopPrice"] = dec_str(order.trigger_price)
            if t == OrderType.STOP_LIMIT:
                params["timeInForce"] = tif.value if tif in (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK) else "GTC"
                return "STOP_LOSS_LIMIT", price, params
            return "STOP_LOSS", None, params
        if t == OrderType.TRAILING_STOP_MARKET:
            if order.trailing_offset_type != TrailingOffsetType.BASIS_POINTS or order.trailing_offset is None:
                raise VenueRejected(self.venue, "Binance spot trails in basis points only (trailingDelta)")
            params["trailingDelta"] = dec_str(order.trailing_offset)
            if order.trigger_price is not None:
                params["stopPrice"] = dec_str(order.trigger_price)
            return "STOP_LOSS", None, params
        raise VenueRejected(self.venue, f"order type {t.value} is not supported")

    async def submit_order(self, order: Order) -> None:
        """Send ``order`` (``POST /api/v3/order``, ``newClientOrderId`` = its
        ClientOrderId, ``newOrderRespType`` FULL) and report what the venue
        answered: ``OrderAccepted``, one ``OrderFilled`` per fill of the
        answer, and ``OrderExpired`` for an IOC/FOK/MARKET remainder; a
        definite refusal as ``OrderRejected``. On ``-1021`` the clock offset
        is measured and the order is looked up by ClientOrderId (found:
        reported; not found: ``OrderRejected``, never resent).

        Raises:
            BinanceBanned, BinanceRateLimited: the venue is banned or
                throttled (nothing was sent); the reason says until when.
            DuplicateClientOrderId: the venue has an open order with this id
                (look it up).
            TransientVenueError: the outcome is unknown (timeout, dropped
                connection, ``-1007``, HTTP 5xx); the order is looked up in
                the background and :meth:`lookup` answers once it is known.
        """
        ex = self._exchange()
        t = self._track(order)
        now = self._now()
        common = dict(ts_event=now, ts_init=now, client_order_id=order.client_order_id,
                      instrument_id=order.instrument_id, model_id=order.model_id)
        try:
            type_, price, params = self._order_request(order)
        except VenueRejected as exc:
            t.status = "REJECTED"
            self._emit(OrderRejected(**common, reason=exc.detail))
            return
        t.ts_sent_ns = now
        qty = dec_str(order.quantity)
        try:
            resp = await self._guard("submit", lambda: ex.create_order(t.symbol, type_, order.side.value.lower(), qty,
                                                                          price, params))
        except BinanceTimestampError as exc:
            offset = await self.sync_clock()
            known = await self.lookup_async(order.client_order_id)
            if known is None:
                t.status = "REJECTED"
                self._emit(OrderRejected(**common, reason=(
                    f"{exc.detail} (the venue's clock is {offset:+d} ms from ours; now applied); not placed, "
                    f"not resent")))
            return
        except (VenueThrottled, DuplicateClientOrderId):
            raise
        except TransientVenueError:
            t.unknown = True
            self._schedule_lookup(order.client_order_id)
            raise
        except VenueError as exc:  # a definite no: filters, balance, closed market, bad key
            t.status = "REJECTED"
            self._emit(OrderRejected(**common, reason=f"{type(exc).__name__}: {exc.detail}"))
            return
        extra = await self._answer_fills(t, resp["info"])
        self._on_order_answer(t, resp["info"], resp.get("status"), extra)

    async def _answer_fills(self, t: _Tracked, info: Mapping[str, Any]) -> list[OrderFilled]:
        """Fills of a new-order answer that the answer itself does not list
        (spot ``FULL`` lists them: none; USD-M ``RESULT`` does not)."""
        return []

    def _on_order_answer(self, t: _Tracked, info: Mapping[str, Any], unified_status: str | None,
                         extra: list[OrderFilled] | None = None) -> None:
        """Report what a new-order answer (``FULL``: with ``fills``) says;
        ``extra``: fills read separately (USD-M)."""
        vid = str(info["orderId"])
        ts = int(info.get("transactTime") or info.get("updateTime") or self._now() // NANOS_PER_MS) * NANOS_PER_MS
        fills = list(extra or [])
        for f in info.get("fills") or []:
            fills.append(OrderFilled(
                ts_event=ts, ts_init=self._now(), client_order_id=t.client_order_id, instrument_id=t.instrument_id,
                model_id=t.model_id, venue_order_id=vid, trade_id=self._trade_id(f["tradeId"]), side=t.side,
                last_qty=Decimal(str(f["qty"])), last_px=Decimal(str(f["price"])),
                commission=Decimal(str(f["commission"])), commission_currency=str(f["commissionAsset"]),
                liquidity_side=LiquiditySide.TAKER.value))  # fills in the answer matched on arrival: taker
        self._apply(t, info, fills, ts, unified_status)

    def _apply(self, t: _Tracked, info: Mapping[str, Any], fills: list[OrderFilled], ts_ns: int,
               unified_status: str | None = None, reason: str = "") -> None:
        """Bring the tracked order to what the venue says and report the new
        part: accepted, new fills, then the final status. Repeats report
        nothing (fills are keyed by trade id)."""
        raw = str(info.get("status", ""))
        t.status = raw
        t.unknown = False
        t.venue_order_id = str(info["orderId"])
        t.executed = Decimal(str(info.get("executedQty", "0")))
        for f in fills:
            t.fills.setdefault(f.trade_id, f)
        self._absent.pop(t.client_order_id, None)
        common = dict(ts_event=ts_ns, ts_init=self._now(), client_order_id=t.client_order_id,
                      instrument_id=t.instrument_id, model_id=t.model_id)
        # ccxt's unified status: open -> ACCEPTED (PARTIALLY_FILLED once fills arrive), closed -> FILLED,
        # canceled, expired, rejected
        status = unified_status or self._exchange().parse_order_status(raw)
        if status == "rejected":
            if not t.closed_reported:
                t.closed_reported = True
                self._emit(OrderRejected(**common, reason=reason or f"rejected by {self.venue} ({raw})"))
        else:
            if not t.accepted_reported:
                t.accepted_reported = True
                self._emit(OrderAccepted(**common, venue_order_id=t.venue_order_id))
            for f in list(t.fills.values()):
                if f.trade_id not in t.reported:
                    t.reported.add(f.trade_id)
                    self._book_fill(f)
                    self._emit(f)
            if status in ("canceled", "expired") and not t.closed_reported:
                t.closed_reported = True
                cls = OrderExpired if status == "expired" else OrderCanceled
                why = reason or (t.expire_reason or (t.time_in_force if status == "expired" else "CANCELED"))
                self._emit(cls(**common, reason=why, executed_qty=t.executed))
        self._reports[t.client_order_id] = VenueOrderReport(
            t.client_order_id, t.venue_order_id, self._report_status(raw), t.executed, tuple(t.fills.values()),
            reason or ("" if raw in _OPEN or raw == "FILLED" else raw))

    def _book_fill(self, f: OrderFilled) -> None:
        """Keep the balance view in step with a reported fill (the next
        account read replaces it with the venue's own figures)."""
        inst = self.instruments.get(f.instrument_id)
        if inst is None:
            return
        notional = f.last_qty * f.last_px
        sign = 1 if f.side == "BUY" else -1
        self._adjust(inst.base, sign * f.last_qty)
        self._adjust(inst.quote, -sign * notional)
        self._adjust(f.commission_currency, -f.commission)

    def _adjust(self, asset: str, delta: Decimal) -> None:
        free, locked = self._balances.get(asset, (ZERO, ZERO))
        self._balances[asset] = (free + delta, locked)

    async def cancel_order(self, order: Order, reason: str = "CANCELED") -> None:
        """Cancel by ClientOrderId (``DELETE /api/v3/order``); report missed
        fills first (``myTrades``) when the answer's ``executedQty`` is above
        what was reported, then ``OrderCanceled`` with that executed
        quantity. A ``-1021`` is retried once after measuring the offset.

        Raises:
            OrderNotFound: ``-2011`` (unknown or already closed: the order is
                looked up in the background at once, its news reported
                through the callback).
            BinanceBanned, BinanceRateLimited, TransientVenueError: as for a read.
        """
        ex = self._exchange()
        t = self._track(order)
        coid = order.client_order_id
        try:
            resp = await self._read("cancel", lambda: ex.cancel_order(None, t.symbol, {"origClientOrderId": coid}))
        except BinanceOrderNotFound:
            # closed at the venue (filled, expired) while the adapter still holds it open: ask now, so its fills
            # and final status come through the callback without waiting for a poll or a stream event (the
            # stream may be down, and the caller's lookup reads what the adapter learnt)
            self._schedule_lookup(coid)
            raise
        info = resp["info"]
        executed = Decimal(str(info.get("executedQty", "0")))
        fills: list[OrderFilled] = []
        if executed > sum((f.last_qty for f in t.fills.values()), ZERO):
            fills = await self._fetch_fills(t, str(info["orderId"]))
        ts = int(info.get("transactTime") or self._now() // NANOS_PER_MS) * NANOS_PER_MS
        self._apply(t, info, fills, ts, "canceled", reason=reason)

    async def _fetch_fills(self, t: _Tracked, venue_order_id: str) -> list[OrderFilled]:
        sym_id = self._venue_symbol(t.instrument_id)
        rows = await self._read("my trades", lambda: self._api_my_trades({"symbol": sym_id,
                                                                          "orderId": venue_order_id}))
        return [self._fill_from_trade(t.client_order_id, t.instrument_id, t.model_id, r, venue_order_id)
                for r in rows]

    async def submit_oco(self, above: Order, below: Order, list_client_order_id: str | None = None) -> None:
        """A native OCO sell (``POST /api/v3/orderList/oco``): ``above`` is a
        LIMIT (sent as ``LIMIT_MAKER``, the take-profit), ``below`` a
        STOP_MARKET (``STOP_LOSS``) or STOP_LIMIT (``STOP_LOSS_LIMIT``), both
        SELL of the same quantity; the base is locked once. Each leg is
        reported as its own order (accepted now; fills and the other leg's
        ``OrderExpired`` reason ``OCO`` come with :meth:`poll`).

        Raises:
            VenueRejected: legs Binance cannot take as an OCO list (named).
            BinanceBanned, BinanceRateLimited, TransientVenueError: as for a submit.
        """
        ex = self._exchange()
        if above.side != OrderSide.SELL or below.side != OrderSide.SELL or above.quantity != below.quantity \
                or above.instrument_id != below.instrument_id:
            raise VenueRejected(self.venue, "OCO: both legs must be SELL orders of one instrument and one quantity")
        if above.order_type != OrderType.LIMIT or below.order_type not in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT):
            raise VenueRejected(self.venue, "OCO: above must be a LIMIT, below a STOP_MARKET or STOP_LIMIT")
        ta, tb = self._track(above), self._track(below)
        params: dict[str, Any] = {
            "symbol": above.instrument_id.symbol, "side": "SELL", "quantity": dec_str(above.quantity),
            "aboveType": "LIMIT_MAKER", "abovePrice": dec_str(above.price or ZERO),
            "aboveClientOrderId": above.client_order_id,
            "belowType": "STOP_LOSS_LIMIT" if below.order_type == OrderType.STOP_LIMIT else "STOP_LOSS",
            "belowStopPrice": dec_str(below.trigger_price or ZERO), "belowClientOrderId": below.client_order_id,
            "newOrderRespType": "FULL",
        }
        if below.order_type == OrderType.STOP_LIMIT:
            params["belowPrice"] = dec_str(below.price or ZERO)
            params["belowTimeInForce"] = "GTC"
        if list_client_order_id:
            params["listClientOrderId"] = list_client_order_id
        now = self._now()
        ta.ts_sent_ns = tb.ts_sent_ns = now
        ta.expire_reason = tb.expire_reason = "OCO"
        try:
            resp = await self._guard("submit OCO", lambda: ex.privatePostOrderListOco(params))
        except TransientVenueError:
            ta.unknown = tb.unknown = True
            self._schedule_lookup(above.client_order_id)
            self._schedule_lookup(below.client_order_id)
            raise
        ts = int(resp.get("transactionTime") or now // NANOS_PER_MS) * NANOS_PER_MS
        for rep in resp.get("orderReports", []):
            t = self._orders.get(str(rep["clientOrderId"]))
            if t is not None:
                self._apply(t, rep, [], ts)

    def cancel_all(self, reason: str) -> int:
        """Cancel every working desk order this adapter tracks (sent
        concurrently, in the background); returns how many."""
        n = 0
        for t in list(self._orders.values()):
            if t.status in _OPEN and is_desk_order(t.client_order_id):
                self._spawn(self._cancel_tracked(t, reason))
                n += 1
        return n

    async def _cancel_tracked(self, t: _Tracked, reason: str) -> None:
        ex = self._exchange()
        try:
            resp = await self._read("cancel", lambda: ex.cancel_order(None, t.symbol,
                                                                      {"origClientOrderId": t.client_order_id}))
        except VenueError as exc:
            log.warning("cancel %s: %s", t.client_order_id, exc)
            return
        info = resp["info"]
        ts = int(info.get("transactTime") or self._now() // NANOS_PER_MS) * NANOS_PER_MS
        self._apply(t, info, [], ts, "canceled", reason=reason)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait for the background requests started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def on_bar(self, bar: Bar) -> None:
        """Market data reaches a real venue by itself: nothing to do."""

    def commit(self) -> None:
        """The venue's state is the exchange's: nothing to make durable here."""

    # ------------------------------------------------------------ lookups
    async def lookup_async(self, client_order_id: str) -> VenueOrderReport | None:
        """Look one order up at the venue by ClientOrderId (``GET
        /api/v3/order?origClientOrderId=``, then its fills from ``myTrades``
        when it has executed anything); None when the venue has no such
        order (``-2013``). Reports what is new about a tracked order through
        the callback (an unknown submit found is acknowledged and its fills
        applied). Symbols are tried in turn for an id the adapter never saw.

        Raises:
            TransientVenueError, VenueThrottled: the read failed.
        """
        ex = self._exchange()
        started = self._now()
        t = self._orders.get(client_order_id)
        known = self._reports.get(client_order_id)
        if t is not None:
            candidates = [t.symbol]
        elif known is not None and known.fills:
            candidates = [self.unified[known.fills[0].instrument_id]]
        else:
            candidates = list(self.unified.values())
        for unified in candidates:
            iid = self._iid_of(unified)
            try:
                resp = await self._read("lookup", lambda u=unified: ex.fetch_order(
                    None, u, {"origClientOrderId": client_order_id}))
            except OrderNotFound:
                continue
            info = resp["info"]
            vid = str(info["orderId"])
            fills: list[OrderFilled] = []
            if Decimal(str(info.get("executedQty", "0"))) > 0:
                sym_id = self._venue_symbol(iid)
                rows = await self._read("my trades", lambda s=sym_id, v=vid: self._api_my_trades(
                    {"symbol": s, "orderId": v}))
                model_id = t.model_id if t is not None else ""
                fills = [self._fill_from_trade(client_order_id, iid, model_id, r, vid) for r in rows]
            ts = int(info.get("updateTime") or info.get("time") or started // NANOS_PER_MS) * NANOS_PER_MS
            if t is not None:
                self._apply(t, info, fills, ts, resp.get("status"))
            else:
                self._reports[client_order_id] = self._report_from_raw(info, tuple(fills))
                self._expected.pop(client_order_id, None)
                self._absent.pop(client_order_id, None)
            return self._reports[client_order_id]
        self._absent[client_order_id] = started
        self._reports.pop(client_order_id, None)
        return None

    def _schedule_lookup(self, client_order_id: str) -> None:
        task = self._pending.get(client_order_id)
        if task is not None and not task.done():
            return

        async def run() -> None:
            try:
                await self.lookup_async(client_order_id)
            except VenueError as exc:
                log.warning("background lookup of %s: %s", client_order_id, exc)
            finally:
                self._pending.pop(client_order_id, None)

        try:
            self._pending[client_order_id] = self._spawn(run())
        except RuntimeError:  # no running loop (a synchronous caller): the next poll looks it up
            pass

    def expect_unknown(self, unknown: Mapping[str, int]) -> None:
        """Register submits whose outcome was still unknown when the previous
        process stopped: ClientOrderId -> the engine time after which the
        request can no longer be accepted (``core.recovery.UnknownSubmit.
        deadline_ns``, persisted in the store's meta). Their lookups then
        follow the rule of this process's own unknown submits (asked at the
        venue; "not found" only from a query started after that time), not
        the start-up snapshot, which may predate their acceptance. Call
        :meth:`prefetch` after it so the first reconciliation has answers."""
        self._expected.update({c: int(d) for c, d in unknown.items()})

    async def prefetch(self, client_order_ids: list[str] | tuple[str, ...]) -> None:
        """Look these orders up now (:meth:`lookup_async`), so the
        synchronous :meth:`lookup` of the start-up reconciliation answers
        without deferring.

        Raises:
            TransientVenueError, VenueThrottled: a read failed.
        """
        for coid in client_order_ids:
            await self.lookup_async(coid)

    def lookup(self, client_order_id: str) -> VenueOrderReport | None:
        """The venue's view of one order (``core.recovery``'s synchronous
        read), from what the adapter has learnt: the start-up snapshot, the
        order's answers and the polls. For an order whose submit outcome is
        unknown (sent by this process, or registered with
        :meth:`expect_unknown`) the venue is asked in the background and this
        raises ``TransientVenueError`` until the answer is in; "not found" is
        given only from a query that started after the request could no
        longer be accepted (send time + recvWindow + Binance's 10 s backend
        timeout) once that time has passed.

        Raises:
            TransientVenueError: the answer is not known yet (asked now).
        """
        t = self._orders.get(client_order_id)
        deadline: int | None = None
        if t is not None and t.unknown:
            deadline = t.ts_sent_ns + self.config.recv_window_ms * NANOS_PER_MS + BACKEND_TIMEOUT_NS
        elif t is None and client_order_id in self._expected:
            deadline = self._expected[client_order_id]
        if deadline is None and client_order_id in self._reports:
            return self._reports[client_order_id]
        absent_at = self._absent.get(client_order_id)
        if absent_at is not None:
            if deadline is None or self._now() < deadline or absent_at >= deadline:
                return None
        elif deadline is None and t is None and self.started and self.config.snapshot_orders:
            return None  # not in the start-up snapshot, never sent by this process: the venue never saw it
        self._schedule_lookup(client_order_id)
        raise TransientVenueError(self.venue, f"lookup of {client_order_id}: asked the venue; the answer comes at a "
                                              f"later step", kind="timeout")

    def order_ids(self) -> list[str]:
        """Every ClientOrderId the adapter has seen at the venue (start-up
        snapshot of each symbol's recent orders, orders sent, open orders),
        sorted."""
        ids = set(self._reports) | {c for c, t in self._orders.items() if t.status} | set(self._open_foreign)
        return sorted(ids)

    def open_orders(self) -> dict[str, Decimal]:
        """Open orders (mass status, ``GET /api/v3/openOrders`` at the last
        poll): ClientOrderId -> executed quantity (base units)."""
        out = {c: t.executed for c, t in self._orders.items() if t.status in _OPEN}
        out.update({c: q for c, q in self._open_foreign.items() if c not in self._orders})  # tracked: own status
        return out

    def is_connected(self) -> bool:
        """False while banned or after a network error, until a request
        succeeds again."""
        return self.connected and (self.banned_until_ns is None or self._now() >= self.banned_until_ns)

    def balance(self, asset: str) -> Decimal:
        """Total (free + locked) of ``asset`` at the last account read, moved
        by the fills reported since."""
        free, locked = self._balances.get(asset, (ZERO, ZERO))
        return free + locked

    def free(self, asset: str) -> Decimal:
        """Free balance of ``asset`` (last account read and reported fills)."""
        return self._balances.get(asset, (ZERO, ZERO))[0]

    def balances(self) -> dict[str, Decimal]:
        """Every non-zero asset's total balance."""
        return {a: f + lk for a, (f, lk) in sorted(self._balances.items()) if f + lk != 0}

    # ------------------------------------------------------------ polling
    async def refresh_balances(self) -> dict[str, Decimal]:
        """Read the account (``GET /api/v3/account``, weight 20)."""
        account = await self._read("account", self._api_account)
        self.account_info = account
        self._take_balances(account)
        return self.balances()

    # ------------------------------------------------------------ endpoints (the USD-M subclass replaces them)
    async def _api_account(self) -> Any:
        """``GET /api/v3/account``."""
        return await self._exchange().privateGetAccount()

    async def _api_open_orders(self, symbol: str) -> Any:
        """``GET /api/v3/openOrders?symbol=``."""
        return await self._exchange().privateGetOpenOrders({"symbol": symbol})

    async def _api_all_orders(self, params: dict[str, Any]) -> Any:
        """``GET /api/v3/allOrders``."""
        return await self._exchange().privateGetAllOrders(params)

    async def _api_my_trades(self, params: dict[str, Any]) -> Any:
        """``GET /api/v3/myTrades``."""
        return await self._exchange().privateGetMyTrades(params)

    async def _api_klines(self, params: dict[str, Any]) -> Any:
        """``GET /api/v3/klines``."""
        return await self._exchange().publicGetKlines(params)

    async def _api_book_ticker(self, symbol: str) -> Any:
        """``GET /api/v3/ticker/bookTicker?symbol=``."""
        return await self._exchange().publicGetTickerBookTicker({"symbol": symbol})

    async def _refresh_open_orders(self) -> dict[str, Mapping[str, Any]]:
        rows: dict[str, Mapping[str, Any]] = {}
        for iid in self.instruments:
            sym_id = self._venue_symbol(iid)
            for o in await self._read("open orders", lambda s=sym_id: self._api_open_orders(s)):
                rows[str(o["clientOrderId"])] = o
        self._open_foreign = {c: Decimal(str(o.get("executedQty", "0"))) for c, o in rows.items()
                              if c not in self._orders}
        return rows

    async def poll(self, balances: bool = True) -> None:
        """One REST polling round: open orders per symbol; each tracked order
        that left the list or whose executed quantity moved is looked up
        (its new fills and final status reported); unknown submits are
        looked up; then the account (when ``balances``).

        Raises:
            TransientVenueError, VenueThrottled: a read failed (what was
                learnt before stays applied).
        """
        open_rows = await self._refresh_open_orders()
        for coid, t in list(self._orders.items()):
            if t.unknown:
                await self.lookup_async(coid)
                continue
            if t.status not in _OPEN:
                continue
            row = open_rows.get(coid)
            if row is not None and Decimal(str(row.get("executedQty", "0"))) == t.executed:
                continue
            await self.lookup_async(coid)
        if balances:
            await self.refresh_balances()

    # ------------------------------------------------------------ streams
    def _bar_of(self, k: Mapping[str, Any], step_ns: int) -> Bar | None:
        iid = self._by_symbol.get(str(k.get("s", "")))
        if iid is None:
            return None
        ts_open = int(k["t"]) * NANOS_PER_MS
        return Bar(iid, Decimal(str(k["o"])), Decimal(str(k["h"])), Decimal(str(k["l"])), Decimal(str(k["c"])),
                   Decimal(str(k["v"])), ts_open, ts_open + step_ns)

    def _fresh(self, bars: list[Bar]) -> list[Bar]:
        out = []
        for b in sorted(bars, key=lambda b: (b.ts_open, str(b.instrument_id))):
            if b.ts_open > self._last_bar_ts.get(b.instrument_id, -1):
                self._last_bar_ts[b.instrument_id] = b.ts_open
                out.append(b)
        return out

    async def _rest_bars(self, interval: str, step_ns: int) -> list[Bar]:
        bars: list[Bar] = []
        for iid in self.instruments:
            last = self._last_bar_ts.get(iid)
            since = None if last is None else (last + step_ns) // NANOS_PER_MS
            bars += await self.fetch_bars(iid, interval, since_ms=since, limit=1000 if last is not None else 2)
        return self._fresh(bars)

    def _stream_down(self, what: str, exc: BaseException, retry_ns: int) -> None:
        self._ws_retry_at = self._now() + retry_ns
        if self.md_mode != "rest":
            self.md_mode = "rest"
            self._alert("WARNING", "MARKET_DATA_REST", (
                f"{self.venue}: the {what} stream is down ({type(exc).__name__}); polling REST instead, the stream "
                f"is tried again every {retry_ns / NANOS_PER_SECOND:g} s"))

    async def next_bars(self, interval: str = "1m", *, ws_retry_ns: int = 30 * NANOS_PER_SECOND) -> list[Bar]:
        """The next closed bars of the venue's instruments, oldest first, each
        bar once. From the WebSocket kline streams (ccxt.pro
        ``watch_ohlcv_for_symbols``; the raw event's exact strings) while
        they work: waits for the next kline event and returns the bars it
        closed (possibly none: an update of a bar still open). When the
        stream fails: REST klines after the last bar delivered (``GET
        /api/v3/klines``), and the stream is tried again every
        ``ws_retry_ns`` of clock; back on the stream, the gap is filled from
        REST first.

        Raises:
            ValueError: an interval not in Binance's list (named).
            TransientVenueError, VenueThrottled: the REST fallback failed too.
        """
        from venues.klines import INTERVALS_NS

        step = INTERVALS_NS.get(interval)
        if step is None:
            raise ValueError(f"interval: {interval!r} is not a fixed-length Binance kline interval")
        ex = self._exchange()
        if self.md_mode == "ws" or self._now() >= self._ws_retry_at:
            try:
                gap: list[Bar] = []
                if self.md_mode == "rest" and self._last_bar_ts:
                    gap = await self._rest_bars(interval, step)  # the bars missed while the stream was down
                subs = [[u, interval] for u in self.unified.values()]
                if not ex.closed_klines or self.md_mode != "ws":  # bars received since the last call: no wait
                    await ex.watch_ohlcv_for_symbols(subs)
                if self.md_mode != "ws":
                    self.md_mode = "ws"
                closed, ex.closed_klines = ex.closed_klines, []
                got = [b for b in (self._bar_of(k, step) for k in closed) if b is not None]
                return gap + self._fresh(got)
            except VenueError:
                raise
            except (ccxt_async.NetworkError, ccxt_async.ExchangeError) as exc:
                self._stream_down("kline", exc, ws_retry_ns)
        return await self._rest_bars(interval, step)

    async def best_bid_ask(self, instrument_id: InstrumentId, *, ws_retry_ns: int = 30 * NANOS_PER_SECOND
                           ) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """``(bid, bid_qty, ask, ask_qty)`` from the WebSocket ``bookTicker``
        stream (ccxt.pro ``watch_bids_asks``; waits for the next update; exact
        strings), or from ``GET /api/v3/ticker/bookTicker`` while the stream
        is down (tried again every ``ws_retry_ns``).

        Raises:
            TransientVenueError, VenueThrottled: the REST fallback failed too.
        """
        ex = self._exchange()
        if self.md_mode == "ws" or self._now() >= self._ws_retry_at:
            try:
                await ex.watch_bids_asks([self.unified[instrument_id]])
                raw = ex.book_tickers[self._venue_symbol(instrument_id)]
                return Decimal(raw["b"]), Decimal(raw["B"]), Decimal(raw["a"]), Decimal(raw["A"])
            except VenueError:
                raise
            except (ccxt_async.NetworkError, ccxt_async.ExchangeError, KeyError) as exc:
                self._stream_down("bookTicker", exc, ws_retry_ns)
        return await self.fetch_best_bid_ask(instrument_id)

    def _apply_exec_report(self, r: Mapping[str, Any]) -> bool:
        """Apply one raw ``executionReport`` (Binance "Order Update") to the
        tracked order it is about; False for another application's order."""
        coid = str(r.get("C") or r.get("c")) if r.get("x") == "CANCELED" else str(r.get("c"))
        t = self._orders.get(coid)
        if t is None:
            return False
        ts = int(r.get("T") or r.get("E") or self._now() // NANOS_PER_MS) * NANOS_PER_MS
        fills = []
        if r.get("x") == "TRADE" and int(r.get("t", -1)) >= 0:
            fills.append(OrderFilled(
                ts_event=ts, ts_init=self._now(), client_order_id=coid, instrument_id=t.instrument_id,
                model_id=t.model_id, venue_order_id=str(r["i"]), trade_id=self._trade_id(r["t"]),
                side=str(r.get("S", t.side)),
                last_qty=Decimal(str(r["l"])), last_px=Decimal(str(r["L"])), commission=Decimal(str(r.get("n") or "0")),
                commission_currency=str(r.get("N") or self.quote),
                liquidity_side=(LiquiditySide.MAKER if r.get("m") else LiquiditySide.TAKER).value))
        info = {"status": r.get("X"), "orderId": r.get("i"), "executedQty": r.get("z", "0")}
        if fills and Decimal(str(info["executedQty"])) < t.executed:
            info["executedQty"] = dec_str(t.executed)  # an older report than what is known: keep the larger
        reason = str(r.get("r")) if r.get("x") == "REJECTED" and r.get("r") not in (None, "NONE") else ""
        self._apply(t, info, fills, ts, reason=reason)
        return True

    async def next_order_updates(self, *, ws_retry_ns: int = 30 * NANOS_PER_SECOND) -> int:
        """Wait for the next order updates of the user data stream and
        report them (``OrderAccepted``, ``OrderFilled`` with ``n``/``N`` as
        the commission and its asset, ``OrderCanceled``, ``OrderExpired``,
        ``OrderRejected``); returns how many execution reports were about
        the desk's orders. The stream is the market's own
        (:meth:`_user_stream_connect`, :meth:`_user_stream_reports`: on spot
        ccxt.pro ``watch_orders`` through a ``userDataStream.subscribe.
        signature`` request on Binance's WebSocket API, signed like a REST
        request; on USD-M the listenKey stream). After every
        (re)subscription the orders are reconciled over REST first
        (:meth:`poll`), so nothing that happened while the stream was down
        is missed; ``user_mode`` is ``ws`` while the stream works. While it
        is down (a ccxt network or exchange error): ``user_mode`` ``rest``
        (the session reads the venue DEGRADED), one WARNING alert, one REST
        :meth:`poll` per call, the stream tried again every ``ws_retry_ns``
        of clock.

        Raises:
            TransientVenueError, VenueThrottled: the REST fallback failed too
                (or a REST part of the stream's set-up, such as USD-M's
                listenKey request).
        """
        if self.user_mode == "ws" or self._now() >= self._user_retry_at:
            try:
                if await self._user_stream_connect():
                    self.user_mode = "ws"
                    await self.poll()  # REST reconciliation after every (re)subscription
                reports = await self._user_stream_reports()
                return sum(1 for r in reports if self._apply_exec_report(r))
            except VenueError:
                raise
            except (ccxt_async.NetworkError, ccxt_async.ExchangeError) as exc:
                self._user_retry_at = self._now() + ws_retry_ns
                if self.user_mode != "rest":
                    self.user_mode = "rest"
                    self._alert("WARNING", "USER_STREAM_REST", (
                        f"{self.venue}: the user data stream is down ({type(exc).__name__}); orders are polled over "
                        f"REST, the stream is tried again every {ws_retry_ns / NANOS_PER_SECOND:g} s"))
        await self.poll()
        return 0

    async def _user_stream_connect(self) -> bool:
        """Make sure the user data stream is subscribed (spot: ccxt.pro
        ``authenticate``, a ``userDataStream.subscribe.signature`` request
        once per WebSocket API connection). True when a new subscription
        was made since the last call (the first, or one after a
        reconnect): the caller reconciles over REST then.

        Raises:
            ccxt NetworkError / ExchangeError: the stream cannot be set up.
        """
        ex = self._exchange()
        await ex.authenticate({"type": "spot"})  # subscribes once per connection
        if ex.user_subscriptions != self._user_subs_seen:
            self._user_subs_seen = ex.user_subscriptions
            return True
        return False

    async def _user_stream_reports(self) -> list[Mapping[str, Any]]:
        """The raw execution reports received since the last call (exact
        strings, arrival order); waits for the next one (ccxt.pro
        ``watch_orders``) when there is none yet.

        Raises:
            ccxt NetworkError / ExchangeError: the stream dropped.
        """
        ex = self._exchange()
        if not ex.exec_reports:
            await ex.watch_orders()
        reports, ex.exec_reports = ex.exec_reports, []
        return reports

    async def fetch_bars(self, instrument_id: InstrumentId, interval: str = "1m", since_ms: int | None = None,
                         limit: int = 500) -> list[Bar]:
        """Closed klines of ``instrument_id`` (``GET /api/v3/klines``, raw
        12-field rows, exact strings), oldest first; a bar still open at the
        venue's time is left out.

        Raises:
            ValueError: an interval not in Binance's list (named).
            TransientVenueError, VenueThrottled: the read failed.
        """
        from venues.klines import INTERVALS_NS

        step = INTERVALS_NS.get(interval)
        if step is None:
            raise ValueError(f"interval: {interval!r} is not a fixed-length Binance kline interval")
        req: dict[str, Any] = {"symbol": self._venue_symbol(instrument_id), "interval": interval,
                               "limit": int(limit)}
        if since_ms is not None:
            req["startTime"] = int(since_ms)
        rows = await self._read("klines", lambda: self._api_klines(req))
        venue_now_ms = self._now() // NANOS_PER_MS + self.clock_offset_ms
        bars = []
        for r in rows:
            if int(r[6]) >= venue_now_ms:
                continue  # still open
            ts_open = int(r[0]) * NANOS_PER_MS
            bars.append(Bar(instrument_id, Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]),
                            Decimal(r[5]), ts_open, ts_open + step))
        return bars

    async def fetch_best_bid_ask(self, instrument_id: InstrumentId) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """``(bid, bid_qty, ask, ask_qty)`` (``GET /api/v3/ticker/bookTicker``,
        exact strings).

        Raises:
            TransientVenueError, VenueThrottled: the read failed.
        """
        sym = self._venue_symbol(instrument_id)
        r = await self._read("book ticker", lambda: self._api_book_ticker(sym))
        return Decimal(r["bidPrice"]), Decimal(r["bidQty"]), Decimal(r["askPrice"]), Decimal(r["askQty"])

    async def close(self) -> None:
        """Wait for background requests and close ccxt's HTTP session."""
        await self.settle()
        if self.ex is not None:
            self.ex.timeout_on_exit = 0
            await self.ex.close()
