"""A mirror of a remote daemon's engine, driven by its control API (issue 8,
"Attach"; DESIGN.md sections 5 "Control API" and 6).

:class:`RemoteEngine` is a duck-typed stand-in for ``core.engine.Engine``:
it exposes the attributes and methods that the Textual app
(``desk.app.DeskApp``), its link (``desk.link.EngineLink``) and the panes
(``desk.widgets.*``) read from an in-process engine (``orders``,
``portfolio``, ``weights``, ``specs``, ``paused``, ``regimes``,
``trading_state``, ``instruments``, ``stats``, ``clock``, ``bus``,
``lifecycle.rows()`` / ``allocation_rows()``, ``governance.*`` …), and keeps
them current from the daemon:

* ``GET /snapshot`` once at :meth:`RemoteEngine.connect` (working orders,
  positions, PnL, models, allocations, the last alerts, the journal head),
  then every ``refresh_interval`` seconds (and soon after a fill) for the
  continuous figures: positions and marks, PnL and equity, the engine clock,
  bars, the venue status, models and allocations;
* ``GET /stream`` (server-sent events) for the discrete facts: each event is
  decoded (``core.events.event_from_dict``), applied to the mirror (orders,
  trading state, paused models, regimes) and published on the mirror's own
  ``bus`` (a ``core.bus.MessageBus``), exactly as the engine publishes it, so
  the app's bus subscriber (``EngineLink``) sees the same events.

Connection: the stream is reopened after any failure with
``Last-Event-ID: <last seq applied>``, so it resumes where it stopped without
a gap or a duplicate (the daemon replays from its journal; a sequence seen
twice is skipped, a jump is counted in ``gaps``). Reconnection waits follow
a doubling backoff from ``retry_initial`` to ``retry_max`` seconds (through
the injected ``sleep``, so tests drive it). A failed snapshot refresh also
restarts the stream, so a silent network loss is noticed within one refresh
period plus the request timeout. ``link_state`` is ``connecting`` (before the
first stream), ``live`` or ``down``; ``last_update_ns`` is the wall-clock time
(UTC ns, injected clock) of the last state received. A ``409`` on reconnect
(the daemon's journal is behind the last id seen: another store) resyncs from
a fresh snapshot.

Orders: the working orders of the first snapshot are *seeded*; the snapshot
may already include events that the stream delivers afterwards (the daemon's
memory runs ahead of its committed journal), so an event for a seeded order
is never applied locally: the order is read again from ``GET
/orders?status=all`` and the event re-published after. Every other order is
built from its ``OrderInitialized`` event and moved by ``Order.apply``,
as in the engine.

Commands (:class:`RemoteGovernance`) go to the API with ``X-OPS-TOKEN``
(``desk.client.AsyncDaemonClient``): the kill switch is ``POST /kill``; a
halt that cannot be delivered (daemon unreachable, or an error status) is
kept and sent again after ``retry_initial`` doubling up to
``HALT_RETRY_MAX_S`` (1 s), and at once when the stream comes back, until
the daemon acknowledges it (``halt_pending`` is True meanwhile; the app
shows HALT NOT DELIVERED). Other commands are sent once; a failure
is reported through ``on_notice``, never retried behind the operator's back.
While a halt is pending, commands that would loosen trading (resume,
reduce-only, model resume, weights) are refused locally.

Instrument filters: read from the snapshot's ``instruments`` when the API
gives them; otherwise the tick and step of each instrument are the finest
decimals seen in its prices and quantities (the daemon's values are already
rounded to them), so nothing the daemon reports is rounded away.

No textual import here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import httpx

from core.bus import MessageBus
from core.clock import Clock, LiveClock
from core.engine import ModelSpec
from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce, TradingState
from core.events import Event, OrderEvent, OrderInitialized, event_from_dict
from core.governance import GovernanceError
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.orders import ContingencyType, InvalidTransition, Order, TrailingOffsetType
from core.portfolio import Portfolio, Position
from desk.client import TOKEN_HEADER, AsyncDaemonClient, DaemonRefused, DaemonUnreachable

log = logging.getLogger("desk.remote")

#: seconds between snapshot refreshes of the continuous figures
REFRESH_INTERVAL_S = 1.0
#: at least this many seconds between two refreshes (a fill asks for one
#: early; a snapshot costs the daemon's loop ~1-3 ms idle, more when busy)
REFRESH_MIN_GAP_S = 0.5
#: first and largest wait between reconnection attempts, seconds
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 5.0
#: largest wait between two sends of an undelivered halt, seconds (it is
#: also sent at once when the stream is back)
HALT_RETRY_MAX_S = 1.0
#: a stream silent this long is dead (the daemon sends ``: ping`` after 15 s)
STREAM_READ_TIMEOUT_S = 40.0
#: orders read back per ``GET /orders?status=all`` (the API's limit is 5000)
ORDERS_REFRESH_LIMIT = 1000
#: sequence numbers remembered in ``seen_seqs``
SEEN_MAX = 100_000
#: events that move positions or the models' figures: refresh the snapshot soon
_REFRESH_SOON = frozenset({"OrderFilled", "FillAllocated", "ModelStageChanged", "CanaryPromoted",
                           "CanaryRolledBack", "AllocationChanged", "ModelVersionRegistered"})
#: who the commands of an attached TUI are sent as (the API records ``api:<host>``)
VIA = "desk attach"

LINK_CONNECTING = "connecting"
LINK_LIVE = "live"
LINK_DOWN = "down"


class RemoteCommandError(GovernanceError):
    """A command the daemon did not take: unreachable, or it answered an
    error status (``status_code``, 0 when nothing answered)."""

    def __init__(self, message: str, status_code: int = 0) -> None:
        self.status_code = status_code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: ``id`` (the journal sequence), ``event`` (the
    type name) and ``data`` (the text of its data lines joined by newlines)."""

    id: int | None
    event: str
    data: str


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent | None]:
    """Server-sent events from a stream of lines (WHATWG HTML, "Server-sent
    events", "Interpreting an event stream"): fields ``id``, ``event`` and
    ``data`` (several ``data`` lines join with ``\\n``) up to a blank line;
    a line starting with ``:`` is a comment; ``retry`` is ignored. Yields an
    :class:`SseEvent` per block that has data, and ``None`` per comment (a
    sign of life such as ``: ping``). An ``id`` that is not a decimal integer
    leaves ``id`` None."""
    fields: dict[str, list[str]] = {}
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if "data" in fields:
                text_id = (fields.get("id") or [""])[-1]
                yield SseEvent(int(text_id) if text_id.isdigit() else None,
                               (fields.get("event") or ["message"])[-1], "\n".join(fields["data"]))
            fields = {}
            continue
        if line.startswith(":"):
            yield None
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        fields.setdefault(name, []).append(value)


