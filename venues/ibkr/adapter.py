"""The Interactive Brokers venue adapter: the desk's orders through ib_async
to TWS or IB Gateway (issue 6, DESIGN.md sections 4 and 5).

**Life cycle.** ``IbkrVenue(config, clock)`` then ``await venue.start()``:
it connects (``IB.connectAsync``: host, port, client id; ib_async then
fetches positions, open and completed orders, account values and the day's
executions) and qualifies every configured contract with
``reqContractDetails``, refusing an unknown or ambiguous one with a
:class:`~venues.ibkr.contracts.ContractError` naming it. ``venue.instruments``
then holds the desk instruments; the engine is built with
``venue_factory=venue.attach``. Reports produced before ``attach`` are not
delivered: the engine's start-up reconciliation reads them through
:meth:`IbkrVenue.lookup`.

**Orders.** Each order carries its ``ClientOrderId`` in IB's ``orderRef``;
``MARKET``/``LIMIT``/``STOP_MARKET``/``STOP_LIMIT``/``TRAILING_STOP_MARKET``
become ``MKT``/``LMT``/``STP``/``STP LMT``/``TRAIL``. An OCO member joins a
native OCA group (``ocaGroup`` named after the group's first id, ``ocaType``
from the config, 1 by default); :meth:`IbkrVenue.submit_bracket` sends a
parent and its children linked by ``parentId``, ``transmit=False`` on all
but the last so IB activates them together (TWS API "Bracket Orders"). No
order is sent to a closed market: outside the contract's sessions
(``liquidHours`` for stocks and ETFs, ``tradingHours`` for futures and FX)
it is rejected locally with reason ``MARKET_CLOSED``. ``post_only`` is
refused (IB has no post-only flag for these contracts); ``reduce_only`` is
the desk's rule (IB has no such flag for stocks), enforced by its rails.
Amends are not native here (``supports_modify = False``): the desk's
emulator replaces an order by cancel and new.

**Reports** (through the callback given to :meth:`IbkrVenue.attach`), from
ib_async's events ``orderStatusEvent``, ``execDetailsEvent`` and
``errorEvent`` plus two wrapper callbacks read before ib_async digests them
(``commissionReport``: ib_async turns IB's unset realized PnL into 0.0;
``orderStatus``: ib_async drops a status equal to one it set itself after an
error), mapped by :mod:`venues.ibkr.status`:

* ``OrderAccepted`` at the first ``PreSubmitted``/``Submitted`` (or the first
  fill), ``venue_order_id`` = IB's ``permId`` (its ``orderId`` when IB has
  not given one);
* ``OrderFilled`` per execution (``execId`` is the ``TradeId``; IB may
  re-send an execution: it is applied once), reported when its commission
  report arrives (``commission``, ``currency``); after
  ``commission_wait_ns`` without one, with a zero commission and an alert.
  IB's ``realizedPNL`` is kept in the ledger and :attr:`IbkrVenue.executions`
  (``None`` for an opening fill, which IB sends as 1.7976931348623157e308,
  its "unset" double; ib_async turns that into 0.0, so the adapter reads the
  report before ib_async does);
* ``OrderRejected`` at once for an order IB refused before accepting it
  (error 201 and any other order error; ib_async marks such a trade
  ``Cancelled``; an ``Inactive`` status waits ``inactive_grace_ns`` for the
  error code that decides between rejected and canceled);
* ``OrderCanceled``/``OrderExpired`` for ``Cancelled``/``ApiCancelled`` (and an
  ``Inactive`` or error-ended working order) after ``cancel_settle_ns``: a
  fill that races the cancel wins, and an order IB reports canceled and
  then filled ends ``FILLED`` once; ``executed_qty`` is IB's filled
  quantity. A cancel nobody asked for of an IOC/FOK/DAY/GTD order is
  ``OrderExpired`` (its time in force ran out);
* ``ValidationError`` (an IB warning on a live order): no status change, an
  alert; ``ApiUpdate``: nothing, the next status decides;
* ``VenueStateChanged`` (``CONNECTED``/``DISCONNECTED``/``THROTTLED``) and
  ``AlertRaised`` for the operator.

**Faults.** A dropped connection (``disconnectedEvent``; IB Gateway restarts
once a day) makes the venue report itself disconnected
(:meth:`IbkrVenue.is_connected` False, ``VenueStateChanged`` DISCONNECTED);
orders waiting for pacing are rejected (never sent); a reconnect is tried
after ``backoff(1)``, then after ``backoff(n+1)`` following the n-th failure
(1 s, 2 s, 4 s ... 60 s of engine clock); once back, ib_async's
synchronisation (``reqOpenOrders``, ``reqCompletedOrders``,
``reqExecutions``) is read by ``orderRef``: missed fills and final statuses
are reported, and the engine reconciles through :meth:`IbkrVenue.lookup`.
Every request spends a token of a 50-per-second bucket on the engine clock
(:class:`~venues.ibkr.pacing.TokenBucket`); requests beyond it wait in order
and go out as the clock moves; an error 100 (pacing violation) halves the
rate for ``pacing_hold_ns``. Error 1100 (IB's server unreachable from the
gateway) also reports the venue disconnected until 1101/1102.

**Time.** Everything time-based runs on the injected clock in
:meth:`IbkrVenue.pump`, which every entry point calls (the engine calls
``is_connected`` and ``on_bar`` each step); for a live clock the adapter
also asks the event loop to call it back when something is due.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence

from ib_async import IB
from ib_async.objects import AccountValue, CommissionReport, Execution, Fill, Position
from ib_async.order import Order as IbOrder
from ib_async.order import Trade
from ib_async.util import UNSET_DOUBLE

from core.clock import Clock
from core.data import Bar
from core.enums import LiquiditySide, OrderStatus, OrderType, TimeInForce
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
from core.orders import ContingencyType, Order, TrailingOffsetType
from core.recovery import VenueOrderReport
from core.values import ZERO, quantize_money
from core.venue_errors import DuplicateClientOrderId, TransientVenueError
from venues.ibkr import status as ibs
from venues.ibkr.config import IbkrConfig
from venues.ibkr.contracts import ContractError, IbkrContract, qualify, to_ib_contract
from venues.ibkr.hours import utc_text
from venues.ibkr.ledger import Ledger
from venues.ibkr.pacing import TokenBucket

log = logging.getLogger("desk.venues.ibkr")

NANOS = 1_000_000_000
_TYPE = {OrderType.MARKET: "MKT", OrderType.LIMIT: "LMT", OrderType.STOP_MARKET: "STP",
         OrderType.STOP_LIMIT: "STP LMT", OrderType.TRAILING_STOP_MARKET: "TRAIL"}
#: time in force whose end IB reports as a plain cancel: the desk calls it an expiry
_EXPIRING = frozenset({TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY, TimeInForce.GTD})
#: IB ``Execution.lastLiquidity``: 1 added liquidity, 2 removed it, 3 routed out
_LIQUIDITY = {1: LiquiditySide.MAKER, 2: LiquiditySide.TAKER, 3: LiquiditySide.TAKER}
_TERMINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED"})
_LOG_PREFIX = re.compile(r"^(Error|Warning) -?\d+, reqId -?\d+: ")


def _dec(x: float) -> Decimal:
    """An IB float as its shortest repr (``187.25`` -> ``Decimal("187.25")``);
    a whole number without a fractional part (``19.0`` -> ``Decimal("19")``:
    IB sends share counts as floats)."""
    d = Decimal(repr(float(x)))
    return d.quantize(Decimal(1)) if d.is_finite() and d == d.to_integral_value() else d


def ib_text(message: str) -> str:
    """IB's own words from an ib_async log line: ``"Error 201, reqId 5:
    Order rejected - ..., contract: Contract(...)"`` -> ``"Order rejected - ..."``."""
    m = _LOG_PREFIX.match(message)
    text = message[m.end():] if m else message
    return text.split(", contract: ")[0]


