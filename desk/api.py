"""The control API (DESIGN.md section 5 "Control API"; issue 8): FastAPI,
run by the daemon under uvicorn in the engine's event loop, so every handler
runs between two engine awaits and reads or commands the engine directly.

Build it with :func:`create_app`. Endpoints (OpenAPI docs at ``/docs``, the
schema at ``/openapi.json``):

============================  =====================================================
``GET /health``               components and venues (no token)
``GET /metrics``              Prometheus text format (no token; ``desk.metrics``)
``GET /status``               trading state, halted venues, counts
``GET /snapshot``             what an attached TUI paints at once
``GET /orders``               working (or all) orders
``POST /orders``              a manual order through the rails (``core.manual``)
``GET /dash/pnl``             PnL per model and venue, today and total
``GET /stream``               server-sent events, journal-backed, resumable
``POST /strategy/signal``     a quote-sized signal through the router's sizing and the rails
``POST /strategy/weights``    manual stage-weight pins (``null`` clears)
``POST /kill``                halt / reduce-only / flatten (``enabled: false``)
``POST /resume``              back to ACTIVE (or lift a venue halt)
``GET /models``               the model registry's rows
``POST /models/{id}/…``       ``promote``, ``rollback``, ``pause``, ``resume``
============================  =====================================================

Security: every endpoint but ``/health`` and ``/metrics`` (and the docs)
needs the ``X-OPS-TOKEN`` header: missing or empty → 401, wrong → 403,
compared in constant time (``hmac.compare_digest`` on the bytes). The check
is a pure ASGI gate in front of the routing, so it runs before anything else
(a malformed body or an unknown path without the token is a 401, never a
422 or 404) and a refused request changes nothing. The token is kept only as
bytes inside the gate's closure: never logged, echoed, or put in
``app.state``.

Validation: bodies are pydantic models with ``extra="forbid"``; numbers are
``Decimal`` (JSON numbers or strings; ``NaN``/``Infinity`` refused), a bad
body is a 422 whose ``detail[].loc`` names the field (FastAPI's shape), with
nothing changed. Checks that need the engine (unknown symbol, the max
notional of a signal, a price on a MARKET order) answer the same 422 shape.

Commands go through ``engine.governance`` (who = ``"api:<client host>"``,
audited with the reason) or ``core.manual`` (the order's ``OrderInitialized``
tags carry ``MANUAL by <who>: <reason>``, so the audit log names the
caller). A manual order or signal that the rails refuse is still created:
the answer is **201** with the order, ``status: "DENIED"`` and its
``reason`` (the denial is journaled and audited like any other); 422 is kept
for requests that are malformed. ``GovernanceError`` maps to 404 when its
message says the model or venue is unknown, else 409; lifecycle commands the
governance facade does not offer yet answer 501.

``/stream``: ``text/event-stream``; each event is ``id: <journal seq>``,
``event: <type>``, ``data: <the journal payload as JSON>``. Only committed
events are sent: a :class:`StreamHub` polls the journal
(``store.iter_journal(head)``) on the engine's loop every
``poll_interval_s`` (100 ms) and fans the new rows out to each client's
bounded buffer (``stream_queue_size``, 10,000 events); a client whose buffer
would overflow is dropped (a final ``: overflow`` comment, then the response
ends; it reconnects with ``Last-Event-ID``), so a slow client never slows
the engine. On connect with ``Last-Event-ID: N`` (header, or
``?last_event_id=N``) the committed rows after N are replayed from the
journal first, then live events follow with no gap and no duplicate; the
journal outlives the process, so this works across restarts. A comment line
``: ping`` is sent after ``heartbeat_s`` (15 s) without events.
``?follow=false`` replays and ends (no live part). Before stopping the
server, ``app.state.runtime.end_streams()`` ends the open streams (a final
``: server shutting down`` comment), so they do not hold uvicorn's graceful
shutdown.

No textual import here (the daemon is headless).
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import math
from collections import deque
from contextlib import asynccontextmanager
from decimal import Decimal
from itertools import islice
from typing import Annotated, Any, AsyncIterator, Callable, Literal

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from core.enums import OrderType, TradingState
from core.governance import GovernanceError
from core.manual import (
    MAX_PLACES,
    ManualOrderError,
    ManualOrderUnavailable,
    decimal_places,
    max_order_notional,
    route_signal,
    submit_manual_order,
)
from core.orders import Order
from core.store import ORDERS_COLUMNS, order_row
from desk.metrics import DeskMetrics, family_weights, model_rows, venue_clients, venue_connections, venue_session

log = logging.getLogger("desk.api")

#: the header that carries the token
TOKEN_HEADER = "X-OPS-TOKEN"
#: paths served without the token
OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
#: largest quantity / price / quote a request may carry (bounds Decimal arithmetic in the rails)
MAX_NUMBER = Decimal("1e12")

_api_key = APIKeyHeader(name=TOKEN_HEADER, auto_error=False, scheme_name="OpsToken",
                        description="The desk's operator token (OPS_TOKEN or the state dir's ops_token file).")

#: error answers documented on every protected route
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": f"{TOKEN_HEADER} header missing or empty"},
    403: {"description": f"{TOKEN_HEADER} does not match"},
}


# ---------------------------------------------------------------- request bodies
#: a decimal number as JSON: a number or a plain decimal string (never NaN or Infinity)
DECIMAL_TEXT = r"^[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"
def _places(value: Decimal) -> Decimal:
    """Refuse a decimal with more than ``core.manual.MAX_PLACES`` (18)
    significant decimal places (``1e-999999`` would be journaled and
    answered as a million digits)."""
    if decimal_places(value) > MAX_PLACES:
        raise ValueError(f"at most {MAX_PLACES} decimal places")
    return value


Num = Annotated[Decimal, Field(gt=0, le=MAX_NUMBER), AfterValidator(_places), WithJsonSchema({"anyOf": [
    {"type": "number", "exclusiveMinimum": 0, "maximum": float(MAX_NUMBER)},
    {"type": "string", "pattern": DECIMAL_TEXT}]})]
Fraction = Annotated[Decimal, Field(ge=0, le=1), AfterValidator(_places), WithJsonSchema({"anyOf": [
    {"type": "number", "minimum": 0, "maximum": 1}, {"type": "string", "pattern": DECIMAL_TEXT}]})]
Reason = Annotated[str, Field(max_length=500, description="Free text for the audit log")]
ModelId = Annotated[str, Path(min_length=1, max_length=64, description="A model version id, e.g. hmm_v2_canary")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderRequest(_Body):
    """A manual order for the ``manual`` book."""

    symbol: str = Field(min_length=1, max_length=64, description="Instrument id SYMBOL.VENUE, e.g. BTCUSDT.SIM")
    side: Literal["BUY", "SELL"]
    quantity: Num = Field(description="Base units (a multiple of the instrument's step, else DENIED by the rails)")
    order_type: Literal["MARKET", "LIMIT"] | None = Field(
        None, description="default: LIMIT when a price is given, else MARKET")
    price: Num | None = Field(default=None, description="Limit price, quote per base unit (LIMIT only)")
    reason: Reason = ""


class SignalRequest(_Body):
    """A signal: spend (BUY) or raise (SELL) ``quote`` of the quote currency."""

    symbol: str = Field(min_length=1, max_length=64, description="Instrument id SYMBOL.VENUE")
    side: Literal["BUY", "SELL"]
    quote: Num = Field(description="Quote-currency amount; at most the max notional per order")
    reason: Reason = ""


class WeightsRequest(_Body):
    """Manual stage-weight pins: model id -> fraction 0..1, or null to clear."""

    weights: dict[Annotated[str, Field(min_length=1, max_length=64)], Fraction | None] = Field(
        min_length=1, max_length=64)
    reason: Reason = ""


class KillRequest(_Body):
    """The kill switch: ``enabled: false`` disables trading."""

    enabled: StrictBool = Field(description="false halts; true is refused (409): use POST /resume")
    mode: Literal["HALT", "REDUCE", "FLATTEN"] = "HALT"
    reason: Reason = ""
    cancel_stops: StrictBool = Field(False, description="HALT: cancel reduce-only protective stops too")
    venue: str | None = Field(None, min_length=1, max_length=32, description="HALT one venue only")


class ResumeRequest(_Body):
    """Lift the halt (or one venue's halt)."""

    reason: Reason = ""
    venue: str | None = Field(None, min_length=1, max_length=32, description="resume one venue only")


class ReasonRequest(_Body):
    """A command's reason for the audit log."""

    reason: Reason = ""


# ---------------------------------------------------------------- the SSE hub
class _Subscriber:
    __slots__ = ("buffer", "maxsize", "wake", "overflowed", "ended")

    def __init__(self, maxsize: int) -> None:
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.maxsize = maxsize
        self.wake = asyncio.Event()
        self.overflowed = False
        self.ended = False


def format_event(seq: int, event_type: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event: ``id: <seq>``, ``event: <type>``, ``data:
    <payload JSON on one line>`` and a blank line (WHATWG HTML, "Server-sent
    events")."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"id: {seq}\nevent: {event_type}\ndata: {data}\n\n".encode()


def committed_head(store: Any) -> int:
    """The largest committed journal sequence (0 for an empty journal)."""
    row = store.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()
    return int(row[0])


class StreamHub:
    """Fans committed journal rows out to SSE clients.

    ``poll()`` reads the rows after ``head`` (``store.iter_journal``, in
    pages of ``chunk``), formats each once, and appends them to every
    subscriber's buffer; a buffer that would exceed its ``queue_size`` is
    cleared and marked overflowed (the client's response then ends). It never
    blocks and never waits for a client. :meth:`run` polls every
    ``interval_s`` on the running loop; a commit hook could call
    :meth:`poll` instead.

    Args:
        store: the engine's ``core.store.Store``.
        queue_size: events buffered per client before it is dropped.
        chunk: journal rows read per query.
    """

    def __init__(self, store: Any, *, queue_size: int = 10_000, chunk: int = 1000) -> None:
        if queue_size < 1 or chunk < 1:
            raise ValueError(f"StreamHub: queue_size {queue_size} and chunk {chunk} must be >= 1")
        self.store = store
        self.queue_size = queue_size
        self.chunk = chunk
        self.head = committed_head(store)
        self.subscribers: set[_Subscriber] = set()
        self.overflows = 0

    def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` committed rows after ``after``, formatted."""
        gen = self.store.iter_journal(after)
        try:
            return [(seq, format_event(seq, typ, payload)) for seq, typ, payload in islice(gen, limit)]
        finally:
            gen.close()

    def poll(self) -> int:
        """Publish every committed row after ``head``; returns how many."""
        n = 0
        while True:
            rows = self.read(self.head, self.chunk)
            if not rows:
                break
            self.head = rows[-1][0]
            n += len(rows)
            for sub in list(self.subscribers):
                if len(sub.buffer) + len(rows) > sub.maxsize:
                    sub.overflowed = True
                    sub.buffer.clear()
                    self.subscribers.discard(sub)
                    self.overflows += 1
                    log.warning("stream client dropped: more than %d events buffered", sub.maxsize)
                else:
                    sub.buffer.extend(rows)
                sub.wake.set()
            if len(rows) < self.chunk:
                break
        return n

    def subscribe(self) -> _Subscriber:
        """A new client buffer, receiving rows after the current committed head."""
        self.poll()  # bring the head up to date first: the new buffer starts at it
        sub = _Subscriber(self.queue_size)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        """Forget a client buffer (no error if it was dropped already)."""
        self.subscribers.discard(sub)

    def end_all(self) -> int:
        """End every client's stream after what it has buffered (a server
        shutting down: the responses complete instead of holding the
        server's graceful-shutdown wait); returns how many."""
        self.poll()
        subs, self.subscribers = list(self.subscribers), set()
        for sub in subs:
            sub.ended = True
            sub.wake.set()
        return len(subs)

    async def run(self, interval_s: float) -> None:
        """Poll forever every ``interval_s`` seconds; cancel the task to stop."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a failed read is retried at the next tick
                log.exception("journal poll failed")


async def _event_stream(hub: StreamHub, after: int | None, follow: bool,
                        heartbeat_s: float) -> AsyncIterator[bytes]:
    """The body of one ``/stream`` response (see the module docstring). The
    client's buffer is subscribed before the replay reads the journal, so
    nothing committed in between is missed (rows seen twice are skipped)."""
    sub = hub.subscribe() if follow else None
    sent = hub.head if after is None else after  # without Last-Event-ID: live from the head at connect
    try:
        yield b"retry: 1000\n\n"
        if after is not None:
            while True:  # replay the committed rows after `after`, page by page
                rows = hub.read(sent, hub.chunk)
                if not rows:
                    break
                sent = rows[-1][0]
                yield b"".join(b for _, b in rows)
                if len(rows) < hub.chunk:
                    break
        if sub is None:
            return
        while True:
            if sub.overflowed:
                yield b": overflow: more events than the client read; reconnect with Last-Event-ID\n\n"
                return
            if not sub.buffer:
                if sub.ended:
                    yield b": server shutting down; reconnect with Last-Event-ID\n\n"
                    return
                sub.wake.clear()
                try:
                    await asyncio.wait_for(sub.wake.wait(), heartbeat_s)
                except asyncio.TimeoutError:
                    yield b": ping\n\n"
                continue
            out = []
            while sub.buffer and len(out) < hub.chunk:
                seq, data = sub.buffer.popleft()
                if seq > sent:  # rows also read by the replay are skipped
                    out.append(data)
                    sent = seq
            if out:
                yield b"".join(out)
    finally:
        if sub is not None:
            hub.unsubscribe(sub)


# ---------------------------------------------------------------- readers
def who_of(request: Request) -> str:
    """``api:<client host>`` for the audit."""
    host = request.client.host if request.client else "unknown"
    return f"api:{host}"


def order_json(order: Order) -> dict[str, Any]:
    """An order as JSON: the store's ``orders`` columns (decimal strings,
    UTC ns) plus ``leaves_qty`` and ``reduce_only``."""
    d = dict(zip(ORDERS_COLUMNS, order_row(order)))
    d["leaves_qty"] = format(order.leaves_qty, "f")
    d["reduce_only"] = order.reduce_only
    return d


def positions_json(engine: Any) -> list[dict[str, Any]]:
    """Open or traded positions per (model, instrument): quantity (base,
    signed), avg_px and mark (quote per base), cost, realized (net of fees),
    unrealized and fees (quote), fills."""
    pf = engine.portfolio
    out = []
    for (mid, iid), p in sorted(pf.positions.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if not p.quantity and not p.fills:
            continue
        mark = pf.marks.get(iid)
        avg = p.avg_px()
        out.append({
            "model_id": mid, "instrument_id": str(iid), "venue": iid.venue, "quantity": format(p.quantity, "f"),
            "avg_px": None if avg is None else format(avg, "f"), "mark": None if mark is None else format(mark, "f"),
            "cost": format(p.cost, "f"), "realized": format(p.realized, "f"),
            "unrealized": format(p.unrealized(mark), "f"), "fees": format(p.fees, "f"), "fills": p.fills,
        })
    return out


def _today(engine: Any) -> str:
    from core.daily_pnl import venue_day

    return venue_day(engine.clock.timestamp_ns(), engine.config.day_tz).isoformat()


def _today_baseline(engine: Any, today: str) -> tuple[dict[tuple[str, str], Decimal] | None, str]:
    """Per (model, venue), PnL (realized + unrealized, quote) at the end of
    the previous venue day, from the latest ``EndOfDayMarked`` of an earlier
    day (in the engine's ``day_tz``) in the journal; ``({}, "start")`` when the whole journal is from
    today; ``(None, "none")`` when neither is known."""
    from core.daily_pnl import venue_day

    c = engine.store.conn
    for (payload,) in c.execute("SELECT payload FROM journal WHERE type='EndOfDayMarked' ORDER BY seq DESC LIMIT 50"):
        ev = json.loads(payload)
        if ev.get("day", "") >= today or ev.get("tz", "UTC") != engine.config.day_tz:
            continue  # today's own mark, or a mark of another zone's days
        base: dict[tuple[str, str], Decimal] = {}
        for r in ev.get("rows", []):
            key = (r["model_id"], r["instrument_id"].rpartition(".")[2])
            base[key] = base.get(key, Decimal(0)) + Decimal(r.get("realized", "0")) + Decimal(r.get("unrealized", "0"))
        return base, f"eod:{ev['day']}"
    first = c.execute("SELECT ts_event FROM journal ORDER BY seq LIMIT 1").fetchone()
    if first is None or venue_day(int(first[0]), engine.config.day_tz).isoformat() >= today:
        return {}, "start"
    return None, "none"


def pnl_json(engine: Any) -> dict[str, Any]:
    """PnL per model and venue, today and total (quote currency, decimal
    strings).

    ``total``: realized (net of fees), unrealized (at the last marks), fees
    (informational, quote value), ``pnl`` = realized + unrealized, fills.
    ``today.pnl`` per (model, venue): total ``pnl`` now minus the same at
    the end of the previous venue day (``today_basis`` says where that came
    from: ``eod:<day>`` an end-of-day mark in the journal; ``start`` the
    journal begins today, so the baseline is 0; ``none`` unknown → null).
    The desk row's ``today`` is the engine's own: ``realized`` of fills
    today and ``pnl`` = equity − equity at the day's start (the daily-loss
    rail's figure). Days are venue days in ``config.day_tz``.
    """
    pf = engine.portfolio
    today = _today(engine)
    base, basis = _today_baseline(engine, today)
    scopes = sorted({(m, i.venue) for (m, i) in pf.positions} | {(m, v) for m in engine.models
                                                                  for v in {i.venue for i in engine.instruments}})
    rows = []
    for mid, venue in scopes:
        realized, unrealized = pf.realized(mid, venue), pf.unrealized(mid, venue)
        total = realized + unrealized
        rows.append({
            "model_id": mid, "venue": venue,
            "today": {"pnl": None if base is None else format(total - base.get((mid, venue), Decimal(0)), "f")},
            "total": {"realized": format(realized, "f"), "unrealized": format(unrealized, "f"),
                      "fees": format(pf.fees(mid, venue), "f"), "pnl": format(total, "f"),
                      "fills": pf.fills(mid, venue)},
        })
    realized, unrealized = pf.realized(), pf.unrealized()
    return {
        "quote": engine.venue.quote, "day": today, "tz": engine.config.day_tz, "today_basis": basis,
        "desk": {
            "today": {"realized": format(engine.realized_by_day.get(today, Decimal(0)), "f"),
                      "pnl": format(engine.day_pnl(), "f")},
            "total": {"realized": format(realized, "f"), "unrealized": format(unrealized, "f"),
                      "fees": format(pf.fees(), "f"), "pnl": format(realized + unrealized, "f"), "fills": pf.fills()},
            "equity": format(pf.equity(), "f"), "equity_start": format(pf.equity_start, "f"),
        },
        "rows": rows,
    }


def status_json(engine: Any) -> dict[str, Any]:
    """Trading state, halted venues, paused models, venue session status,
    counts, engine clock (UTC ns) and the committed journal head."""
    pf = engine.portfolio
    session = getattr(engine, "session", None)
    alerts = engine.store.conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
    return {
        "trading_state": engine.trading_state.value,
        "halted_venues": sorted(engine.halted_venues),
        "paused_models": sorted(engine.paused),
        "unreconciled": list(getattr(engine, "unreconciled", [])),
        "venue_status": session.status() if session is not None else "",
        "clock_ns": engine.clock.timestamp_ns(),
        "journal_seq": committed_head(engine.store),
        "quote": engine.venue.quote,
        "equity": format(pf.equity(), "f"),
        "counts": {
            "orders_working": len(engine.working_orders()), "orders": len(engine.orders),
            "positions_open": sum(1 for p in pf.positions.values() if p.quantity),
            "models": len(engine.models), "denials": engine.stats.denials, "alerts": int(alerts),
            "bars": engine.stats.bars,
        },
        "finished": engine.stats.finished,
        "speed": engine.speed,
        "mode": "LIVE" if getattr(engine, "live", False) else "PAPER",
    }


def health_json(engine: Any) -> tuple[dict[str, Any], int]:
    """Health per component and venue, and the HTTP status (503 when the
    store is down, else 200). Each venue reads ``ok``, ``throttled``,
    ``degraded`` (its session reads DEGRADED; ``fault`` says why when its
    task group failed) or ``disconnected``; any but ``ok`` makes the
    overall status ``degraded``."""
    session = getattr(engine, "session", None)
    store_ok, store_detail = True, ""
    if getattr(session, "store_failed", False):
        store_ok, store_detail = False, "a commit failed; trading is halted"
    else:
        try:
            engine.store.conn.execute("SELECT 1").fetchone()
        except Exception as exc:  # noqa: BLE001 - any failure means the store is unusable
            store_ok, store_detail = False, type(exc).__name__
    venues = {}
    connected = venue_connections(engine)
    for name in venue_clients(engine):
        own = venue_session(engine, name)
        blocked = getattr(own, "blocked_until_ns", None)
        ok = connected.get(name, False)
        fault = getattr(own, "fault", None)
        vstate = own.venue_state()[0] if hasattr(own, "venue_state") else ""
        if not ok or vstate == "DISCONNECTED":
            status = "disconnected"
        elif blocked is not None:
            status = "throttled"
        elif fault is not None or vstate == "DEGRADED":  # reads failing, a stream down, slow, not reconciled
            status = "degraded"
        else:
            status = "ok"
        venues[name] = {"status": status, "connected": ok and status != "disconnected",
                        "halted": name in engine.halted_venues, "throttled_until_ns": blocked}
        if fault is not None:
            venues[name]["fault"] = fault
    components = {
        "engine": {"status": "ok", "trading_state": engine.trading_state.value, "bars": engine.stats.bars},
        "store": {"status": "ok" if store_ok else "down", "detail": store_detail},
    }
    overall = "down" if not store_ok else ("ok" if all(v["status"] == "ok" for v in venues.values()) else "degraded")
    return {"status": overall, "components": components, "venues": venues}, (200 if store_ok else 503)


def all_orders_json(engine: Any, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` orders by ``ts_init`` (then id): the store's
    committed rows overlaid with the engine's live ones."""
    cols = ", ".join(f"[{c}]" for c in ORDERS_COLUMNS)
    rows = {r[0]: dict(zip(ORDERS_COLUMNS, r)) for r in engine.store.conn.execute(
        f"SELECT {cols} FROM orders ORDER BY ts_init DESC, client_order_id DESC LIMIT ?", (limit,))}
    for coid, o in engine.orders.items():
        rows[coid] = order_json(o)
    out = sorted(rows.values(), key=lambda d: (d["ts_init"] or 0, d["client_order_id"]), reverse=True)
    return out[:limit]


def alerts_json(engine: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The last ``limit`` committed alerts, oldest first."""
    rows = engine.store.conn.execute(
        "SELECT seq, ts, level, code, message FROM alerts ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
    return [{"seq": s, "ts": t, "level": lv, "code": c, "message": m} for s, t, lv, c, m in reversed(rows)]


def allocations_json(engine: Any) -> list[dict[str, Any]]:
    """The allocator's rows per family (``[]`` before the lifecycle exists)."""
    lc = getattr(engine, "lifecycle", None)
    rows = getattr(lc, "allocation_rows", None)
    if callable(rows):
        return list(rows())
    return [{"family": f, "weight": format(w, "f")} for f, w in family_weights(engine).items()]


# ---------------------------------------------------------------- errors
def _field_error(field: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's shape naming ``body.<field>``."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", *field.split(".")), "msg": message,
                                    "input": None if value is None else str(value)}])


def _governance_http(exc: Exception) -> HTTPException:
    msg = str(exc)
    return HTTPException(status_code=404 if "unknown" in msg.lower() else 409, detail=msg)


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings (``NaN`` is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 shape (``{"detail": [{"loc", "msg", "type", "input"}]}``)
    that also survives an echoed ``NaN`` or ``Infinity`` input."""
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def _body_type(cls: type) -> Callable[[Any], Any]:
    """Give a handler's ``body`` parameter a class built inside
    ``create_app`` (string annotations could not name it)."""
    def deco(fn: Any) -> Any:
        fn.__annotations__["body"] = cls
        return fn
    return deco


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# ---------------------------------------------------------------- the token gate
class _TokenGate:
    """Pure ASGI middleware: every HTTP request outside ``OPEN_PATHS`` needs
    the token (401 missing, 403 wrong), checked before routing and body
    parsing."""

    def __init__(self, app: Any, check: Callable[[bytes], bool]) -> None:
        self.app = app
        self._check = check

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = None
        for k, v in scope.get("headers", ()):
            if k == b"x-ops-token":
                presented = v
                break
        if not presented:
            resp = JSONResponse({"detail": f"{TOKEN_HEADER} header required"}, status_code=401)
        elif not self._check(presented):
            resp = JSONResponse({"detail": f"{TOKEN_HEADER} does not match"}, status_code=403)
        else:
            await self.app(scope, receive, send)
            return
        await resp(scope, receive, send)


# ---------------------------------------------------------------- the app
class ApiRuntime:
    """What one app holds besides its routes: the engine, the metrics, the
    stream hub and the background tasks (journal poller, metrics sampler).

    Attributes:
        engine: the ``core.engine.Engine``.
        metrics: the app's :class:`desk.metrics.DeskMetrics`.
        hub: the :class:`StreamHub`.
    """

    def __init__(self, engine: Any, metrics: DeskMetrics, hub: StreamHub, *, poll_interval_s: float | None,
                 sample_interval_s: float | None, heartbeat_s: float, on_kill: Callable[..., Any] | None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.hub = hub
        self.poll_interval_s = poll_interval_s
        self.sample_interval_s = sample_interval_s
        self.heartbeat_s = heartbeat_s
        self.on_kill = on_kill
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self) -> None:
        """Start the background tasks on the running loop (once)."""
        if self.tasks:
            return
        if self.poll_interval_s:
            self.tasks.append(asyncio.get_running_loop().create_task(self.hub.run(self.poll_interval_s)))
        if self.sample_interval_s:
            self.tasks.append(asyncio.get_running_loop().create_task(
                self.metrics.run_sampler(self.sample_interval_s)))

    def end_streams(self) -> int:
        """End every open ``/stream`` response (call before stopping the
        server); returns how many were open."""
        return self.hub.end_all()

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them."""
        tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass


def create_app(engine: Any, *, token: str, metrics: DeskMetrics | None = None,
               on_kill: Callable[[str, str, str], Any] | None = None, stream_queue_size: int = 10_000,
               heartbeat_s: float = 15.0, poll_interval_s: float | None = 0.1,
               sample_interval_s: float | None = 1.0) -> FastAPI:
    """The control API for ``engine`` (a ``core.engine.Engine``).

    Args:
        token: the operator token every protected endpoint requires (a
            non-empty ASCII string); never logged or echoed.
        metrics: a :class:`DeskMetrics` to serve (attached to ``engine`` if
            it is not yet); default a new one on a fresh registry.
        on_kill: called as ``on_kill(mode, who, reason)`` after ``POST /kill``
            applied (sync or async; its errors are logged, not raised).
        stream_queue_size: events buffered per ``/stream`` client before it
            is dropped.
        heartbeat_s: seconds without events before a ``: ping`` comment.
        poll_interval_s: journal poll period of the stream hub (None: no
            background poller; something else calls ``hub.poll()``).
        sample_interval_s: the metrics sampler's period (loop lag and
            gauges; None: gauges are sampled on scrape only).

    The background tasks start with the app's lifespan (uvicorn) or at the
    first ``/stream`` or ``/metrics`` request; ``app.state.runtime.stop()``
    ends them.

    Raises:
        ValueError: for an empty or non-ASCII token (the message does not
            contain it).
    """
    if not isinstance(token, str) or not token or not token.isascii() or not token.isprintable():
        raise ValueError("token: expected a non-empty printable ASCII string")
    gate_token = token.encode("ascii")
    owns_metrics = metrics is None
    if metrics is None:
        metrics = DeskMetrics(CollectorRegistry())
    metrics.attach(engine)
    hub = StreamHub(engine.store, queue_size=stream_queue_size)
    rt = ApiRuntime(engine, metrics, hub, poll_interval_s=poll_interval_s, sample_interval_s=sample_interval_s,
                    heartbeat_s=heartbeat_s, on_kill=on_kill)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.start()
        try:
            yield
        finally:
            await rt.stop()
            if owns_metrics:
                metrics.detach()  # the engine's bus and store lose the app's hooks with the app

    app = FastAPI(
        title="nautilus-hmm desk control API",
        version="1",
        description=(__doc__ or "").split("\n\n")[0] + "\n\nMoney in the quote currency (USDT on the default "
                    "setup), quantities in base units, prices in quote per base unit, times in UTC nanoseconds, "
                    "fractions 0..1. Decimals are strings in answers.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]

    async def check_token(key: Annotated[str | None, Depends(_api_key)]) -> None:
        """Second check behind the gate (and the OpenAPI security scheme)."""
        if not key:
            raise HTTPException(401, f"{TOKEN_HEADER} header required")
        if not hmac.compare_digest(key.encode("latin-1", "replace"), gate_token):
            raise HTTPException(403, f"{TOKEN_HEADER} does not match")

    auth = [Depends(check_token)]
    e = engine
    # the bodies that name an instrument take only the engine's (an enum in /docs and /openapi.json)
    symbols = tuple(sorted(str(i) for i in engine.instruments))
    Symbol = Annotated[Literal[symbols], Field(description="Instrument id SYMBOL.VENUE")]  # type: ignore[valid-type]

    class OrderBody(OrderRequest):
        __doc__ = OrderRequest.__doc__
        symbol: Symbol  # type: ignore[valid-type]

    caps = [max_order_notional(engine, i) for i in engine.instruments]
    cap = min(MAX_NUMBER, max(caps)) if caps and None not in caps else MAX_NUMBER
    Quote = Annotated[Decimal, Field(gt=0, le=cap, description=(  # type: ignore[valid-type]
        f"Quote-currency amount; at most the max notional per order ({cap} here)")), AfterValidator(_places),
        WithJsonSchema({"anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": float(cap)},
            {"type": "string", "pattern": DECIMAL_TEXT}]})]

    class SignalBody(SignalRequest):
        __doc__ = SignalRequest.__doc__
        symbol: Symbol  # type: ignore[valid-type]
        quote: Quote  # type: ignore[valid-type]

    # ------------------------------------------------------------ open
    @app.get("/health", tags=["monitoring"])
    async def health() -> JSONResponse:
        """Health of the engine, the store and each venue (no token needed).

        ``status``: ``ok``; ``degraded`` when a venue is disconnected,
        throttled (``throttled_until_ns``, engine clock UTC ns) or degraded
        (reads failing, a failed task group: ``fault``, slow); ``down``
        (HTTP 503) when the store cannot be written (trading is halted).
        """
        body, code = health_json(e)
        return JSONResponse(body, status_code=code)

    @app.get("/metrics", tags=["monitoring"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}})
    async def metrics_endpoint() -> Response:
        """Prometheus metrics (no token needed): ``desk_orders_total``,
        ``desk_pnl_realized`` (quote), ``desk_order_latency_seconds``, ... —
        the list and units are in ``desk/metrics.py``."""
        rt.start()
        return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------ reads
    @app.get("/status", dependencies=auth, responses=_AUTH_RESPONSES, tags=["state"])
    async def status() -> dict[str, Any]:
        """Trading state (ACTIVE/REDUCING/HALTED), halted venues, paused
        models, the venue session's status line, counts (orders, positions,
        denials, alerts, bars), equity (quote), engine clock (UTC ns) and
        the committed journal sequence. Used by ``desk status``."""
        return status_json(e)

    @app.get("/snapshot", dependencies=auth, responses=_AUTH_RESPONSES, tags=["state"])
    async def snapshot() -> dict[str, Any]:
        """Everything an attached TUI paints at once: ``status``, working
        ``orders``, ``positions``, ``pnl`` (as ``/dash/pnl``), ``models``,
        ``allocations``, the last 100 committed ``alerts``, and
        ``journal_seq``: the committed journal sequence to resume
        ``/stream`` from (``Last-Event-ID``). Events after it may already
        show in the figures; orders are keyed by id, so applying them again
        is harmless."""
        return {
            "journal_seq": committed_head(e.store),
            "status": status_json(e),
            "orders": [order_json(o) for o in e.working_orders()],
            "positions": positions_json(e),
            "pnl": pnl_json(e),
            "models": model_rows(e),
            "allocations": allocations_json(e),
            "alerts": alerts_json(e),
            "instruments": [
                {"instrument_id": str(i.id), "base": i.base, "quote": i.quote,
                 "tick_size": format(i.tick_size, "f"), "step_size": format(i.step_size, "f"),
                 "min_qty": format(i.min_qty, "f"), "min_notional": format(i.min_notional, "f"),
                 "max_qty": None if i.max_qty is None else format(i.max_qty, "f"),
                 "max_notional": None if i.max_notional is None else format(i.max_notional, "f")}
                for i in sorted(e.instruments.values(), key=lambda i: str(i.id))],
            "marks": {str(i): format(px, "f") for i, px in e.portfolio.marks.items()},
            # each model's most likely regime per instrument: [state, posterior probability]
            "regimes": {f"{m}|{i}": [int(r[0]), float(r[1])] for (m, i), r in e.regimes.items()},
        }

    @app.get("/orders", dependencies=auth, responses=_AUTH_RESPONSES, tags=["orders"])
    async def list_orders(
        status: Annotated[Literal["working", "all"], Query(description="working orders, or all (newest first)")]
        = "working",
        limit: Annotated[int, Query(ge=1, le=5000, description="at most this many")] = 500,
    ) -> dict[str, Any]:
        """Orders: quantities in base units, prices in quote per base unit,
        times UTC ns, ``status`` in NautilusTrader's names, ``reason`` the
        denial/rejection/cancel reason. ``status=working`` (default):
        orders that may still trade, oldest first; ``all``: the newest
        ``limit`` by creation time, from the store and the engine."""
        if status == "working":
            rows = [order_json(o) for o in e.working_orders()][:limit]
        else:
            rows = all_orders_json(e, limit)
        return {"orders": rows}

    @app.get("/dash/pnl", dependencies=auth, responses=_AUTH_RESPONSES, tags=["state"])
    async def dash_pnl() -> dict[str, Any]:
        """PnL per model and venue, today and total, in the quote currency
        (decimal strings): realized (net of fees), unrealized (last marks),
        fees, pnl = realized + unrealized, fills; the desk's row with
        today's realized and today's pnl (equity − equity at the start of
        the venue day, ``tz``) and equity. ``today_basis`` tells how a
        model's today was computed (see ``desk.api.pnl_json``)."""
        return pnl_json(e)

    @app.get("/models", dependencies=auth, responses=_AUTH_RESPONSES, tags=["models"])
    async def models() -> dict[str, Any]:
        """The model registry: one row per version with ``model_id``,
        ``family``, ``stage`` (live/canary/paused/retired), ``weight`` (stage
        weight, fraction 0..1), ``manual`` (an operator pinned the weight)
        and, with the lifecycle, version, budget (quote) and the canary's
        last verdict."""
        return {"models": model_rows(e)}

    @app.get("/stream", dependencies=auth, tags=["stream"], response_class=StreamingResponse,
             responses={**_AUTH_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                                 "description": "server-sent events"},
                        409: {"description": "Last-Event-ID is ahead of the journal (another store?)"}})
    async def stream(
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", description=(
            "resume after this journal sequence (sent by EventSource on reconnect)"))] = None,
        last_event_id: Annotated[int | None, Query(ge=0, le=2**62, description=(
            "resume after this journal sequence (the header wins)"))] = None,
        follow: Annotated[bool, Query(description="false: replay the committed events and end")] = True,
    ) -> StreamingResponse:
        """Server-sent events: every committed engine event, in journal
        order: ``id: <journal seq>``, ``event: <type>`` (``OrderFilled``,
        ``TradingStateChanged``, ...), ``data: <event JSON>`` (decimals as
        strings, times UTC ns). With ``Last-Event-ID: N`` (or
        ``?last_event_id=N``) the events after N are replayed from the
        journal first, then live ones follow, contiguous. A ``: ping``
        comment comes after 15 s without events. A client that falls more
        than 10,000 events behind is disconnected (``: overflow``) and
        resumes with its last id."""
        after = last_event_id
        if last_event_id_header is not None:
            text = last_event_id_header.strip()
            if not text.isdigit() or len(text) > 19:
                raise RequestValidationError([{"type": "int_parsing", "loc": ("header", "Last-Event-ID"),
                                               "msg": "Last-Event-ID: expected a journal sequence (integer >= 0)",
                                               "input": last_event_id_header[:40]}])
            after = int(text)
        head = committed_head(e.store)
        if after is not None and after > head:
            raise HTTPException(409, f"Last-Event-ID {after} is ahead of this journal (committed up to {head}); "
                                     f"another store? reconnect without it")
        rt.start()
        return StreamingResponse(_event_stream(rt.hub, after, follow, rt.heartbeat_s),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------ orders
    @app.post("/orders", dependencies=auth, status_code=201, tags=["orders"],
              responses={**_AUTH_RESPONSES, 409: {"description": "no last price yet (MARKET)"}})
    @_body_type(OrderBody)
    async def post_order(body: OrderRequest, request: Request) -> dict[str, Any]:
        """A manual order for the ``manual`` book, through every rail
        (``core.manual.submit_manual_order``), sent at once. Quantity in base
        units, price in quote per base unit (LIMIT only). 201 with the order:
        ``status`` SUBMITTED/ACCEPTED/..., or DENIED with the rail's
        ``reason`` (journaled and audited like any denial). 422 names the
        field of a malformed request (unknown symbol, a price on a MARKET
        order, a spot sell of more than the manual book holds)."""
        who = who_of(request)
        try:
            order = submit_manual_order(e, instrument_id=body.symbol, side=body.side, quantity=body.quantity,
                                        order_type=OrderType(body.order_type or ("LIMIT" if body.price is not None else "MARKET")),
                                        price=body.price, who=who,
                                        reason=body.reason)
        except ManualOrderError as exc:
            raise _field_error(exc.field, exc.message, exc.value) from None
        except ManualOrderUnavailable as exc:
            raise HTTPException(409, str(exc)) from None
        await e.send_pending()  # write-before-send, then send at once
        e.flush()  # the acceptance, or the denial, committed (and audited) now
        log.info("manual order %s %s by %s: %s", order.client_order_id, order.status.value, who, order.reason)
        return order_json(order)

    @app.post("/strategy/signal", dependencies=auth, status_code=201, tags=["orders"],
              responses={**_AUTH_RESPONSES, 409: {"description": "no last price yet"}})
    @_body_type(SignalBody)
    async def post_signal(body: SignalRequest, request: Request) -> dict[str, Any]:
        """A signal such as ``{"symbol": "BTCUSDT.SIM", "side": "BUY",
        "quote": 100.0}``: ``quote`` (quote currency; finite, positive, at
        most the max notional per order) becomes ``floor_step(quote / last
        price)`` base units of the router's order type (LIMIT at the last
        close), for the ``manual`` book, through every rail, sent at once.
        201 with the order (DENIED with its ``reason`` when a rail refused)."""
        who = who_of(request)
        try:
            order = route_signal(e, instrument_id=body.symbol, side=body.side, quote_amount=body.quote, who=who,
                                 reason=body.reason)
        except ManualOrderError as exc:
            raise _field_error(exc.field, exc.message, exc.value) from None
        except ManualOrderUnavailable as exc:
            raise HTTPException(409, str(exc)) from None
        await e.send_pending()  # write-before-send, then send at once
        e.flush()  # the acceptance, or the denial, committed (and audited) now
        log.info("signal order %s %s by %s", order.client_order_id, order.status.value, who)
        return order_json(order)

    # ------------------------------------------------------------ governance
    @app.post("/kill", dependencies=auth, tags=["governance"],
              responses={**_AUTH_RESPONSES, 409: {"description": "enabled: true (use POST /resume), or a REDUCE "
                                                                 "while HALTED"}})
    async def kill(body: KillRequest, request: Request) -> dict[str, Any]:
        """The kill switch. ``{"enabled": false, "mode": "HALT"}`` sets
        HALTED and cancels every working desk order (protective stops stay
        unless ``cancel_stops``); ``REDUCE`` allows only exposure-reducing
        orders; ``FLATTEN`` halts, then closes every position with
        reduce-only market orders (the report lists each). ``venue`` halts
        one venue only. ``{"enabled": true}`` is refused with 409: trading
        comes back only through ``POST /resume``."""
        if body.enabled:
            raise HTTPException(409, "POST /kill only disables trading; to enable it again use POST /resume")
        who = who_of(request)
        reason = body.reason or "POST /kill"
        g = e.governance
        out: dict[str, Any] = {"mode": body.mode, "venue": body.venue, "cancels": None, "flatten": None}
        if body.venue is not None:
            if body.mode != "HALT":
                raise _field_error("venue", f"venue: only with mode HALT, got mode {body.mode}", body.venue)
            known = {i.venue for i in e.instruments}
            if body.venue not in known:
                raise _field_error("venue", f"venue: unknown {body.venue!r}; known: {', '.join(sorted(known))}",
                                   body.venue)
            out["cancels"] = await g.halt_venue(body.venue, who, reason)
        elif body.mode == "HALT":
            out["cancels"] = await g.halt(who, reason, cancel_stops=body.cancel_stops)
        elif body.mode == "REDUCE":
            if e.trading_state == TradingState.HALTED:
                raise HTTPException(409, "trading is HALTED; REDUCE would loosen it (POST /resume first)")
            g.reduce_only(who, reason)
        else:
            out["flatten"] = await g.flatten(who, reason)
        log.warning("kill %s%s by %s: %s", body.mode, f" {body.venue}" if body.venue else "", who, reason)
        if rt.on_kill is not None:
            try:
                await _maybe_await(rt.on_kill(body.mode, who, reason))
            except Exception:  # noqa: BLE001 - the halt stands whatever the hook does
                log.exception("on_kill hook failed")
        out["trading_state"] = e.trading_state.value
        out["halted_venues"] = sorted(e.halted_venues)
        return out

    @app.post("/resume", dependencies=auth, responses=_AUTH_RESPONSES, tags=["governance"])
    async def resume(request: Request, body: Annotated[ResumeRequest | None, Body()] = None) -> dict[str, Any]:
        """Return to ACTIVE (the only way out of a halt), or with ``venue``
        lift that venue's halt only. Audited with the caller and reason.
        409 while the state dir's ``HALT`` file exists (it would halt the
        desk again at once)."""
        body = body or ResumeRequest()
        who = who_of(request)
        reason = body.reason or "POST /resume"
        if body.venue is not None:
            known = {i.venue for i in e.instruments}
            if body.venue not in known:
                raise _field_error("venue", f"venue: unknown {body.venue!r}; known: {', '.join(sorted(known))}",
                                   body.venue)
            e.governance.resume_venue(body.venue, who, reason)
        else:
            halt_file = getattr(e, "halt_file", None)
            if halt_file is not None and halt_file.exists():  # it would halt the desk again within a second
                raise HTTPException(409, f"the HALT file {halt_file} is in the state dir: remove it first "
                                         f"(it halts the desk at start and while running)")
            e.governance.resume(who, reason)
        log.warning("resume%s by %s: %s", f" {body.venue}" if body.venue else "", who, reason)
        return {"trading_state": e.trading_state.value, "halted_venues": sorted(e.halted_venues)}

    async def _model_command(action: str, model_id: str, request: Request, body: ReasonRequest | None) -> dict[str, Any]:
        who = who_of(request)
        reason = (body.reason if body else "") or f"POST /models/{model_id}/{action}"
        g = e.governance
        name = {"pause": "pause_model", "resume": "resume_model"}.get(action, action)
        fn = getattr(g, name, None)
        if fn is None:
            raise HTTPException(501, f"governance.{name} is not available in this build")
        try:
            await _maybe_await(fn(model_id, who, reason))
        except GovernanceError as exc:
            raise _governance_http(exc) from None
        except Exception as exc:
            if type(exc).__name__ == "LifecycleError":
                raise _governance_http(exc) from None
            raise
        log.warning("model %s %s by %s: %s", model_id, action, who, reason)
        row = next((r for r in model_rows(e) if r["model_id"] == model_id), None)
        return {"model_id": model_id, "action": action, "model": row}

    def _add_model_route(action: str, doc: str) -> None:
        async def handler(model_id: ModelId, request: Request,
                          body: Annotated[ReasonRequest | None, Body()] = None) -> dict[str, Any]:
            return await _model_command(action, model_id, request, body)

        handler.__doc__ = doc
        handler.__name__ = f"model_{action}"
        app.post(f"/models/{{model_id}}/{action}", dependencies=auth, tags=["models"],
                 responses={**_AUTH_RESPONSES, 404: {"description": "unknown model"},
                            409: {"description": "not possible in the model's stage"},
                            501: {"description": "not offered by this build's governance"}})(handler)

    _add_model_route("promote", "Promote a canary to live by hand (the live version is retired). "
                                "404 unknown model, 409 not a canary.")
    _add_model_route("rollback", "Roll a canary back by hand (retired, its position unwound). "
                                 "404 unknown model, 409 not a canary.")
    _add_model_route("pause", "Pause a model: it opens no new exposure (its sells still pass). 404 unknown model.")
    _add_model_route("resume", "Resume a paused model. 404 unknown model.")

    @app.post("/strategy/weights", dependencies=auth, tags=["models"],
              responses={**_AUTH_RESPONSES, 404: {"description": "unknown model"},
                         409: {"description": "a weight that cannot apply (e.g. a retired version)"},
                         501: {"description": "not offered by this build's governance"}})
    async def post_weights(body: WeightsRequest, request: Request) -> dict[str, Any]:
        """Pin stage weights by hand: ``{"weights": {"hmm_v2_canary": 0.1}}``
        (fraction 0..1 of the model's family budget; this pauses canary
        stepping for the family and shows as ``manual``); ``null`` clears a
        pin. Audited with the caller and reason."""
        fn = getattr(e.governance, "set_weights", None)
        if fn is None:
            raise HTTPException(501, "governance.set_weights is not available in this build")
        who = who_of(request)
        reason = body.reason or "POST /strategy/weights"
        try:
            await _maybe_await(fn(dict(body.weights), who, reason))
        except GovernanceError as exc:
            raise _governance_http(exc) from None
        except Exception as exc:
            if type(exc).__name__ == "LifecycleError":
                raise _governance_http(exc) from None
            raise
        log.warning("weights %s by %s: %s", {k: None if v is None else str(v) for k, v in body.weights.items()},
                    who, reason)
        return {"weights": {k: None if v is None else format(v, "f") for k, v in body.weights.items()},
                "models": model_rows(e)}

    # the gate holds a closure, not the token: nothing in app.user_middleware shows it
    app.add_middleware(_TokenGate, check=lambda presented: hmac.compare_digest(presented, gate_token))
    return app