# ---------------------------------------------------------------- the duck-typed parts
@dataclass(slots=True)
class RouterView:
    """``engine.config.router`` as the panes read it: ``capital`` (quote)."""

    capital: Decimal


@dataclass(slots=True)
class ConfigView:
    """``engine.config``: the router's capital, ``yield_every`` (set by the
    app, unused here) and the venue day's zone."""

    router: RouterView
    yield_every: int = 64
    day_tz: str = "UTC"


@dataclass(slots=True)
class StatsView:
    """``engine.stats``: ``bars`` (the daemon's bars), ``steps`` (snapshots
    applied here: the app redraws its sampled panes when it moves),
    ``warmup_bars`` (0), ``denials`` (the daemon's), ``finished`` (always
    False: an attached app never writes a run's summary)."""

    bars: int = 0
    steps: int = 0
    warmup_bars: int = 0
    denials: int = 0
    finished: bool = False


class MirrorClock:
    """``engine.clock``: the daemon's engine clock (UTC ns) as last seen in a
    snapshot or an event's ``ts_event``; never moves back."""

    def __init__(self) -> None:
        self.now = 0

    def timestamp_ns(self) -> int:
        """The daemon's engine time last seen (UTC ns)."""
        return self.now

    def see(self, ts_ns: int) -> None:
        """Move to ``ts_ns`` if it is later."""
        if ts_ns > self.now:
            self.now = int(ts_ns)


class SessionView:
    """``engine.session``: ``status()`` is the daemon's venue status line."""

    def __init__(self) -> None:
        self.text = ""

    def status(self) -> str:
        """What blocks the venue and until when ("" when all is well)."""
        return self.text


class _IdleFeed:
    """``engine.feed`` for ``EngineLink`` to wrap: the mirror calls
    ``feed.next_step()`` after each snapshot it applies, so the link's
    per-step statistics (each model's Sharpe ratio so far, the day's opening
    marks) follow the daemon at the snapshot rate."""

    finite = False

    def warmup(self) -> list[Any]:
        """No warm-up bars."""
        return []

    def next_step(self) -> list[Any]:
        """No bars (the daemon has them)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """No state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