def oca_group(order: Order) -> str:
    """The IB ``ocaGroup`` of an OCO member: ``OCA-`` and the smallest
    ClientOrderId of the group, so every member computes the same name."""
    return "OCA-" + min((order.client_order_id, *order.linked_order_ids))


@dataclass(slots=True)
class IbExecution:
    """One IB execution of a desk order as the adapter knows it.

    Attributes:
        exec_id: IB ``execId`` (the desk's ``TradeId``).
        client_order_id: the order (IB ``orderRef``).
        side: ``BUY`` (IB ``BOT``) or ``SELL`` (``SLD``).
        qty: contracts or shares (base units); px: price (quote per unit).
        ts_event: execution time (UTC ns).
        liquidity_side: ``MAKER``/``TAKER`` from ``lastLiquidity``.
        commission: from the commission report (quote currency), or None
            before it arrived; commission_currency likewise.
        realized_pnl: IB's realized PnL of the fill (quote), None for an
            opening fill (IB's unset value) or before the report.
        reported: True once reported to the desk as ``OrderFilled``.
    """

    exec_id: str
    client_order_id: str
    side: str
    qty: Decimal
    px: Decimal
    ts_event: int
    liquidity_side: str
    commission: Decimal | None = None
    commission_currency: str = ""
    realized_pnl: Decimal | None = None
    reported: bool = False
    due_ns: int = 0


@dataclass(slots=True)
class _Rec:
    """The adapter's view of one desk order."""

    coid: str
    model_id: str
    instrument_id: InstrumentId
    side: str
    quantity: Decimal
    tif: TimeInForce
    ts_init: int
    ib_order: IbOrder | None = None
    order_id: int = 0
    perm_id: int = 0
    venue_order_id: str = ""
    sent: bool = False  # handed to ib_async (False while waiting for pacing)
    accepted: bool = False
    lost: bool = False  # sent, but IB lists it nowhere after a reconnect and never acknowledged it
    ib_status: str = ""
    ib_filled: Decimal = ZERO
    filled: Decimal = ZERO  # reported fills
    fills: list[OrderFilled] = field(default_factory=list)
    cancel_reason: str | None = None
    last_error: tuple[int, str] | None = None
    inactive_since: int | None = None
    pending_close: tuple[str, str, int] | None = None  # (CANCELED|EXPIRED, reason, due_ns)
    terminal: str | None = None  # the final status reported to the desk
    reason: str = ""

    @property
    def closed(self) -> bool:
        """A final status was reported (or decided and waiting)."""
        return self.terminal is not None


@dataclass(slots=True)
class _Send:
    """Requests waiting for pacing tokens: ``run`` sends them (``cost``
    messages); ``coids`` are the orders they place, if any."""

    kind: str
    cost: int
    run: Callable[[], None]
    coids: tuple[str, ...] = ()


def _default_schedule(delay_s: float, callback: Callable[[], None]) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay_s, callback)


