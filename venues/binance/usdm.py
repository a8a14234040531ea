"""The Binance USD-M futures venue (``market: usdm``): perpetuals such as
``BTCUSDT-PERP.BINANCE``, through ccxt's ``binanceusdm`` (async).

:class:`BinanceUsdmVenue` is the spot adapter
(:class:`venues.binance.adapter.BinanceVenue`) with the ``/fapi``
endpoints; the gate, weight budget, clock offset, typed errors, order
tracking, status and fill mapping are the spot code itself. What differs:

* **Exchange**: :class:`venues.binance.exchange.DeskBinanceUsdm`;
  ``load_markets`` loads the linear markets only (``fetchMarkets.types =
  ['linear']``: one ``GET /fapi/v1/exchangeInfo``, no spot or margin call).
  ``testnet: true`` is Binance's *demo trading* (ccxt
  ``enable_demo_trading(True)``: REST ``https://demo-fapi.binance.com/fapi/v1``
  /``v2``/``v3``; ccxt 4.5 refuses a futures sandbox), not
  ``set_sandbox_mode``.
* **Instruments**: ccxt ``BTC/USDT:USDT`` <-> ``BTCUSDT-PERP.<venue>``;
  filters from the exchangeInfo strings (``PRICE_FILTER``, ``LOT_SIZE``,
  ``MIN_NOTIONAL.notional``; ``MARKET_LOT_SIZE`` bounds MARKET orders);
  only ``contractType: PERPETUAL`` in status ``TRADING``.
* **Start**: the position mode must be one-way (``GET
  /fapi/v1/positionSide/dual``: ``dualSidePosition`` true is refused, the
  desk nets one position per symbol); the configured margin mode (``POST
  /fapi/v1/marginType``; ``-4046`` "No need to change margin type." is
  success) and leverage (``POST /fapi/v1/leverage``) are set per symbol;
  the leverage brackets are read (``GET /fapi/v1/leverageBracket``:
  maintenance margin rate and amount); the positions are read (``GET
  /fapi/v2/positionRisk``). Key permissions as on spot (``GET
  /sapi/v1/account/apiRestrictions``: a key that can withdraw, or cannot
  trade futures, is refused); demo trading has no ``/sapi`` (its keys
  cannot withdraw): skipped, and said so.
* **Orders**: ``POST /fapi/v1/order`` with ``newClientOrderId`` and
  ``newOrderRespType=RESULT`` (ccxt's default for contracts), so the answer
  carries the final status but no fills: when it reports an executed
  quantity the fills are read at once (``GET /fapi/v1/userTrades`` by
  ``orderId``). ``reduceOnly=true`` for a reduce-only order; post-only is
  ``timeInForce=GTX``; stops and trailing stops are refused (the OMS
  emulates them). Fees are in the margin asset (USDT) as reported.
* **Trade ids**: every trade id this venue reports (``OrderFilled.trade_id``)
  is Binance's futures ``tradeId`` with the prefix ``F-`` (futures trade
  ``1`` is ``F-1``; :attr:`BinanceUsdmVenue.TRADE_ID_PREFIX`). Binance
  numbers spot and futures trades separately, each from 1, and the desk's
  store keys fills by ``trade_id`` (the ``fills`` table, ``core.rebuild``,
  each order's ``trade_ids``), so one desk with a spot and a futures venue
  would otherwise drop one of two different trades with the same number.
  The prefix is put on in one place (``BinanceVenue._trade_id``), on every
  way a futures fill enters the desk: the user data stream
  (``ORDER_TRADE_UPDATE`` ``o.t``), ``GET /fapi/v1/userTrades`` (``id``:
  the new-order answer's fills, polls, the start-up snapshot, lookups for
  reconciliation, i.e. ``VenueOrderReport.fills``), so a fill seen by the
  stream and by REST still has one id and is reported once. Spot ids have
  no prefix (unchanged for existing state dirs). A USD-M state dir written
  before the prefix holds its futures fills under the bare number: a
  partly filled order still open across the upgrade would see its old
  fills again under ``F-`` ids (close such orders before upgrading).
* **Positions and reconciliation** (``core.recovery``): the engine
  compares ``balance(<base asset>)`` with the book's summed position of the
  instruments with that base. Here the "holding" of a perpetual is its
  signed ``positionAmt`` (``GET /fapi/v2/positionRisk``, one-way ``BOTH``
  side), so :meth:`BinanceUsdmVenue.balance` answers a perpetual's base
  asset (``BTC``) or its desk symbol (``BTCUSDT-PERP``) with the signed
  position, and any other asset with its wallet balance.
  ``reconcile_cash`` is False: the futures wallet moves by realized PnL,
  fees and funding only, while the book's cash (``equity_start + realized
  - cost``) also pays each position's full notional, so the two cannot be
  compared. ``config.margin_account`` is True (shorts allowed).
* **Funding payments** (:meth:`BinanceUsdmVenue.poll_funding`): ``GET
  /fapi/v1/income?incomeType=FUNDING_FEE`` from the last funding time seen,
  each new ``tranId`` reported once as ``core.events.FundingPaid`` through
  the callback. The cursor (time and the ids at it) is restart state
  (:meth:`~BinanceUsdmVenue.state_dict`, saved with the feed's state in the
  engine checkpoint by ``venues.binance.feed``); a fresh venue starts at the
  time of its start. The portfolio books each ``tran_id`` once
  (``core.funding``), so a repeat after a restart is harmless.
* **Margin** (:meth:`BinanceUsdmVenue.position_risk`): each position with
  Binance's liquidation price and the desk's own (``core.margin``); a
  WARNING is logged when they differ by more than one tick.
* **Order updates** from the USD-M user data stream through ccxt.pro
  ``binanceusdm`` (:meth:`BinanceUsdmVenue.next_order_updates`, the spot
  adapter's loop with the USD-M stream): ccxt's ``authenticate`` gets a
  listenKey (``POST /fapi/v1/listenKey``, not signed, ``X-MBX-APIKEY``
  only; ccxt renews it with ``PUT`` every 20 minutes), ``watch_orders``
  connects to the ``linear`` WebSocket base with the ``private`` category
  and ``?listenKey=`` (``wss://fstream.binance.com/private/ws?listenKey=``;
  demo trading ``wss://fstream.binancefuture.com/private/ws?listenKey=``,
  ccxt's ``urls['demo']['ws']['linear']``); a base that does not end in
  ``/ws`` (a test server's) is used as it is. Each ``ORDER_TRADE_UPDATE``
  event (Binance "Event: Order Update"; its ``o`` object has the spot
  ``executionReport``'s one-letter fields: ``c``, ``S``, ``x``, ``X``,
  ``i``, ``l``, ``z``, ``L``, ``n``, ``N``, ``T``, ``t``, ``m``) is
  mapped by the spot code (``BinanceVenue._apply_exec_report``), the
  commission as ``userTrades`` gives it (its absolute value), so a fill
  read by the stream and by REST is the same fill (once, by trade id). An
  ``ACCOUNT_UPDATE`` whose reason (``a.m``) is ``FUNDING_FEE`` reads the
  funding payments at once; its balances and positions are not applied
  (their order against ``ORDER_TRADE_UPDATE`` is not guaranteed: positions
  move by the reported fills, the wallet at the next account read).
  ``user_mode`` is ``ws`` while the stream is up; after every (re)connect
  the orders are reconciled over REST (:meth:`~BinanceUsdmVenue.poll`);
  while it is down ``user_mode`` is ``rest`` (the venue reads DEGRADED) and
  each call is one REST :meth:`~BinanceUsdmVenue.poll`. A
  ``listenKeyExpired`` event drops the key, so the next connection asks
  for a new one.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any, Callable, Mapping

import ccxt.async_support as ccxt_async

from core.events import FundingPaid, OrderFilled
from core.enums import LiquiditySide, OrderType, TimeInForce
from core.identifiers import InstrumentId
from core.margin import (
    Bracket,
    PerpPosition,
    bracket_for,
    brackets_from_response,
    liquidation_price,
    maintenance_margin,
)
from core.orders import Order
from core.values import ZERO, dec_str
from core.venue_errors import VenueRejected
from venues.binance.adapter import NANOS_PER_MS, BinanceConfig, BinanceVenue, _Tracked
from venues.binance.errors import BinanceRejected, BinanceStartupError
from venues.binance.instruments import PERP_SUFFIX, market_lot

log = logging.getLogger("desk.venues.binance.usdm")

#: Binance's ``marginType`` of each desk margin mode
_MARGIN_TYPES = {"isolated": "ISOLATED", "cross": "CROSSED"}
#: "No need to change margin type." (the symbol already has it)
NO_CHANGE_MARGIN_TYPE = -4046
#: the largest page of ``GET /fapi/v1/income``
INCOME_PAGE = 1000


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


class BinanceUsdmVenue(BinanceVenue):
    """A Binance USD-M futures venue for the engine (module docstring).

    Same arguments as :class:`~venues.binance.adapter.BinanceVenue`
    (``config.market`` must be ``usdm``).

    Attributes (beyond the spot adapter's):
        positions: signed position (base units) per instrument, from the
            last ``positionRisk``/account read, moved by reported fills.
        position_rows: the last raw ``positionRisk`` row per instrument.
        leverage, margin_mode: per instrument, as the venue last reported.
        brackets: leverage brackets per instrument (``core.margin.Bracket``).
        market_lots: ``(minQty, maxQty, stepSize)`` of MARKET_LOT_SIZE.
        funding_since_ms: funding payments at or after this venue time (ms)
            are read next; None until the venue started.
        requests_seen: the signed parameters the venue was sent at start
            (``marginType``, ``leverage``), for the start-up lines.
        user_mode: ``ws`` while the user data stream is up, ``rest`` while
            it is down (orders polled; the session reads the venue
            DEGRADED).
        user_connections: user data stream connections made so far (one
            REST reconciliation follows each).

    Raises:
        BinanceStartupError: as the spot adapter, or a config whose market
            is not ``usdm``.
    """

    MARKET = "usdm"
    ACCOUNT_KIND = "USD-M futures"
    #: no native OCO list on USD-M: the OMS emulates OCO
    supports_oco = False
    supports_modify = False
    #: the futures wallet is not the book's notional cash (module docstring)
    reconcile_cash = False
    #: before every futures trade id (module docstring, "Trade ids"): spot and futures both number trades from 1
    TRADE_ID_PREFIX = "F-"

    def __init__(self, config: BinanceConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.positions: dict[InstrumentId, Decimal] = {}
        self.position_rows: dict[InstrumentId, Mapping[str, Any]] = {}
        self.leverage: dict[InstrumentId, int] = {}
        self.margin_mode: dict[InstrumentId, str] = {}
        self.brackets: dict[InstrumentId, list[Bracket]] = {}
        self.market_lots: dict[InstrumentId, tuple[Decimal, Decimal, Decimal]] = {}
        self.funding_since_ms: int | None = None
        self._funding_ids: set[str] = set()
        self._funding_next_ns = 0
        #: the ccxt.pro client (one WebSocket connection) of the user data stream in use
        self._user_client: Any = None
        #: ccxt.pro ``watch_orders`` on that connection (it fails when the connection drops)
        self._user_watch: asyncio.Future[Any] | None = None
        #: raw user data events received on it (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``), arrival order
        self._user_events: list[Mapping[str, Any]] = []
        self._user_wake: asyncio.Event | None = None  # made with the connection, in the loop that uses it
        #: user data stream connections made so far (one more after every reconnect)
        self.user_connections = 0

    # ------------------------------------------------------------ endpoints
    def _venue_symbol(self, iid: InstrumentId) -> str:
        """``BTCUSDT-PERP`` -> Binance's ``BTCUSDT``."""
        sym = iid.symbol
        return sym[: -len(PERP_SUFFIX)] if sym.endswith(PERP_SUFFIX) else sym

    async def _api_account(self) -> Any:
        """``GET /fapi/v2/account``."""
        return await self._exchange().fapiPrivateV2GetAccount()

    async def _api_open_orders(self, symbol: str) -> Any:
        """``GET /fapi/v1/openOrders?symbol=``."""
        return await self._exchange().fapiPrivateGetOpenOrders({"symbol": symbol})

    async def _api_all_orders(self, params: dict[str, Any]) -> Any:
        """``GET /fapi/v1/allOrders``."""
        return await self._exchange().fapiPrivateGetAllOrders(params)

    async def _api_my_trades(self, params: dict[str, Any]) -> Any:
        """``GET /fapi/v1/userTrades``."""
        return await self._exchange().fapiPrivateGetUserTrades(params)

    async def _api_klines(self, params: dict[str, Any]) -> Any:
        """``GET /fapi/v1/klines``."""
        return await self._exchange().fapiPublicGetKlines(params)

    async def _api_book_ticker(self, symbol: str) -> Any:
        """``GET /fapi/v1/ticker/bookTicker?symbol=``."""
        return await self._exchange().fapiPublicGetTickerBookTicker({"symbol": symbol})

    # ------------------------------------------------------------ start
    #: the key permission checked at start (``BinanceVenue._check_permissions``)
    TRADE_PERMISSION = "enableFutures"
    MARKET_WORD = "futures"
    NO_SAPI_WHERE = "Binance demo trading"

    async def _prepare_market(self) -> list[str]:
        """Position mode, margin type, leverage, brackets, positions (module
        docstring); returns the start-up lines.

        Raises:
            BinanceStartupError: hedge mode, or a margin type or leverage
                the venue refuses (named with Binance's answer).
        """
        ex = self._exchange()
        cfg = self.config
        for iid, unified in self.unified.items():
            lot = market_lot(ex.markets[unified])
            if lot is not None:
                self.market_lots[iid] = lot
        dual = await self._read("position mode", ex.fapiPrivateGetPositionSideDual)
        if _truthy((dual or {}).get("dualSidePosition")):
            raise BinanceStartupError(
                f"{self.venue}: the futures account is in hedge mode (positionSide/dual dualSidePosition true); the "
                f"desk nets one position per symbol: switch the account to one-way mode")
        lines = ["position mode one-way (positionSide/dual false)"]
        for iid in self.instruments:
            sym = self._venue_symbol(iid)
            if cfg.margin_mode is not None:
                try:
                    await self._read("margin type", lambda s=sym: ex.fapiPrivatePostMarginType(
                        {"symbol": s, "marginType": _MARGIN_TYPES[cfg.margin_mode]}))
                except BinanceRejected as exc:
                    if exc.code != NO_CHANGE_MARGIN_TYPE:
                        raise BinanceStartupError(f"{self.venue}: {sym}: margin_mode {cfg.margin_mode} refused by "
                                                  f"the venue: {exc.detail}") from None
                self.margin_mode[iid] = cfg.margin_mode
            if cfg.leverage is not None:
                try:
                    r = await self._read("leverage", lambda s=sym: ex.fapiPrivatePostLeverage(
                        {"symbol": s, "leverage": int(cfg.leverage)}))
                except BinanceRejected as exc:
                    raise BinanceStartupError(f"{self.venue}: {sym}: leverage {cfg.leverage} refused by the venue: "
                                              f"{exc.detail}") from None
                self.leverage[iid] = int(r.get("leverage", cfg.leverage))
            raw = await self._read("leverage brackets", lambda s=sym: ex.fapiPrivateGetLeverageBracket({"symbol": s}))
            entry = raw[0] if isinstance(raw, list) else raw
            if isinstance(raw, list):
                entry = next((e for e in raw if e.get("symbol") == sym), entry)
            try:
                self.brackets[iid] = brackets_from_response(entry.get("brackets") or [])
            except ValueError as exc:
                raise BinanceStartupError(f"{self.venue}: {sym}: leverage brackets unreadable: {exc}") from None
        await self.refresh_positions()
        for iid in self.instruments:
            b = self.brackets[iid][0]
            lines.append(
                f"{iid}: margin {self.margin_mode.get(iid, '?')}, leverage {self.leverage.get(iid, '?')}x, position "
                f"{dec_str(self.positions.get(iid, ZERO))}, first bracket to {dec_str(b.notional_cap)} "
                f"{self.quote}: maintenance {dec_str(b.mmr)} (amount {dec_str(b.cum)})")
        if self.funding_since_ms is None:
            self.funding_since_ms = self._now() // NANOS_PER_MS + self.clock_offset_ms
        return lines

    # ------------------------------------------------------------ balances and positions
    def _take_balances(self, account: Mapping[str, Any]) -> None:
        """``GET /fapi/v2/account``: wallet balance per asset (``assets``),
        positions of the one-way side (``positions``)."""
        self._balances = {a["asset"]: (Decimal(str(a["walletBalance"])), ZERO) for a in account.get("assets", [])}
        for p in account.get("positions", []) or []:
            iid = self._by_symbol.get(str(p.get("symbol")))
            if iid is not None and p.get("positionSide", "BOTH") == "BOTH":
                self.positions[iid] = Decimal(str(p.get("positionAmt", "0")))

    def balance(self, asset: str) -> Decimal:
        """A perpetual's base asset (``BTC``) or desk symbol
        (``BTCUSDT-PERP``): the signed position (base units) summed over the
        venue's perpetuals with that base; any other asset: its wallet
        balance (``walletBalance``; the margin asset USDT). Last read, moved
        by the fills reported since."""
        iids = [i for i, inst in self.instruments.items() if inst.base == asset or i.symbol == asset]
        if iids:
            return sum((self.positions.get(i, ZERO) for i in iids), ZERO)
        return super().balance(asset)

    def balances(self) -> dict[str, Decimal]:
        """Every non-zero wallet balance, and each perpetual's position
        under its desk symbol (``BTCUSDT-PERP``)."""
        out = super().balances()
        for iid, q in sorted(self.positions.items(), key=lambda kv: str(kv[0])):
            if q:
                out[iid.symbol] = q
        return out

    def _book_fill(self, f: OrderFilled) -> None:
        """A reported fill moves the position by its signed quantity and the
        wallet by its fee (realized PnL reaches the wallet at the next
        account read)."""
        if f.instrument_id not in self.instruments:
            return
        sign = 1 if f.side == "BUY" else -1
        self.positions[f.instrument_id] = self.positions.get(f.instrument_id, ZERO) + sign * f.last_qty
        self._adjust(f.commission_currency, -f.commission)

    async def refresh_positions(self) -> dict[InstrumentId, Decimal]:
        """Read every position (``GET /fapi/v2/positionRisk``, weight 5):
        the signed ``positionAmt`` of the one-way side per instrument, with
        its leverage and margin type. Returns the positions.

        Raises:
            TransientVenueError, VenueThrottled: the read failed.
        """
        ex = self._exchange()
        rows = await self._read("position risk", ex.fapiPrivateV2GetPositionRisk)
        seen = set()
        for r in rows or []:
            iid = self._by_symbol.get(str(r.get("symbol")))
            if iid is None or r.get("positionSide", "BOTH") != "BOTH":
                continue
            seen.add(iid)
            self.position_rows[iid] = r
            self.positions[iid] = Decimal(str(r.get("positionAmt", "0")))
            if r.get("leverage") is not None:
                self.leverage[iid] = int(str(r["leverage"]))
            if r.get("marginType"):
                self.margin_mode[iid] = "isolated" if str(r["marginType"]).lower() == "isolated" else "cross"
        for iid in self.instruments:
            if iid not in seen:
                self.positions[iid] = ZERO
        return dict(self.positions)

    async def position_risk(self) -> dict[InstrumentId, PerpPosition]:
        """Each instrument's position with Binance's liquidation price and
        the desk's own (``core.margin.liquidation_price``: isolated WB = the
        position's ``isolatedWallet``, TMM1 = UPNL1 = 0; cross WB = the
        margin asset's ``crossWalletBalance``, TMM1 and UPNL1 from the
        account's other cross positions' ``maintMargin`` and
        ``unrealizedProfit``), the maintenance margin at the mark
        (``core.margin.maintenance_margin``, bracket of the mark notional).
        Reads ``GET /fapi/v2/account`` and ``GET /fapi/v2/positionRisk``.
        Logs a WARNING when the two liquidation prices differ by more than
        one tick of the instrument.

        Raises:
            TransientVenueError, VenueThrottled: a read failed.
        """
        account = await self._read("account", self._api_account)
        self.account_info = account
        self._take_balances(account)
        await self.refresh_positions()
        cross_wb = ZERO
        for a in account.get("assets", []):
            if a.get("asset") == self.quote:
                cross_wb = Decimal(str(a.get("crossWalletBalance", a.get("walletBalance", "0"))))
        acct_pos = [p for p in account.get("positions", []) or [] if Decimal(str(p.get("positionAmt", "0"))) != 0]
        out: dict[InstrumentId, PerpPosition] = {}
        for iid, inst in self.instruments.items():
            row = self.position_rows.get(iid, {})
            qty = self.positions.get(iid, ZERO)
            entry = Decimal(str(row.get("entryPrice", "0")))
            mark = Decimal(str(row.get("markPrice", "0")))
            mode = self.margin_mode.get(iid, "cross")
            brackets = self.brackets.get(iid) or []
            bracket = bracket_for(brackets, qty * mark) if brackets else None
            mm = maintenance_margin(qty, mark, bracket) if bracket is not None else ZERO
            sym = self._venue_symbol(iid)
            if mode == "isolated":
                wb = Decimal(str(row.get("isolatedWallet", "0")))
                tmm = upnl = ZERO
            else:
                wb = cross_wb
                others = [p for p in acct_pos if p.get("symbol") != sym and not _truthy(p.get("isolated"))]
                tmm = sum((Decimal(str(p.get("maintMargin", "0"))) for p in others), ZERO)
                upnl = sum((Decimal(str(p.get("unrealizedProfit", "0"))) for p in others), ZERO)
            ours = None
            if bracket is not None:
                ours = liquidation_price(quantity=qty, entry_price=entry, wallet_balance=wb, mmr=bracket.mmr,
                                         cum=bracket.cum, other_maintenance=tmm, other_unrealized=upnl)
            venue_lp = Decimal(str(row.get("liquidationPrice", "0")))
            if ours is not None and abs(ours - venue_lp) > inst.tick_size:
                log.warning("%s: liquidation price: the venue says %s, the desk computes %s (more than one tick "
                            "%s apart)", iid, dec_str(venue_lp), dec_str(ours), dec_str(inst.tick_size))
            out[iid] = PerpPosition(
                instrument_id=iid, quantity=qty, entry_price=entry, mark_price=mark,
                leverage=int(self.leverage.get(iid, 0)), margin_mode=mode, wallet_balance=wb,
                unrealized_pnl=Decimal(str(row.get("unRealizedProfit", "0"))), venue_liquidation_price=venue_lp,
                liquidation_price=ours, maintenance_margin=mm, bracket=bracket)
        return out

    # ------------------------------------------------------------ orders
    def _fill_from_trade(self, coid: str, iid: InstrumentId, model_id: str, t: Mapping[str, Any],
                         venue_order_id: str | None = None) -> OrderFilled:
        """An ``OrderFilled`` from a raw ``GET /fapi/v1/userTrades`` row
        (``side``, ``buyer``, ``maker``; exact strings)."""
        side = str(t.get("side") or ("BUY" if _truthy(t.get("buyer")) else "SELL"))
        return OrderFilled(
            ts_event=int(t["time"]) * NANOS_PER_MS, ts_init=self._now(), client_order_id=coid, instrument_id=iid,
            model_id=model_id, venue_order_id=venue_order_id or str(t["orderId"]), trade_id=self._trade_id(t["id"]),
            side=side,
            last_qty=Decimal(str(t["qty"])), last_px=Decimal(str(t["price"])),
            commission=abs(Decimal(str(t["commission"]))), commission_currency=str(t["commissionAsset"]),
            liquidity_side=(LiquiditySide.MAKER if _truthy(t.get("maker")) else LiquiditySide.TAKER).value)

    def _order_request(self, order: Order) -> tuple[str, str | None, dict[str, Any]]:
        """``(ccxt type, price string, params)`` of a USD-M order: MARKET,
        LIMIT (GTC/IOC/FOK; post-only as GTX), ``reduceOnly`` when the order
        is reduce-only. Raises VenueRejected for stops, trailing stops,
        GTD/DAY and a MARKET quantity above MARKET_LOT_SIZE.maxQty."""
        params: dict[str, Any] = {"newClientOrderId": order.client_order_id}
        if order.reduce_only:
            params["reduceOnly"] = "true"
        t, tif = order.order_type, order.time_in_force
        if t == OrderType.MARKET:
            lot = self.market_lots.get(order.instrument_id)
            if lot is not None and order.quantity > lot[1]:
                raise VenueRejected(self.venue, f"MARKET quantity {dec_str(order.quantity)} above "
                                                f"MARKET_LOT_SIZE.maxQty {dec_str(lot[1])}")
            return "market", None, params
        if t == OrderType.LIMIT:
            if tif in (TimeInForce.GTD, TimeInForce.DAY):
                raise VenueRejected(self.venue, f"this adapter sends no {tif.value} time in force to USD-M futures")
            params["timeInForce"] = "GTX" if order.post_only else tif.value
            return "limit", None if order.price is None else dec_str(order.price), params
        raise VenueRejected(self.venue, f"order type {t.value} is not sent to USD-M futures by this adapter (the "
                                        f"OMS emulates stops)")

    async def _answer_fills(self, t: _Tracked, info: Mapping[str, Any]) -> list[OrderFilled]:
        """A ``RESULT`` answer lists no fills: when it reports an executed
        quantity, read them (``GET /fapi/v1/userTrades?orderId=``)."""
        if Decimal(str(info.get("executedQty", "0"))) <= 0:
            return []
        return await self._fetch_fills(t, str(info["orderId"]))

    # ------------------------------------------------------------ polling
    async def poll(self, balances: bool = True) -> None:
        """The spot round (open orders, changed orders looked up, the
        account), then the positions (``positionRisk``) and, at most once
        per ``config.funding_poll_ns``, the funding payments.

        Raises:
            TransientVenueError, VenueThrottled: a read failed.
        """
        await super().poll(balances)
        if balances:
            await self.refresh_positions()
        await self.poll_funding()

    # ------------------------------------------------------------ user data stream
    #: ccxt's user-data type of USD-M: the listenKey bucket (``options['linear']``) and the WebSocket URL type
    USER_STREAM_TYPE = "linear"

    async def _user_stream_connect(self) -> bool:
        """Make sure the user data stream is connected (the spot adapter's
        :meth:`~BinanceVenue.next_order_updates` calls it): ccxt.pro
        ``authenticate`` (the listenKey: ``POST /fapi/v1/listenKey`` when
        there is none, through the request gate and the typed errors), then
        ``watch_orders`` on ``<linear ws base>/private/ws?listenKey=<key>``.
        True when a new connection was made (the first, or one after a
        drop), once it is open: the caller reconciles over REST then, and
        whatever the stream sends meanwhile is kept.

        Raises:
            BinanceRateLimited, BinanceBanned, TransientVenueError,
                BinanceRejected: the listenKey request failed.
            ccxt NetworkError / ExchangeError: the connection failed.
        """
        ex = self._exchange()
        # ccxt's watch_orders would read every position over REST on a new connection (watchPositions snapshot)
        ex.options.setdefault("watchPositions", {})["fetchPositionsSnapshot"] = False
        kind = self.USER_STREAM_TYPE
        await self._guard("listen key", lambda: ex.authenticate({"type": "swap", "subType": kind}))
        key = (ex.options.get(kind) or {}).get("listenKey")
        client = ex.client(ex.get_private_ws_url(kind, key))
        watch = self._user_watch
        if client is self._user_client and watch is not None:
            if not watch.done():
                return False
            self._user_watch = None
            self._raise_watch_error(watch)  # the connection failed
            self._user_watch = asyncio.ensure_future(ex.watch_orders())  # an order event resolved it: again
            return False
        # a new connection: the first, or after the previous one closed (ccxt made a new client for the URL)
        if watch is not None:
            self._forget(watch)
        self._user_client = None
        if self._user_wake is None:
            self._user_wake = asyncio.Event()
        self._listen(client)
        watch = self._user_watch = asyncio.ensure_future(ex.watch_orders())
        opened = client.connected  # ccxt's future of this connection's opening (never rejected: the watch is)
        await asyncio.wait({watch, opened}, return_when=asyncio.FIRST_COMPLETED)
        if watch.done() and not opened.done():
            self._user_watch = None
            self._raise_watch_error(watch)  # the connection could not be made
        self._user_client = client
        self.user_connections += 1
        return True

    def _listen(self, client: Any) -> None:
        """Keep the raw user data events of ``client`` (one ccxt.pro
        WebSocket connection) before ccxt handles them: ccxt's handler of
        every message is wrapped, so its own parsing still runs."""
        if getattr(client, "desk_listener", None) is self:
            return  # already listened to (a connect step that was cancelled while the connection opened)
        client.desk_listener = self
        handle: Callable[[Any, Any], Any] = client.on_message_callback
        events = self._user_events

        def on_message(c: Any, message: Any) -> Any:
            if isinstance(message, dict):
                e = message.get("e")
                if e in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"):
                    events.append(message)
                    if self._user_wake is not None:
                        self._user_wake.set()
                elif e == "listenKeyExpired":
                    self._listen_key_expired()
            return handle(c, message)

        client.on_message_callback = on_message

    def _listen_key_expired(self) -> None:
        """Binance's ``listenKeyExpired``: the stream ends; the key is
        dropped so the next connection asks for a new one."""
        ex = self._exchange()
        kind = self.USER_STREAM_TYPE
        ex.options[kind] = {**(ex.options.get(kind) or {}), "listenKey": None, "lastAuthenticatedTime": 0}
        log.warning("%s: the user data stream's listenKey expired; a new one is requested", self.venue)

    @staticmethod
    def _raise_watch_error(watch: asyncio.Future[Any]) -> None:
        if watch.cancelled():
            raise ccxt_async.NetworkError("the user data stream's watch was cancelled")
        exc = watch.exception()
        if exc is not None:
            raise exc

    @staticmethod
    def _forget(watch: asyncio.Future[Any]) -> None:
        """Cancel a watch of a connection no longer used (its error, if any,
        is retrieved: nothing is logged as never retrieved)."""
        if watch.done():
            if not watch.cancelled():
                watch.exception()
        else:
            watch.cancel()

    async def _user_stream_reports(self) -> list[Mapping[str, Any]]:
        """The ``o`` objects of the ``ORDER_TRADE_UPDATE`` events received
        since the last call (arrival order), each commission as its
        absolute value (as :meth:`_fill_from_trade` reads ``userTrades``);
        waits for the next user data event when there is none yet. An
        ``ACCOUNT_UPDATE`` of reason ``FUNDING_FEE`` reads the funding
        payments (:meth:`poll_funding`, forced).

        Raises:
            ccxt NetworkError / ExchangeError: the stream dropped.
            TransientVenueError, VenueThrottled: the funding read failed.
        """
        watch = self._user_watch
        wake = self._user_wake
        if not self._user_events and watch is not None and wake is not None:
            wake.clear()
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({watch, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if not self._user_events and watch.done():
                self._user_watch = None
                self._user_client = None
                self._raise_watch_error(watch)
        events, self._user_events[:] = list(self._user_events), []
        reports: list[Mapping[str, Any]] = []
        funding = False
        for ev in events:
            if ev.get("e") == "ACCOUNT_UPDATE":
                funding = funding or (ev.get("a") or {}).get("m") == "FUNDING_FEE"
                continue
            o = ev.get("o")
            if not isinstance(o, dict):
                continue
            r = dict(o)
            if r.get("n") not in (None, ""):
                r["n"] = abs(Decimal(str(r["n"])))
            r.setdefault("E", ev.get("E"))
            reports.append(r)
        if funding:
            await self.poll_funding(force=True)
        return reports

    async def close(self) -> None:
        """Stop watching the user data stream, then as the spot adapter
        (background requests, ccxt's session and WebSocket connections)."""
        if self._user_watch is not None:
            self._forget(self._user_watch)
            self._user_watch = None
        self._user_client = None
        await super().close()

    async def poll_funding(self, force: bool = False) -> int:
        """Read the funding payments since :attr:`funding_since_ms` (``GET
        /fapi/v1/income?incomeType=FUNDING_FEE&startTime=``, pages of 1,000)
        and report each new ``tranId`` of an instrument of this venue as a
        ``FundingPaid`` (amount = Binance's signed ``income``, negative =
        paid; ``ts_event`` = its ``time``). Not more often than
        ``config.funding_poll_ns`` unless ``force``. Returns how many were
        reported.

        Raises:
            TransientVenueError, VenueThrottled: the read failed (the cursor
                stays where it was).
        """
        now = self._now()
        if self.funding_since_ms is None or (not force and now < self._funding_next_ns):
            return 0
        ex = self._exchange()
        n = 0
        while True:
            since = self.funding_since_ms
            rows = await self._read("funding income", lambda s=since: ex.fapiPrivateGetIncome(
                {"incomeType": "FUNDING_FEE", "startTime": s, "limit": INCOME_PAGE}))
            rows = sorted(rows or [], key=lambda r: (int(r["time"]), int(r["tranId"])))
            for r in rows:
                tid, ts = str(r["tranId"]), int(r["time"])
                if ts < since or (ts == self.funding_since_ms and tid in self._funding_ids):
                    continue
                if ts > self.funding_since_ms:
                    self.funding_since_ms, self._funding_ids = ts, set()
                self._funding_ids.add(tid)
                iid = self._by_symbol.get(str(r.get("symbol")))
                if iid is None or r.get("incomeType", "FUNDING_FEE") != "FUNDING_FEE":
                    continue  # another symbol's payment: not this desk's book
                self._emit(FundingPaid(ts_event=ts * NANOS_PER_MS, ts_init=self._now(), instrument_id=iid,
                                       amount=Decimal(str(r["income"])), asset=str(r.get("asset") or self.quote),
                                       tran_id=tid))
                n += 1
            if len(rows) < INCOME_PAGE or self.funding_since_ms == since:
                break
        self._funding_next_ns = now + int(self.config.funding_poll_ns)
        return n

    # ------------------------------------------------------------ restart state
    def state_dict(self) -> dict[str, Any]:
        """The funding cursor: ``{"funding_since_ms": <venue ms>,
        "funding_ids": [tranId at that time, ...]}`` (JSON-ready)."""
        return {"funding_since_ms": self.funding_since_ms, "funding_ids": sorted(self._funding_ids)}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Continue the funding reads from a :meth:`state_dict` (before or
        after :meth:`start`; an empty state changes nothing).

        Raises:
            ValueError: a cursor that is not an integer (named).
        """
        if not state or state.get("funding_since_ms") is None:
            return
        try:
            self.funding_since_ms = int(state["funding_since_ms"])
        except (TypeError, ValueError):
            raise ValueError(f"venue state: funding_since_ms must be an integer, got "
                             f"{state['funding_since_ms']!r}") from None
        self._funding_ids = {str(x) for x in state.get("funding_ids", [])}
        self._funding_next_ns = 0


__all__ = ["BinanceUsdmVenue"]