class LifecycleView:
    """``engine.lifecycle``: the registry rows and the allocator's rows as
    the daemon last reported them (``GET /snapshot``'s ``models`` and
    ``allocations``, same shapes as ``core.lifecycle.Lifecycle.rows()`` and
    ``allocation_rows()``), ``registry`` (model id -> its row), the family
    weights and the ``idle`` share (fraction of the capital no family holds:
    ``1 - sum of family weights``, or the last ``AllocationChanged``'s)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._allocations: list[dict[str, Any]] = []
        self.registry: dict[str, dict[str, Any]] = {}
        self.family_weights: dict[str, Decimal] = {}
        self.idle = Decimal(0)

    def rows(self) -> list[dict[str, Any]]:
        """One row per model version (``model_id``, ``family``, ``stage``,
        ``weight`` …, decimals as strings)."""
        return [dict(r) for r in self._rows]

    def allocation_rows(self) -> list[dict[str, Any]]:
        """One row per family (``family``, ``weight``, ``budget``,
        ``sharpe``, ``models`` …)."""
        return [dict(r) for r in self._allocations]

    def set(self, rows: list[dict[str, Any]], allocations: list[dict[str, Any]], capital: Decimal) -> None:
        """Replace both from a snapshot (an allocation row without a
        ``budget``, ``sharpe`` or ``models`` gets ``weight × capital``,
        ``"0"`` and ``{}``)."""
        self._rows = [dict(r) for r in rows if r.get("model_id")]
        self.registry = {str(r["model_id"]): r for r in self._rows}
        fw: dict[str, Decimal] = {}
        allocs = []
        for a in allocations:
            w = _dec(a.get("weight"))
            if a.get("family") is None or w is None:
                continue
            fw[str(a["family"])] = w
            allocs.append({"budget": format(w * capital, "f"), "sharpe": "0", "models": {}, **a})
        self._allocations = allocs
        self.family_weights = fw
        self.idle = max(Decimal(0), Decimal(1) - sum(fw.values(), Decimal(0))) if fw else Decimal(0)

    def stage_changed(self, model_id: str, stage: str, weight: Decimal) -> None:
        """Apply a ``ModelStageChanged`` at once (budgets follow with the next snapshot)."""
        r = self.registry.get(model_id)
        if r is not None:
            r["stage"] = stage
            r["weight"] = format(weight, "f")


@dataclass(slots=True)
class PendingHalt:
    """A halt not yet acknowledged by the daemon.

    Attributes:
        body: the ``POST /kill`` body.
        attempts: sends tried so far.
        error: why the last one failed.
        since_ns: wall-clock time of the first attempt (UTC ns).
    """

    body: dict[str, Any]
    attempts: int
    error: str
    since_ns: int



@dataclass(slots=True)
class _InstrumentSeen:
    price_places: int = 2
    qty_places: int = 0  # of order and fill quantities (at the step)
    held_places: int = 0  # of position quantities (base fees make them finer than the step)


def _places(text: str | None) -> int:
    if text is None:
        return 0
    try:
        exp = Decimal(str(text)).normalize().as_tuple().exponent
    except InvalidOperation:
        return 0
    return max(0, -exp) if isinstance(exp, int) else 0


def _dec(value: Any, default: Decimal | None = None) -> Decimal | None:
    if value is None:
        return default
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return default


def order_from_json(d: dict[str, Any]) -> Order:
    """An ``Order`` from the API's order JSON (``desk.api.order_json``: the
    store's ``orders`` columns, decimals as strings, times UTC ns).

    Raises:
        KeyError, ValueError: a missing or malformed field (the message names it).
    """
    return Order(
        client_order_id=str(d["client_order_id"]), model_id=str(d["model_id"]),
        instrument_id=InstrumentId.parse(str(d["instrument_id"])), side=OrderSide(d["side"]),
        order_type=OrderType(d["order_type"]), quantity=Decimal(str(d["quantity"])),
        price=_dec(d.get("price")), time_in_force=TimeInForce(d["time_in_force"]),
        ts_init=int(d.get("ts_init") or 0), step=int(d.get("step") or 0),
        reduce_only=bool(d.get("reduce_only", False)), status=OrderStatus(d["status"]),
        filled_qty=Decimal(str(d.get("filled_qty") or "0")), avg_px=_dec(d.get("avg_px")),
        venue_order_id=d.get("venue_order_id"), ts_last=int(d.get("ts_last") or 0), reason=d.get("reason") or "",
        trigger_price=_dec(d.get("trigger_price")), trailing_offset=_dec(d.get("trailing_offset")),
        trailing_offset_type=TrailingOffsetType(d.get("trailing_offset_type") or "PRICE"),
        expire_time_ns=None if d.get("expire_time_ns") is None else int(d["expire_time_ns"]),
        post_only=bool(d.get("post_only") or False),
        contingency=ContingencyType(d.get("contingency") or "NO_CONTINGENCY"),
        parent_order_id=d.get("parent_order_id") or None,
    )


def order_from_initialized(ev: OrderInitialized) -> Order:
    """A new ``Order`` (status INITIALIZED) from its ``OrderInitialized`` event."""
    return Order(
        client_order_id=ev.client_order_id, model_id=ev.model_id, instrument_id=ev.instrument_id,
        side=OrderSide(ev.side), order_type=OrderType(ev.order_type), quantity=ev.quantity, price=ev.price,
        time_in_force=TimeInForce(ev.time_in_force), ts_init=ev.ts_init, step=0, reduce_only=ev.reduce_only,
        ts_last=ev.ts_event, trigger_price=ev.trigger_price, trailing_offset=ev.trailing_offset,
        trailing_offset_type=TrailingOffsetType(ev.trailing_offset_type or "PRICE"),
        expire_time_ns=ev.expire_time_ns, post_only=ev.post_only,
        contingency=ContingencyType(ev.contingency or "NO_CONTINGENCY"),
        linked_order_ids=tuple(x for x in (ev.linked_order_ids or "").split(",") if x),
        parent_order_id=ev.parent_order_id or None,
    )


class RemoteEngine:
    """The engine mirror of one daemon (see the module docstring).

    Args:
        url: the daemon's API (``http://127.0.0.1:8002``).
        token: the operator token (sent only in the ``X-OPS-TOKEN`` header;
            never in a URL, a log line or a ``repr``).
        transport: an ``httpx.AsyncBaseTransport`` (tests), None for the network.
        wall_clock: UTC nanoseconds for "last state at" and the halt's
            timings (``LiveClock`` by default; a ``TestClock`` in tests).
        sleep: ``await sleep(seconds)`` for every wait (reconnection and halt
            backoff, the refresh period); ``asyncio.sleep`` by default.
        refresh_interval: seconds between snapshot refreshes (None: only
            :meth:`refresh` called by hand, and soon after fills).
        retry_initial, retry_max: the reconnection backoff's first and
            largest wait, seconds (an undelivered halt waits at most
            ``min(retry_max, HALT_RETRY_MAX_S)``).
        timeout: seconds for connect and each read of a request (3 s: a
            snapshot of a daemon replaying at full speed took 0.2-0.3 s; a
            silently dropped link is then noticed within the refresh period
            plus this, ~4-5 s measured through a proxy that stops forwarding).
        stream_read_timeout: seconds of silence after which the stream is
            taken for dead (the daemon pings every 15 s).

    Raises:
        ValueError: an empty token, or a URL that is not ``http(s)://host[:port]``.
    """

    is_remote = True

    def __init__(self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 wall_clock: Clock | None = None, sleep: Callable[[float], Awaitable[Any]] | None = None,
                 refresh_interval: float | None = REFRESH_INTERVAL_S, retry_initial: float = RETRY_INITIAL_S,
                 retry_max: float = RETRY_MAX_S, timeout: float = 3.0,
                 stream_read_timeout: float = STREAM_READ_TIMEOUT_S) -> None:
        if not token:
            raise ValueError("token: empty")
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"url: expected http://host:port, got {url!r}")
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError(f"retry_initial {retry_initial} must be > 0 and <= retry_max {retry_max}")
        self.url = str(parsed).rstrip("/")
        self.api = AsyncDaemonClient(self.url, token, timeout=timeout, transport=transport)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers={TOKEN_HEADER: token, "Accept": "text/event-stream"},
            timeout=httpx.Timeout(timeout, read=stream_read_timeout), transport=transport, trust_env=False)
        self.wall_clock = wall_clock or LiveClock()
        self.sleep = sleep or asyncio.sleep
        self.refresh_interval = refresh_interval
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        # ------------------------------------------------ what the app and the panes read
        self.config = ConfigView(RouterView(Decimal(0)))
        self.clock = MirrorClock()
        self.bus = MessageBus(on_error=lambda ev, exc: log.exception("bus handler failed on %s", ev.type,
                                                                     exc_info=exc))
        self.feed: Any = _IdleFeed()
        self.pace_clock: Any = None
        self.speed: float | None = None
        self.instruments: dict[InstrumentId, Instrument] = {}
        self.specs: dict[str, ModelSpec] = {}
        self.models: dict[str, dict[InstrumentId, Any]] = {}
        self.weights: dict[str, Decimal] = {}
        self.paused: set[str] = set()
        self.regimes: dict[tuple[str, InstrumentId], tuple[int, float]] = {}
        self.portfolio = Portfolio(Decimal(0))
        self.orders: dict[str, Order] = {}
        self.trading_state = TradingState.ACTIVE
        self.halted_venues: set[str] = set()
        self.unreconciled: list[str] = []
        self.stats = StatsView()
        self.session = SessionView()
        self.lifecycle = LifecycleView()
        self.governance = RemoteGovernance(self)
        self.store = None
        self.quote = ""
        #: the last snapshot's alerts (oldest first) and PnL, as the API gave them
        self.alerts: list[dict[str, Any]] = []
        self.pnl: dict[str, Any] = {}
        self.status_json: dict[str, Any] = {}
        # ------------------------------------------------ the link
        self.link_state = LINK_CONNECTING
        self.link_reason = ""
        self.last_update_ns: int | None = None
        self.last_seq = 0
        self.seen_seqs: deque[int] = deque(maxlen=SEEN_MAX)
        self.gaps = 0
        self.duplicates = 0
        self.reconnects = 0
        self.resyncs = 0
        self.snapshots = 0
        #: called (no arguments) when ``link_state`` or the pending halt changes
        self.on_change: Callable[[], None] | None = None
        #: called as ``on_notice(title, message, severity)`` for command outcomes
        self.on_notice: Callable[[str, str, str], None] | None = None
        self.halt: PendingHalt | None = None
        self._seeded: set[str] = set()
        self._refetch: set[str] = set()
        self._refetch_task: asyncio.Task[Any] | None = None
        self._last_event: dict[str, OrderEvent] = {}
        self._seen: dict[InstrumentId, _InstrumentSeen] = {}
        self._filters_given = False
        self._stop = asyncio.Event()
        self._live = asyncio.Event()
        self._refresh_soon = asyncio.Event()
        self._response: httpx.Response | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._halt_task: asyncio.Task[Any] | None = None
        self._opened = False

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url!r}, {self.link_state})"  # never the token

    # ------------------------------------------------------------ engine-like reads
    def working_orders(self) -> list[Order]:
        """The mirrored orders that may still trade, oldest first."""
        return sorted((o for o in self.orders.values() if o.is_working), key=lambda o: (o.ts_init, o.client_order_id))

    @property
    def halt_pending(self) -> bool:
        """True while a halt waits for the daemon's acknowledgement."""
        return self.halt is not None

    def set_speed(self, speed: float | None) -> None:
        """The daemon's pace is its own: remembered, never sent."""
        self.speed = speed

    def stop(self) -> None:
        """End :meth:`run` (the stream, the refresher, a pending halt's retries)."""
        self._stop.set()

    async def warm_up(self) -> None:
        """Nothing to warm up (the daemon's models run there)."""

    async def recover(self) -> list[str]:
        """Nothing to reconcile here (the daemon reconciles its venues)."""
        return []

    def flush(self) -> None:
        """Nothing to persist: the mirror has no store."""

    def checkpoint(self) -> None:
        """Nothing to persist: the mirror has no store."""

    # ------------------------------------------------------------ snapshot
    async def connect(self) -> None:
        """Read the first snapshot (and the instrument list); the mirror is
        then ready for the app. Call before building the app.

        Raises:
            DaemonUnreachable: nothing answered.
            DaemonRefused: an error status (401 no token, 403 wrong token).
        """
        snap = await self.api.snapshot()
        if not self._filters_given and not snap.get("instruments"):
            await self._read_symbols()
        self._seed(snap)

    async def _read_symbols(self) -> None:
        """The instrument ids the daemon trades, from ``/openapi.json``
        (the order body's ``symbol`` enum), until the snapshot carries its
        instruments. Optional: a failure leaves the list to the data seen."""
        try:
            doc = await self.api.request("GET", "/openapi.json")
            props = doc["components"]["schemas"]["OrderBody"]["properties"]["symbol"]
            names = props.get("enum") or next((a.get("enum") for a in props.get("allOf", []) if a.get("enum")), [])
        except (DaemonUnreachable, DaemonRefused, KeyError, TypeError, AttributeError, StopIteration):
            return
        for name in names or []:
            try:
                self._observe(InstrumentId.parse(str(name)))
            except ValueError:
                continue

    def _seed(self, snap: dict[str, Any]) -> None:
        """Start over from a snapshot: orders (seeded), state, figures."""
        self.orders = {}
        self._seeded = set()
        self._last_event = {}
        for d in snap.get("orders", []):
            try:
                o = order_from_json(d)
            except (KeyError, ValueError) as exc:
                log.warning("snapshot order skipped: %s", exc)
                continue
            self.orders[o.client_order_id] = o
            self._seeded.add(o.client_order_id)
            self._observe(o.instrument_id, price=d.get("price"), qty=d.get("quantity"))
        status = snap.get("status", {})
        self.trading_state = TradingState(status.get("trading_state", "ACTIVE"))
        self.paused = set(status.get("paused_models", []))
        self.last_seq = int(snap.get("journal_seq", 0))
        self.alerts = list(snap.get("alerts", []))
        self._apply_figures(snap)

    async def refresh(self) -> None:
        """Read a snapshot and apply its continuous figures (positions,
        marks, PnL, clock, bars, venue status, models, allocations). Orders,
        the trading state and paused models come from the stream.

        Raises:
            DaemonUnreachable, DaemonRefused: as :meth:`connect`.
        """
        snap = await self.api.snapshot()
        self._apply_figures(snap)

    def _apply_figures(self, snap: dict[str, Any]) -> None:
        status = snap.get("status", {})
        pnl = snap.get("pnl", {})
        self.status_json = dict(status)
        self.pnl = dict(pnl)
        self.quote = str(pnl.get("quote", status.get("quote", "")))
        desk = pnl.get("desk", {})
        capital = _dec(desk.get("equity_start"), self.config.router.capital) or Decimal(0)
        self.config.router.capital = capital
        self.config.day_tz = str(pnl.get("tz", self.config.day_tz))
        if "instruments" in snap and snap["instruments"]:
            self._set_instruments(snap["instruments"])
        pf = Portfolio(capital, equity_curve=self.portfolio.equity_curve,
                       curve_every_ns=self.portfolio.curve_every_ns, _last_curve_ts=self.portfolio._last_curve_ts)
        pf.marks = dict(self.portfolio.marks)
        for iid_text, px in (snap.get("marks") or {}).items():
            iid = InstrumentId.parse(iid_text)
            pf.marks[iid] = Decimal(str(px))
            self._observe(iid, price=px)
        for key, reg in (snap.get("regimes") or {}).items():  # the daemon's regimes (a signal shows only changes)
            mid, _, iid_text = key.partition("|")
            try:
                self.regimes[(mid, InstrumentId.parse(iid_text))] = (int(reg[0]), float(reg[1]))
            except (ValueError, TypeError, IndexError):
                continue
        for p in snap.get("positions", []):
            iid = InstrumentId.parse(str(p["instrument_id"]))
            pf.positions[(str(p["model_id"]), iid)] = Position(
                Decimal(str(p["quantity"])), Decimal(str(p["cost"])), Decimal(str(p["realized"])),
                Decimal(str(p["fees"])), int(p["fills"]))
            if p.get("mark") is not None:
                pf.marks[iid] = Decimal(str(p["mark"]))
            self._observe(iid, price=p.get("mark"), held=p.get("quantity"))
        self.portfolio = pf
        counts = status.get("counts", {})
        self.stats.bars = int(counts.get("bars", self.stats.bars))
        self.stats.denials = int(counts.get("denials", self.stats.denials))
        self.session.text = str(status.get("venue_status", ""))
        self.unreconciled = list(status.get("unreconciled", []))
        self.halted_venues = set(status.get("halted_venues", []))
        if status.get("speed") is not None or "speed" in status:
            self.speed = status.get("speed")
        self.clock.see(int(status.get("clock_ns", 0)))
        self._apply_models(snap.get("models", []), snap.get("allocations", []), capital)
        pf.sample_equity(self.clock.timestamp_ns())
        self.snapshots += 1
        self.stats.steps += 1
        self.last_update_ns = self.wall_clock.timestamp_ns()
        self.feed.next_step()  # the link's per-step statistics (see _IdleFeed)

    def _apply_models(self, rows: list[dict[str, Any]], allocations: list[dict[str, Any]], capital: Decimal) -> None:
        self.lifecycle.set(rows, allocations, capital)
        holding = {m for (m, _), p in self.portfolio.positions.items() if p.quantity}
        self.models = {str(r["model_id"]): {} for r in rows
                       if r.get("model_id") and (r.get("stage") != "retired" or r["model_id"] in holding)}
        for r in rows:
            mid = str(r.get("model_id", ""))
            if not mid:
                continue
            stage = str(r.get("stage", "live"))
            budget = _dec(r.get("budget"))
            if budget is not None and capital:
                weight = budget / capital
            else:
                weight = _dec(r.get("weight"), Decimal(0)) or Decimal(0)
                if stage in ("retired",):
                    weight = Decimal(0)
            self.weights[mid] = weight
            spec = self.specs.get(mid)
            shown_stage = stage if stage != "paused" else (spec.stage if spec is not None else "live")
            if spec is None:
                if stage != "retired":
                    self.specs[mid] = ModelSpec(mid, _dec(r.get("weight"), Decimal(0)) or Decimal(0),
                                                shown_stage, str(r.get("family") or ""))
            elif stage != "retired" and spec.stage != shown_stage:
                self.specs[mid] = ModelSpec(mid, spec.weight, shown_stage, spec.family)

    # ------------------------------------------------------------ instruments
    def _set_instruments(self, items: Iterable[dict[str, Any]] | dict[str, dict[str, Any]]) -> None:
        """Instruments as the API describes them: ``instrument_id`` (or the
        key of a mapping), ``base``, ``quote``, ``tick_size``, ``step_size``,
        ``min_qty``, ``min_notional``, ``max_qty``, ``max_notional``."""
        rows = [{"instrument_id": k, **v} for k, v in items.items()] if isinstance(items, dict) else list(items)
        for d in rows:
            try:
                iid = InstrumentId.parse(str(d.get("instrument_id") or d.get("id")))
                self.instruments[iid] = Instrument(
                    iid, str(d.get("base", "")), str(d.get("quote", "")), Decimal(str(d["tick_size"])),
                    Decimal(str(d["step_size"])), Decimal(str(d.get("min_qty") or "0")),
                    _dec(d.get("max_qty")), Decimal(str(d.get("min_notional") or "0")), _dec(d.get("max_notional")),
                    str(d.get("filters_source") or "daemon"))
                self._filters_given = True
            except (KeyError, ValueError, InvalidOperation) as exc:
                log.warning("instrument skipped: %s", exc)

    def _observe(self, iid: InstrumentId, price: Any = None, qty: Any = None, held: Any = None) -> None:
        """Note an instrument and the decimals of a price, an order or fill
        quantity, or a position's quantity it was given with. Without
        filters from the daemon its tick is the finest price seen (at least
        0.01) and its step the finest order or fill quantity seen (the
        daemon rounds both to the instrument's filters); before any order,
        the finest position quantity (so a position never shows as 0)."""
        if self._filters_given and iid in self.instruments:
            return
        seen = self._seen.get(iid)
        if seen is None:
            seen = self._seen[iid] = _InstrumentSeen()
        before = (seen.price_places, seen.qty_places, seen.held_places)
        seen.price_places = max(seen.price_places, _places(price))
        seen.qty_places = max(seen.qty_places, _places(qty))
        seen.held_places = max(seen.held_places, _places(held))
        if iid in self.instruments and (seen.price_places, seen.qty_places, seen.held_places) == before:
            return
        step_places = seen.qty_places if seen.qty_places else seen.held_places
        self.instruments[iid] = Instrument(iid, "", self.quote or "", Decimal(1).scaleb(-seen.price_places),
                                           Decimal(1).scaleb(-step_places), Decimal(0),
                                           filters_source="inferred from the daemon's numbers")

    # ------------------------------------------------------------ events
    def apply_sse(self, seq: int, data: str) -> bool:
        """Apply one stream event (journal ``seq``, JSON ``data``) and
        publish it on :attr:`bus`. Returns False for a sequence already
        applied (skipped). A sequence that is not the next one is applied
        and counted in ``gaps``."""
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        if seq != self.last_seq + 1:
            self.gaps += 1
            log.warning("stream gap: after %d came %d", self.last_seq, seq)
        self.last_seq = seq
        self.seen_seqs.append(seq)
        self.last_update_ns = self.wall_clock.timestamp_ns()
        try:
            ev = event_from_dict(json.loads(data))
        except (ValueError, TypeError) as exc:
            log.warning("stream event %d not understood: %s", seq, exc)
            return True
        self.clock.see(ev.ts_event)
        self._apply_event(ev)
        self.bus.publish(ev)
        return True

    def _apply_event(self, ev: Event) -> None:
        t = ev.type
        if isinstance(ev, OrderEvent):
            self._apply_order_event(ev)
            if t == "OrderFilled":
                self._observe(ev.instrument_id, price=getattr(ev, "last_px", None), qty=getattr(ev, "last_qty", None))
        elif t == "TradingStateChanged":
            self.trading_state = TradingState(ev.state)  # type: ignore[attr-defined]
        elif t == "ModelStateChanged":
            (self.paused.add if ev.state == "PAUSED" else self.paused.discard)(ev.model_id)  # type: ignore[attr-defined]
        elif t == "SignalGenerated":
            reg = int(ev.regime)  # type: ignore[attr-defined]
            if reg >= 0:
                try:
                    prob = float(ev.probability)  # type: ignore[attr-defined]
                except ValueError:
                    prob = float("nan")
                self.regimes[(ev.model_id, ev.instrument_id)] = (reg, prob)  # type: ignore[attr-defined]
        elif t == "ModelStageChanged":
            self.lifecycle.stage_changed(ev.model_id, ev.stage, ev.weight)  # type: ignore[attr-defined]
        elif t == "AllocationChanged":
            self.lifecycle.idle = ev.idle  # type: ignore[attr-defined]
        if t in _REFRESH_SOON:
            self._refresh_soon.set()

    def _apply_order_event(self, ev: OrderEvent) -> None:
        coid = ev.client_order_id
        self._last_event[coid] = ev
        if coid in self._seeded:  # the snapshot may hold this event already: read the order again
            self._refetch_order(coid)
            return
        if isinstance(ev, OrderInitialized):
            if coid not in self.orders:
                self.orders[coid] = order_from_initialized(ev)
                self._observe(ev.instrument_id, price=ev.price, qty=ev.quantity)
            return
        order = self.orders.get(coid)
        if order is None and getattr(ev, "venue_order_id", None) == "INTERNAL":
            return  # an internal cross between two models (a fill without an order, as in the engine)
        if order is None:  # an order from before the attach that was not working then
            self._seeded.add(coid)
            self._refetch_order(coid)
            return
        try:
            order.apply(ev)
        except InvalidTransition as exc:
            log.warning("mirror: %s; reading the order again", exc)
            self._seeded.add(coid)
            self._refetch_order(coid)

    def _refetch_order(self, coid: str) -> None:
        self._refetch.add(coid)
        if self._refetch_task is None or self._refetch_task.done():
            try:
                self._refetch_task = self._spawn(self._refetch_orders())
            except RuntimeError:  # no running loop (driven synchronously): read at the next refresh
                pass

    async def _refetch_orders(self) -> None:
        """Read the orders in ``_refetch`` from ``GET /orders?status=all``
        (their current state at the daemon), replace them, and publish their
        last event again so the panes show it."""
        while self._refetch:
            wanted, self._refetch = self._refetch, set()
            try:
                body = await self.api.request("GET", f"/orders?status=all&limit={ORDERS_REFRESH_LIMIT}")
            except (DaemonUnreachable, DaemonRefused) as exc:
                log.warning("could not read %d orders again: %s", len(wanted), exc)
                self._refetch |= wanted
                return
            for d in body.get("orders", []):
                coid = d.get("client_order_id")
                if coid not in wanted:
                    continue
                try:
                    self.orders[coid] = order_from_json(d)
                except (KeyError, ValueError) as exc:
                    log.warning("order %s skipped: %s", coid, exc)
                    continue
                ev = self._last_event.get(coid)
                if ev is not None:
                    self.bus.publish(ev)

    # ------------------------------------------------------------ running
    async def run(self, max_bars: int | None = None) -> StatsView:
        """Follow the daemon until :meth:`stop`: the stream (reconnecting
        with ``Last-Event-ID``) and the snapshot refresher. Never raises for
        a connection problem (that is ``link_state``). ``max_bars`` is
        accepted for the app's engine interface and ignored."""
        self._stop.clear()
        self._spawn(self._stream_loop())
        if self.refresh_interval is not None:
            self._spawn(self._refresh_loop())
        try:
            await self._stop.wait()
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.stats

    async def aclose(self) -> None:
        """Stop and close the HTTP clients."""
        self.stop()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
        await self.api.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Wait ``seconds`` (the injected sleep), or less when ``wake`` is set
        or the mirror stops."""
        waits = [asyncio.ensure_future(self.sleep(seconds)), asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def _set_link(self, state: str, reason: str = "") -> None:
        changed = state != self.link_state
        self.link_state = state
        self.link_reason = reason
        if state == LINK_LIVE:
            self._live.set()
        else:
            self._live.clear()
        if changed:
            log.warning("link to %s: %s%s", self.url, state, f" ({reason})" if reason else "")
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - a reader's failure must not stop the stream
                log.exception("on_change failed")

    def _notice(self, title: str, message: str, severity: str = "information") -> None:
        log.log(logging.ERROR if severity == "error" else logging.INFO, "%s: %s", title, message)
        if self.on_notice is not None:
            try:
                self.on_notice(title, message, severity)
            except Exception:  # noqa: BLE001
                log.exception("on_notice failed")

    async def _stream_loop(self) -> None:
        """Open the stream again and again until :meth:`stop`: after a
        failure the link is ``down`` at once, then a wait of the backoff
        (reset once a stream got a 200)."""
        delay = self.retry_initial
        while not self._stop.is_set():
            self._opened = False
            try:
                if await self._stream_once() == "resynced":
                    continue
                reason = "the daemon ended the stream"
            except asyncio.CancelledError:
                raise
            except DaemonRefused as exc:
                reason = str(exc)
            except (httpx.HTTPError, DaemonUnreachable, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - a bug applying an event: log it, read again
                log.exception("stream failed")
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._response = None
            if self._stop.is_set():
                break
            self._set_link(LINK_DOWN, reason)
            if self._opened:
                delay = self.retry_initial
            await self._wait(delay)
            delay = min(delay * 2, self.retry_max)

    async def _stream_once(self) -> str:
        """One ``GET /stream`` from ``last_seq`` until it ends or fails.
        Returns ``"ended"`` after a 200 whose stream ended (or was closed
        here), ``"resynced"`` after a 409 answered by a new snapshot.

        Raises:
            DaemonRefused: an error status; httpx errors: the connection failed.
        """
        headers = {"Last-Event-ID": str(self.last_seq)}
        try:
            async with self._http.stream("GET", "/stream", headers=headers) as resp:
                if resp.status_code == 409:  # our last id is ahead of its journal: another store
                    await resp.aread()
                    await self._resync(f"the daemon's journal is behind the last event seen ({self.last_seq})")
                    return "resynced"
                if resp.status_code >= 400:
                    await resp.aread()
                    detail = resp.text[:500]
                    raise DaemonRefused(resp.status_code, detail)
                self._response = resp
                self._opened = True
                if self.link_state != LINK_LIVE:
                    if self.link_state == LINK_DOWN:
                        self.reconnects += 1
                    self._set_link(LINK_LIVE)
                    self._refresh_soon.set()  # the figures moved meanwhile
                async for item in iter_sse(resp.aiter_lines()):
                    if item is None or item.id is None:
                        continue
                    self.apply_sse(item.id, item.data)
                return "ended"
        except httpx.StreamClosed:
            return "ended"

    async def _resync(self, why: str) -> None:
        """Start over from a fresh snapshot (another journal behind the URL)."""
        log.warning("resync: %s", why)
        snap = await self.api.snapshot()
        self.resyncs += 1
        self._seed(snap)
        self._notice("Attach", f"resynchronised from a new snapshot: {why}", "warning")
        self._changed()

    async def _refresh_loop(self) -> None:
        interval = float(self.refresh_interval or REFRESH_INTERVAL_S)
        while not self._stop.is_set():
            await self._wait(interval, self._refresh_soon)
            self._refresh_soon.clear()
            if self._stop.is_set():
                return
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except DaemonUnreachable as exc:  # the stream may not notice a silent drop for a while
                self._set_link(LINK_DOWN, str(exc))
                await self._abort_stream()
            except DaemonRefused as exc:
                log.warning("snapshot refused: %s", exc)
            except Exception:  # noqa: BLE001 - a malformed snapshot: keep the last figures
                log.exception("snapshot not applied")
            await self._wait(min(REFRESH_MIN_GAP_S, interval))

    async def _abort_stream(self) -> None:
        resp = self._response
        if resp is not None:
            try:
                await resp.aclose()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    # ------------------------------------------------------------ commands
    async def send(self, method: str, path: str, body: Any = None) -> Any:
        """One API command; returns the decoded answer.

        Raises:
            RemoteCommandError: unreachable (status 0) or an error status.
        """
        try:
            return await self.api.request(method, path, body)
        except DaemonUnreachable as exc:
            raise RemoteCommandError(f"not delivered, the daemon is unreachable: {exc}") from None
        except DaemonRefused as exc:
            raise RemoteCommandError(f"refused by the daemon: HTTP {exc.status_code}: {exc.detail}",
                                     exc.status_code) from None

    def send_later(self, title: str, method: str, path: str, body: Any = None) -> None:
        """Send a command in the background; a failure is reported through
        ``on_notice`` (severity ``error``)."""
        async def go() -> None:
            try:
                await self.send(method, path, body)
            except RemoteCommandError as exc:
                self._notice(title, str(exc), "error")

        self._spawn(go())

    async def send_halt(self, who: str, reason: str, cancel_stops: bool = False) -> int:
        """``POST /kill`` HALT. Returns the cancels the daemon sent, or 0 when
        it could not be delivered: the halt is then kept (:attr:`halt`) and
        sent again with backoff, and at once when the stream is back, until
        the daemon acknowledges it. A halt pressed while one is pending joins it."""
        body = {"enabled": False, "mode": "HALT", "reason": f"{reason} ({who} via {VIA})",
                "cancel_stops": bool(cancel_stops)}
        if self.halt is not None:
            self.halt.body["cancel_stops"] = self.halt.body["cancel_stops"] or bool(cancel_stops)
            return 0
        try:
            out = await self.send("POST", "/kill", body)
        except RemoteCommandError as exc:
            self.halt = PendingHalt(body, 1, _short(exc), self.wall_clock.timestamp_ns())
            log.error("HALT NOT DELIVERED: %s; retrying until acknowledged", exc)
            self._changed()
            self._halt_task = self._spawn(self._deliver_halt())
            return 0
        return int((out or {}).get("cancels") or 0)

    async def _deliver_halt(self) -> None:
        """Send the pending halt again until acknowledged: after a wait of
        ``retry_initial`` doubling up to ``HALT_RETRY_MAX_S`` (or the
        reconnection backoff's cap, if smaller), or at once when the stream
        comes back."""
        delay = self.retry_initial
        cap = max(self.retry_initial, min(self.retry_max, HALT_RETRY_MAX_S))
        while self.halt is not None:
            await self._wait(delay, None if self._live.is_set() else self._live)
            if self._stop.is_set():
                return
            delay = min(delay * 2, cap)
            pending = self.halt
            try:
                out = await self.send("POST", "/kill", pending.body)
            except RemoteCommandError as exc:
                pending.attempts += 1
                pending.error = _short(exc)
                log.error("HALT NOT DELIVERED (attempt %d): %s", pending.attempts, exc)
                self._changed()
                continue
            self.halt = None
            n = int((out or {}).get("cancels") or 0)
            log.warning("halt delivered after %d attempts: %d cancels", pending.attempts + 1, n)
            self._changed()
            self._notice("Halt", f"HALT delivered: the daemon is {out.get('trading_state', 'HALTED')}, "
                                 f"{n} cancel{'s' if n != 1 else ''} sent.", "warning")

    def refuse_while_halt_pending(self, title: str) -> bool:
        """True (and says so) when a halt waits for delivery: commands that
        would loosen trading are not sent before it."""
        if self.halt is None:
            return False
        self._notice(title, "Not sent: a HALT is not delivered yet (retrying). "
                            "Wait until the daemon acknowledges it.", "error")
        return True


def _short(exc: RemoteCommandError) -> str:
    """A command failure in a few words (the banner's): ``HTTP <status>:
    <detail>`` or ``daemon unreachable``."""
    if exc.status_code:
        return str(exc).removeprefix("refused by the daemon: ")[:80]
    return "daemon unreachable"


class RemoteGovernance:
    """``engine.governance`` of the mirror: the same methods as
    ``core.governance.Governance``, sent to the daemon's API.

    The asynchronous ones return the daemon's answer (``halt`` the number of
    cancels, 0 when queued; ``flatten`` the report rows) and raise
    :class:`RemoteCommandError` (a ``GovernanceError``) when the daemon
    refuses or cannot be reached — except ``halt``, which is kept and
    retried. The synchronous ones (called from key handlers) send in the
    background and report a failure through ``on_notice``.
    """

    def __init__(self, mirror: RemoteEngine) -> None:
        self.m = mirror

    @staticmethod
    def _reason(who: str, reason: str) -> str:
        return f"{reason} ({who} via {VIA})"

    async def halt(self, who: str, reason: str, cancel_stops: bool = False) -> int:
        """``POST /kill`` HALT (see :meth:`RemoteEngine.send_halt`)."""
        return await self.m.send_halt(who, reason, cancel_stops)

    async def halt_venue(self, venue: str, who: str, reason: str) -> int:
        """``POST /kill`` HALT of one venue; returns the cancels sent."""
        out = await self.m.send("POST", "/kill", {"enabled": False, "mode": "HALT", "venue": venue,
                                                  "reason": self._reason(who, reason)})
        return int((out or {}).get("cancels") or 0)

    async def flatten(self, who: str, reason: str) -> list[dict[str, str]]:
        """``POST /kill`` FLATTEN; returns the report rows (``model``,
        ``instrument``, ``quantity``, ``order``, ``status``, ``detail``)."""
        out = await self.m.send("POST", "/kill", {"enabled": False, "mode": "FLATTEN",
                                                  "reason": self._reason(who, reason)})
        return list((out or {}).get("flatten") or [])

    def reduce_only(self, who: str, reason: str) -> None:
        """``POST /kill`` REDUCE, in the background."""
        if not self.m.refuse_while_halt_pending("Reduce-only"):
            self.m.send_later("Reduce-only", "POST", "/kill", {"enabled": False, "mode": "REDUCE",
                                                                "reason": self._reason(who, reason)})

    def resume(self, who: str, reason: str) -> None:
        """``POST /resume``, in the background (refused while a halt is pending)."""
        if not self.m.refuse_while_halt_pending("Resume trading"):
            self.m.send_later("Resume trading", "POST", "/resume", {"reason": self._reason(who, reason)})

    def resume_venue(self, venue: str, who: str, reason: str) -> None:
        """``POST /resume`` of one venue, in the background."""
        if not self.m.refuse_while_halt_pending("Resume venue"):
            self.m.send_later("Resume venue", "POST", "/resume", {"venue": venue,
                                                                  "reason": self._reason(who, reason)})

    def pause_model(self, model_id: str, who: str, reason: str) -> None:
        """``POST /models/{id}/pause``, in the background."""
        self.m.send_later("Pause model", "POST", f"/models/{model_id}/pause", {"reason": self._reason(who, reason)})

    def resume_model(self, model_id: str, who: str, reason: str) -> None:
        """``POST /models/{id}/resume``, in the background (refused while a halt is pending)."""
        if not self.m.refuse_while_halt_pending("Resume model"):
            self.m.send_later("Resume model", "POST", f"/models/{model_id}/resume",
                              {"reason": self._reason(who, reason)})

    async def promote(self, model_id: str, who: str, reason: str) -> None:
        """``POST /models/{id}/promote``.

        Raises:
            RemoteCommandError: unreachable, unknown model (404), not a canary (409).
        """
        await self.m.send("POST", f"/models/{model_id}/promote", {"reason": self._reason(who, reason)})

    async def rollback(self, model_id: str, who: str, reason: str) -> None:
        """``POST /models/{id}/rollback``.

        Raises:
            RemoteCommandError: unreachable, unknown model (404), not a canary (409).
        """
        await self.m.send("POST", f"/models/{model_id}/rollback", {"reason": self._reason(who, reason)})

    def set_weights(self, weights: dict[str, Decimal | None], who: str, reason: str) -> None:
        """``POST /strategy/weights`` (fractions 0..1 as decimal strings,
        None clears a pin), in the background (refused while a halt is pending)."""
        if self.m.refuse_while_halt_pending("Weights"):
            return
        body = {"weights": {k: None if v is None else format(v, "f") for k, v in weights.items()},
                "reason": self._reason(who, reason)}
        self.m.send_later("Weights", "POST", "/strategy/weights", body)
