"""A local server that speaks the subset of Binance's spot REST API the desk
uses, for driving the real ccxt code path in tests (DESIGN.md section 8).

It runs on aiohttp (ccxt's own HTTP dependency) on 127.0.0.1, port 0, inside
the test's event loop. What it does like the exchange (Binance Spot API docs,
"General API Information", "Endpoint security type", "SIGNED endpoint
security", "Timing security", "Filters", "Error codes"):

* **SIGNED requests** carry ``X-MBX-APIKEY`` and ``signature`` =
  HMAC-SHA256(secret, totalParams), where totalParams is the query string
  concatenated with the request body (without the ``signature`` parameter).
  Every signed request is counted (``signed_total``) and every one whose
  signature verified (``signed_ok``); a bad one gets ``-1022``.
* **Timing**: a request is refused with ``-1021`` when ``timestamp <
  serverTime - recvWindow`` or ``timestamp > serverTime + 1000``
  (``recvWindow`` default 5000, at most 60000). The server's time is the
  shared test clock plus ``offset_ms``.
* **A tiny matching model** per symbol against a best bid/ask
  (:meth:`FakeBinance.set_book`): a MARKET order fills at the touch (buy at
  the ask, sell at the bid, up to the quantity shown there; the rest
  expires), a LIMIT that crosses fills at the touch as taker and the rest
  rests (``PARTIALLY_FILLED``), a resting LIMIT fills at its own price as
  maker when the book moves through it; IOC/FOK expire what does not fill;
  LIMIT_MAKER that would take is rejected (``-2010``). Commissions are
  ``fee_rate`` of what is received (base on a buy, quote on a sell), or in
  BNB at ``bnb_price`` when ``bnb_fees`` is set. Balances are locked and
  released like the exchange's.
* **Filters** from the exchangeInfo file (PRICE_FILTER, LOT_SIZE,
  NOTIONAL/MIN_NOTIONAL) refuse orders with ``-1013 Filter failure: ...``;
  a symbol not ``TRADING`` gets ``-1013 Market is closed.``.
* ``newClientOrderId`` must be unique among open orders (``-2010 Duplicate
  order sent.``); ``GET /order`` by ``origClientOrderId`` finds the most
  recent order with that id (``-2013 Order does not exist.``); a cancel of
  an unknown or closed order gets ``-2011 Unknown order sent.``.
* **Native OCO** (``POST /api/v3/orderList/oco``, above/below legs): a fill
  of one leg expires the other.

Fault knobs: ``offset_ms`` (server clock ahead of the desk's), ``fail_next``
(the next N requests answer HTTP 429 or 418 with ``Retry-After``; a request
arriving while a 429 is in force earns a 418 ban when ``strict_throttle``),
``drop_next_order`` (``"after"``: accept the next order, then drop the
connection without answering; ``"before"``: drop it without accepting;
either way the outcome is unknown to the client).

Every request is recorded (``requests``: ``(method, path)``), also those
refused or answered with an error, so a test can assert which endpoints were
never called (``/fapi``, ``/dapi``, ``/sapi/v1/margin`` on a spot desk).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import asyncio

from aiohttp import WSMsgType, web

from core.clock import Clock

Q8 = Decimal("0.00000001")
ZERO = Decimal(0)


def s8(d: Decimal) -> str:
    """Binance's 8-decimal string of a Decimal (``"0.00100000"``)."""
    return format(d.quantize(Q8), "f")


@dataclass
class SymbolSpec:
    """One symbol of the exchangeInfo file: status, assets and filters."""

    symbol: str
    status: str
    base: str
    quote: str
    tick: Decimal
    min_price: Decimal
    max_price: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    notional_filter: str  # "NOTIONAL" or "MIN_NOTIONAL"


@dataclass
class FakeOrder:
    """An order in the server's book (Binance's fields)."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    stop_price: Decimal
    orig_qty: Decimal
    time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    order_list_id: int = -1
    locked: Decimal = ZERO  # quote for buys, base for sells
    triggered: bool = False
    reduce_only: bool = False  # USD-M futures

    def to_json(self) -> dict[str, Any]:
        """``GET /api/v3/order`` shape."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id, "price": s8(self.price), "origQty": s8(self.orig_qty),
            "executedQty": s8(self.executed_qty), "cummulativeQuoteQty": s8(self.cum_quote),
            "status": self.status, "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
            "stopPrice": s8(self.stop_price), "icebergQty": s8(ZERO), "time": self.time,
            "updateTime": self.update_time or self.time, "isWorking": self.status in ("NEW", "PARTIALLY_FILLED"),
            "workingTime": self.time, "origQuoteOrderQty": s8(ZERO), "selfTradePreventionMode": "NONE",
        }

    @property
    def is_open(self) -> bool:
        """NEW or PARTIALLY_FILLED."""
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass
class FakeTrade:
    """One fill (``GET /api/v3/myTrades`` shape)."""

    symbol: str
    id: int
    order_id: int
    order_list_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def to_json(self) -> dict[str, Any]:
        """``GET /api/v3/myTrades`` row shape."""
        return {
            "symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": self.order_list_id,
            "price": s8(self.price), "qty": s8(self.qty), "quoteQty": s8(self.price * self.qty),
            "commission": s8(self.commission), "commissionAsset": self.commission_asset, "time": self.time,
            "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True,
        }


class Refuse(Exception):
    """An error answer: HTTP status and Binance's ``{"code", "msg"}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        self.status, self.code, self.msg = status, code, msg
        super().__init__(f"{status} {code} {msg}")


@dataclass
class Fault:
    """An injected answer: HTTP ``status`` with ``Retry-After`` for ``count`` requests."""

    status: int
    retry_after_s: int
    count: int


@dataclass
class Book:
    """The best bid and ask of a symbol (price, quantity shown)."""

    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal


def load_symbols(path: Path) -> tuple[dict[str, Any], dict[str, SymbolSpec]]:
    """The exchangeInfo document and its symbols' specs."""
    doc = json.loads(Path(path).read_text())
    specs: dict[str, SymbolSpec] = {}
    for s in doc["symbols"]:
        f = {x["filterType"]: x for x in s["filters"]}
        if "NOTIONAL" in f:
            mn, kind = Decimal(f["NOTIONAL"]["minNotional"]), "NOTIONAL"
        elif "MIN_NOTIONAL" in f:  # spot before 2023: minNotional; USD-M futures: notional
            mn = Decimal(f["MIN_NOTIONAL"].get("minNotional", f["MIN_NOTIONAL"].get("notional", "0")))
            kind = "MIN_NOTIONAL"
        else:
            mn, kind = ZERO, "NOTIONAL"
        specs[s["symbol"]] = SymbolSpec(
            s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"], Decimal(f["PRICE_FILTER"]["tickSize"]),
            Decimal(f["PRICE_FILTER"]["minPrice"]), Decimal(f["PRICE_FILTER"]["maxPrice"]),
            Decimal(f["LOT_SIZE"]["stepSize"]), Decimal(f["LOT_SIZE"]["minQty"]), Decimal(f["LOT_SIZE"]["maxQty"]),
            mn, kind)
    return doc, specs


