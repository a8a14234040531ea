"""The paper venue: a matching model on bars with fees and slippage, and a
ledger of its own in ``venue-paper.sqlite`` that outlives the engine, as an
exchange would (DESIGN.md section 5).

Matching rules (issue 2):

* An order matches only bars that close after it was accepted.
* A buy LIMIT fills when a bar's low is strictly below its price, at the
  limit price or at the bar's open if that is lower (better); a sell LIMIT
  when the high is strictly above its price, at the price or the open if
  higher.
* A MARKET order fills at the next bar's open plus slippage (default 1 bp),
  rounded to the tick against the trader.
* Fees (default 0.1 % maker and taker) are charged in the asset received:
  the base on a buy, the quote on a sell (Binance without BNB). Amounts are
  quantized to 8 decimals with ROUND_HALF_EVEN.
* A buy reserves ``qty * limit price`` of cash; a sell reserves the base.
  A spot sell of more than is held is rejected, as is a buy without the cash.

Order management (issue 4):

* **Partial fills** (off by default): with ``PaperConfig.max_volume_share``
  set, the limit-priced fills (LIMIT and STOP_LIMIT) of one instrument in
  one bar total at most ``floor_to_step(bar volume * share, step)``, shared
  by the orders in acceptance order; e.g. volume 10 and share 0.1 give at
  most 1.0 per bar. Market-priced fills (MARKET, STOP_MARKET,
  TRAILING_STOP_MARKET) always fill in full. A partially filled buy
  releases ``quantize(qty * limit price)`` of its cash reservation per fill
  and the rest with its last fill.
* **IOC / FOK** (LIMIT; a MARKET order fills in full anyway): matched
  against the first bar after acceptance only. IOC fills what that bar
  allows and expires the rest; FOK fills in full on that bar or expires
  with nothing filled. Binance reports both as ``EXPIRED``
  (``OrderExpired``, reason ``IOC``/``FOK``).
* **GTD / DAY**: an order takes part in bars that close at or before its
  expiry; the first bar closing after it expires the order before any
  matching (``OrderExpired``, ``ts_event`` = the expiry). A DAY order
  expires at the end of the venue day of its acceptance: the next midnight
  in ``PaperConfig.day_tz`` (an IANA name, UTC by default).
* **post_only** LIMIT orders are rejected when they would take liquidity
  against the last price the venue saw (a buy at or above it, a sell at or
  below it), as Binance rejects a ``LIMIT_MAKER`` that would match at once.
* **reduce_only** on this spot account: a sell of at most what is held
  (every sell already is); a reduce-only buy is rejected (a spot account
  holds no short to reduce).
* **Stops, emulated** on every bar by :func:`core.emulator.walk_stop` (path
  open -> high -> low -> close): a buy stop triggers when high >= trigger, a
  sell stop when low <= trigger; ``OrderTriggered`` comes first, then the
  fills, as for a native stop. STOP_MARKET and TRAILING_STOP_MARKET then
  fill in full at the fire price (the open on a gap, else the trigger)
  with the market slippage, rounded against the trader, as taker. A
  STOP_LIMIT becomes a LIMIT at its price: if the fire price is at or
  better than the limit (a buy at or below it, a sell at or above) it
  fills at once at the fire price as taker (volume share applies), else it
  rests and matches as a LIMIT from the next bar on (maker). A trailing
  stop starts from its ``trigger_price`` or, without one, from the last
  price the venue saw (none seen: rejected); its trigger ratchets with the
  best price on each bar's path and each move is reported as
  ``OrderUpdated`` (as NautilusTrader's emulator does). A buy stop-market
  reserves nothing and is canceled if the cash is short at the fill, like
  a MARKET buy; a buy STOP_LIMIT reserves ``qty * limit``.
* **Modify** (:meth:`PaperVenue.modify_order`): amended natively in place,
  keeping the order's time priority and its total quantity (``quantity``
  is the new total, filled included, as Kraken's and IB's amends and
  Binance's ``order/amend/keepPriority``): ``OrderUpdated`` or
  ``OrderModifyRejected``. The desk's ``PENDING_UPDATE`` is the OMS's.
* **Cancel acknowledgements** report the executed quantity
  (``OrderCanceled.executed_qty``), as Binance's cancel response does.
* **OCO sells share one reservation**: a SELL with ``contingency`` OCO
  joins the base locked by a working linked sibling (same instrument and
  side) and locks only what its quantity exceeds, as a Binance order list
  locks the balance once. Fills of the list are clipped to what the list
  still holds, so together they never sell more than it; when it is used
  up, the remaining siblings are canceled (reason ``OCO_EXHAUSTED``). The
  desk's :class:`core.emulator.OrderEmulator` does the OCO logic itself
  (it reduces or cancels the siblings); this is the venue's safety net.

Faults and recovery (issue 5):

* **Typed errors at the edge** (``core.venue_errors``): a repeated
  ClientOrderId raises ``DuplicateClientOrderId`` ("look it up", Binance
  ``-2010``), not a rejection of the first order.
* **A fault plan** (``core.faults.PaperFaults``; off by default, attached
  with ``faults=`` or :meth:`PaperVenue.set_faults`): submit timeouts the
  venue accepted at once or up to recvWindow + backend timeout later, or
  not at all; cancel timeouts, applied or not; disconnects (every call
  raises ``TransientVenueError``, reports are lost); HTTP-429 throttles
  (``VenueThrottled`` with the retry-after). Every request is counted
  (``faults.calls``, ``faults.requests``).
* **Venue-side actions** the engine did not ask for:
  :meth:`PaperVenue.inject_cancel`, :meth:`PaperVenue.inject_fill` (either
  reported or silent), :meth:`PaperVenue.inject_foreign_order`.
* **Reads for reconciliation**: :meth:`PaperVenue.lookup` (one order and
  its fills by ClientOrderId), :meth:`PaperVenue.order_ids` (every id
  seen), :meth:`PaperVenue.open_orders` (mass status) and
  :meth:`PaperVenue.is_connected`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

import sqlite_utils

from core.clock import Clock
from core.data import Bar
from core.emulator import Trailing, trailing_trigger, walk_stop
from core.faults import PaperFaults
from core.enums import LiquiditySide, OrderSide, OrderType, TimeInForce
from core.events import (
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderModifyRejected,
    OrderRejected,
    OrderTriggered,
    OrderUpdated,
)
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import LIMIT_TYPES, STOP_TYPES, ContingencyType, Order, TrailingOffsetType
from core.recovery import VenueOrderReport
from core.values import ZERO, dec_str, floor_to_step, quantize_money
from core.venue_errors import DuplicateClientOrderId, OrderNotFound, TransientVenueError

BASE_QUANTUM = Decimal("0.00000001")
_MARKET_PRICED = frozenset({OrderType.MARKET, OrderType.STOP_MARKET, OrderType.TRAILING_STOP_MARKET})


class _FixedClock:
    """A clock stopped at ``ts_ns``: a delayed request is executed at its due time."""

    def __init__(self, ts_ns: int) -> None:
        self._ts = ts_ns

    def timestamp_ns(self) -> int:
        return self._ts


def _run_now(coro: Any) -> None:
    """Run a coroutine that never suspends (the venue's request handlers)
    to its end, from synchronous code."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("paper venue: a request handler suspended")


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """Paper venue settings: fee fractions (0.001 = 0.1 %), slippage in
    basis points for market-priced fills, starting cash in the quote
    currency; ``max_volume_share`` (a fraction of a bar's volume, e.g.
    ``Decimal("0.1")``) bounds limit-priced fills per bar and instrument,
    ``None`` (the default) fills in full; ``day_tz`` is the IANA time zone
    whose midnight ends a DAY order."""

    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    slippage_bps: Decimal = Decimal("1")
    starting_cash: Decimal = Decimal("10000")
    max_volume_share: Decimal | None = None
    day_tz: str = "UTC"
    cancel_on_disconnect: bool = False
    margin_account: bool = False


def _d(v: object) -> Decimal | None:
    return None if v is None else Decimal(str(v))


@dataclass(slots=True)
class _VenueOrder:
    client_order_id: str
    venue_order_id: str
    model_id: str
    instrument_id: InstrumentId
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    ts_accepted: int
    reserved: Decimal  # quote for buys, base for sells
    filled: Decimal = ZERO
    time_in_force: TimeInForce = TimeInForce.GTC
    trigger_price: Decimal | None = None
    trailing_offset: Decimal | None = None
    trailing_offset_type: TrailingOffsetType = TrailingOffsetType.PRICE
    expire_ns: int | None = None  # GTD expiry or the end of a DAY order's venue day
    post_only: bool = False
    reduce_only: bool = False
    triggered: bool = False
    best_px: Decimal | None = None  # a trailing stop's best price seen
    pool_id: str | None = None  # the shared reservation of an OCO sell list

    def extra(self) -> str:
        """The issue-4 fields as a JSON text for the ledger's ``extra`` column."""
        return json.dumps({
            "tif": self.time_in_force.value,
            "trigger_price": None if self.trigger_price is None else dec_str(self.trigger_price),
            "trailing_offset": None if self.trailing_offset is None else dec_str(self.trailing_offset),
            "trailing_offset_type": self.trailing_offset_type.value, "expire_ns": self.expire_ns,
            "post_only": self.post_only, "reduce_only": self.reduce_only, "triggered": self.triggered,
            "best_px": None if self.best_px is None else dec_str(self.best_px), "pool_id": self.pool_id,
        }, sort_keys=True)

    def load_extra(self, text: str | None) -> None:
        """Restore the fields written by :meth:`extra` (absent: defaults)."""
        if not text:
            return
        x = json.loads(text)
        self.time_in_force = TimeInForce(x.get("tif", "GTC"))
        self.trigger_price = _d(x.get("trigger_price"))
        self.trailing_offset = _d(x.get("trailing_offset"))
        self.trailing_offset_type = TrailingOffsetType(x.get("trailing_offset_type", "PRICE"))
        self.expire_ns = x.get("expire_ns")
        self.post_only = bool(x.get("post_only", False))
        self.reduce_only = bool(x.get("reduce_only", False))
        self.triggered = bool(x.get("triggered", False))
        self.best_px = _d(x.get("best_px"))
        self.pool_id = x.get("pool_id")

    def to_row(self) -> dict[str, object]:
        """The ledger row of this order (status OPEN; callers override it)."""
        return {
            "client_order_id": self.client_order_id, "venue_order_id": self.venue_order_id,
            "model_id": self.model_id, "instrument_id": str(self.instrument_id), "side": self.side.value,
            "order_type": self.order_type.value, "quantity": dec_str(self.quantity),
            "price": None if self.price is None else dec_str(self.price), "ts_accepted": self.ts_accepted,
            "reserved": dec_str(self.reserved), "filled": dec_str(self.filled), "status": "OPEN",
            "extra": self.extra(),
        }

    @property
    def leaves(self) -> Decimal:
        """Quantity still open (base units)."""
        return self.quantity - self.filled

    @property
    def limit_live(self) -> bool:
        """True when it matches as a limit order on this bar (a LIMIT, or a
        STOP_LIMIT whose trigger fired on an earlier bar)."""
        return self.order_type == OrderType.LIMIT or (self.order_type == OrderType.STOP_LIMIT and self.triggered)


@dataclass(slots=True)
class _Pool:
    """Base locked once for the working SELL orders of an OCO list."""

    amount: Decimal
    members: list[str]
    base: str


class PaperVenue:
    """A simulated exchange for one venue name (``SIM`` or ``BINANCE``) and
    one quote (cash) currency.

    Reports go to ``on_event`` synchronously (``OrderAccepted``,
    ``OrderRejected``, ``OrderTriggered``, ``OrderUpdated``,
    ``OrderModifyRejected``, ``OrderFilled``, ``OrderCanceled``,
    ``OrderExpired``). A callback may call back into the venue (cancel,
    modify or submit); an order canceled that way during ``on_bar`` is not
    matched afterwards, one submitted matches from the next bar.

    Raises:
        ValueError: at construction if instruments do not share ``quote``,
            or ``day_tz`` is not an IANA time zone.
    """

    #: this venue amends orders in place (``modify_order``)
    supports_modify = True

    def __init__(
        self,
        path: str | Path,
        venue: str,
        quote: str,
        instruments: dict[InstrumentId, Instrument],
        clock: Clock,
        config: PaperConfig,
        on_event: Callable[[Event], None],
        faults: PaperFaults | None = None,
    ) -> None:
        for inst in instruments.values():
            if inst.quote != quote:
                raise ValueError(f"paper venue: {inst.id} quotes in {inst.quote}, not the cash currency {quote}")
        try:
            self._tz = ZoneInfo(config.day_tz)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError
            raise ValueError(f"paper venue: day_tz {config.day_tz!r} is not an IANA time zone") from exc
        self.venue = venue
        self.quote = quote
        self.instruments = instruments
        self.clock = clock
        self.config = config
        self.on_event = on_event
        self._sink = on_event
        self.faults: PaperFaults | None = None
        self.db = sqlite_utils.Database(Path(path))
        self.db.conn.execute("PRAGMA journal_mode=WAL")
        # a simulated exchange: durable against a crash of the process (WAL, NORMAL)
        self.db.conn.execute("PRAGMA synchronous=NORMAL")
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        self._working: dict[str, _VenueOrder] = {}
        self._seen: set[str] = set()
        self._next_order = 1
        self._next_trade = 1
        self._dirty_orders: dict[str, dict[str, object]] = {}
        self._fills: list[dict[str, object]] = []
        self._last_px: dict[InstrumentId, Decimal] = {}
        self._pools: dict[str, _Pool] = {}
        self._last_bar_ts: dict[InstrumentId, int] = {}
        self._load_or_init()
        if faults is not None:
            self.set_faults(faults)

    # ----------------------------------------------------------- ledger
    def _load_or_init(self) -> None:
        db = self.db
        if "state" not in db.table_names():
            db["state"].create({"key": str, "value": str}, pk="key")
            db["orders"].create(
                {"client_order_id": str, "venue_order_id": str, "model_id": str, "instrument_id": str,
                 "side": str, "order_type": str, "quantity": str, "price": str, "ts_accepted": int,
                 "reserved": str, "filled": str, "status": str, "extra": str},
                pk="client_order_id",
            )
            db["fills"].create(
                {"trade_id": str, "client_order_id": str, "instrument_id": str, "side": str,
                 "qty": str, "px": str, "commission": str, "commission_currency": str, "ts": int},
                pk="trade_id",
            )
            self._free = {self.quote: self.config.starting_cash}
            self._locked = {}
            self.commit()
            return
        if "extra" not in db["orders"].columns_dict:  # a ledger written before issue 4
            db["orders"].add_column("extra", str)
        state = {r["key"]: r["value"] for r in db["state"].rows}
        self._free = {k: Decimal(v) for k, v in json.loads(state["free"]).items()}
        self._locked = {k: Decimal(v) for k, v in json.loads(state["locked"]).items()}
        self._next_order = int(state["next_order"])
        self._next_trade = int(state["next_trade"])
        if "last_bar_ts" in state:
            self._last_bar_ts = {InstrumentId.parse(k): int(v) for k, v in json.loads(state["last_bar_ts"]).items()}
        if "last_px" in state:
            self._last_px = {InstrumentId.parse(k): Decimal(v) for k, v in json.loads(state["last_px"]).items()}
        for r in db["orders"].rows:
            self._seen.add(r["client_order_id"])
            if r["status"] == "OPEN":
                vo = _VenueOrder(
                    r["client_order_id"], r["venue_order_id"], r["model_id"], InstrumentId.parse(r["instrument_id"]),
                    OrderSide(r["side"]), OrderType(r["order_type"]), Decimal(r["quantity"]),
                    None if r["price"] is None else Decimal(r["price"]), int(r["ts_accepted"]),
                    Decimal(r["reserved"]), Decimal(r["filled"]),
                )
                vo.load_extra(r.get("extra"))
                self._working[vo.client_order_id] = vo
        pools = json.loads(state.get("pools", "{}"))
        for vo in self._working.values():
            if vo.pool_id is not None:
                base = self.instruments[vo.instrument_id].base
                pool = self._pools.setdefault(vo.pool_id, _Pool(Decimal(pools.get(vo.pool_id, "0")), [], base))
                pool.members.append(vo.client_order_id)

    def commit(self) -> None:
        """Commit the ledger (balances, order states, fills) to the venue's store."""
        rows = [
            ("free", json.dumps({k: dec_str(v) for k, v in self._free.items()})),
            ("locked", json.dumps({k: dec_str(v) for k, v in self._locked.items()})),
            ("next_order", str(self._next_order)),
            ("next_trade", str(self._next_trade)),
        ]
        rows.append(("pools", json.dumps({k: dec_str(p.amount) for k, p in sorted(self._pools.items())})))
        if self._last_bar_ts:
            rows.append(("last_bar_ts", json.dumps({str(k): v for k, v in sorted(
                self._last_bar_ts.items(), key=lambda kv: str(kv[0]))})))
        if self._last_px:
            rows.append(("last_px", json.dumps({str(k): dec_str(v) for k, v in sorted(
                self._last_px.items(), key=lambda kv: str(kv[0]))})))
        with self.db.conn:
            self.db.conn.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", rows)
            if self._dirty_orders:
                self.db["orders"].upsert_all(list(self._dirty_orders.values()), pk="client_order_id")
            if self._fills:
                self.db["fills"].insert_all(self._fills, pk="trade_id")
        self._dirty_orders.clear()
        self._fills.clear()

    def lookup(self, client_order_id: str) -> VenueOrderReport | None:
        """The venue's view of one order (status, executed quantity and its
        fills as ``OrderFilled`` events), or None if it never saw the id.
        Used by reconciliation after a restart or an unknown submit outcome.

        Raises:
            TransientVenueError, VenueThrottled: from the fault plan only.
        """
        if self.faults is not None:
            self._pump()
            self.faults.gate("lookup", client_order_id)
        if client_order_id not in self._seen:
            return None
        self.commit()
        row = self.db.conn.execute(
            "SELECT venue_order_id, model_id, instrument_id, order_type, filled, status FROM orders "
            "WHERE client_order_id=?", (client_order_id,)).fetchone()
        if row is None:  # seen and rejected: the venue keeps no order
            return VenueOrderReport(client_order_id, "", "REJECTED", ZERO, (), "rejected at submit")
        vid, model_id, iid_text, otype, filled, status = row
        iid = InstrumentId.parse(iid_text)
        liquidity = (LiquiditySide.MAKER if otype in ("LIMIT",) else LiquiditySide.TAKER).value
        fills = tuple(
            OrderFilled(ts_event=int(ts), ts_init=int(ts), client_order_id=client_order_id, instrument_id=iid,
                        model_id=model_id, venue_order_id=vid, trade_id=tid, side=side, last_qty=Decimal(q),
                        last_px=Decimal(px), commission=Decimal(fee), commission_currency=ccy,
                        liquidity_side=liquidity)
            for tid, side, q, px, fee, ccy, ts in self.db.conn.execute(
                "SELECT trade_id, side, qty, px, commission, commission_currency, ts FROM fills "
                "WHERE client_order_id=? ORDER BY rowid", (client_order_id,))
        )
        return VenueOrderReport(client_order_id, vid, status, Decimal(filled), fills)

    def order_ids(self) -> list[str]:
        """Every ClientOrderId the venue has seen, sorted.

        Raises:
            TransientVenueError, VenueThrottled: from the fault plan only.
        """
        if self.faults is not None:
            self._pump()
            self.faults.gate("order_ids")
        return sorted(self._seen)

    def open_orders(self) -> dict[str, Decimal]:
        """The open orders (mass status, as Binance ``GET /api/v3/openOrders``):
        ClientOrderId -> executed quantity (base units), in acceptance order.

        Raises:
            TransientVenueError, VenueThrottled: from the fault plan only.
        """
        if self.faults is not None:
            self._pump()
            self.faults.gate("open_orders")
        return {coid: vo.filled for coid, vo in self._working.items()}

    def is_connected(self) -> bool:
        """False while a planned disconnect lasts (always True without a
        fault plan): what a live adapter knows of its session."""
        return self.faults is None or self.faults.connected()

    def balance(self, asset: str) -> Decimal:
        """Total (free + locked) of ``asset``."""
        return self._free.get(asset, ZERO) + self._locked.get(asset, ZERO)

    def free(self, asset: str) -> Decimal:
        """Free (unreserved) balance of ``asset``."""
        return self._free.get(asset, ZERO)

    def balances(self) -> dict[str, Decimal]:
        """Every asset's total balance."""
        assets = set(self._free) | set(self._locked)
        return {a: self.balance(a) for a in sorted(assets)}

    def working_orders(self) -> list[str]:
        """ClientOrderIds of open orders, in acceptance order."""
        return list(self._working)

    def executed_qty(self, client_order_id: str) -> Decimal | None:
        """The executed quantity of an order the venue knows (open or
        finished this session), base units; ``None`` if unknown."""
        vo = self._working.get(client_order_id)
        if vo is not None:
            return vo.filled
        row = self._dirty_orders.get(client_order_id)
        if row is None:
            try:
                row = self.db["orders"].get(client_order_id)
            except sqlite_utils.db.NotFoundError:
                return None
        return Decimal(str(row["filled"]))

    def last_price(self, instrument_id: InstrumentId) -> Decimal | None:
        """The close of the last bar seen for ``instrument_id`` (quote per
        base), or ``None``."""
        return self._last_px.get(instrument_id)

    def _adjust(self, book: dict[str, Decimal], asset: str, delta: Decimal) -> None:
        book[asset] = book.get(asset, ZERO) + delta

    def _common(self, client_order_id: str, instrument_id: InstrumentId, model_id: str, ts: int) -> dict[str, object]:
        return dict(ts_event=ts, ts_init=self.clock.timestamp_ns(), client_order_id=client_order_id,
                    instrument_id=instrument_id, model_id=model_id)

    def _day_end_ns(self, ts_ns: int) -> int:
        local = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=timezone.utc).astimezone(self._tz)
        nxt = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        nxt = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self._tz)
        return int(nxt.astimezone(timezone.utc).timestamp()) * 1_000_000_000

    # ----------------------------------------------------------- orders
    async def submit_order(self, order: Order) -> None:
        """Accept or reject ``order`` (see ``_submit``), then commit the
        venue's ledger before returning, as an exchange persists an order
        before it answers.

        Raises:
            DuplicateClientOrderId: the venue has seen this ClientOrderId
                (look it up, it is not a rejection).
            TransientVenueError, VenueThrottled: from the fault plan only
                (:meth:`_submit_faulted`).
        """
        if self.faults is not None and await self._submit_faulted(order):
            return
        with self._persist_then_report():
            await self._submit(order)

    async def cancel_order(self, order: Order, reason: str = "CANCELED") -> None:
        """Cancel a working order (see ``_cancel_request``), then commit.

        Raises:
            TransientVenueError, VenueThrottled: from the fault plan only.
        """
        if self.faults is not None and await self._cancel_faulted(order, reason):
            return
        with self._persist_then_report():
            await self._cancel_request(order, reason)

    async def _submit(self, order: Order) -> None:
        """Accept or reject ``order``.

        Rejected (``OrderRejected``, reason naming the rule): a repeated
        ClientOrderId, an unknown instrument, an invalid order
        (:meth:`Order.spec_error`), a GTD expiry not after now, a post-only
        order that would take, a reduce-only buy, a trailing stop with no
        trigger and no last price, a sell of more base than is free, or a
        limit-priced buy without the cash for ``qty * limit``.
        """
        now = self.clock.timestamp_ns()
        common = self._common(order.client_order_id, order.instrument_id, order.model_id, now)
        inst = self.instruments.get(order.instrument_id)
        if order.client_order_id in self._seen:
            # Binance -2010 "Duplicate order sent": the earlier request under this id was
            # executed; the engine must look it up, never read it as a rejection
            raise DuplicateClientOrderId(self.venue, order.client_order_id)
        self._seen.add(order.client_order_id)
        if inst is None:
            self.on_event(OrderRejected(**common, reason=f"unknown instrument {order.instrument_id}"))
            return
        err = order.spec_error()
        if err is None and order.time_in_force == TimeInForce.GTD and order.expire_time_ns is not None \
                and order.expire_time_ns <= now:
            err = f"GTD expire time {order.expire_time_ns} is not after now {now}"
        last = self._last_px.get(order.instrument_id)
        if err is None and order.post_only and last is not None and order.price is not None:
            takes = order.price >= last if order.side == OrderSide.BUY else order.price <= last
            if takes:
                err = f"post-only {order.side.value} at {order.price} would take liquidity (last {last})"
        if err is None and order.reduce_only and order.side == OrderSide.BUY and not self.config.margin_account:
            err = "reduce-only buy: a spot account holds no short to reduce"
        trigger = order.trigger_price
        best = None
        if err is None and order.order_type == OrderType.TRAILING_STOP_MARKET and trigger is None:
            if last is None:
                err = "trailing stop without trigger_price and no last price to trail from"
            else:
                assert order.trailing_offset is not None
                best = last
                trigger = trailing_trigger(order.side, last, order.trailing_offset, order.trailing_offset_type,
                                           inst.tick_size)
        if err is not None:
            self.on_event(OrderRejected(**common, reason=err))
            return
        if order.side == OrderSide.BUY:
            if order.order_type in LIMIT_TYPES:
                assert order.price is not None
                need = quantize_money(order.quantity * order.price)
                if need > self.free(self.quote):
                    self.on_event(OrderRejected(**common, reason=(
                        f"insufficient {self.quote}: need {need}, free {self.free(self.quote)}")))
                    return
                self._adjust(self._free, self.quote, -need)
                self._adjust(self._locked, self.quote, need)
                reserved = need
            else:
                reserved = ZERO
        elif self.config.margin_account:
            reserved = ZERO  # a margin account may sell what it does not hold (a short), IBKR-style
        else:
            pool_id, pool = self._sibling_pool(order)
            need = order.quantity if pool is None else max(ZERO, order.quantity - pool.amount)
            have = self.free(inst.base)
            if need > have:
                self.on_event(OrderRejected(**common, reason=(
                    f"insufficient {inst.base}: sell {order.quantity}, free {have}")))
                return
            self._adjust(self._free, inst.base, -need)
            self._adjust(self._locked, inst.base, need)
            reserved = order.quantity
            if order.contingency == ContingencyType.OCO:
                if pool is None:
                    pool_id, pool = order.client_order_id, _Pool(ZERO, [], inst.base)
                    self._pools[pool_id] = pool
                pool.amount += need
                pool.members.append(order.client_order_id)
                reserved = ZERO
        expire = order.expire_time_ns if order.time_in_force == TimeInForce.GTD else None
        if order.time_in_force == TimeInForce.DAY:
            expire = self._day_end_ns(now)
        vo = _VenueOrder(
            order.client_order_id, f"P-{self._next_order}", order.model_id, order.instrument_id, order.side,
            order.order_type, order.quantity, order.price, now, reserved,
            time_in_force=order.time_in_force, trigger_price=trigger, trailing_offset=order.trailing_offset,
            trailing_offset_type=order.trailing_offset_type, expire_ns=expire, post_only=order.post_only,
            reduce_only=order.reduce_only, best_px=best,
        )
        if order.side == OrderSide.SELL and order.contingency == ContingencyType.OCO:
            vo.pool_id = pool_id
        self._next_order += 1
        self._working[vo.client_order_id] = vo
        self._dirty_orders[vo.client_order_id] = vo.to_row()
        self.on_event(OrderAccepted(**common, venue_order_id=vo.venue_order_id))

    def _sibling_pool(self, order: Order) -> tuple[str | None, _Pool | None]:
        """The shared reservation of a working OCO sibling of a SELL order."""
        if order.side != OrderSide.SELL or order.contingency != ContingencyType.OCO:
            return None, None
        for sid in order.linked_order_ids:
            s = self._working.get(sid)
            if s is not None and s.pool_id is not None and s.instrument_id == order.instrument_id \
                    and s.side == OrderSide.SELL:
                return s.pool_id, self._pools[s.pool_id]
        return None, None

    def _shrink_pool(self, pool_id: str, leaving: str | None = None) -> None:
        """Take ``leaving`` out of an OCO list and release what the list
        holds beyond the largest open quantity of its remaining members."""
        pool = self._pools[pool_id]
        if leaving is not None and leaving in pool.members:
            pool.members.remove(leaving)
        keep = max((self._working[m].leaves for m in pool.members if m in self._working), default=ZERO)
        excess = pool.amount - min(pool.amount, keep)
        if excess > 0:
            self._adjust(self._locked, pool.base, -excess)
            self._adjust(self._free, pool.base, excess)
            pool.amount -= excess
        if not pool.members:
            del self._pools[pool_id]

    async def _cancel_request(self, order: Order, reason: str = "CANCELED") -> None:
        """Cancel a working order and release its reservation; the
        acknowledgement (``OrderCanceled``) carries the executed quantity. An
        unknown or finished order gets no event (the OMS keeps its own
        state)."""
        vo = self._working.pop(order.client_order_id, None)
        if vo is None:
            return
        self._close(vo, reason, "CANCELED", self.clock.timestamp_ns())

    async def modify_order(self, order: Order, quantity: Decimal | None = None, price: Decimal | None = None,
                           trigger_price: Decimal | None = None) -> None:
        """Amend a working order (see ``_modify``), then commit before the
        report goes out, as for submits and cancels.

        Raises:
            TransientVenueError, VenueThrottled: from the fault plan only
                (a disconnect or a throttle: nothing is amended).
        """
        if self.faults is not None:
            self._pump()
            self.faults.gate("modify", order.client_order_id)
        with self._persist_then_report():
            await self._modify(order, quantity, price, trigger_price)

    async def _modify(self, order: Order, quantity: Decimal | None = None, price: Decimal | None = None,
                      trigger_price: Decimal | None = None) -> None:
        """Amend a working order in place (native amend; keeps its priority).

        ``quantity`` is the new total (base units, filled included): the
        order keeps its total quantity semantics, so a 1.000 order with
        0.165 filled amended to 0.800 has 0.635 left. ``price`` (limit
        orders) and ``trigger_price`` (stops not yet triggered) are quote
        per base. ``None`` leaves a field unchanged.

        Reports ``OrderUpdated`` with the values in force, or
        ``OrderModifyRejected`` naming the rule: unknown or finished order,
        nothing to change, quantity not above the filled quantity or not
        positive, a price on an order without one, a trigger on a non-stop
        or triggered stop, a post-only price that would take, or the funds
        for a larger reservation missing.
        """
        now = self.clock.timestamp_ns()
        common = self._common(order.client_order_id, order.instrument_id, order.model_id, now)
        vo = self._working.get(order.client_order_id)
        if vo is None:
            self.on_event(OrderModifyRejected(**common, reason="order not working at the venue"))
            return
        inst = self.instruments[vo.instrument_id]
        err = None
        new_qty = vo.quantity if quantity is None else quantity
        new_px = vo.price if price is None else price
        new_trig = vo.trigger_price if trigger_price is None else trigger_price
        if quantity is None and price is None and trigger_price is None:
            err = "nothing to modify"
        elif new_qty <= vo.filled or new_qty <= 0:
            err = f"quantity {new_qty} must exceed the filled {vo.filled}"
        elif price is not None and (vo.order_type not in LIMIT_TYPES or price <= 0):
            err = f"price {price} not applicable to a {vo.order_type.value} order"
        elif trigger_price is not None and (vo.order_type not in STOP_TYPES or vo.triggered or trigger_price <= 0):
            err = f"trigger {trigger_price} not applicable ({vo.order_type.value}, triggered={vo.triggered})"
        elif vo.post_only and price is not None and vo.instrument_id in self._last_px:
            last = self._last_px[vo.instrument_id]
            if (price >= last) if vo.side == OrderSide.BUY else (price <= last):
                err = f"post-only {vo.side.value} at {price} would take liquidity (last {last})"
        if err is None:
            if vo.side == OrderSide.BUY:
                if vo.order_type in LIMIT_TYPES:
                    assert new_px is not None
                    new_res = quantize_money((new_qty - vo.filled) * new_px)
                    delta = new_res - vo.reserved
                    if delta > self.free(self.quote):
                        err = f"insufficient {self.quote}: need {delta} more, free {self.free(self.quote)}"
                    else:
                        self._adjust(self._free, self.quote, -delta)
                        self._adjust(self._locked, self.quote, delta)
                        vo.reserved = new_res
            elif vo.pool_id is not None:
                pool = self._pools[vo.pool_id]
                need = max(ZERO, (new_qty - vo.filled) - pool.amount)
                if need > self.free(inst.base):
                    err = f"insufficient {inst.base}: need {need} more, free {self.free(inst.base)}"
                else:
                    self._adjust(self._free, inst.base, -need)
                    self._adjust(self._locked, inst.base, need)
                    pool.amount += need
            else:
                delta = (new_qty - vo.filled) - vo.reserved
                if delta > self.free(inst.base):
                    err = f"insufficient {inst.base}: need {delta} more, free {self.free(inst.base)}"
                else:
                    self._adjust(self._free, inst.base, -delta)
                    self._adjust(self._locked, inst.base, delta)
                    vo.reserved = new_qty - vo.filled
        if err is not None:
            self.on_event(OrderModifyRejected(**common, reason=err))
            return
        vo.quantity, vo.price = new_qty, new_px
        if trigger_price is not None:
            vo.trigger_price = new_trig
            vo.best_px = None  # a trailing stop trails again from its new trigger
        if vo.pool_id is not None:
            self._shrink_pool(vo.pool_id)
        self._dirty_orders[vo.client_order_id] = vo.to_row()
        self.on_event(OrderUpdated(**common, venue_order_id=vo.venue_order_id, quantity=vo.quantity,
                                   price=vo.price, trigger_price=vo.trigger_price))

    def _close(self, vo: _VenueOrder, reason: str, status: str, ts_event: int) -> None:
        """Release the reservation and report the order canceled or expired."""
        inst = self.instruments[vo.instrument_id]
        asset = self.quote if vo.side == OrderSide.BUY else inst.base
        self._adjust(self._locked, asset, -vo.reserved)
        self._adjust(self._free, asset, vo.reserved)
        vo.reserved = ZERO
        if vo.pool_id is not None:
            self._shrink_pool(vo.pool_id, leaving=vo.client_order_id)
        row = vo.to_row()
        row["status"] = status
        self._dirty_orders[vo.client_order_id] = row
        common = self._common(vo.client_order_id, vo.instrument_id, vo.model_id, ts_event)
        if status == "EXPIRED":
            self.on_event(OrderExpired(**common, reason=reason, executed_qty=vo.filled))
        else:
            self.on_event(OrderCanceled(**common, reason=reason, executed_qty=vo.filled))

    def _cancel(self, vo: _VenueOrder, reason: str) -> None:
        self._close(vo, reason, "CANCELED", self.clock.timestamp_ns())

    def _expire(self, vo: _VenueOrder, reason: str, ts_event: int) -> None:
        self._working.pop(vo.client_order_id, None)
        self._close(vo, reason, "EXPIRED", ts_event)

    def cancel_all(self, reason: str) -> int:
        """Cancel every working order (e.g. ``END_OF_DATA``); returns how many."""
        orders = list(self._working.values())
        self._working.clear()
        for vo in orders:
            self._cancel(vo, reason)
        return len(orders)

    # ----------------------------------------------------------- matching
    def on_bar(self, bar: Bar) -> None:
        """Match working orders of ``bar.instrument_id`` accepted before the
        bar closed, in acceptance order: expiry first, then stop triggers,
        then limit/market matching within the bar's volume share; IOC/FOK
        remainders expire after their first bar. The bar's close becomes the
        venue's last price afterwards."""
        if self.faults is not None:
            self._pump()
        if bar.ts_event <= self._last_bar_ts.get(bar.instrument_id, -1):
            return  # already matched before a restart of the engine: the venue outlived it
        with self._persist_then_report(only_if_dirty=True):
            try:
                if self._working:
                    self._match_bar(bar)
            finally:
                self._last_px[bar.instrument_id] = bar.close
                self._last_bar_ts[bar.instrument_id] = bar.ts_event

    @contextmanager
    def _persist_then_report(self, only_if_dirty: bool = False) -> Iterator[None]:
        """Hold the reports produced inside the block, commit the ledger, then
        deliver them: like an exchange, the venue persists a change before it
        reports it, so a report the engine received is never lost by the
        venue (the engine may still lose it: reconciliation finds it)."""
        outer = self.on_event
        held: list[Event] = []
        self.on_event = held.append
        try:
            yield
        finally:
            self.on_event = outer
            if not only_if_dirty or self._dirty_orders or self._fills:
                self.commit()
            for ev in held:
                outer(ev)

    def _match_bar(self, bar: Bar) -> None:
        inst = self.instruments.get(bar.instrument_id)
        if inst is None:
            return
        share = self.config.max_volume_share
        cap: list[Decimal | None] = [None if share is None else floor_to_step(bar.volume * share, inst.step_size)]
        for vo in [o for o in self._working.values() if o.instrument_id == bar.instrument_id]:
            if self._working.get(vo.client_order_id) is not vo:
                continue  # canceled or filled by a callback during this bar
            if vo.ts_accepted >= bar.ts_event:
                continue
            if vo.expire_ns is not None and bar.ts_event > vo.expire_ns:
                self._expire(vo, vo.time_in_force.value, max(vo.expire_ns, vo.ts_accepted))
                continue
            if vo.order_type in STOP_TYPES and not vo.triggered:
                self._stop_bar(vo, bar, inst, cap)
                continue
            if vo.order_type == OrderType.MARKET:
                self._fill(vo, self._slipped(vo, bar.open, inst), bar, vo.leaves, maker=False)
            elif vo.limit_live:
                px = self._limit_price(vo, bar)
                if px is not None:
                    self._fill_limit(vo, px, bar, cap, maker=True)
            if vo.time_in_force in (TimeInForce.IOC, TimeInForce.FOK) and self._working.get(vo.client_order_id) is vo:
                self._expire(vo, vo.time_in_force.value, bar.ts_event)

    def _slipped(self, vo: _VenueOrder, px: Decimal, inst: Instrument) -> Decimal:
        slip = px * self.config.slippage_bps / Decimal(10000)
        raw = px + slip if vo.side == OrderSide.BUY else px - slip
        return inst.round_price_against(raw, vo.side == OrderSide.BUY)

    @staticmethod
    def _limit_price(vo: _VenueOrder, bar: Bar) -> Decimal | None:
        assert vo.price is not None
        if vo.side == OrderSide.BUY and bar.low < vo.price:
            return min(vo.price, bar.open)
        if vo.side == OrderSide.SELL and bar.high > vo.price:
            return max(vo.price, bar.open)
        return None

    def _fill_limit(self, vo: _VenueOrder, px: Decimal, bar: Bar, cap: list[Decimal | None], maker: bool) -> None:
        """Fill a limit-priced order as far as the bar's remaining volume
        share allows (FOK: all or nothing)."""
        room = cap[0]
        qty = vo.leaves if room is None else min(vo.leaves, room)
        if vo.time_in_force == TimeInForce.FOK and qty < vo.leaves:
            return  # cannot fill in full on this bar: expires untouched
        if qty <= 0:
            return
        done = self._fill(vo, px, bar, qty, maker=maker)
        if room is not None:
            cap[0] = room - done

    def _stop_bar(self, vo: _VenueOrder, bar: Bar, inst: Instrument, cap: list[Decimal | None]) -> None:
        assert vo.trigger_price is not None
        trailing = None
        if vo.order_type == OrderType.TRAILING_STOP_MARKET:
            assert vo.trailing_offset is not None
            trailing = Trailing(vo.trailing_offset, vo.trailing_offset_type, inst.tick_size)
        res = walk_stop(vo.side, vo.trigger_price, bar.open, bar.high, bar.low, bar.close,
                        trailing=trailing, best_px=vo.best_px)
        vo.best_px = res.best_px if trailing is not None else None
        if res.moved:
            vo.trigger_price = res.trigger_price
            self._dirty_orders[vo.client_order_id] = vo.to_row()
            self.on_event(OrderUpdated(
                **self._common(vo.client_order_id, vo.instrument_id, vo.model_id, bar.ts_event),
                venue_order_id=vo.venue_order_id, quantity=vo.quantity, price=vo.price,
                trigger_price=vo.trigger_price))
            if self._working.get(vo.client_order_id) is not vo:
                return
        if not res.fired:
            self._dirty_orders[vo.client_order_id] = vo.to_row()
            return
        assert res.fire_px is not None
        vo.triggered = True
        self._dirty_orders[vo.client_order_id] = vo.to_row()
        self.on_event(OrderTriggered(
            **self._common(vo.client_order_id, vo.instrument_id, vo.model_id, bar.ts_event),
            venue_order_id=vo.venue_order_id, trigger_price=res.trigger_price))
        if self._working.get(vo.client_order_id) is not vo:
            return  # canceled by a callback on the trigger
        if vo.order_type in _MARKET_PRICED:
            self._fill(vo, self._slipped(vo, res.fire_px, inst), bar, vo.leaves, maker=False)
            return
        assert vo.price is not None
        marketable = res.fire_px <= vo.price if vo.side == OrderSide.BUY else res.fire_px >= vo.price
        if marketable:
            self._fill_limit(vo, res.fire_px, bar, cap, maker=False)

    def _fill(self, vo: _VenueOrder, px: Decimal, bar: Bar, qty: Decimal, maker: bool) -> Decimal:
        """Book a fill of ``qty`` at ``px``: balances, the ledger, and an
        ``OrderFilled`` report; the order leaves the book when done. An OCO
        sell is clipped to what its list still holds. Returns the quantity
        filled (base units)."""
        inst = self.instruments[vo.instrument_id]
        pool = None if vo.pool_id is None else self._pools.get(vo.pool_id)
        if pool is not None:
            qty = min(qty, pool.amount)
            if qty <= 0:
                self._working.pop(vo.client_order_id, None)
                self._cancel(vo, "OCO_EXHAUSTED")
                return ZERO
        rate = self.config.maker_fee if maker else self.config.taker_fee
        notional = quantize_money(qty * px)
        last = qty == vo.leaves
        if vo.side == OrderSide.BUY:
            if vo.order_type in LIMIT_TYPES:
                assert vo.price is not None
                release = vo.reserved if last else min(vo.reserved, quantize_money(qty * vo.price))
            else:
                release = ZERO
                if notional > self.free(self.quote):
                    self._working.pop(vo.client_order_id, None)
                    self._cancel(vo, f"insufficient {self.quote} at fill: need {notional}")
                    return ZERO
            if self.config.margin_account:  # commissions in the quote currency, as IBKR charges them
                fee = quantize_money(notional * rate)
                fee_ccy = self.quote
                self._adjust(self._locked, self.quote, -release)
                self._adjust(self._free, self.quote, release - notional - fee)
                self._adjust(self._free, inst.base, qty)
            else:
                fee = (qty * rate).quantize(BASE_QUANTUM)
                fee_ccy = inst.base
                self._adjust(self._locked, self.quote, -release)
                self._adjust(self._free, self.quote, release - notional)
                self._adjust(self._free, inst.base, qty - fee)
            vo.reserved -= release
        elif self.config.margin_account and vo.reserved == 0 and pool is None:
            fee = quantize_money(notional * rate)
            fee_ccy = self.quote
            self._adjust(self._free, inst.base, -qty)  # may go below zero: a short
            self._adjust(self._free, self.quote, notional - fee)
        else:
            fee = quantize_money(notional * rate)
            fee_ccy = self.quote
            self._adjust(self._locked, inst.base, -qty)
            self._adjust(self._free, self.quote, notional - fee)
            if pool is not None:
                pool.amount -= qty
            else:
                vo.reserved -= qty
        vo.filled += qty
        if last:
            self._working.pop(vo.client_order_id, None)
        if pool is not None and vo.pool_id is not None:
            self._shrink_pool(vo.pool_id, leaving=vo.client_order_id if last else None)
        row = vo.to_row()
        if last:
            row["status"] = "FILLED"
        self._dirty_orders[vo.client_order_id] = row
        trade_id = f"T-{self._next_trade}"
        self._next_trade += 1
        now = self.clock.timestamp_ns()
        self._fills.append({
            "trade_id": trade_id, "client_order_id": vo.client_order_id, "instrument_id": str(vo.instrument_id),
            "side": vo.side.value, "qty": dec_str(qty), "px": dec_str(px), "commission": dec_str(fee),
            "commission_currency": fee_ccy, "ts": now,
        })
        self.on_event(OrderFilled(
            ts_event=bar.ts_event, ts_init=now, client_order_id=vo.client_order_id,
            instrument_id=vo.instrument_id, model_id=vo.model_id, venue_order_id=vo.venue_order_id,
            trade_id=trade_id, side=vo.side.value, last_qty=qty, last_px=px, commission=fee,
            commission_currency=fee_ccy,
            liquidity_side=(LiquiditySide.MAKER if maker else LiquiditySide.TAKER).value,
        ))
        if pool is not None and pool.amount <= 0 and vo.pool_id in self._pools:
            for m in list(pool.members):  # the list is used up: its other orders cannot trade
                other = self._working.pop(m, None)
                if other is not None:
                    self._cancel(other, "OCO_EXHAUSTED")
        return qty

    # ----------------------------------------------------------- faults (issue 5)
    def set_faults(self, faults: PaperFaults | None) -> None:
        """Attach a fault plan (``core.faults.PaperFaults``; ``None``
        detaches it). From then on every request is counted and gated by the
        plan, and reports pass through it (muted or lost ones are kept in
        ``faults.withheld``). Without a plan the venue behaves as before."""
        self.faults = faults
        if faults is None:
            self.on_event = self._sink
            return
        faults.bind(self.clock, self.venue)
        self.on_event = self._deliver

    def _deliver(self, event: Event) -> None:
        f = self.faults
        if f is None or f.passes(event):
            self._sink(event)

    def _pump(self) -> None:
        """Execute the delayed submits whose time has come, each at its due
        time on the engine clock (its ``ts_accepted``), so it matches the
        bars that close after that time, as a late acceptance would."""
        f = self.faults
        if f is None or not f.delayed:
            return
        for d in f.due():
            saved = self.clock
            self.clock = _FixedClock(d.due_ns)
            try:
                with self._persist_then_report():
                    try:
                        _run_now(self._submit(d.order))
                    except DuplicateClientOrderId:
                        pass  # a resend under the same id arrived first: the late original is refused
            finally:
                self.clock = saved

    async def _submit_faulted(self, order: Order) -> bool:
        """The plan's part of a submit: count and gate it, then apply a
        planned timeout (accept now, accept later, or drop; then raise).
        Returns False when no timeout is planned for this order.

        Raises:
            TransientVenueError: ``kind="timeout"`` for a planned timeout,
                ``kind="disconnected"`` during a disconnect.
            VenueThrottled: during a throttle.
        """
        f = self.faults
        assert f is not None
        self._pump()
        f.gate("submit", order.client_order_id)
        plan = f.take_submit(order.client_order_id)
        if plan is None:
            return False
        if plan.accepted:
            f.mute(order.client_order_id,
                   frozenset({"OrderAccepted", "OrderRejected"}) if plan.withhold == "ack" else None)
            if plan.accept_after_ns == 0:
                with self._persist_then_report():
                    try:
                        await self._submit(order)
                    except DuplicateClientOrderId:
                        pass  # the answer is lost with the rest
            else:
                f.delay(order, plan.accept_after_ns, plan.withhold)
        raise TransientVenueError(
            self.venue, f"submit {order.client_order_id}: timeout waiting for response from backend server; "
            "send status unknown, execution status unknown", kind="timeout")

    async def _cancel_faulted(self, order: Order, reason: str) -> bool:
        """The plan's part of a cancel: count and gate it, then apply a
        planned timeout (cancel with the acknowledgement withheld, or not at
        all; then raise). Returns False when no timeout is planned.

        Raises:
            TransientVenueError: a planned timeout or a disconnect.
            VenueThrottled: during a throttle.
        """
        f = self.faults
        assert f is not None
        self._pump()
        f.gate("cancel", order.client_order_id)
        plan = f.take_cancel(order.client_order_id)
        if plan is None:
            return False
        if plan.applied:
            f.mute(order.client_order_id, frozenset({"OrderCanceled"}))
            with self._persist_then_report():
                await self._cancel_request(order, reason)
        raise TransientVenueError(self.venue, f"cancel {order.client_order_id}: timeout", kind="timeout")

    def _plan(self) -> PaperFaults:
        if self.faults is None:
            self.set_faults(PaperFaults())
        assert self.faults is not None
        return self.faults

    @property
    def cancel_on_disconnect(self) -> bool:
        """Whether this venue cancels the session's open orders when the
        connection drops (``PaperConfig.cancel_on_disconnect``; like
        Coinbase's cancel-on-disconnect or Binance futures' countdown
        cancel-all). The engine tells the operator which orders that covers."""
        return self.config.cancel_on_disconnect

    def disconnect(self, duration_ns: int) -> list[str]:
        """Drop the connection for ``duration_ns`` of engine clock (a fault,
        ``PaperFaults.disconnect``). With ``cancel_on_disconnect`` the venue
        cancels every open order at once; the cancel reports are lost with
        the connection, so the desk learns them when it reconciles after the
        reconnect. Returns the ClientOrderIds the venue canceled."""
        plan = self._plan()
        canceled = []
        if self.config.cancel_on_disconnect:
            for coid in list(self._working):
                self.inject_cancel(coid, reason="CANCEL_ON_DISCONNECT", report=False)
                canceled.append(coid)
        plan.disconnect(duration_ns)
        return canceled

    def inject_cancel(self, client_order_id: str, reason: str = "VENUE_CANCELED", report: bool = True) -> None:
        """Cancel a working order on the venue's own initiative (maintenance,
        self-trade prevention...), releasing its reservation. ``report=False``
        withholds the ``OrderCanceled`` report: only reconciliation finds it.

        Raises:
            OrderNotFound: when the order is not open at the venue.
        """
        vo = self._working.get(client_order_id)
        if vo is None:
            raise OrderNotFound(self.venue, f"no open order {client_order_id}")
        if not report:
            self._plan().mute(client_order_id, frozenset({"OrderCanceled"}))
        with self._persist_then_report():
            self._working.pop(client_order_id, None)
            self._cancel(vo, reason)

    def inject_fill(self, client_order_id: str, quantity: Decimal | None = None, price: Decimal | None = None,
                    report: bool = True) -> None:
        """Fill a working order outside the bar path, as taker, at ``price``
        (quote per base; default the venue's last price) for ``quantity``
        (base units; default what is left). ``report=False`` withholds the
        ``OrderFilled`` report: only reconciliation finds it.

        Raises:
            OrderNotFound: when the order is not open at the venue.
            ValueError: a quantity outside (0, leaves] or no price known.
        """
        vo = self._working.get(client_order_id)
        if vo is None:
            raise OrderNotFound(self.venue, f"no open order {client_order_id}")
        qty = vo.leaves if quantity is None else quantity
        px = price if price is not None else self._last_px.get(vo.instrument_id)
        if px is None:
            raise ValueError(f"inject_fill {client_order_id}: no price given and no last price")
        if not ZERO < qty <= vo.leaves:
            raise ValueError(f"inject_fill {client_order_id}: quantity {qty} outside (0, {vo.leaves}]")
        if not report:
            self._plan().mute(client_order_id, frozenset({"OrderFilled"}))
        now = self.clock.timestamp_ns()
        with self._persist_then_report():
            self._fill(vo, px, Bar(vo.instrument_id, px, px, px, px, ZERO, now, now), qty, maker=False)

    def inject_foreign_order(self, client_order_id: str, instrument_id: InstrumentId, side: OrderSide,
                             quantity: Decimal, price: Decimal) -> None:
        """A fill the engine did not ask for: an order it never sent (placed
        on the account by someone else, here under ``client_order_id``) is
        accepted and filled in full at ``price`` (quote per base) as taker.
        Its reports go to the engine like any other.

        Raises:
            DuplicateClientOrderId: when the venue has seen the id.
        """
        now = self.clock.timestamp_ns()
        order = Order(client_order_id=client_order_id, model_id="EXTERNAL", instrument_id=instrument_id,
                      side=side, order_type=OrderType.LIMIT, quantity=quantity, price=price,
                      time_in_force=TimeInForce.GTC, ts_init=now, step=0)
        with self._persist_then_report():
            _run_now(self._submit(order))
            vo = self._working.get(client_order_id)
            if vo is not None:
                self._fill(vo, price, Bar(instrument_id, price, price, price, price, ZERO, now, now),
                           vo.leaves, maker=False)

    def release_withheld(self, client_order_id: str | None = None) -> int:
        """Deliver the withheld reports (of one order, or all) late, in
        order, and stop muting that order (or any). Returns how many.
        A report the engine already got from reconciliation changes nothing
        there (fills are keyed by TradeId)."""
        f = self.faults
        if f is None:
            return 0
        out, keep = [], []
        for e in f.withheld:
            (out if client_order_id is None or getattr(e, "client_order_id", None) == client_order_id
             else keep).append(e)
        f.withheld = keep
        if client_order_id is None:
            f.muted.clear()
        else:
            f.unmute(client_order_id)
        for ev in out:
            self._sink(ev)
        return len(out)

    def close(self) -> None:
        """Commit and close the venue's store."""
        try:
            self.commit()
        finally:
            self.db.conn.close()