class IbkrVenue:
    """The IBKR venue (see the module docstring).

    Args:
        config: the venue's settings.
        clock: the engine clock (UTC ns); all timings run on it.
        on_event: the report callback, or None until :meth:`attach`.
        ib: the ``ib_async.IB`` to use (a new one by default).
        schedule: ``schedule(delay_s, callback)`` asks for ``callback`` after
            ``delay_s`` wall seconds (default: the running loop's
            ``call_later``), used to run :meth:`pump` when something falls due.
    """

    #: IB amends natively, but this adapter leaves amends to the desk's emulator (cancel and new)
    supports_modify = False
    #: IB keeps API orders working when the API client disconnects
    cancel_on_disconnect = False

    def __init__(self, config: IbkrConfig, clock: Clock, on_event: Callable[[Event], None] | None = None, *,
                 ib: IB | None = None, schedule: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.config = config
        self.venue = config.name
        self.quote = config.quote
        self.clock = clock
        self.on_event = on_event
        self.ib = ib if ib is not None else IB()
        self.schedule = schedule or _default_schedule
        self.contracts: dict[InstrumentId, IbkrContract] = {}
        self.instruments: dict[InstrumentId, Instrument] = {}
        self._by_con_id: dict[int, IbkrContract] = {}
        self.pacing = TokenBucket(clock, config.max_msg_rate, hold_ns=config.pacing_hold_ns)
        self.ledger = Ledger(config.ledger_path)
        self._recs: dict[str, _Rec] = {}
        self._by_order_id: dict[int, str] = {}
        self._by_perm_id: dict[int, str] = {}
        #: every execution of a desk order seen, by execId
        self.executions: dict[str, IbExecution] = {}
        self._commissions: dict[str, tuple[Decimal | None, str, Decimal | None]] = {}
        self._queue: deque[_Send] = deque()
        self._contract_errors: dict[int, tuple[int, str]] = {}
        self._positions: dict[int, Decimal] = {}
        self._cash: dict[str, Decimal] = {}
        self._connected = False
        self._link_down = False
        self._closing = False
        self._throttled = False
        #: "CONNECTED", "DISCONNECTED" or "THROTTLED": the last state reported
        self.state = "DISCONNECTED"
        self.down_since_ns: int | None = None
        self.reconnect_failures = 0
        self.next_attempt_ns: int | None = None
        self.reconnecting: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.connect_attempts = 0
        self._wake_ns: int | None = None
        self._pumping = False
        self._hours_asked_ns: int | None = None
        self.alerts: list[tuple[str, str]] = []
        self._load_ledger()
        self._hook()

    # ------------------------------------------------------------ wiring
    def attach(self, on_event: Callable[[Event], None]) -> "IbkrVenue":
        """Set the report callback and return the venue (use as the
        engine's ``venue_factory``)."""
        self.on_event = on_event
        return self

    #: the name the other venue adapters use for :meth:`attach`
    bind = attach

    def _hook(self) -> None:
        ib = self.ib
        ib.orderStatusEvent += self._guard(self._on_trade_status)
        ib.execDetailsEvent += self._guard(self._on_exec_details)
        ib.errorEvent += self._guard(self._on_error)
        ib.disconnectedEvent += self._guard(self._on_disconnected)
        ib.positionEvent += self._guard(self._on_position)
        ib.accountValueEvent += self._guard(self._on_account_value)
        # ib_async's Wrapper.commissionReport turns IB's "unset" realizedPNL (an opening fill) into 0.0
        # before it emits commissionReportEvent; the raw report is read here first, then handed on
        wrapper = ib.wrapper
        original = wrapper.commissionReport

        def commission_report(report: CommissionReport) -> None:
            raw_realized = report.realizedPNL
            raw_commission = report.commission
            original(report)
            self._guard(self._on_commission)(report.execId, raw_commission, report.currency, raw_realized)

        wrapper.commissionReport = commission_report  # type: ignore[method-assign]
        # ib_async emits orderStatusEvent only when a status differs from the trade's: after it marked a
        # trade Cancelled itself on an error (a refused cancel, a dropped message), IB's own "Cancelled"
        # would pass unseen; the raw status is read here as well (applying one twice changes nothing)
        original_status = wrapper.orderStatus

        def order_status(orderId: int, status: str, filled: float, remaining: float, avgFillPrice: float,
                         permId: int, parentId: int, lastFillPrice: float, clientId: int, whyHeld: str,
                         mktCapPrice: float = 0.0) -> None:
            original_status(orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice,
                            clientId, whyHeld, mktCapPrice)
            self._guard(self._on_raw_status)(orderId, status, filled, permId, clientId)

        wrapper.orderStatus = order_status  # type: ignore[method-assign]

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Run an event handler; an exception becomes a log line and an
        alert instead of vanishing inside eventkit or ib_async's decoder."""

        def handler(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - never break ib_async's message loop
                log.exception("IBKR handler %s failed", fn.__name__)
                self._alert("ERROR", "IBKR_ADAPTER_ERROR", f"{fn.__name__}: {type(exc).__name__}: {exc}")

        handler.__name__ = getattr(fn, "__name__", "handler")
        return handler

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _alert(self, level: str, code: str, message: str) -> None:
        self.alerts.append((code, message))
        getattr(log, "error" if level == "ERROR" else "warning")("%s: %s", code, message)
        now = self.clock.timestamp_ns()
        self._emit(AlertRaised(ts_event=now, ts_init=now, level=level, code=code, message=message))

    def _set_state(self, state: str, reason: str, until_ns: int = 0) -> None:
        if state == self.state:
            return
        now = self.clock.timestamp_ns()
        prev, self.state = self.state, state
        self._emit(VenueStateChanged(ts_event=now, ts_init=now, venue=self.venue, state=state, previous=prev,
                                     reason=reason, until_ns=until_ns))

    # ------------------------------------------------------------ start, connect, stop
    async def start(self) -> None:
        """Connect to TWS / IB Gateway and qualify every configured contract
        (``reqContractDetails``), building :attr:`instruments`.

        Raises:
            TransientVenueError: ``kind="disconnected"`` when the gateway
                cannot be reached (host, port and client id in the message).
            ContractError: naming the contract IB does not know, knows
                ambiguously, or describes unusably (nothing is traded then).
        """
        try:
            await self._connect()
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            raise TransientVenueError(self.venue, (
                f"cannot reach TWS/IB Gateway at {self.config.host}:{self.config.port} "
                f"(client id {self.config.client_id}): {exc!r}"), kind="disconnected") from None
        try:
            await self._qualify_all()
        except BaseException:
            self.ib.disconnect()
            raise
        self._after_sync(reconnect=False)
        self._connected = True
        self._set_state("CONNECTED", f"connected to {self.config.host}:{self.config.port}")

    async def _connect(self) -> None:
        self.connect_attempts += 1
        # raiseSyncErrors: a synchronisation that timed out (open orders, executions...) is a failed
        # attempt, never a half-read account that reconciliation would trust
        await self.ib.connectAsync(self.config.host, self.config.port, clientId=self.config.client_id,
                                   timeout=self.config.connect_timeout_s, account=self.config.account,
                                   raiseSyncErrors=True)

    async def _qualify_all(self, refresh: bool = False) -> None:
        specs = list(self.config.contracts)
        wanted = [to_ib_contract(s) for s in specs]
        for c in wanted:
            self.pacing.try_take()  # counted; the few start-up requests are not held back
        results = await asyncio.gather(*[
            asyncio.wait_for(self.ib.reqContractDetailsAsync(c), self.config.request_timeout_s) for c in wanted
        ], return_exceptions=True)
        problems: list[str] = []
        for spec, c, res in zip(specs, wanted, results):
            error = self._contract_errors.pop(id(c), None)
            if isinstance(res, BaseException):
                problems.append(f"contract {spec.describe()}: no answer from IB ({res!r})")
                continue
            try:
                qc = qualify(spec, list(res), self.venue, error)  # type: ignore[arg-type]
            except ContractError as exc:
                problems.append(str(exc))
                continue
            self.contracts[qc.instrument.id] = qc
            self.instruments[qc.instrument.id] = qc.instrument
            self._by_con_id[qc.con_id] = qc
        if problems:
            if refresh:
                self._alert("WARNING", "IBKR_HOURS_REFRESH", "; ".join(problems))
                return
            raise ContractError("; ".join(problems))

    def _refresh_hours(self, now: int) -> None:
        """Ask IB for the contracts' details again (new trading hours), at
        most once an hour of engine clock."""
        if self._hours_asked_ns is not None and now - self._hours_asked_ns < 3600 * NANOS:
            return
        self._hours_asked_ns = now
        self._spawn(self._qualify_all(refresh=True))

    def close(self) -> None:
        """Disconnect from the gateway (no reconnect follows) and close the ledger."""
        self._closing = True
        self._connected = False
        if self.reconnecting is not None and not self.reconnecting.done():
            self.reconnecting.cancel()
        self.ib.disconnect()
        self.ledger.close()

    # ------------------------------------------------------------ the clock
    def pump(self) -> None:
        """Do what the engine clock says is due: send requests waiting for
        pacing tokens, report fills whose commission did not come in time,
        decide ``Inactive`` orders whose error code did not come, report
        cancels whose settle time has passed, restore the full message rate,
        and start a reconnect attempt. Called by every entry point."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump()
        finally:
            self._pumping = False

    def _pump(self) -> None:
        now = self.clock.timestamp_ns()
        self.pacing.tokens  # noqa: B018 - refills, and restores the full rate when its hold is over
        if self._throttled and self.pacing.slow_until_ns is None:
            self._throttled = False
            if self.is_up():
                self._set_state("CONNECTED", f"message rate back to {self.pacing.rate}/s")
        self._drain()
        for ex in list(self.executions.values()):
            if not ex.reported and ex.commission is None and now >= ex.due_ns:
                self._alert("WARNING", "IBKR_COMMISSION_MISSING", (
                    f"{ex.client_order_id}: no commission report for execution {ex.exec_id} within "
                    f"{self.config.commission_wait_ns / NANOS:g} s; reported with commission 0"))
                self._report_fill(ex, ZERO, self.quote)
        for rec in list(self._recs.values()):
            if rec.inactive_since is not None and rec.terminal is None \
                    and now - rec.inactive_since >= self.config.inactive_grace_ns:
                rec.inactive_since = None
                self._end_by_error(rec, None, "Inactive without an error code")
            if rec.pending_close is not None and rec.terminal is None and now >= rec.pending_close[2] \
                    and not self._unreported(rec):
                kind, reason, _ = rec.pending_close
                rec.pending_close = None
                self._close(rec, kind, reason)
        if self.is_up() and any(c.hours.horizon_ns - now < 12 * 3600 * NANOS for c in self.contracts.values()):
            self._refresh_hours(now)  # IB lists a few days ahead: ask again before they run out
        if not self._connected and not self._closing and self.next_attempt_ns is not None \
                and now >= self.next_attempt_ns and (self.reconnecting is None or self.reconnecting.done()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self.next_attempt_ns = None
                self.reconnecting = loop.create_task(self._reconnect())
        self._plan_wake(now)

    def _plan_wake(self, now: int) -> None:
        due = [ex.due_ns for ex in self.executions.values() if not ex.reported and ex.commission is None]
        for rec in self._recs.values():
            if rec.terminal is None and rec.inactive_since is not None:
                due.append(rec.inactive_since + self.config.inactive_grace_ns)
            if rec.terminal is None and rec.pending_close is not None:
                due.append(rec.pending_close[2])
        if self._queue and self.is_up():
            due.append(now + self.pacing.wait_ns(self._queue[0].cost))
        if self.pacing.slow_until_ns is not None:
            due.append(self.pacing.slow_until_ns)
        if not self._connected and self.next_attempt_ns is not None:
            due.append(self.next_attempt_ns)
        due = [t for t in due if t > now]  # what is due now and still waits, waits on something else
        if not due:
            return
        at = min(due)
        if self._wake_ns is not None and now < self._wake_ns <= at:
            return
        self._wake_ns = at

        def wake() -> None:
            self._wake_ns = None
            self.pump()

        self.schedule(max(0.0, (at - now) / NANOS), wake)

    # ------------------------------------------------------------ connection state
    def is_up(self) -> bool:
        """Connected to the gateway and the gateway to IB (no pump)."""
        return self._connected and not self._link_down and self.ib.isConnected()

    def is_connected(self) -> bool:
        """Whether orders can be sent now: connected to the gateway, the
        gateway connected to IB, and not in a reconnect (runs :meth:`pump`)."""
        self.pump()
        return self.is_up()

    def _on_disconnected(self) -> None:
        if self._closing or not self._connected:
            return
        now = self.clock.timestamp_ns()
        self._connected = False
        self.down_since_ns = now
        self.reconnect_failures = 0
        self.next_attempt_ns = now + self.config.backoff_ns(1)
        self._drop_queued_orders("VENUE_DISCONNECTED: the connection to IB dropped before it was sent")
        self._set_state("DISCONNECTED", "connection to TWS/IB Gateway lost (e.g. its daily restart)")
        self._alert("WARNING", "IBKR_DISCONNECTED", (
            f"{self.venue}: connection to {self.config.host}:{self.config.port} lost; reconnecting with back-off "
            f"(first attempt in {self.config.backoff_ns(1) / NANOS:g} s); working orders stay at IB"))
        self._plan_wake(now)

    async def _reconnect(self) -> None:
        """One reconnect attempt; on success read ib_async's synchronisation
        and report the venue connected, else plan the next attempt."""
        try:
            await self._connect()
            await self._qualify_all(refresh=True)  # a new trading day: fresh hours
            if not self.ib.isConnected():
                raise ConnectionError("the connection dropped again during the synchronisation")
        except Exception as exc:  # noqa: BLE001 - any failure is one failed attempt
            self.reconnect_failures += 1
            now = self.clock.timestamp_ns()
            self.next_attempt_ns = now + self.config.backoff_ns(self.reconnect_failures + 1)
            log.warning("IBKR reconnect attempt %d failed: %r; next at %d", self.reconnect_failures, exc,
                        self.next_attempt_ns)
            self._plan_wake(now)
            return
        self._after_sync(reconnect=True)
        now = self.clock.timestamp_ns()
        self._connected = True
        self._link_down = False
        self.reconnects += 1
        self.next_attempt_ns = None
        waited = (now - (self.down_since_ns or now)) / NANOS
        self._set_state("CONNECTED", f"reconnected after {waited:g} s")
        self._alert("WARNING", "IBKR_RECONNECTED", (
            f"{self.venue}: reconnected after {waited:g} s and {self.reconnect_failures + 1} attempt(s); "
            "open orders and executions read again"))
        self.pump()

    def _after_sync(self, reconnect: bool) -> None:
        """Read what ib_async fetched at (re)connection: every trade (open
        and completed orders) and execution of a desk order, by ``orderRef``.
        A sent order IB lists nowhere and never acknowledged is marked lost
        (:meth:`lookup` then answers None: never seen)."""
        seen: set[str] = set()
        for trade in list(self.ib.wrapper.trades.values()):
            rec = self._rec_for_trade(trade, adopt=True)
            if rec is not None:
                seen.add(rec.coid)
                self._apply_trade(rec, trade)
        for fill in list(self.ib.wrapper.fills.values()):
            self._on_execution(fill.execution, fill.time)
            rec = self._recs.get(fill.execution.orderRef)
            if rec is not None:
                seen.add(rec.coid)
        for rec in self._recs.values():
            if rec.terminal is not None or rec.coid in seen or rec.lost or not rec.sent:
                continue
            if not rec.accepted and not rec.fills:
                rec.lost = True
                self._alert("WARNING", "IBKR_ORDER_NOT_FOUND", (
                    f"{rec.coid}: sent {'before the disconnect' if reconnect else 'by an earlier session'}, never "
                    "acknowledged, and IB lists it neither open nor completed; treated as never placed"))
            else:
                self._alert("WARNING", "IBKR_ORDER_MISSING", (
                    f"{rec.coid}: acknowledged by IB but listed neither open nor completed after the "
                    f"{'reconnect' if reconnect else 'restart'}; kept as working until IB reports it"))

    def _on_position(self, pos: Position) -> None:
        if self.config.account and pos.account != self.config.account:
            return
        self._positions[int(pos.contract.conId)] = _dec(pos.position)

    def _on_account_value(self, value: AccountValue) -> None:
        if self.config.account and value.account != self.config.account:
            return
        if value.tag == "CashBalance" and value.currency and value.currency != "BASE":
            try:
                self._cash[value.currency] = Decimal(value.value)
            except ArithmeticError:
                log.warning("IBKR CashBalance %r is not a number", value.value)

    # ------------------------------------------------------------ pacing
    def _send(self, item: _Send) -> None:
        if not self._queue and self.is_up() and self.pacing.try_take(item.cost):
            item.run()
            return
        self._queue.append(item)
        self._plan_wake(self.clock.timestamp_ns())

    def _drain(self) -> None:
        while self._queue and self.is_up() and self.pacing.try_take(self._queue[0].cost):
            item = self._queue.popleft()
            try:
                item.run()
            except Exception as exc:  # noqa: BLE001 - nothing left the adapter: the orders are not placed
                log.warning("IBKR %s failed: %r", item.kind, exc)
                for coid in item.coids:
                    rec = self._recs[coid]
                    if not rec.sent:
                        self._reject(rec, f"VENUE_DISCONNECTED: not sent to IB ({exc!r})")

    def _drop_queued_orders(self, reason: str) -> None:
        keep: deque[_Send] = deque()
        for item in self._queue:
            if item.coids:
                for coid in item.coids:
                    self._reject(self._recs[coid], reason)
            else:
                keep.append(item)  # cancels go out after the reconnect
        self._queue = keep

    # ------------------------------------------------------------ orders
    def _new_rec(self, order: Order) -> _Rec:
        rec = _Rec(coid=order.client_order_id, model_id=order.model_id, instrument_id=order.instrument_id,
                   side=order.side.value, quantity=order.quantity, tif=order.time_in_force,
                   ts_init=self.clock.timestamp_ns())
        self._recs[rec.coid] = rec
        self._save(rec, "NEW")
        return rec

    def _save(self, rec: _Rec, status: str) -> None:
        self.ledger.put_order({
            "client_order_id": rec.coid, "model_id": rec.model_id, "instrument_id": str(rec.instrument_id),
            "side": rec.side, "quantity": format(rec.quantity, "f"), "time_in_force": rec.tif.value,
            "order_id": rec.order_id, "perm_id": rec.perm_id, "venue_order_id": rec.venue_order_id, "status": status,
            "reason": rec.reason, "ts_init": rec.ts_init})

    def _order_error(self, order: Order, ic: IbkrContract | None) -> str | None:
        if ic is None:
            return f"unknown instrument {order.instrument_id} (not among the qualified IBKR contracts)"
        err = order.spec_error()
        if err is not None:
            return err
        if order.post_only:
            return "post_only: IB has no post-only flag for this contract; not sent"
        inst = ic.instrument
        if order.quantity % inst.step_size != 0:
            return f"quantity {order.quantity} is not a multiple of the step {inst.step_size}"
        for name in ("price", "trigger_price"):
            px = getattr(order, name)
            if px is not None and px % inst.tick_size != 0:
                return f"{name} {px} is not a multiple of the tick {inst.tick_size}"
        return None

    def _closed_market(self, ic: IbkrContract, now: int) -> str | None:
        hours = ic.hours
        if hours.is_open(now):
            return None
        where = f"{ic.instrument.id} ({ic.hours_field}, {hours.tz})"
        if not hours.covers(now):
            self._refresh_hours(now)
            return f"MARKET_CLOSED: {where} has no known session at {utc_text(now)} (IB listed hours to " \
                   f"{utc_text(hours.horizon_ns)}); not sent"
        nxt = hours.next_open(now)
        return f"MARKET_CLOSED: {where} is closed at {utc_text(now)}" + \
            (f"; next session opens {utc_text(nxt)}" if nxt is not None else "") + "; not sent"

    def ib_order(self, order: Order) -> IbOrder:
        """The ib_async ``Order`` for a desk order (see the module docstring);
        prices and quantities as floats of their decimal text (IB's API
        takes doubles).

        Raises:
            KeyError: for an instrument that is not a qualified contract.
        """
        o = IbOrder()
        o.action = order.side.value
        o.totalQuantity = float(order.quantity)
        o.orderType = _TYPE[order.order_type]
        o.orderRef = order.client_order_id
        o.account = self.config.account
        o.tif = order.time_in_force.value
        if order.time_in_force == TimeInForce.GTD and order.expire_time_ns is not None:
            o.goodTillDate = datetime.fromtimestamp(order.expire_time_ns // NANOS, tz=timezone.utc) \
                .strftime("%Y%m%d %H:%M:%S UTC")
        if order.price is not None:
            o.lmtPrice = float(order.price)
        if order.order_type == OrderType.TRAILING_STOP_MARKET:
            assert order.trailing_offset is not None
            if order.trailing_offset_type == TrailingOffsetType.BASIS_POINTS:
                o.trailingPercent = float(order.trailing_offset / 100)
            else:
                o.auxPrice = float(order.trailing_offset)
            if order.trigger_price is not None:
                o.trailStopPrice = float(order.trigger_price)
        elif order.trigger_price is not None:
            o.auxPrice = float(order.trigger_price)
        if order.contingency == ContingencyType.OCO and order.linked_order_ids:
            o.ocaGroup = oca_group(order)
            o.ocaType = self.config.oca_type
        return o

    def _admit(self, order: Order) -> tuple[_Rec, IbkrContract] | None:
        """The checks before sending: a repeated id raises, a disconnected
        venue raises; an invalid order or a closed market is rejected here
        (``OrderRejected``) and None is returned."""
        coid = order.client_order_id
        if coid in self._recs:
            raise DuplicateClientOrderId(self.venue, coid)
        if not self.is_up():
            raise TransientVenueError(self.venue, f"submit {coid}: not connected to TWS/IB Gateway; not sent",
                                      kind="disconnected")
        ic = self.contracts.get(order.instrument_id)
        rec = self._new_rec(order)
        why = self._order_error(order, ic) or self._closed_market(ic, rec.ts_init)  # type: ignore[arg-type]
        if why is not None:
            self._reject(rec, why)
            return None
        assert ic is not None
        rec.ib_order = self.ib_order(order)
        return rec, ic

    def _place(self, rec: _Rec, ic: IbkrContract) -> None:
        assert rec.ib_order is not None
        trade = self.ib.placeOrder(ic.contract, rec.ib_order)
        rec.order_id = int(trade.order.orderId)
        rec.sent = True
        rec.ib_status = trade.orderStatus.status
        self._by_order_id[rec.order_id] = rec.coid
        self._save(rec, "SENT")

    async def submit_order(self, order: Order) -> None:
        """Send ``order`` to IB (at once, or when the pacing bucket has a
        token); the outcome comes back through the report callback.

        Rejected locally (``OrderRejected``, nothing sent): an instrument
        that is not a qualified contract, an invalid order, ``post_only``, a
        quantity off the step or a price off the tick, a closed market
        (``MARKET_CLOSED``).

        Raises:
            DuplicateClientOrderId: the ClientOrderId was already sent (look
                it up; never a rejection).
            TransientVenueError: ``kind="disconnected"`` when the venue is not
                connected (nothing was sent).
        """
        self.pump()
        admitted = self._admit(order)
        if admitted is None:
            return
        rec, ic = admitted
        try:
            self._send(_Send("place", 1, lambda: self._place(rec, ic), (rec.coid,)))
        except ConnectionError as exc:  # raised before anything was written to the socket
            del self._recs[rec.coid]
            raise TransientVenueError(self.venue, f"submit {rec.coid}: {exc}; not sent", kind="disconnected") from None

    async def submit_bracket(self, parent: Order, children: Sequence[Order]) -> None:
        """Send a native IB bracket: ``parent`` and its ``children`` (take
        profit, stop loss) linked by ``parentId``, ``transmit=False`` on all
        but the last child so IB activates them together (TWS API "Bracket
        Orders"; the children are one-cancels-all at IB). The messages go
        out together when the pacing bucket holds ``1 + len(children)``
        tokens. A child or parent refused locally rejects the whole bracket.

        Raises:
            ValueError: without children, or a child on another instrument.
            DuplicateClientOrderId, TransientVenueError: as :meth:`submit_order`.
        """
        if not children:
            raise ValueError("bracket: at least one child order is needed")
        for c in children:
            if c.instrument_id != parent.instrument_id:
                raise ValueError(f"bracket: child {c.client_order_id} trades {c.instrument_id}, "
                                 f"the parent {parent.instrument_id}")
        self.pump()
        for o in (parent, *children):
            if o.client_order_id in self._recs:
                raise DuplicateClientOrderId(self.venue, o.client_order_id)
        admitted = []
        for o in (parent, *children):
            a = self._admit(o)
            if a is None:
                for rec, _ in admitted:
                    self._reject(rec, f"bracket member {o.client_order_id} was rejected")
                for rest in (parent, *children)[len(admitted) + 1:]:
                    self._reject(self._new_rec(rest), f"bracket member {o.client_order_id} was rejected")
                return
            admitted.append(a)
        ic = admitted[0][1]

        def place_all() -> None:
            p_rec = admitted[0][0]
            assert p_rec.ib_order is not None
            p_rec.ib_order.orderId = self.ib.client.getReqId()
            p_rec.ib_order.transmit = False
            for i, (rec, _) in enumerate(admitted[1:], start=1):
                assert rec.ib_order is not None
                rec.ib_order.orderId = self.ib.client.getReqId()
                rec.ib_order.parentId = p_rec.ib_order.orderId
                rec.ib_order.ocaGroup, rec.ib_order.ocaType = "", 0  # IB links a parent's children itself
                rec.ib_order.transmit = i == len(admitted) - 1
            for rec, _ in admitted:
                self._place(rec, ic)

        self._send(_Send("bracket", len(admitted), place_all, tuple(r.coid for r, _ in admitted)))

    async def cancel_order(self, order: Order, reason: str = "CANCELED") -> None:
        """Ask IB to cancel a working order; ``OrderCanceled`` follows when IB
        confirms (after ``cancel_settle_ns``; a racing fill wins). An order
        still waiting for pacing is taken back and canceled at once; an
        unknown or finished order gets nothing.

        Raises:
            TransientVenueError: ``kind="disconnected"`` when not connected.
        """
        self.pump()
        self._cancel(order.client_order_id, reason)

    def _cancel(self, coid: str, reason: str) -> bool:
        rec = self._recs.get(coid)
        if rec is None or rec.closed or rec.lost:
            return False
        if not rec.sent:
            for item in list(self._queue):
                if coid in item.coids:
                    if len(item.coids) > 1:  # a queued bracket: taken back whole
                        self._queue.remove(item)
                        for other in item.coids:
                            self._close(self._recs[other], "CANCELED", reason)
                        return True
                    self._queue.remove(item)
            self._close(rec, "CANCELED", reason)
            return True
        if rec.pending_close is not None:
            return False
        if not self.is_up():
            raise TransientVenueError(self.venue, f"cancel {coid}: not connected to TWS/IB Gateway",
                                      kind="disconnected")
        rec.cancel_reason = reason
        self._resend_cancel(rec)
        return True

    def _resend_cancel(self, rec: _Rec) -> None:
        """Queue IB's ``cancelOrder`` for ``rec`` (sent when a token is free;
        skipped if the order ended meanwhile)."""
        ib_order = rec.ib_order or IbOrder(orderId=rec.order_id, clientId=self.config.client_id, permId=rec.perm_id)

        def send_cancel() -> None:
            if not rec.closed:  # it may have ended while the cancel waited for a token
                self.ib.cancelOrder(ib_order)

        self._send(_Send("cancel", 1, send_cancel))

    def cancel_all(self, reason: str) -> int:
        """Cancel every working desk order (by ClientOrderId prefix; never
        other orders on the account). Returns how many cancels were sent or
        queued. Nothing while disconnected (returns 0)."""
        n = 0
        for rec in list(self._recs.values()):
            if is_desk_order(rec.coid) and not rec.closed and not rec.lost:
                try:
                    n += self._cancel(rec.coid, reason)
                except TransientVenueError:
                    return n
        return n

    def on_bar(self, bar: Bar) -> None:
        """A bar of market data: nothing to match at a real venue; runs
        :meth:`pump` so what fell due on the engine clock happens."""
        self.pump()

    def commit(self) -> None:
        """Commit the adapter's ledger (rows are already committed as written)."""
        self.ledger.commit()

    # ------------------------------------------------------------ reports from IB
    def _rec_for_trade(self, trade: Trade, adopt: bool = False) -> _Rec | None:
        o = trade.order
        rec = self._recs.get(o.orderRef) if o.orderRef else None
        if rec is None and o.orderId > 0 and o.clientId == self.config.client_id:
            coid = self._by_order_id.get(int(o.orderId))
            rec = self._recs.get(coid) if coid else None
        if rec is None and o.permId:
            coid = self._by_perm_id.get(int(o.permId))
            rec = self._recs.get(coid) if coid else None
        if rec is None and adopt and is_desk_order(o.orderRef or ""):
            rec = self._adopt(trade)
        if rec is not None:
            if rec.lost:
                rec.lost, rec.sent = False, True  # IB knows it after all
            if o.orderId > 0 and o.clientId == self.config.client_id and not rec.order_id:
                rec.order_id = int(o.orderId)
            if rec.order_id:
                self._by_order_id[rec.order_id] = rec.coid
            perm = int(trade.orderStatus.permId or o.permId or 0)
            if perm:
                rec.perm_id = perm
                self._by_perm_id[perm] = rec.coid
        return rec

    def _adopt(self, trade: Trade) -> _Rec | None:
        """A desk order IB knows and the ledger does not (the ledger was
        lost): tracked under model id ``UNKNOWN``, with an alert."""
        qc = self._by_con_id.get(int(trade.contract.conId or 0))
        if qc is None:
            return None
        o = trade.order
        try:
            tif = TimeInForce(o.tif)
        except ValueError:
            tif = TimeInForce.GTC
        rec = _Rec(coid=o.orderRef, model_id="UNKNOWN", instrument_id=qc.instrument.id,
                   side="BUY" if o.action == "BUY" else "SELL", quantity=_dec(o.totalQuantity), tif=tif,
                   ts_init=self.clock.timestamp_ns(), order_id=int(o.orderId) if o.clientId == self.config.client_id
                   else 0, perm_id=int(o.permId or 0), sent=True)
        self._recs[rec.coid] = rec
        self._save(rec, "SENT")
        self._alert("WARNING", "IBKR_UNKNOWN_MODEL", (
            f"{rec.coid}: a desk order IB lists and the adapter's ledger does not; its reports carry model UNKNOWN"))
        return rec

    def _on_raw_status(self, order_id: int, status: str, filled: float, perm_id: int, client_id: int) -> None:
        coid = self._by_order_id.get(order_id) if order_id > 0 and client_id == self.config.client_id else None
        if coid is None and perm_id:
            coid = self._by_perm_id.get(perm_id)
        rec = self._recs.get(coid) if coid else None
        if rec is None:
            return
        if perm_id and not rec.perm_id:
            rec.perm_id = perm_id
            self._by_perm_id[perm_id] = rec.coid
        self._apply_status(rec, status, _dec(filled), None, "")
        self.pump()

    def _on_trade_status(self, trade: Trade) -> None:
        rec = self._rec_for_trade(trade)
        if rec is None:
            return
        self._apply_trade(rec, trade)
        self.pump()

    def _apply_trade(self, rec: _Rec, trade: Trade) -> None:
        st = trade.orderStatus
        code, msg = None, ""
        entry = trade.log[-1] if trade.log else None
        if entry is not None and entry.errorCode and entry.status == st.status:
            code, msg = int(entry.errorCode), ib_text(entry.message)
        self._apply_status(rec, st.status, _dec(st.filled), code, msg)

    def _apply_status(self, rec: _Rec, ib_status: str, ib_filled: Decimal, code: int | None, msg: str) -> None:
        """Act on one IB status of an order (see :mod:`venues.ibkr.status`)."""
        rec.ib_filled = max(rec.ib_filled, ib_filled)
        if rec.closed:
            return
        rec.ib_status = ib_status
        if ib_status == ibs.VALIDATION_ERROR:
            self._alert("WARNING", "IBKR_VALIDATION", f"{rec.coid}: IB warning, the order stays live: {msg}")
            return
        if ib_status == ibs.INACTIVE:
            if code is None and rec.last_error is not None:
                code, msg = rec.last_error
            if code is not None:
                self._end_by_error(rec, code, msg)
            elif rec.inactive_since is None:
                rec.inactive_since = self.clock.timestamp_ns()
            return
        try:
            mapped = ibs.map_status(ib_status, ib_filled)
        except ValueError as exc:
            self._alert("WARNING", "IBKR_STATUS", f"{rec.coid}: {exc}")
            return
        if mapped in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
            self._accept(rec)
        elif mapped == OrderStatus.CANCELED:
            if code is None or code == ibs.ERR_ORDER_CANCELLED:
                self._hold_close(rec, code, msg)
            elif ibs.ends_order(code, rec.accepted):
                self._end_by_error(rec, code, msg)  # ib_async ended the trade on an error (201, 100...)
            # else: ib_async's reading of an error about a request (a refused cancel, a dropped
            # message); IB itself has not ended the order (the error handler tells the operator)

    def _accept(self, rec: _Rec) -> None:
        if rec.accepted:
            return
        rec.accepted = True
        rec.venue_order_id = rec.venue_order_id or str(rec.perm_id or rec.order_id)
        now = self.clock.timestamp_ns()
        self._save(rec, "ACCEPTED")
        self._emit(OrderAccepted(ts_event=now, ts_init=now, client_order_id=rec.coid,
                                 instrument_id=rec.instrument_id, model_id=rec.model_id,
                                 venue_order_id=rec.venue_order_id))

    def _end_by_error(self, rec: _Rec, code: int | None, msg: str) -> None:
        """An order ended by an IB error (or ``Inactive``): rejected at once
        if IB never accepted it, else canceled after the settle time."""
        outcome = ibs.inactive_outcome(code, rec.accepted)
        reason = f"IB error {code}: {msg}" if code is not None else f"IB: {msg}"
        if outcome == OrderStatus.REJECTED:
            self._reject(rec, reason)
        else:
            self._hold_close(rec, code, reason)

    def _hold_close(self, rec: _Rec, code: int | None, msg: str) -> None:
        if rec.pending_close is not None or rec.closed:
            return
        if rec.cancel_reason is not None:
            kind, reason = "CANCELED", rec.cancel_reason
        elif code is None and rec.tif in _EXPIRING:
            kind, reason = "EXPIRED", rec.tif.value
        else:
            kind, reason = "CANCELED", msg or "canceled by IB"
        rec.pending_close = (kind, reason, self.clock.timestamp_ns() + self.config.cancel_settle_ns)

    def _reject(self, rec: _Rec, reason: str) -> None:
        if rec.closed:
            return
        rec.terminal, rec.reason = "REJECTED", reason
        rec.pending_close = rec.inactive_since = None
        now = self.clock.timestamp_ns()
        self._save(rec, "REJECTED")
        self._emit(OrderRejected(ts_event=now, ts_init=now, client_order_id=rec.coid,
                                 instrument_id=rec.instrument_id, model_id=rec.model_id, reason=reason))

    def _close(self, rec: _Rec, kind: str, reason: str) -> None:
        if rec.closed:
            return
        rec.terminal, rec.reason = kind, reason
        rec.pending_close = rec.inactive_since = None
        now = self.clock.timestamp_ns()
        self._save(rec, kind)
        executed = max(rec.ib_filled, rec.filled)
        cls = OrderExpired if kind == "EXPIRED" else OrderCanceled
        self._emit(cls(ts_event=now, ts_init=now, client_order_id=rec.coid, instrument_id=rec.instrument_id,
                       model_id=rec.model_id, reason=reason, executed_qty=executed))

    def _unreported(self, rec: _Rec) -> bool:
        return any(not ex.reported and ex.client_order_id == rec.coid for ex in self.executions.values())

    def _on_error(self, req_id: int, code: int, msg: str, contract: Any) -> None:
        if contract is not None:
            self._contract_errors[id(contract)] = (code, msg)
        now = self.clock.timestamp_ns()
        if code == ibs.ERR_PACING:
            rate = self.pacing.slow_down()
            self._throttled = True
            self._set_state("THROTTLED", f"IB error 100: {msg}; slowed to {rate} messages/s",
                            until_ns=self.pacing.slow_until_ns or 0)
            self._alert("WARNING", "IBKR_PACING", (
                f"{self.venue}: IB error 100 ({msg}); message rate halved to {rate}/s until "
                f"{utc_text(self.pacing.slow_until_ns or now)}"))
        elif code == ibs.ERR_CONNECTIVITY_LOST:
            self._link_down = True
            self._set_state("DISCONNECTED", f"IB error 1100: {msg}")
        elif code in ibs.CONNECTIVITY_RESTORED and self._link_down:
            self._link_down = False
            if self.is_up():
                self._set_state("CONNECTED", f"IB {code}: {msg}")
            if code == 1101:
                self._spawn(self._resync())
        coid = self._by_order_id.get(req_id) if req_id > 0 else None
        rec = self._recs.get(coid) if coid else None
        if rec is None:
            if req_id == -1 and not ibs.is_warning(code) and code != ibs.ERR_PACING:
                log.warning("IB message %d: %s", code, msg)
            return
        if ibs.is_warning(code) and not ibs.ends_order(code, rec.accepted):
            return  # ib_async reports it as the status ValidationError (alerted there)
        if code in ibs.CANCEL_FAILED_CODES or code == ibs.ERR_CANCEL_NOT_FOUND:
            self._alert("WARNING", "IBKR_CANCEL_REJECTED", (
                f"{rec.coid}: IB error {code}: {msg}; the order is not canceled (a fill may have won)"))
            return
        rec.last_error = (code, msg)
        if rec.closed:
            return
        if rec.inactive_since is not None or rec.ib_status == ibs.INACTIVE:
            rec.inactive_since = None
            self._end_by_error(rec, code, msg)
        elif ibs.ends_order(code, rec.accepted):
            if rec.pending_close is None:
                self._end_by_error(rec, code, msg)  # (usually done already from ib_async's Cancelled status)
        elif code == ibs.ERR_PACING and rec.cancel_reason is not None:
            self._alert("WARNING", "IBKR_CANCEL_RESENT", (
                f"{rec.coid}: IB dropped the cancel (error 100); sent again at the slower rate"))
            self._resend_cancel(rec)
        else:
            self._alert("WARNING", "IBKR_ORDER_ERROR", (
                f"{rec.coid}: IB error {code}: {msg}; the working order stays as it was"))
        self.pump()

    def _spawn(self, coro: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        loop.create_task(coro)

    async def _resync(self) -> None:
        """After IB's 1101 (connectivity restored, data lost): read the open
        orders and executions again."""
        try:
            await self.ib.reqOpenOrdersAsync()
            await self.ib.reqExecutionsAsync()
        except Exception as exc:  # noqa: BLE001
            self._alert("WARNING", "IBKR_RESYNC", f"{self.venue}: re-reading orders after 1101 failed: {exc!r}")
            return
        self._after_sync(reconnect=False)

    # ------------------------------------------------------------ executions and commissions
    def _on_exec_details(self, trade: Trade, fill: Fill) -> None:
        self._rec_for_trade(trade)
        self._on_execution(fill.execution, fill.time)
        self.pump()

    def _on_execution(self, ex: Execution, arrived: Any = None) -> None:
        exec_id = ex.execId
        if not exec_id or exec_id in self.executions:
            return  # IB re-sends executions (reqExecutions, reconnects): each is applied once
        rec = self._recs.get(ex.orderRef) if ex.orderRef else None
        if rec is None and ex.clientId == self.config.client_id and ex.orderId > 0:
            coid = self._by_order_id.get(int(ex.orderId))
            rec = self._recs.get(coid) if coid else None
        if rec is None and ex.permId:
            coid = self._by_perm_id.get(int(ex.permId))
            rec = self._recs.get(coid) if coid else None
        if rec is None:
            return  # not a desk order
        if rec.lost:
            rec.lost, rec.sent = False, True
        now = self.clock.timestamp_ns()
        t = ex.time
        ts = now
        if isinstance(t, datetime) and t.timestamp() > 0:
            ts = int(t.timestamp()) * NANOS + t.microsecond * 1000
        item = IbExecution(exec_id=exec_id, client_order_id=rec.coid, side="BUY" if ex.side == "BOT" else "SELL",
                           qty=_dec(ex.shares), px=_dec(ex.price), ts_event=ts,
                           liquidity_side=_LIQUIDITY.get(int(ex.lastLiquidity or 0), LiquiditySide.TAKER).value,
                           due_ns=now + self.config.commission_wait_ns)
        self.executions[exec_id] = item
        if ex.permId and not rec.perm_id:
            rec.perm_id = int(ex.permId)
            self._by_perm_id[rec.perm_id] = rec.coid
        known = self._commissions.get(exec_id)
        if known is not None:
            commission, currency, realized = known
            item.realized_pnl = realized
            self._report_fill(item, commission if commission is not None else ZERO, currency or self.quote)

    def _on_commission(self, exec_id: str, commission: float, currency: str, realized: float) -> None:
        fee = None if commission == UNSET_DOUBLE else quantize_money(_dec(commission))
        pnl = None if realized == UNSET_DOUBLE else _dec(realized)
        self._commissions[exec_id] = (fee, currency, pnl)
        item = self.executions.get(exec_id)
        if item is None:
            return  # its execution comes later (a reconnect's synchronisation) or is not the desk's
        item.realized_pnl = pnl
        if item.reported:
            if item.commission != fee:
                self._alert("WARNING", "IBKR_COMMISSION_LATE", (
                    f"{item.client_order_id}: commission {fee} {currency} of execution {exec_id} arrived after "
                    f"the fill was reported with {item.commission}; kept in the IBKR ledger"))
                item.commission, item.commission_currency = fee, currency
            self._save_exec(item)
            return
        self._report_fill(item, fee if fee is not None else ZERO, currency or self.quote)
        self.pump()

    def _report_fill(self, item: IbExecution, commission: Decimal, currency: str) -> None:
        rec = self._recs[item.client_order_id]
        item.commission, item.commission_currency = commission, currency
        item.reported = True
        self._accept(rec)
        now = self.clock.timestamp_ns()
        ev = OrderFilled(ts_event=item.ts_event, ts_init=now, client_order_id=rec.coid,
                         instrument_id=rec.instrument_id, model_id=rec.model_id,
                         venue_order_id=rec.venue_order_id, trade_id=item.exec_id, side=item.side,
                         last_qty=item.qty, last_px=item.px, commission=commission, commission_currency=currency,
                         liquidity_side=item.liquidity_side)
        rec.fills.append(ev)
        rec.filled += item.qty
        self._save_exec(item)
        if rec.filled >= rec.quantity and rec.terminal is None:
            rec.terminal, rec.pending_close, rec.inactive_since = "FILLED", None, None  # the fill wins
            self._save(rec, "FILLED")
        self._emit(ev)

    def _save_exec(self, item: IbExecution) -> None:
        rec = self._recs[item.client_order_id]
        self.ledger.put_execution({
            "exec_id": item.exec_id, "client_order_id": item.client_order_id, "side": item.side,
            "qty": format(item.qty, "f"), "px": format(item.px, "f"),
            "commission": None if item.commission is None else format(item.commission, "f"),
            "commission_currency": item.commission_currency,
            "realized_pnl": None if item.realized_pnl is None else format(item.realized_pnl, "f"),
            "liquidity_side": item.liquidity_side, "ts_event": item.ts_event, "venue_order_id": rec.venue_order_id})

    # ------------------------------------------------------------ the ledger after a restart
    def _load_ledger(self) -> None:
        for row in self.ledger.orders():
            rec = _Rec(coid=row["client_order_id"], model_id=row["model_id"],
                       instrument_id=InstrumentId.parse(row["instrument_id"]), side=row["side"],
                       quantity=Decimal(row["quantity"]), tif=TimeInForce(row["time_in_force"]),
                       ts_init=int(row["ts_init"]), order_id=int(row["order_id"]), perm_id=int(row["perm_id"]),
                       venue_order_id=row["venue_order_id"], reason=row["reason"])
            status = row["status"]
            rec.sent = status != "NEW" or rec.order_id > 0
            rec.lost = not rec.sent  # written, never handed to IB: unknown to IB unless it lists it
            rec.accepted = bool(rec.venue_order_id)
            if status in _TERMINAL:
                rec.terminal = status
            self._recs[rec.coid] = rec
            if rec.order_id:
                self._by_order_id[rec.order_id] = rec.coid
            if rec.perm_id:
                self._by_perm_id[rec.perm_id] = rec.coid
        for row in self.ledger.executions():
            rec = self._recs.get(row["client_order_id"])
            if rec is None:
                continue
            item = IbExecution(exec_id=row["exec_id"], client_order_id=rec.coid, side=row["side"],
                               qty=Decimal(row["qty"]), px=Decimal(row["px"]), ts_event=int(row["ts_event"]),
                               liquidity_side=row["liquidity_side"],
                               commission=None if row["commission"] is None else Decimal(row["commission"]),
                               commission_currency=row["commission_currency"],
                               realized_pnl=None if row["realized_pnl"] is None else Decimal(row["realized_pnl"]),
                               reported=True)
            self.executions[item.exec_id] = item
            rec.filled += item.qty
            rec.fills.append(OrderFilled(
                ts_event=item.ts_event, ts_init=item.ts_event, client_order_id=rec.coid,
                instrument_id=rec.instrument_id, model_id=rec.model_id,
                venue_order_id=row["venue_order_id"] or rec.venue_order_id, trade_id=item.exec_id, side=item.side,
                last_qty=item.qty, last_px=item.px, commission=item.commission or ZERO,
                commission_currency=item.commission_currency or self.quote, liquidity_side=item.liquidity_side))

    # ------------------------------------------------------------ reads for reconciliation
    def _require_up(self, what: str) -> None:
        if not self.is_up():
            raise TransientVenueError(self.venue, f"{what}: not connected to TWS/IB Gateway", kind="disconnected")

    def lookup(self, client_order_id: str) -> VenueOrderReport | None:
        """IB's view of one desk order, by ``orderRef``: status (``OPEN``
        while it may trade or a cancel is settling, ``FILLED``,
        ``CANCELED``, ``EXPIRED``, ``REJECTED``), executed quantity and its
        reported fills; None when IB never saw it. An order still waiting
        for pacing tokens is ``OPEN`` with no venue order id (it will be sent).

        Raises:
            TransientVenueError: ``kind="disconnected"`` while not connected
                (the local view may be stale).
        """
        self.pump()
        self._require_up(f"lookup {client_order_id}")
        rec = self._recs.get(client_order_id)
        if rec is None or rec.lost:
            return None
        status = rec.terminal if rec.terminal is not None else "OPEN"
        return VenueOrderReport(client_order_id, rec.venue_order_id, status, rec.filled, tuple(rec.fills),
                                rec.reason)

    def order_ids(self) -> list[str]:
        """Every ClientOrderId IB has seen from this desk (sorted).

        Raises:
            TransientVenueError: ``kind="disconnected"`` while not connected.
        """
        self.pump()
        self._require_up("order_ids")
        return sorted(c for c, r in self._recs.items() if not r.lost)

    def open_orders(self) -> dict[str, Decimal]:
        """Orders that may still trade (mass status): ClientOrderId ->
        executed quantity reported (shares/contracts), oldest first.

        Raises:
            TransientVenueError: ``kind="disconnected"`` while not connected.
        """
        self.pump()
        self._require_up("open_orders")
        return {c: r.filled for c, r in self._recs.items() if not r.closed and not r.lost}

    def balance(self, asset: str) -> Decimal:
        """The account's ``CashBalance`` in ``asset`` when it is a currency IB
        reported, else the position (contracts or shares, signed) of the
        instrument whose base is ``asset``; 0 when unknown. Values last
        reported by IB (``updateAccountValue``, ``position``)."""
        if asset in self._cash:
            return self._cash[asset]
        for qc in self.contracts.values():
            if qc.instrument.base == asset:
                return self._positions.get(qc.con_id, ZERO)
        return ZERO

    def balances(self) -> dict[str, Decimal]:
        """Cash per currency and the position of every configured contract."""
        out = dict(self._cash)
        for qc in self.contracts.values():
            out.setdefault(qc.instrument.base, self._positions.get(qc.con_id, ZERO))
        return dict(sorted(out.items()))

    def notional(self, instrument_id: InstrumentId, price: Decimal, quantity: Decimal) -> Decimal:
        """``price x quantity x multiplier`` of an instrument (quote).

        Raises:
            KeyError: for an instrument that is not a qualified contract.
        """
        return self.contracts[instrument_id].notional(price, quantity)

    def working(self) -> Iterable[str]:
        """ClientOrderIds that may still trade, oldest first."""
        return [c for c, r in self._recs.items() if not r.closed and not r.lost]