class FakeBinance:
    """The fake exchange (see the module docstring).

    Args:
        clock: the shared test clock (the server's time is it plus ``offset_ms``).
        exchange_info: path of an exchangeInfo JSON file answered verbatim.
        api_key, secret: the only credentials accepted.
        balances: starting free balances (asset -> Decimal).
        book_ticker: path of a recorded ``GET /ticker/bookTicker`` response
            used as the starting book of its symbol.
        klines: path of a recorded ``GET /api/v3/klines`` response (12-field
            arrays) answered for every symbol.
        can_withdraw: what ``GET /sapi/v1/account/apiRestrictions`` says of
            the key (``enableWithdrawals``).
    """

    def __init__(self, clock: Clock, exchange_info: Path, *, api_key: str = "test-key",
                 secret: str = "test-secret", balances: dict[str, Decimal] | None = None,
                 book_ticker: Path | None = None, klines: Path | None = None, can_withdraw: bool = False,
                 fee_rate: Decimal = Decimal("0.001")) -> None:
        self.clock = clock
        self.exchange_info_path = Path(exchange_info)
        self.exchange_info, self.symbols = load_symbols(self.exchange_info_path)
        self.api_key = api_key
        self.secret = secret
        self.offset_ms = 0
        self.fee_rate = fee_rate
        self.bnb_fees = False
        self.bnb_price = Decimal("300")
        self.can_withdraw = can_withdraw
        self.free: dict[str, Decimal] = dict(balances or {"USDT": Decimal("10000"), "BTC": Decimal("1")})
        self.locked: dict[str, Decimal] = {}
        self.books: dict[str, Book] = {}
        if book_ticker is not None:
            bt = json.loads(Path(book_ticker).read_text())
            self.books[bt["symbol"]] = Book(Decimal(bt["bidPrice"]), Decimal(bt["bidQty"]),
                                            Decimal(bt["askPrice"]), Decimal(bt["askQty"]))
        self.klines: list[list[Any]] = json.loads(Path(klines).read_text()) if klines is not None else []
        self.orders: dict[int, FakeOrder] = {}
        self.trades: list[FakeTrade] = []
        self.order_lists: dict[int, list[int]] = {}
        self._next_order = 1
        self._next_trade = 1
        self._next_list = 1
        # records
        self.requests: list[tuple[str, str]] = []
        self.signed_total = 0
        self.signed_ok = 0
        self.answered: list[tuple[str, str, int]] = []
        # faults
        self.faults: list[Fault] = []
        self.strict_throttle = True
        self.throttled_until_ms = 0
        self.ban_s = 120
        self.drop_next_order: str | None = None
        #: (path, Binance error code) of every error answer
        self.errors: list[tuple[str, int]] = []
        self.on_request: Callable[[str, str], None] | None = None
        # WebSocket streams (/ws/<n>): connections and their subscriptions
        self.ws_clients: list[tuple[web.WebSocketResponse, set[str]]] = []
        self.subscribed = asyncio.Event()
        #: refuse WebSocket upgrades (HTTP 503): the streams are down
        self.ws_refuse = False
        # WebSocket API user-data subscribers: (connection, its outgoing queue)
        self.user_streams: list[tuple[web.WebSocketResponse, asyncio.Queue[dict[str, Any]]]] = []
        self.user_subscribed = asyncio.Event()
        #: USER_STREAM requests (API key header only): how many, how many had the right key
        self.key_checked = 0
        self.key_ok = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> "FakeBinance":
        """Listen on 127.0.0.1, port 0 (any free port)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        """Stop listening (WebSocket connections are closed first)."""
        await self.drop_ws()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def urls(self) -> dict[str, str]:
        """ccxt ``urls['api']`` pointing every spot section here."""
        b = self.base_url
        return {"public": f"{b}/api/v3", "private": f"{b}/api/v3", "v1": f"{b}/api/v1", "sapi": f"{b}/sapi/v1",
                "ws": b.replace("http://", "ws://") + "/ws", "ws-api": b.replace("http://", "ws://") + "/ws-api/v3"}

    def now_ms(self) -> int:
        """The server's time: the shared clock plus ``offset_ms``."""
        return self.clock.timestamp_ns() // 1_000_000 + self.offset_ms

    # ------------------------------------------------------------ knobs
    def fail_next(self, status: int, retry_after_s: int, count: int = 1) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (429 or
        418) and ``Retry-After: retry_after_s``."""
        self.faults.append(Fault(status, retry_after_s, count))

    def set_book(self, symbol: str, bid: str, ask: str, bid_qty: str = "100", ask_qty: str = "100") -> None:
        """Move the best bid/ask of ``symbol`` and match resting orders
        against it (makers fill at their own price)."""
        self.books[symbol] = Book(Decimal(bid), Decimal(bid_qty), Decimal(ask), Decimal(ask_qty))
        self._match_resting(symbol)

    def open_orders_of(self, symbol: str | None = None) -> list[FakeOrder]:
        """The open orders (optionally of one symbol), by order id."""
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def order_by_client_id(self, client_order_id: str) -> FakeOrder | None:
        """The most recent order with that client order id."""
        found = [o for o in self.orders.values() if o.client_order_id == client_order_id]
        return found[-1] if found else None

    def paths(self) -> list[str]:
        """The paths of every request received, in order."""
        return [p for _, p in self.requests]

    # ------------------------------------------------------------ HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        if self._is_ws_path(path) and request.headers.get("Upgrade", "").lower() == "websocket":
            if self.ws_refuse:
                self.requests.append(("WS", path))
                return web.Response(status=503, text="streams unavailable")
            if path.startswith("/ws-api"):
                return await self._ws_api(request)
            return await self._ws(request)
        self.requests.append((method, path))
        if self.on_request is not None:
            self.on_request(method, path)
        body = await request.text()
        now = self.now_ms()
        if self.faults:
            f = self.faults[0]
            f.count -= 1
            if f.count <= 0:
                self.faults.pop(0)
            if f.status == 429:
                self.throttled_until_ms = now + f.retry_after_s * 1000
            return self._error(method, path, f.status, -1003,
                               "Too many requests; current limit is exceeded." if f.status == 429
                               else "Way too many requests; IP banned.", retry_after=f.retry_after_s)
        if self.strict_throttle and now < self.throttled_until_ms:
            # Binance: repeating while rate limited earns an IP ban (HTTP 418)
            return self._error(method, path, 418, -1003, "Way too many requests; IP banned.",
                               retry_after=self.ban_s)
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
        try:
            route = self._route(method, path)
            if route is None:
                raise Refuse(404, -1000, f"unknown endpoint {method} {path}")
            handler, signed = route
            if signed == "apikey":  # USER_STREAM endpoints: the API key header, no signature
                self._verify_key(request)
            elif signed:
                self._verify(request, body, params, now)
            result = handler(params, now)
            if result is _DROP:
                self.answered.append((method, path, 0))
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            self.answered.append((method, path, 200))
            return web.json_response(result, headers={"X-MBX-USED-WEIGHT-1M": "1"})
        except Refuse as r:
            return self._error(method, path, r.status, r.code, r.msg)

    # ------------------------------------------------------------ WebSocket streams
    def _is_ws_path(self, path: str) -> bool:
        """Whether a WebSocket upgrade on ``path`` is one of this server's
        streams (spot: ``/ws/<n>`` raw streams, ``/ws-api/v3``)."""
        return path.startswith("/ws")

    def _verify_key(self, request: web.Request) -> None:
        """A ``USER_STREAM`` endpoint (Binance "Endpoint security type"):
        the ``X-MBX-APIKEY`` header must be the account's key; nothing is
        signed. Counted in ``key_checked`` / ``key_ok``."""
        self.key_checked += 1
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise Refuse(401, -2015, "Invalid API-key, IP, or permissions for action.")
        self.key_ok += 1

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        """Binance's raw streams endpoint: ``SUBSCRIBE`` requests are answered
        ``{"result": null, "id": N}``; events are pushed by the test
        (:meth:`push_kline`, :meth:`push_book_ticker`)."""
        self.requests.append(("WS", request.path))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subs: set[str] = set()
        entry = (ws, subs)
        self.ws_clients.append(entry)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                if req.get("method") == "SUBSCRIBE":
                    subs.update(req.get("params", []))
                    await ws.send_json({"result": None, "id": req.get("id")})
                    self.subscribed.set()
                elif req.get("method") == "UNSUBSCRIBE":
                    subs.difference_update(req.get("params", []))
                    await ws.send_json({"result": None, "id": req.get("id")})
        finally:
            if entry in self.ws_clients:
                self.ws_clients.remove(entry)
        return ws

    async def _ws_api(self, request: web.Request) -> web.WebSocketResponse:
        """Binance's WebSocket API (``/ws-api/v3``): ``userDataStream.subscribe.
        signature`` with ``apiKey``, ``timestamp``, ``recvWindow`` and
        ``signature`` = HMAC-SHA256(secret, the other params sorted by name
        as ``key=value&...``), verified and counted like a signed REST
        request; then every order change is sent as ``{"subscriptionId": 0,
        "event": <executionReport>}``."""
        self.requests.append(("WS", request.path))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        entry = None

        async def writer() -> None:
            while True:
                payload = await queue.get()
                if ws.closed:
                    return
                await ws.send_json(payload)

        task = asyncio.get_running_loop().create_task(writer())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                rid = req.get("id")
                if req.get("method") != "userDataStream.subscribe.signature":
                    queue.put_nowait({"id": rid, "status": 400, "error": {"code": -1000, "msg": "unknown method"}})
                    continue
                params = {k: str(v) for k, v in (req.get("params") or {}).items()}
                try:
                    self._verify_ws(params)
                except Refuse as r:
                    self.errors.append((request.path, r.code))
                    queue.put_nowait({"id": rid, "status": r.status, "error": {"code": r.code, "msg": r.msg}})
                    continue
                queue.put_nowait({"id": rid, "status": 200, "result": {"subscriptionId": 0}})
                if entry is None:
                    entry = (ws, queue)
                    self.user_streams.append(entry)
                self.user_subscribed.set()
        finally:
            task.cancel()
            if entry is not None and entry in self.user_streams:
                self.user_streams.remove(entry)
        return ws

    def _verify_ws(self, params: dict[str, str]) -> None:
        self.signed_total += 1
        if params.get("apiKey") != self.api_key:
            raise Refuse(401, -2015, "Invalid API-key, IP, or permissions for action.")
        sig = params.get("signature")
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if sig is None or not hmac.compare_digest(sig, expected):
            raise Refuse(400, -1022, "Signature for this request is not valid.")
        self.signed_ok += 1
        now = self.now_ms()
        ts, window = int(params.get("timestamp", "0")), int(params.get("recvWindow", "5000"))
        if ts < now - window or ts > now + 1000:
            raise Refuse(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _exec_report(self, o: FakeOrder, exec_type: str, trade: FakeTrade | None = None) -> None:
        """Queue an ``executionReport`` of ``o`` to every user-data subscriber
        (Binance's "Order Update" event; for a cancel, ``c`` is the cancel's
        id and ``C`` the order's)."""
        if not self.user_streams:
            return
        now = self.now_ms()
        canceled = exec_type == "CANCELED"
        ev = {
            "e": "executionReport", "E": now, "s": o.symbol,
            "c": f"cancel-{o.order_id}" if canceled else o.client_order_id, "S": o.side, "o": o.type,
            "f": o.time_in_force, "q": s8(o.orig_qty), "p": s8(o.price), "P": s8(o.stop_price), "F": s8(ZERO),
            "g": o.order_list_id, "C": o.client_order_id if canceled else "", "x": exec_type, "X": o.status,
            "r": "NONE", "i": o.order_id, "l": s8(trade.qty if trade else ZERO),
            "z": s8(o.executed_qty), "L": s8(trade.price if trade else ZERO),
            "n": s8(trade.commission) if trade else "0", "N": trade.commission_asset if trade else None,
            "T": now, "t": trade.id if trade else -1, "I": 1, "w": o.is_open, "m": trade.is_maker if trade else False,
            "M": False, "O": o.time, "Z": s8(o.cum_quote), "Y": s8(trade.price * trade.qty if trade else ZERO),
            "Q": s8(ZERO),
        }
        for _, q in self.user_streams:
            q.put_nowait({"subscriptionId": 0, "event": ev})

    async def _push(self, stream: str, payload: dict[str, Any]) -> int:
        n = 0
        for ws, subs in list(self.ws_clients):
            if stream in subs and not ws.closed:
                await ws.send_json(payload)
                n += 1
        return n

    async def push_kline(self, symbol: str, row: list[Any], closed: bool = True, interval: str = "1m") -> int:
        """Send a ``kline`` event built from a 12-field REST kline row to the
        subscribers of ``<symbol>@kline_<interval>``; returns how many."""
        k = {"t": row[0], "T": row[6], "s": symbol, "i": interval, "f": 1, "L": 2, "o": row[1], "c": row[4],
             "h": row[2], "l": row[3], "v": row[5], "n": row[8], "x": closed, "q": row[7], "V": row[9],
             "Q": row[10], "B": "0"}
        return await self._push(f"{symbol.lower()}@kline_{interval}",
                                {"e": "kline", "E": self.now_ms(), "s": symbol, "k": k})

    async def push_book_ticker(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str,
                               update_id: int = 1) -> int:
        """Send a ``bookTicker`` event (no ``e`` field, as Binance sends it)
        to the subscribers of ``<symbol>@bookTicker``; returns how many."""
        return await self._push(f"{symbol.lower()}@bookTicker",
                                {"u": update_id, "s": symbol, "b": bid, "B": bid_qty, "a": ask, "A": ask_qty})

    async def drop_ws(self) -> None:
        """Close every WebSocket connection (the stream drops)."""
        self.subscribed.clear()
        self.user_subscribed.clear()
        for ws, _ in list(self.ws_clients) + list(self.user_streams):
            await ws.close()

    def _error(self, method: str, path: str, status: int, code: int, msg: str,
               retry_after: int | None = None) -> web.Response:
        self.answered.append((method, path, status))
        self.errors.append((path, code))
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)

    def _verify(self, request: web.Request, body: str, params: dict[str, str], now: int) -> None:
        self.signed_total += 1
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise Refuse(401, -2015, "Invalid API-key, IP, or permissions for action.")
        q_wo, sig_q = _split_signature(request.query_string)
        b_wo, sig_b = _split_signature(body)
        sig = sig_q if sig_q is not None else sig_b
        total = q_wo + b_wo
        expected = hmac.new(self.secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if sig is None or not hmac.compare_digest(sig, expected):
            raise Refuse(400, -1022, "Signature for this request is not valid.")
        self.signed_ok += 1
        try:
            ts = int(params["timestamp"])
        except (KeyError, ValueError):
            raise Refuse(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or "
                                     "malformed.") from None
        window = int(params.get("recvWindow", "5000"))
        if window > 60000:
            raise Refuse(400, -1131, "recvWindow must be less than 60000")
        if ts < now - window or ts > now + 1000:
            raise Refuse(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _route(self, method: str, path: str) -> tuple[Callable[[dict[str, str], int], Any], bool] | None:
        table: dict[tuple[str, str], tuple[Callable[[dict[str, str], int], Any], bool]] = {
            ("GET", "/api/v3/ping"): (lambda p, n: {}, False),
            ("GET", "/api/v3/time"): (lambda p, n: {"serverTime": n}, False),
            ("GET", "/api/v3/exchangeInfo"): (self._exchange_info, False),
            ("GET", "/api/v3/klines"): (self._klines, False),
            ("GET", "/api/v3/ticker/bookTicker"): (self._book_ticker, False),
            ("GET", "/api/v3/account"): (self._account, True),
            ("POST", "/api/v3/order"): (self._new_order, True),
            ("GET", "/api/v3/order"): (self._get_order, True),
            ("DELETE", "/api/v3/order"): (self._cancel_order, True),
            ("GET", "/api/v3/openOrders"): (self._open_orders, True),
            ("DELETE", "/api/v3/openOrders"): (self._cancel_open_orders, True),
            ("GET", "/api/v3/allOrders"): (self._all_orders, True),
            ("GET", "/api/v3/myTrades"): (self._my_trades, True),
            ("POST", "/api/v3/orderList/oco"): (self._new_oco, True),
            ("GET", "/sapi/v1/account/apiRestrictions"): (self._api_restrictions, True),
        }
        return table.get((method, path))

    # ------------------------------------------------------------ market data
    def _exchange_info(self, p: dict[str, str], now: int) -> dict[str, Any]:
        doc = dict(self.exchange_info)
        doc["serverTime"] = now
        return doc

    def _klines(self, p: dict[str, str], now: int) -> list[list[Any]]:
        self._spec(p)
        start = int(p["startTime"]) if "startTime" in p else None
        end = int(p["endTime"]) if "endTime" in p else None
        limit = min(int(p.get("limit", "500")), 1000)
        rows = [k for k in self.klines if (start is None or k[0] >= start) and (end is None or k[0] <= end)]
        return rows[:limit]

    def _book_ticker(self, p: dict[str, str], now: int) -> dict[str, Any]:
        spec = self._spec(p)
        b = self.books[spec.symbol]
        return {"symbol": spec.symbol, "bidPrice": s8(b.bid), "bidQty": s8(b.bid_qty), "askPrice": s8(b.ask),
                "askQty": s8(b.ask_qty)}

    # ------------------------------------------------------------ account
    def _account(self, p: dict[str, str], now: int) -> dict[str, Any]:
        assets = sorted(set(self.free) | set(self.locked))
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": s8(self.fee_rate), "taker": s8(self.fee_rate), "buyer": s8(ZERO),
                                "seller": s8(ZERO)},
            "canTrade": True, "canWithdraw": self.can_withdraw, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": now, "accountType": "SPOT",
            "balances": [{"asset": a, "free": s8(self.free.get(a, ZERO)), "locked": s8(self.locked.get(a, ZERO))}
                         for a in assets],
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def _api_restrictions(self, p: dict[str, str], now: int) -> dict[str, Any]:
        return {"ipRestrict": False, "createTime": 1698645219000, "enableReading": True,
                "enableSpotAndMarginTrading": True, "enableWithdrawals": self.can_withdraw,
                "enableInternalTransfer": False, "enableMargin": False, "enableFutures": False,
                "permitsUniversalTransfer": False, "enableVanillaOptions": False,
                "enablePortfolioMarginTrading": False}

    # ------------------------------------------------------------ orders
    def _spec(self, p: dict[str, str]) -> SymbolSpec:
        sym = p.get("symbol")
        if not sym:
            raise Refuse(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        spec = self.symbols.get(sym)
        if spec is None:
            raise Refuse(400, -1121, "Invalid symbol.")
        return spec

    def _dec(self, p: dict[str, str], key: str) -> Decimal:
        try:
            return Decimal(p[key])
        except Exception:
            raise Refuse(400, -1102, f"Mandatory parameter '{key}' was not sent, was empty/null, or malformed.") \
                from None

    def _check_filters(self, spec: SymbolSpec, qty: Decimal, price: Decimal | None, ref_price: Decimal) -> None:
        if price is not None:
            if price < spec.min_price or price > spec.max_price or price % spec.tick != 0:
                raise Refuse(400, -1013, "Filter failure: PRICE_FILTER")
        if qty < spec.min_qty or qty > spec.max_qty or qty % spec.step != 0:
            raise Refuse(400, -1013, "Filter failure: LOT_SIZE")
        if qty * (price if price is not None else ref_price) < spec.min_notional:
            raise Refuse(400, -1013, f"Filter failure: {spec.notional_filter}")

    def _lock(self, asset: str, amount: Decimal) -> None:
        if self.free.get(asset, ZERO) < amount:
            raise Refuse(400, -2010, "Account has insufficient balance for requested action.")
        self.free[asset] = self.free.get(asset, ZERO) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount

    def _unlock(self, o: FakeOrder) -> None:
        spec = self.symbols[o.symbol]
        asset = spec.quote if o.side == "BUY" else spec.base
        self.locked[asset] = self.locked.get(asset, ZERO) - o.locked
        self.free[asset] = self.free.get(asset, ZERO) + o.locked
        o.locked = ZERO

    def _create(self, p: dict[str, str], now: int, *, side: str, type_: str, qty: Decimal, price: Decimal | None,
                stop: Decimal | None, tif: str, coid: str, list_id: int = -1) -> FakeOrder:
        spec = self._spec(p)
        if spec.status != "TRADING":
            raise Refuse(400, -1013, "Market is closed.")
        if any(o.is_open and o.client_order_id == coid for o in self.orders.values()):
            raise Refuse(400, -2010, "Duplicate order sent.")
        book = self.books.get(spec.symbol)
        if book is None:
            raise Refuse(400, -1013, "Market is closed.")
        ref = book.ask if side == "BUY" else book.bid
        self._check_filters(spec, qty, price, ref)
        if type_ == "LIMIT_MAKER" and price is not None and (
                (side == "BUY" and price >= book.ask) or (side == "SELL" and price <= book.bid)):
            raise Refuse(400, -2010, "Order would immediately match and take.")
        o = FakeOrder(spec.symbol, self._next_order, coid, side, type_, tif, price or ZERO, stop or ZERO, qty, now,
                      update_time=now, order_list_id=list_id)
        # reservation: a buy locks quote (at its limit, or at the ask for a market order), a sell the base
        if side == "BUY":
            self._lock(spec.quote, (qty * (price if price is not None else book.ask)).quantize(Q8))
            o.locked = (qty * (price if price is not None else book.ask)).quantize(Q8)
        else:
            self._lock(spec.base, qty)
            o.locked = qty
        self._next_order += 1
        self.orders[o.order_id] = o
        return o

    def _new_order(self, p: dict[str, str], now: int) -> Any:
        side = p.get("side", "")
        type_ = p.get("type", "")
        if side not in ("BUY", "SELL"):
            raise Refuse(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if type_ not in ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT"):
            raise Refuse(400, -1116, "Invalid orderType.")
        if "quoteOrderQty" in p:
            raise Refuse(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        qty = self._dec(p, "quantity")
        price = self._dec(p, "price") if type_ in ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT") else None
        stop = self._dec(p, "stopPrice") if type_ in ("STOP_LOSS", "STOP_LOSS_LIMIT") else None
        tif = p.get("timeInForce", "GTC") if type_ in ("LIMIT", "STOP_LOSS_LIMIT") else "GTC"
        coid = p.get("newClientOrderId") or f"srv-{self._next_order}"
        if self.drop_next_order == "before":
            self.drop_next_order = None
            return _DROP
        o = self._create(p, now, side=side, type_=type_, qty=qty, price=price, stop=stop, tif=tif, coid=coid)
        status = o.status
        o.status = "NEW"
        self._exec_report(o, "NEW")
        o.status = status
        fills = self._match_new(o, now)
        if o.status == "EXPIRED":
            self._exec_report(o, "EXPIRED")
        if self.drop_next_order == "after":
            self.drop_next_order = None
            return _DROP
        out = o.to_json()
        out.pop("time"), out.pop("updateTime"), out.pop("isWorking"), out.pop("icebergQty")
        if type_ not in ("STOP_LOSS", "STOP_LOSS_LIMIT"):
            out.pop("stopPrice")
        out["transactTime"] = now
        out["fills"] = [{"price": s8(t.price), "qty": s8(t.qty), "commission": s8(t.commission),
                         "commissionAsset": t.commission_asset, "tradeId": t.id} for t in fills]
        return out

    def _fill(self, o: FakeOrder, qty: Decimal, px: Decimal, now: int, maker: bool) -> FakeTrade:
        spec = self.symbols[o.symbol]
        quote_amt = (qty * px).quantize(Q8)
        if self.bnb_fees:
            fee, fee_asset = (quote_amt * self.fee_rate / self.bnb_price).quantize(Q8, ROUND_HALF_EVEN), "BNB"
        elif o.side == "BUY":
            fee, fee_asset = (qty * self.fee_rate).quantize(Q8, ROUND_HALF_EVEN), spec.base
        else:
            fee, fee_asset = (quote_amt * self.fee_rate).quantize(Q8, ROUND_HALF_EVEN), spec.quote
        if o.side == "BUY":
            spend = quote_amt
            unlock = min(o.locked, (qty * (o.price if o.price > 0 else px)).quantize(Q8))
            o.locked -= unlock
            self.locked[spec.quote] -= unlock
            self.free[spec.quote] += unlock - spend
            self.free[spec.base] = self.free.get(spec.base, ZERO) + qty
        else:
            if o.order_list_id != -1:  # the list's one lock moves to the leg that trades
                legs = [self.orders[i] for i in self.order_lists.get(o.order_list_id, [])]
                pool = sum((x.locked for x in legs), ZERO)
                for x in legs:
                    x.locked = ZERO
                o.locked = pool
            o.locked -= qty
            self.locked[spec.base] -= qty
            self.free[spec.quote] = self.free.get(spec.quote, ZERO) + quote_amt
        self.free[fee_asset] = self.free.get(fee_asset, ZERO) - fee
        t = FakeTrade(o.symbol, self._next_trade, o.order_id, o.order_list_id, px, qty, fee, fee_asset, now,
                      o.side == "BUY", maker)
        self._next_trade += 1
        self.trades.append(t)
        o.executed_qty += qty
        o.cum_quote += quote_amt
        o.update_time = now
        o.status = "FILLED" if o.executed_qty == o.orig_qty else "PARTIALLY_FILLED"
        if o.status == "FILLED" and o.locked:
            self._unlock(o)
        self._exec_report(o, "TRADE", t)
        if o.order_list_id != -1:
            for oid in self.order_lists.get(o.order_list_id, []):
                other = self.orders[oid]
                if other is not o and other.is_open:
                    other.status = "EXPIRED"
                    other.update_time = now
                    self._unlock(other)
                    self._exec_report(other, "EXPIRED")
        return t

    def _match_new(self, o: FakeOrder, now: int) -> list[FakeTrade]:
        book = self.books[o.symbol]
        touch, avail = (book.ask, book.ask_qty) if o.side == "BUY" else (book.bid, book.bid_qty)
        crosses = o.type == "MARKET" or (o.type in ("LIMIT",) and (
            (o.side == "BUY" and o.price >= touch) or (o.side == "SELL" and o.price <= touch)))
        fills: list[FakeTrade] = []
        if o.type in ("STOP_LOSS", "STOP_LOSS_LIMIT"):
            return fills
        if crosses:
            if o.time_in_force == "FOK" and avail < o.orig_qty:
                o.status = "EXPIRED"
                self._unlock(o)
                return fills
            qty = min(avail, o.orig_qty)
            fills.append(self._fill(o, qty, touch, now, maker=False))
        if o.is_open and (o.type == "MARKET" or o.time_in_force in ("IOC", "FOK")):
            o.status = "EXPIRED"
            self._unlock(o)
        return fills

    def _match_resting(self, symbol: str) -> None:
        book = self.books[symbol]
        now = self.now_ms()
        for o in list(self.orders.values()):
            if not o.is_open or o.symbol != symbol:
                continue
            if o.type in ("STOP_LOSS", "STOP_LOSS_LIMIT") and not o.triggered:
                fired = (o.side == "SELL" and book.bid <= o.stop_price) or (o.side == "BUY" and book.ask >= o.stop_price)
                if not fired:
                    continue
                o.triggered = True
                if o.type == "STOP_LOSS":
                    px = book.bid if o.side == "SELL" else book.ask
                    self._fill(o, o.orig_qty - o.executed_qty, px, now, maker=False)
                    continue
            if o.type in ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT"):
                if (o.side == "BUY" and book.ask <= o.price) or (o.side == "SELL" and book.bid >= o.price):
                    avail = book.ask_qty if o.side == "BUY" else book.bid_qty
                    qty = min(avail, o.orig_qty - o.executed_qty)
                    if qty > 0:
                        self._fill(o, qty, o.price, now, maker=True)

    def _find(self, p: dict[str, str]) -> FakeOrder | None:
        spec = self._spec(p)
        if "orderId" in p:
            o = self.orders.get(int(p["orderId"]))
            return o if o is not None and o.symbol == spec.symbol else None
        coid = p.get("origClientOrderId")
        if coid is None:
            raise Refuse(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        found = [o for o in self.orders.values() if o.client_order_id == coid and o.symbol == spec.symbol]
        return found[-1] if found else None

    def _get_order(self, p: dict[str, str], now: int) -> dict[str, Any]:
        o = self._find(p)
        if o is None:
            raise Refuse(400, -2013, "Order does not exist.")
        return o.to_json()

    def _cancel_order(self, p: dict[str, str], now: int) -> dict[str, Any]:
        o = self._find(p)
        if o is None or not o.is_open:
            raise Refuse(400, -2011, "Unknown order sent.")
        return self._cancel(o, now)

    def _cancel(self, o: FakeOrder, now: int) -> dict[str, Any]:
        o.status = "CANCELED"
        o.update_time = now
        self._unlock(o)
        self._exec_report(o, "CANCELED")
        return {"symbol": o.symbol, "origClientOrderId": o.client_order_id, "orderId": o.order_id,
                "orderListId": o.order_list_id, "clientOrderId": f"cancel-{o.order_id}", "transactTime": now,
                "price": s8(o.price), "origQty": s8(o.orig_qty), "executedQty": s8(o.executed_qty),
                "origQuoteOrderQty": s8(ZERO), "cummulativeQuoteQty": s8(o.cum_quote), "status": "CANCELED",
                "timeInForce": o.time_in_force, "type": o.type, "side": o.side, "selfTradePreventionMode": "NONE"}

    def _cancel_open_orders(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        spec = self._spec(p)
        open_ = self.open_orders_of(spec.symbol)
        if not open_:
            raise Refuse(400, -2011, "Unknown order sent.")
        return [self._cancel(o, now) for o in open_]

    def _open_orders(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        sym = p.get("symbol")
        if sym is not None:
            self._spec(p)
        return [o.to_json() for o in self.open_orders_of(sym)]

    def _all_orders(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        spec = self._spec(p)
        limit = min(int(p.get("limit", "500")), 1000)
        rows = [o for o in self.orders.values() if o.symbol == spec.symbol]
        return [o.to_json() for o in rows[-limit:]]

    def _my_trades(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        spec = self._spec(p)
        rows = [t for t in self.trades if t.symbol == spec.symbol]
        if "orderId" in p:
            rows = [t for t in rows if t.order_id == int(p["orderId"])]
        if "fromId" in p:
            rows = [t for t in rows if t.id >= int(p["fromId"])]
        if "startTime" in p:
            rows = [t for t in rows if t.time >= int(p["startTime"])]
        limit = min(int(p.get("limit", "500")), 1000)
        return [t.to_json() for t in rows[:limit]]

    def _new_oco(self, p: dict[str, str], now: int) -> dict[str, Any]:
        """``POST /api/v3/orderList/oco``: an above leg and a below leg of the
        same side and quantity; the base (sell) is locked once."""
        spec = self._spec(p)
        side = p.get("side", "")
        qty = self._dec(p, "quantity")
        list_id = self._next_list
        self._next_list += 1
        legs = []
        for leg in ("below", "above"):  # Binance reports the below leg first
            t = p.get(f"{leg}Type", "")
            if t not in ("LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT"):
                raise Refuse(400, -1116, "Invalid orderType.")
            price = self._dec(p, f"{leg}Price") if t in ("LIMIT_MAKER", "STOP_LOSS_LIMIT") else None
            stop = self._dec(p, f"{leg}StopPrice") if t in ("STOP_LOSS", "STOP_LOSS_LIMIT") else None
            tif = p.get(f"{leg}TimeInForce", "GTC") if t == "STOP_LOSS_LIMIT" else "GTC"
            coid = p.get(f"{leg}ClientOrderId") or f"srv-{self._next_order}"
            legs.append((t, price, stop, tif, coid))
        if side == "SELL":
            self._lock(spec.base, qty)  # once for the list
        made = []
        for t, price, stop, tif, coid in legs:
            o = FakeOrder(spec.symbol, self._next_order, coid, side, t, tif, price or ZERO, stop or ZERO, qty, now,
                          update_time=now, order_list_id=list_id)
            self._next_order += 1
            self.orders[o.order_id] = o
            made.append(o)
        if side == "SELL":
            made[0].locked = qty  # the pooled lock sits on the first leg
        else:
            raise Refuse(400, -1013, "the fake supports SELL OCO lists only")
        self.order_lists[list_id] = [o.order_id for o in made]
        self._match_resting(spec.symbol)
        return {
            "orderListId": list_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
            "listOrderStatus": "EXECUTING", "listClientOrderId": p.get("listClientOrderId", f"list-{list_id}"),
            "transactionTime": now, "symbol": spec.symbol,
            "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id} for o in made],
            "orderReports": [dict(o.to_json(), transactTime=now) for o in made],
        }


_DROP = object()


def _split_signature(text: str) -> tuple[str, str | None]:
    """``(text without its signature parameter, the signature)``; Binance
    requires ``signature`` to be the last parameter."""
    if text.startswith("signature="):
        return "", text[len("signature="):]
    i = text.rfind("&signature=")
    if i < 0:
        return text, None
    return text[:i], text[i + len("&signature="):]


# ====================================================================== USD-M futures (/fapi)
#: BTCUSDT USD-M leverage brackets (the first three tiers as Binance published them for BTCUSDT in 2022-2023:
#: notional caps 50,000 / 250,000 / 3,000,000 USDT, maintenance rates 0.4 % / 0.5 % / 1 %, max leverage
#: 125 / 100 / 50). The maintenance amounts follow from Binance's continuity rule (Leverage and Margin of
#: USDⓈ-M Futures): cum_n = cum_{n-1} + floor_n x (mmr_n - mmr_{n-1}): 0, 50000 x 0.001 = 50,
#: 50 + 250000 x 0.005 = 1300. JSON numbers, as Binance sends them.
BTCUSDT_BRACKETS: list[dict[str, Any]] = [
    {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004,
     "cum": 0.0},
    {"bracket": 2, "initialLeverage": 100, "notionalCap": 250000, "notionalFloor": 50000, "maintMarginRatio": 0.005,
     "cum": 50.0},
    {"bracket": 3, "initialLeverage": 50, "notionalCap": 3000000, "notionalFloor": 250000, "maintMarginRatio": 0.01,
     "cum": 1300.0},
]


@dataclass
class FakePosition:
    """One-way (``BOTH``) position of a symbol: signed size, entry price
    (weighted average of the opening fills, as Binance computes it)."""

    qty: Decimal = ZERO
    entry: Decimal = ZERO


class FakeBinanceUsdm(FakeBinance):
    """The subset of Binance's USD-M futures REST API (``/fapi``) the desk's
    ``BinanceUsdmVenue`` uses, on the same HTTP handling as the spot fake:
    the same HMAC-SHA256 signature and recvWindow verification, the same
    fault knobs (``offset_ms``, ``fail_next``, ``strict_throttle``,
    ``drop_next_order``), the same request records. Shapes follow Binance's
    Derivatives API docs and, where recorded, the ccxt-recorded futures
    payloads in ``../shared/data/binance/orders/ccxt-recorded`` (order:
    batch order / GTX open order; trade: ``userTrades`` row).

    What it models: one-way positions per symbol moved by fills (entry
    price = weighted average of opening fills; a reducing fill realizes
    ``closed x (px - entry) x side`` into the wallet; a flip closes then
    opens at the fill price), fees in USDT (``taker_rate`` / ``maker_rate``
    of the notional) from the wallet, ``reduceOnly`` (``-2022`` when it would
    increase the position), post-only ``GTX`` (``-5022`` when it would
    take), MIN_NOTIONAL (``-4164``), MARKET_LOT_SIZE for market orders,
    duplicate ``newClientOrderId`` among open orders (``-4116``), margin type
    per symbol (``-4046`` when unchanged, ``-4048`` with a position), leverage
    per symbol (``-4028`` above the first bracket's maximum), the position
    mode (``dual_side``), funding payments (:meth:`pay_funding`: ``income``
    = -position x mark x rate into the wallet and the ``income`` history).
    Mark price and liquidation price are knobs (``marks``, ``liquidation``),
    not computed: a test sets the venue's figures it wants to compare with.

    The user data stream (Binance Derivatives docs, "User Data Streams"):
    ``POST /fapi/v1/listenKey`` (a new key, or the active one extended),
    ``PUT`` (keepalive; ``-1125`` "This listenKey does not exist." without
    an active key), ``DELETE`` (closes the key and its streams), each a
    ``USER_STREAM`` endpoint (the ``X-MBX-APIKEY`` header checked, no
    signature); a key lives 60 minutes of server time after its last
    ``POST``/``PUT``. A WebSocket with the key (``?listenKey=`` on any
    stream path, as ccxt builds ``<base>/private/ws?listenKey=``, or the
    legacy ``/ws/<listenKey>``) receives, in order, an
    ``ORDER_TRADE_UPDATE`` ("Event: Order Update": ``x`` NEW when an order
    is accepted, TRADE per fill, CANCELED, EXPIRED) and, after each fill
    and each funding payment, an ``ACCOUNT_UPDATE`` ("Event: Balance and
    Position Update", reason ``a.m`` ORDER or FUNDING_FEE). A wrong or
    expired key is refused (HTTP 400, ``-1125``). ``drop_user_streams``
    closes the sockets (the client reconnects with the same key);
    ``expire_listen_key`` sends ``listenKeyExpired`` and ends the key.
    Every event sent is kept in ``user_events``.

    Args:
        clock, exchange_info, api_key, secret, klines, can_withdraw: as
            :class:`FakeBinance` (``exchange_info``: a USD-M exchangeInfo).
        wallet: starting USDT wallet balance.
        book: ``(symbol, bid, bid_qty, ask, ask_qty)`` starting books.
    """

    def __init__(self, clock: Clock, exchange_info: Path, *, api_key: str = "test-key", secret: str = "test-secret",
                 wallet: Decimal = Decimal("10000"), book: list[tuple[str, str, str, str, str]] | None = None,
                 klines: Path | None = None, can_withdraw: bool = False, taker_rate: Decimal = Decimal("0.0004"),
                 maker_rate: Decimal = Decimal("0.0002")) -> None:
        super().__init__(clock, exchange_info, api_key=api_key, secret=secret, balances={"USDT": wallet},
                         klines=klines, can_withdraw=can_withdraw, fee_rate=taker_rate)
        self.maker_rate = maker_rate
        self.wallet = wallet
        self.dual_side = False
        self.margin_type: dict[str, str] = {}  # symbol -> "cross" / "isolated" (Binance's default: cross)
        self.leverage: dict[str, int] = {}  # default 20
        self.positions: dict[str, FakePosition] = {}
        self.marks: dict[str, Decimal] = {}
        self.liquidation: dict[str, Decimal] = {}
        self.brackets: dict[str, list[dict[str, Any]]] = {"BTCUSDT": BTCUSDT_BRACKETS}
        self.income: list[dict[str, Any]] = []
        self._next_tran = 9_689_322_392  # the tranId of Binance's documentation example
        #: (path, params without timestamp/recvWindow/signature) of every signed request that verified
        self.signed_params: list[tuple[str, dict[str, str]]] = []
        #: the account's user-data listenKey (None: none active), valid until this server time (ms)
        self.listen_key: str | None = None
        self.listen_key_until_ms = 0
        #: every listenKey issued, in order
        self.listen_keys: list[str] = []
        #: every user data event sent (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, listenKeyExpired), in order
        self.user_events: list[dict[str, Any]] = []
        for sym, bid, bq, ask, aq in book or []:
            self.set_book(sym, bid, ask, bq, aq)

    # ------------------------------------------------------------ knobs
    @property
    def urls(self) -> dict[str, str]:
        """ccxt ``urls['api']`` pointing every USD-M section (and ``sapi``) here."""
        b = self.base_url
        return {"fapiPublic": f"{b}/fapi/v1", "fapiPublicV2": f"{b}/fapi/v2", "fapiPrivate": f"{b}/fapi/v1",
                "fapiPrivateV2": f"{b}/fapi/v2", "fapiPrivateV3": f"{b}/fapi/v3", "sapi": f"{b}/sapi/v1",
                "ws": b.replace("http://", "ws://") + "/ws"}

    def position(self, symbol: str) -> FakePosition:
        """The (possibly flat) position of ``symbol``."""
        return self.positions.setdefault(symbol, FakePosition())

    def mark(self, symbol: str) -> Decimal:
        """The mark price: the knob, else the book's mid."""
        if symbol in self.marks:
            return self.marks[symbol]
        b = self.books.get(symbol)
        return (b.bid + b.ask) / 2 if b is not None else ZERO

    def pay_funding(self, symbol: str, rate: str, time_ms: int) -> Decimal:
        """A funding settlement at ``time_ms``: ``income = -positionAmt x
        mark x rate`` (8 decimals, half-even; longs pay a positive rate),
        booked into the wallet and the income history. Returns it."""
        pos = self.position(symbol)
        amount = (-pos.qty * self.mark(symbol) * Decimal(rate)).quantize(Q8, ROUND_HALF_EVEN)
        self.wallet += amount
        self.income.append({"symbol": symbol, "incomeType": "FUNDING_FEE", "income": s8(amount), "asset": "USDT",
                            "info": "FUNDING_FEE", "time": time_ms, "tranId": self._next_tran, "tradeId": ""})
        self._next_tran += 1
        self._account_update("FUNDING_FEE", [symbol] if self.margin_type.get(symbol, "cross") == "isolated" else [])
        return amount

    def params_of(self, path: str) -> list[dict[str, str]]:
        """The signed parameters sent to ``path`` (verified requests only)."""
        return [p for q, p in self.signed_params if q == path]

    # ------------------------------------------------------------ HTTP
    def _verify(self, request: web.Request, body: str, params: dict[str, str], now: int) -> None:
        super()._verify(request, body, params, now)
        self.signed_params.append((request.path, {k: v for k, v in params.items()
                                                  if k not in ("timestamp", "recvWindow", "signature")}))

    def _route(self, method: str, path: str) -> tuple[Callable[[dict[str, str], int], Any], bool] | None:
        table: dict[tuple[str, str], tuple[Callable[[dict[str, str], int], Any], bool]] = {
            ("GET", "/fapi/v1/ping"): (lambda p, n: {}, False),
            ("GET", "/fapi/v1/time"): (lambda p, n: {"serverTime": n}, False),
            ("GET", "/fapi/v1/exchangeInfo"): (self._exchange_info, False),
            ("GET", "/fapi/v1/klines"): (self._klines, False),
            ("GET", "/fapi/v1/ticker/bookTicker"): (self._f_book_ticker, False),
            ("GET", "/fapi/v2/account"): (self._f_account, True),
            ("GET", "/fapi/v2/positionRisk"): (self._f_position_risk, True),
            ("GET", "/fapi/v1/positionSide/dual"): (lambda p, n: {"dualSidePosition": self.dual_side}, True),
            ("POST", "/fapi/v1/marginType"): (self._f_margin_type, True),
            ("POST", "/fapi/v1/leverage"): (self._f_leverage, True),
            ("GET", "/fapi/v1/leverageBracket"): (self._f_brackets, True),
            ("POST", "/fapi/v1/order"): (self._f_new_order, True),
            ("GET", "/fapi/v1/order"): (self._f_get_order, True),
            ("DELETE", "/fapi/v1/order"): (self._f_cancel_order, True),
            ("GET", "/fapi/v1/openOrders"): (self._f_open_orders, True),
            ("GET", "/fapi/v1/allOrders"): (self._f_all_orders, True),
            ("GET", "/fapi/v1/userTrades"): (self._f_user_trades, True),
            ("GET", "/fapi/v1/income"): (self._f_income, True),
            ("GET", "/sapi/v1/account/apiRestrictions"): (self._f_api_restrictions, True),
            ("POST", "/fapi/v1/listenKey"): (self._f_listen_key_new, "apikey"),
            ("PUT", "/fapi/v1/listenKey"): (self._f_listen_key_keepalive, "apikey"),
            ("DELETE", "/fapi/v1/listenKey"): (self._f_listen_key_close, "apikey"),
        }
        return table.get((method, path))

    # ------------------------------------------------------------ user data stream
    #: a listenKey's validity after its last POST/PUT (Binance: 60 minutes)
    LISTEN_KEY_VALID_MS = 60 * 60 * 1000

    @staticmethod
    def _no_params(p: dict[str, str]) -> None:
        """The listenKey endpoints of USD-M take no parameter (Binance:
        ``-1104`` for parameters it did not read)."""
        if p:
            raise Refuse(400, -1104, f"Not all sent parameters were read; read '0' parameter(s) but was sent "
                                     f"'{len(p)}'.")

    def _f_listen_key_new(self, p: dict[str, str], now: int) -> dict[str, Any]:
        """``POST /fapi/v1/listenKey``: the active key, extended, or a new
        one (64 characters, as Binance's)."""
        self._no_params(p)
        if self.listen_key is None or now >= self.listen_key_until_ms:
            n = len(self.listen_keys) + 1
            self.listen_key = hashlib.sha256(f"listenKey-{n}".encode()).hexdigest()
            self.listen_keys.append(self.listen_key)
        self.listen_key_until_ms = now + self.LISTEN_KEY_VALID_MS
        return {"listenKey": self.listen_key}

    def _f_listen_key_keepalive(self, p: dict[str, str], now: int) -> dict[str, Any]:
        """``PUT /fapi/v1/listenKey``: extend the active key."""
        self._no_params(p)
        if self.listen_key is None or now >= self.listen_key_until_ms:
            raise Refuse(400, -1125, "This listenKey does not exist.")
        self.listen_key_until_ms = now + self.LISTEN_KEY_VALID_MS
        return {"listenKey": self.listen_key}

    def _f_listen_key_close(self, p: dict[str, str], now: int) -> dict[str, Any]:
        """``DELETE /fapi/v1/listenKey``: the key ends, its streams close."""
        self.listen_key = None
        loop = asyncio.get_running_loop()
        for ws, _ in list(self.user_streams):
            loop.create_task(ws.close())
        return {}

    def _is_ws_path(self, path: str) -> bool:
        """USD-M stream paths: ccxt's ``<base>/market/ws``, ``/public/ws``,
        ``/private/ws`` (a base ending in ``/ws``), the legacy ``/ws``, and
        ``/fws`` (the multi-venue test's futures base)."""
        return path.startswith(("/ws", "/fws", "/market/ws", "/public/ws", "/private/ws"))

    def _key_of(self, request: web.Request) -> str | None:
        key = request.query.get("listenKey")
        if key:
            return key
        last = request.path.rstrip("/").rsplit("/", 1)[-1]
        return last if last in self.listen_keys else None

    async def _ws(self, request: web.Request) -> web.WebSocketResponse | web.Response:  # type: ignore[override]
        """A stream connection: the user data stream when the request names
        a listenKey, else the market streams (``SUBSCRIBE``, as spot)."""
        key = self._key_of(request)
        if key is None:
            return await super()._ws(request)
        return await self._user_ws(request, key)

    async def _user_ws(self, request: web.Request, key: str) -> web.WebSocketResponse | web.Response:
        self.requests.append(("WS", request.path))
        if self.ws_refuse:
            return web.Response(status=503, text="streams unavailable")
        if key != self.listen_key or self.now_ms() >= self.listen_key_until_ms:
            self.errors.append((request.path, -1125))
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def writer() -> None:
            while True:
                payload = await queue.get()
                if ws.closed:
                    return
                await ws.send_json(payload)

        task = asyncio.get_running_loop().create_task(writer())
        entry = (ws, queue)
        self.user_streams.append(entry)
        self.user_subscribed.set()
        try:
            async for _ in ws:  # nothing is expected from the client (pings are answered by aiohttp)
                pass
        finally:
            task.cancel()
            if entry in self.user_streams:
                self.user_streams.remove(entry)
        return ws

    def _send_user(self, event: dict[str, Any]) -> None:
        self.user_events.append(event)
        for _, q in self.user_streams:
            q.put_nowait(event)

    def _exec_report(self, o: FakeOrder, exec_type: str, trade: FakeTrade | None = None,  # type: ignore[override]
                     realized: Decimal = ZERO) -> None:
        """Send an ``ORDER_TRADE_UPDATE`` of ``o`` (Binance "Event: Order
        Update", USD-M: the order in ``o``; ``N``/``n`` only with a fill; ``t``
        0 without one), then, after a fill, an ``ACCOUNT_UPDATE`` (reason
        ORDER) with the wallet and the position."""
        now = self.now_ms()
        avg = (o.cum_quote / o.executed_qty) if o.executed_qty else ZERO
        open_ = [x for x in self.open_orders_of(o.symbol)]
        bids = sum(((x.orig_qty - x.executed_qty) * x.price for x in open_ if x.side == "BUY"), ZERO)
        asks = sum(((x.orig_qty - x.executed_qty) * x.price for x in open_ if x.side == "SELL"), ZERO)
        body: dict[str, Any] = {
            "s": o.symbol, "c": o.client_order_id, "S": o.side, "o": o.type, "f": o.time_in_force,
            "q": format(o.orig_qty, "f"), "p": format(o.price, "f"), "ap": format(avg, "f"), "sp": "0",
            "x": exec_type, "X": o.status, "i": o.order_id,
            "l": format(trade.qty, "f") if trade else "0", "z": format(o.executed_qty, "f"),
            "L": format(trade.price, "f") if trade else "0",
        }
        if trade is not None:
            body["N"] = trade.commission_asset
            body["n"] = s8(trade.commission)
        body.update({
            "T": trade.time if trade else now, "t": trade.id if trade else 0, "b": s8(bids), "a": s8(asks),
            "m": trade.is_maker if trade else False, "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.type,
            "ps": "BOTH", "cp": False, "rp": s8(realized), "pP": False, "si": 0, "ss": 0, "V": "NONE",
            "pm": "NONE", "gtd": 0,
        })
        self._send_user({"e": "ORDER_TRADE_UPDATE", "E": now, "T": trade.time if trade else now, "o": body})
        if trade is not None:
            self._account_update("ORDER", [o.symbol])

    def _account_update(self, reason: str, symbols: list[str]) -> None:
        """Send an ``ACCOUNT_UPDATE`` ("Event: Balance and Position
        Update"): the USDT wallet (``wb``), cross wallet (``cw``) and the
        one-way positions of ``symbols``."""
        now = self.now_ms()
        iso = sum((self._isolated_wallet(x) for x in self.symbols), ZERO)
        positions = []
        for sym in symbols:
            pos = self.position(sym)
            positions.append({"s": sym, "pa": format(pos.qty, "f"), "ep": format(pos.entry, "f"), "bep": "0",
                              "cr": "0", "up": s8(self._upnl(sym)), "mt": self.margin_type.get(sym, "cross"),
                              "iw": s8(self._isolated_wallet(sym)), "ps": "BOTH"})
        self._send_user({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
            "m": reason, "B": [{"a": "USDT", "wb": s8(self.wallet), "cw": s8(self.wallet - iso), "bc": "0"}],
            "P": positions}})

    async def drop_user_streams(self) -> int:
        """Close every user data stream socket (the stream drops; the key
        stays valid). Returns how many were closed."""
        self.user_subscribed.clear()
        conns = list(self.user_streams)
        for ws, _ in conns:
            await ws.close()
        return len(conns)

    async def expire_listen_key(self) -> None:
        """The key expires: ``listenKeyExpired`` is sent, the sockets close,
        the key is gone (a new ``POST`` issues another)."""
        if self.listen_key is not None:
            self._send_user({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": self.listen_key})
        self.listen_key = None
        await asyncio.sleep(0)
        for _ in range(50):  # let the writers send it before the sockets close
            if all(q.empty() for _, q in self.user_streams):
                break
            await asyncio.sleep(0.001)
        await self.drop_user_streams()

    # ------------------------------------------------------------ market data
    def _f_book_ticker(self, p: dict[str, str], now: int) -> dict[str, Any]:
        spec = self._spec(p)
        b = self.books[spec.symbol]
        return {"symbol": spec.symbol, "bidPrice": format(b.bid, "f"), "bidQty": format(b.bid_qty, "f"),
                "askPrice": format(b.ask, "f"), "askQty": format(b.ask_qty, "f"), "time": now}

    # ------------------------------------------------------------ account
    def _isolated_wallet(self, symbol: str) -> Decimal:
        """An isolated position's wallet: its initial margin at entry
        (|size| x entry / leverage, 8 decimals)."""
        if self.margin_type.get(symbol, "cross") != "isolated":
            return ZERO
        pos = self.position(symbol)
        return (abs(pos.qty) * pos.entry / self.leverage.get(symbol, 20)).quantize(Q8, ROUND_HALF_EVEN)

    def _upnl(self, symbol: str) -> Decimal:
        pos = self.position(symbol)
        return (pos.qty * (self.mark(symbol) - pos.entry)).quantize(Q8, ROUND_HALF_EVEN) if pos.qty else ZERO

    def _f_account(self, p: dict[str, str], now: int) -> dict[str, Any]:
        iso = sum((self._isolated_wallet(s) for s in self.symbols), ZERO)
        upnl = sum((self._upnl(s) for s in self.symbols), ZERO)
        cross = self.wallet - iso
        return {
            "feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": self.can_withdraw,
            "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1,
            "totalWalletBalance": s8(self.wallet), "totalUnrealizedProfit": s8(upnl),
            "totalMarginBalance": s8(self.wallet + upnl), "totalCrossWalletBalance": s8(cross),
            "availableBalance": s8(cross), "maxWithdrawAmount": s8(cross),
            "assets": [{"asset": "USDT", "walletBalance": s8(self.wallet), "unrealizedProfit": s8(upnl),
                        "marginBalance": s8(self.wallet + upnl), "crossWalletBalance": s8(cross),
                        "crossUnPnl": s8(ZERO), "availableBalance": s8(cross), "maxWithdrawAmount": s8(cross),
                        "marginAvailable": True, "updateTime": now}],
            "positions": [{"symbol": s, "positionAmt": format(self.position(s).qty, "f"),
                           "entryPrice": format(self.position(s).entry, "f"), "unrealizedProfit": s8(self._upnl(s)),
                           "maintMargin": "0", "initialMargin": "0", "leverage": str(self.leverage.get(s, 20)),
                           "isolated": self.margin_type.get(s, "cross") == "isolated", "positionSide": "BOTH",
                           "updateTime": now} for s in sorted(self.symbols)],
        }

    def _f_position_risk(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        syms = [p["symbol"]] if "symbol" in p else sorted(self.symbols)
        out = []
        for s in syms:
            pos = self.position(s)
            out.append({
                "symbol": s, "positionAmt": format(pos.qty, "f"), "entryPrice": format(pos.entry, "f"),
                "breakEvenPrice": "0.0", "markPrice": format(self.mark(s), "f"), "unRealizedProfit": s8(self._upnl(s)),
                "liquidationPrice": format(self.liquidation.get(s, ZERO), "f") if pos.qty else "0",
                "leverage": str(self.leverage.get(s, 20)), "maxNotionalValue": "50000",
                "marginType": self.margin_type.get(s, "cross"),
                "isolatedMargin": s8(self._isolated_wallet(s) + self._upnl(s)) if self._isolated_wallet(s) else
                "0.00000000", "isAutoAddMargin": "false", "positionSide": "BOTH",
                "notional": s8(pos.qty * self.mark(s)), "isolatedWallet": s8(self._isolated_wallet(s)),
                "updateTime": now})
        return out

    def _f_margin_type(self, p: dict[str, str], now: int) -> dict[str, Any]:
        spec = self._spec(p)
        want = {"ISOLATED": "isolated", "CROSSED": "cross"}.get(p.get("marginType", "").upper())
        if want is None:
            raise Refuse(400, -1116, "Invalid marginType.")
        if self.margin_type.get(spec.symbol, "cross") == want:
            raise Refuse(400, -4046, "No need to change margin type.")
        if self.position(spec.symbol).qty != 0:
            raise Refuse(400, -4048, "Margin type cannot be changed if there exists position.")
        self.margin_type[spec.symbol] = want
        return {"code": 200, "msg": "success"}

    def _f_leverage(self, p: dict[str, str], now: int) -> dict[str, Any]:
        spec = self._spec(p)
        lev = int(p.get("leverage", "0"))
        top = self.brackets.get(spec.symbol, BTCUSDT_BRACKETS)[0]["initialLeverage"]
        if not 1 <= lev <= top:
            raise Refuse(400, -4028, f"Leverage {lev} is not valid")
        self.leverage[spec.symbol] = lev
        return {"leverage": lev, "maxNotionalValue": "50000", "symbol": spec.symbol}

    def _f_brackets(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        syms = [self._spec(p).symbol] if "symbol" in p else sorted(self.brackets)
        return [{"symbol": s, "brackets": self.brackets.get(s, BTCUSDT_BRACKETS)} for s in syms]

    def _f_api_restrictions(self, p: dict[str, str], now: int) -> dict[str, Any]:
        r = self._api_restrictions(p, now)
        r["enableFutures"] = True
        return r

    def _f_income(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        rows = [r for r in self.income if p.get("incomeType") in (None, r["incomeType"])
                and ("symbol" not in p or r["symbol"] == p["symbol"])
                and ("startTime" not in p or r["time"] >= int(p["startTime"]))
                and ("endTime" not in p or r["time"] <= int(p["endTime"]))]
        return rows[: min(int(p.get("limit", "100")), 1000)]

    # ------------------------------------------------------------ orders
    def _f_order_json(self, o: FakeOrder) -> dict[str, Any]:
        """Binance's USD-M order shape (the recorded batch-order answer's fields)."""
        avg = (o.cum_quote / o.executed_qty) if o.executed_qty else ZERO
        return {
            "orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_order_id,
            "price": format(o.price, "f"), "avgPrice": format(avg, "f"), "origQty": format(o.orig_qty, "f"),
            "executedQty": format(o.executed_qty, "f"), "cumQty": format(o.executed_qty, "f"),
            "cumQuote": s8(o.cum_quote), "timeInForce": o.time_in_force, "type": o.type,
            "reduceOnly": o.reduce_only, "closePosition": False, "side": o.side,
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": o.type, "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0,
            "time": o.time, "updateTime": o.update_time or o.time,
        }

    def _f_new_order(self, p: dict[str, str], now: int) -> Any:
        spec = self._spec(p)
        side, type_ = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL"):
            raise Refuse(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if type_ not in ("MARKET", "LIMIT"):
            raise Refuse(400, -1116, "Invalid orderType.")
        if spec.status != "TRADING":
            raise Refuse(400, -4000, "Invalid order status.")
        qty = self._dec(p, "quantity")
        price = self._dec(p, "price") if type_ == "LIMIT" else None
        tif = p.get("timeInForce", "GTC") if type_ == "LIMIT" else "GTC"
        coid = p.get("newClientOrderId") or f"srv-{self._next_order}"
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        if any(o.is_open and o.client_order_id == coid for o in self.orders.values()):
            raise Refuse(400, -4116, "ClientOrderId is duplicated.")
        book = self.books.get(spec.symbol)
        if book is None:
            raise Refuse(400, -4000, "Invalid order status.")
        ref = book.ask if side == "BUY" else book.bid
        if price is not None and (price < spec.min_price or price > spec.max_price or price % spec.tick != 0):
            raise Refuse(400, -4014, "Price not increased by tick size.")
        if qty < spec.min_qty or qty > spec.max_qty or qty % spec.step != 0:
            raise Refuse(400, -1111, "Precision is over the maximum defined for this asset.")
        if qty * (price if price is not None else ref) < spec.min_notional and not reduce_only:
            raise Refuse(400, -4164, f"Order's notional must be no smaller than {spec.min_notional} (unless you "
                                     f"choose reduce only).")
        pos = self.position(spec.symbol).qty
        signed = qty if side == "BUY" else -qty
        if reduce_only and (pos == 0 or (pos > 0) == (signed > 0) or abs(signed) > abs(pos)):
            raise Refuse(400, -2022, "ReduceOnly Order is rejected.")
        if tif == "GTX" and price is not None and (
                (side == "BUY" and price >= book.ask) or (side == "SELL" and price <= book.bid)):
            raise Refuse(400, -5022, "Due to the order could not be executed as maker, the Post Only order will "
                                     "be rejected.")
        if self.drop_next_order == "before":
            self.drop_next_order = None
            return _DROP
        o = FakeOrder(spec.symbol, self._next_order, coid, side, type_, tif, price or ZERO, ZERO, qty, now,
                      update_time=now, reduce_only=reduce_only)
        self._next_order += 1
        self.orders[o.order_id] = o
        self._exec_report(o, "NEW")
        self._match_new(o, now)
        if o.status == "EXPIRED":
            self._exec_report(o, "EXPIRED")
        if self.drop_next_order == "after":
            self.drop_next_order = None
            return _DROP
        return self._f_order_json(o)

    def _fill(self, o: FakeOrder, qty: Decimal, px: Decimal, now: int, maker: bool) -> FakeTrade:
        """A futures fill: position, realized PnL and fee into the wallet."""
        notional = (qty * px).quantize(Q8)
        fee = (notional * (self.maker_rate if maker else self.fee_rate)).quantize(Q8, ROUND_HALF_EVEN)
        pos = self.position(o.symbol)
        d = qty if o.side == "BUY" else -qty
        realized = ZERO
        if pos.qty == 0 or (pos.qty > 0) == (d > 0):
            pos.entry = (abs(pos.qty) * pos.entry + qty * px) / (abs(pos.qty) + qty)
            pos.qty += d
        else:
            closed = min(abs(d), abs(pos.qty))
            side = 1 if pos.qty > 0 else -1
            realized = (closed * (px - pos.entry) * side).quantize(Q8, ROUND_HALF_EVEN)
            self.wallet += realized
            rest = abs(d) - closed
            pos.qty += d
            if pos.qty == 0:
                pos.entry = ZERO
            elif rest > 0:
                pos.entry = px
        self.wallet -= fee
        t = FakeTrade(o.symbol, self._next_trade, o.order_id, -1, px, qty, fee, "USDT", now, o.side == "BUY", maker)
        self._next_trade += 1
        self.trades.append(t)
        o.executed_qty += qty
        o.cum_quote += notional
        o.update_time = now
        o.status = "FILLED" if o.executed_qty == o.orig_qty else "PARTIALLY_FILLED"
        self._exec_report(o, "TRADE", t, realized)
        return t

    def _f_get_order(self, p: dict[str, str], now: int) -> dict[str, Any]:
        o = self._find(p)
        if o is None:
            raise Refuse(400, -2013, "Order does not exist.")
        return self._f_order_json(o)

    def _f_cancel_order(self, p: dict[str, str], now: int) -> dict[str, Any]:
        o = self._find(p)
        if o is None or not o.is_open:
            raise Refuse(400, -2011, "Unknown order sent.")
        o.status = "CANCELED"
        o.update_time = now
        self._exec_report(o, "CANCELED")
        return self._f_order_json(o)

    def _f_open_orders(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        sym = p.get("symbol")
        if sym is not None:
            self._spec(p)
        return [self._f_order_json(o) for o in self.open_orders_of(sym)]

    def _f_all_orders(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        spec = self._spec(p)
        rows = [o for o in self.orders.values() if o.symbol == spec.symbol]
        return [self._f_order_json(o) for o in rows[-min(int(p.get("limit", "500")), 1000):]]

    def _f_user_trades(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        """``GET /fapi/v1/userTrades`` rows (the recorded row's fields)."""
        spec = self._spec(p)
        rows = [t for t in self.trades if t.symbol == spec.symbol
                and ("orderId" not in p or t.order_id == int(p["orderId"]))]
        out = []
        for t in rows[: min(int(p.get("limit", "500")), 1000)]:
            out.append({"symbol": t.symbol, "id": t.id, "orderId": t.order_id, "side": "BUY" if t.is_buyer else "SELL",
                        "price": format(t.price, "f"), "qty": format(t.qty, "f"), "realizedPnl": "0",
                        "marginAsset": "USDT", "quoteQty": s8(t.price * t.qty), "commission": s8(t.commission),
                        "commissionAsset": t.commission_asset, "time": t.time, "positionSide": "BOTH",
                        "maker": t.is_maker, "buyer": t.is_buyer})
        return out
