"""``desk attach``: the TUI driven by a daemon's control API (issue 8, "Attach").

The daemon here is the real API (``desk.api.create_app``) over a scripted SIM
engine (tests/app/engines.py) in the test's tmp_path, reached through
:class:`StreamingTransport`: an httpx transport that runs the ASGI app in
the test's loop and hands the response body over chunk by chunk (httpx's own
``ASGITransport`` waits for the whole body, which an endless SSE stream never
ends). ``cut()`` makes it fail like a dropped connection (open streams get a
read error, new requests a connect error); ``restore()`` brings it back.

Nothing sleeps: the daemon's stream hub is polled by hand (``hub.poll()``),
the mirror's waits (reconnection backoff, halt retries) go through
:class:`GatedSleep`, which returns only when the test opens the gate, and the
kill switch's double press uses a ``TestClock``.

Right values come from the daemon's own engine and store (not from the
mirror): its working orders and positions, its trading state, its committed
journal sequence numbers.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import TestClock
from core.enums import OrderStatus, TradingState
from desk.api import create_app
from desk.attach import AttachedApp, attach_main, fmt_wall
from desk.remote import LINK_DOWN, LINK_LIVE, RemoteEngine, iter_sse
from tests.app.conftest import settle
from tests.app.engines import close_engine, place_resting_buys, scripted_sim_engine

TOKEN = "attach-test-token-0123456789abcdef"
URL = "http://daemon.test:8002"
SEC = 1_000_000_000
#: the wall clock of the mirror ("last state at"): 2025-01-02 03:04:05 UTC
WALL0 = 1_735_787_045 * SEC
#: small scripted targets (as tests/api/conftest.py): cash stays free for the resting buys
SMALL_TARGETS = {"hmm_v1": ["0.1", "0.2", "0", "0.1"], "hmm_v2_canary": ["0.2", "0", "0.1"]}


# ---------------------------------------------------------------- the transport
class _Body(httpx.AsyncByteStream):
    """A response body fed by the ASGI app's ``send`` as it runs."""

    def __init__(self, transport: "StreamingTransport", queue: asyncio.Queue, gone: asyncio.Event,
                 task: asyncio.Task) -> None:
        self.transport = transport
        self.queue = queue
        self.gone = gone
        self.task = task

    async def __aiter__(self):
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def fail(self) -> None:
        self.queue.put_nowait(httpx.ReadError("connection reset by peer (test)"))

    async def aclose(self) -> None:
        self.transport.open.discard(self)
        self.gone.set()
        if not self.task.done():
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, Exception):
                self.task.cancel()


class StreamingTransport(httpx.AsyncBaseTransport):
    """httpx → ASGI in the same loop, streaming (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.down = False
        self.open: set[_Body] = set()
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused (test: daemon unreachable)", request=request)
        body = await request.aread()
        self.requests.append((request.method, request.url.path, dict(request.headers)))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        started: asyncio.Future = loop.create_future()
        gone = asyncio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                if gone.is_set():
                    raise OSError("client gone")
                if message.get("body"):
                    queue.put_nowait(message["body"])
                if not message.get("more_body", False):
                    queue.put_nowait(None)

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": request.method, "scheme": "http", "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0], "root_path": "",
            "query_string": request.url.query, "server": ("daemon.test", 8002), "client": ("127.0.0.1", 5555),
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
        }
        task = loop.create_task(self.app(scope, receive, send))
        await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            task.result()  # raises the app's error
            raise httpx.RemoteProtocolError("no response", request=request)
        start = started.result()
        stream = _Body(self, queue, gone, task)
        self.open.add(stream)
        return httpx.Response(start["status"], headers=[(k, v) for k, v in start.get("headers", [])],
                              stream=stream, request=request)

    def cut(self) -> None:
        """The connection drops: open bodies fail, new requests are refused."""
        self.down = True
        for b in list(self.open):
            b.fail()

    def restore(self) -> None:
        """The daemon is reachable again."""
        self.down = False


class GatedSleep:
    """``await sleep(s)`` that returns only when the test calls :meth:`open`
    (every waiter at that moment returns); the asked delays are recorded."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        gate = self._gate
        await gate.wait()

    def open(self) -> None:
        gate, self._gate = self._gate, asyncio.Event()
        gate.set()


# ---------------------------------------------------------------- the daemon
class Daemon:
    """A scripted SIM engine with resting buys, its API app and the transport."""

    def __init__(self, engine: Any, app: Any, coids: list[str]) -> None:
        self.engine = engine
        self.app = app
        self.coids = coids
        self.transport = StreamingTransport(app)

    @property
    def hub(self) -> Any:
        return self.app.state.runtime.hub

    def head(self) -> int:
        return int(self.engine.store.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0])

    def seqs_after(self, seq: int) -> list[int]:
        return [r[0] for r in self.engine.store.conn.execute("SELECT seq FROM journal WHERE seq > ? ORDER BY seq",
                                                              (seq,))]

    async def run_bars(self, n: int) -> None:
        await self.engine.run(max_bars=n)
        self.engine.flush()


@pytest.fixture
async def daemon(tmp_path: Path):
    engine = scripted_sim_engine(tmp_path / "daemon", targets=SMALL_TARGETS)
    await engine.warm_up()
    await engine.run(max_bars=6)
    coids = await place_resting_buys(engine, 3)
    app = create_app(engine, token=TOKEN, poll_interval_s=None, sample_interval_s=None, heartbeat_s=3600.0)
    d = Daemon(engine, app, coids)
    yield d
    await app.state.runtime.stop()
    app.state.runtime.metrics.detach()
    close_engine(engine)


async def _mirror(d: Daemon, sleep: GatedSleep, wall: TestClock) -> RemoteEngine:
    m = RemoteEngine(URL, TOKEN, transport=d.transport, wall_clock=wall, sleep=sleep, refresh_interval=None)
    await m.connect()
    return m


async def _caught_up(pilot: Any, d: Daemon, m: RemoteEngine) -> None:
    """Push the daemon's committed events to the stream and wait until the
    mirror has applied them all (and the panes have their batch)."""
    def done() -> bool:
        d.hub.poll()
        return m.last_seq == d.head() and m.link_state == LINK_LIVE
    assert await settle(pilot, done), (m.last_seq, d.head(), m.link_state, m.link_reason)
    await pilot.pause()


def _order_row(app: Any, coid: str) -> dict[str, str]:
    """The orders pane's cells of one order, as shown."""
    slot = app.orders_pane.shown_ids().index(coid)
    texts = app.orders_pane.table._rows_put[f"s{slot}"]
    return {k: t.plain for k, t in texts.items()}


# ---------------------------------------------------------------- tests
async def test_panes_show_the_daemons_orders_and_positions(daemon, wall):
    d = daemon
    sleep, clock = GatedSleep(), TestClock(WALL0)
    m = await _mirror(d, sleep, clock)
    app = AttachedApp(m, wall_clock=wall, install_signals=False)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await _caught_up(pilot, d, m)
            e = d.engine
            # orders: the three resting buys the daemon holds, ACCEPTED, at the daemon's prices
            working = {o.client_order_id for o in e.working_orders()}
            assert set(d.coids) <= working
            for coid in d.coids:
                o = e.orders[coid]
                row = _order_row(app, coid)
                assert row["status"] == "ACCEPTED" and row["side"] == "BUY"
                assert Decimal(row["price"].replace(",", "")) == o.price
                assert Decimal(row["qty"].replace(",", "")) == o.quantity
            assert app.orders_pane.border_subtitle.startswith(f"{len(working)} working")
            # positions: each (model, instrument) the daemon holds, same quantity, same unrealized PnL
            held = {k: p for k, p in e.portfolio.positions.items() if p.quantity}
            assert held, "the scripted models hold positions after 6 bars"
            t = app.positions_pane.table
            for (mid, iid), pos in held.items():
                cells = {k: v[0] for k, v in t._raw[f"{mid}|{iid}"].items()}
                shown = Decimal(cells["qty"].replace(",", ""))
                step = e.instruments[iid].step_size
                # as the embedded desk shows it: rounded down to the daemon's step (which the mirror
                # learns from the order quantities, already at the step, until the API gives filters)
                assert m.instruments[iid].step_size == step
                assert shown == (pos.quantity // step) * step
                mark = e.portfolio.marks[iid]
                unreal = (pos.quantity * mark - pos.cost).quantize(Decimal("0.01"))
                assert Decimal(cells["unreal"].replace(",", "").replace("+", "")) == unreal
            # the header names the daemon and its engine clock
            assert app.header.info.market.endswith("@ daemon.test:8002")
            assert app.header.info.state == "ACTIVE"
            assert app.header.info.clock_ns == e.clock.timestamp_ns()
            assert not app.link_text and not app.halt_text
            # a bar later at the daemon: its new events reach the panes
            before = d.head()
            await d.run_bars(2)
            assert d.head() > before
            await _caught_up(pilot, d, m)
            await m.refresh()  # the refresher's job (every second in the app): the continuous figures
            app.sample(force=True)
            assert app.header.info.clock_ns == e.clock.timestamp_ns()
            assert app.header.info.bars == e.stats.bars
            await app.shutdown(False)
    finally:
        await m.aclose()


async def test_ctrl_k_twice_halts_the_daemon(daemon, wall):
    d = daemon
    sleep, clock = GatedSleep(), TestClock(WALL0)
    m = await _mirror(d, sleep, clock)
    app = AttachedApp(m, wall_clock=wall, install_signals=False)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await _caught_up(pilot, d, m)
            before = [o.client_order_id for o in d.engine.working_orders()]
            assert set(d.coids) <= set(before)
            await pilot.press("ctrl+k")
            assert d.engine.trading_state == TradingState.ACTIVE  # one press only arms
            wall.advance(SEC)
            await pilot.press("ctrl+k")
            await app.wait_governance()
            e = d.engine
            assert e.trading_state == TradingState.HALTED
            assert all(e.orders[c].status == OrderStatus.CANCELED for c in before)
            assert app.last_halt_count == len(before)  # the cancels the daemon sent
            who, reason = e.store.conn.execute(
                "SELECT who, reason FROM governance_actions WHERE action='HALTED'").fetchone()
            assert who == "api:127.0.0.1" and reason == "kill switch (ctrl+k twice) (tui via desk attach)"
            # the stream brings the halt and the cancels back to the screen
            await _caught_up(pilot, d, m)
            assert m.trading_state == TradingState.HALTED
            assert app.banner.has_class("-halted")
            assert all(_order_row(app, c)["status"] == "CANCELED" for c in before)
            assert app.orders_pane.border_subtitle.startswith("0 working")
            assert not m.halt_pending and not app.halt_text
            await app.shutdown(False)
    finally:
        await m.aclose()


async def test_a_drop_shows_at_once_greys_the_panes_and_a_halt_waits_for_the_reconnect(daemon, wall):
    d = daemon
    sleep, clock = GatedSleep(), TestClock(WALL0)
    m = await _mirror(d, sleep, clock)
    app = AttachedApp(m, wall_clock=wall, install_signals=False)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await _caught_up(pilot, d, m)
            last_state = m.last_update_ns
            assert last_state == WALL0
            clock.advance(7 * SEC)  # the wall clock moves on; the last state stays at 03:04:05
            d.transport.cut()
            assert await settle(pilot, lambda: m.link_state == LINK_DOWN)
            # at once: no wait was granted (the gate is still closed)
            assert app.link_text == "DISCONNECTED — reconnecting (last state at 03:04:05 UTC)"
            assert app.link_banner.has_class("-down")
            assert app.query_one("#panes").has_class("-stale")
            assert app.query_one("#panes").styles.opacity == 0.45  # greyed (AttachedApp.CSS)
            assert str(app.link_banner.render()) == app.link_text
            shown = list(app.orders_pane.shown_ids())
            assert set(d.coids) <= set(shown)  # the last state stays on screen
            # the halt pressed while disconnected is not delivered ...
            await pilot.press("ctrl+k")
            wall.advance(SEC // 2)
            await pilot.press("ctrl+k")
            await app.wait_governance()
            assert m.halt_pending
            assert app.halt_text == ("HALT NOT DELIVERED — retrying until the daemon acknowledges "
                                     "(daemon unreachable; attempt 1 since 03:04:12 UTC)")
            assert app.halt_banner.has_class("-pending")
            assert d.engine.trading_state == TradingState.ACTIVE
            # ... retries while the daemon stays unreachable ...
            sleep.open()
            assert await settle(pilot, lambda: m.halt is not None and m.halt.attempts >= 2)
            assert d.engine.trading_state == TradingState.ACTIVE
            assert app.halt_text.startswith("HALT NOT DELIVERED")
            # ... resume is refused locally while the halt waits
            m.governance.resume("tui", "test")
            assert d.engine.trading_state == TradingState.ACTIVE
            # ... and is delivered once the daemon is back: the engine halts, both lines clear
            d.transport.restore()
            sleep.open()
            assert await settle(pilot, lambda: d.engine.trading_state == TradingState.HALTED)
            await _caught_up(pilot, d, m)
            assert not m.halt_pending
            assert await settle(pilot, lambda: not app.halt_text and not app.link_text)
            assert not app.halt_banner.has_class("-pending") and not app.link_banner.has_class("-down")
            assert not app.query_one("#panes").has_class("-stale")
            assert all(d.engine.orders[c].status == OrderStatus.CANCELED for c in d.coids)
            assert m.trading_state == TradingState.HALTED and app.banner.has_class("-halted")
            await app.shutdown(False)
    finally:
        await m.aclose()


async def test_the_stream_resumes_after_the_last_id_without_gaps(daemon, wall):
    d = daemon
    sleep, clock = GatedSleep(), TestClock(WALL0)
    m = await _mirror(d, sleep, clock)
    first = m.last_seq
    app = AttachedApp(m, wall_clock=wall, install_signals=False)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await d.run_bars(2)
            await _caught_up(pilot, d, m)
            seen_before_drop = m.last_seq
            d.transport.cut()
            assert await settle(pilot, lambda: m.link_state == LINK_DOWN)
            await d.run_bars(3)  # the daemon goes on trading while the link is down
            missed = d.seqs_after(seen_before_drop)
            assert missed, "the daemon journaled events during the drop"
            d.transport.restore()
            sleep.open()
            await _caught_up(pilot, d, m)
            # the reconnection asked for the events after the last one applied
            streams = [h for meth, path, h in d.transport.requests if path == "/stream"]
            assert [int(h["last-event-id"]) for h in streams] == [first, seen_before_drop]
            # every committed sequence after the snapshot, once, in order
            assert list(m.seen_seqs) == d.seqs_after(first)
            assert m.gaps == 0 and m.reconnects == 1
            await app.shutdown(False)
    finally:
        await m.aclose()


async def test_iter_sse_reads_the_whatwg_fields():
    async def lines():
        for ln in ["retry: 1000", "", ": ping", "id: 7", "event: OrderFilled", 'data: {"a":', "data: 1}", "",
                   "id: x", "data: y", "", "event: lonely", ""]:
            yield ln

    got = [e async for e in iter_sse(lines())]
    assert got[0] is None  # the comment
    assert (got[1].id, got[1].event, json.loads(got[1].data)) == (7, "OrderFilled", {"a": 1})
    assert (got[2].id, got[2].event, got[2].data) == (None, "message", "y")
    assert len(got) == 3  # a block without data is no event


def test_apply_sse_skips_repeats_and_counts_jumps():
    m = RemoteEngine(URL, TOKEN, transport=StreamingTransport(None))
    m.last_seq = 10
    alert = json.dumps({"type": "AlertRaised", "v": 1, "ts_event": 5, "ts_init": 5, "level": "INFO",
                        "code": "X", "message": "m"})
    seen: list[Any] = []
    m.bus.subscribe("*", seen.append)
    assert m.apply_sse(10, alert) is False and m.apply_sse(3, alert) is False  # already applied
    assert (m.duplicates, m.gaps, seen) == (2, 0, [])
    assert m.apply_sse(11, alert) is True and m.gaps == 0
    assert m.apply_sse(13, alert) is True and m.gaps == 1  # 12 never came
    assert list(m.seen_seqs) == [11, 13] and m.last_seq == 13
    assert [e.code for e in seen] == ["X", "X"]
    assert m.apply_sse(14, "{not json") is True and len(seen) == 2  # counted, not published
    assert m.clock.timestamp_ns() == 5


def test_fmt_wall():
    assert fmt_wall(WALL0) == "03:04:05 UTC"
    assert fmt_wall(None) == "never"


def test_attach_main_needs_a_token_and_never_takes_one_on_the_command_line(tmp_path, capsys, monkeypatch):
    assert attach_main(URL, None, tmp_path, environ={}) == 2
    assert "no token" in capsys.readouterr().err
    loose = tmp_path / "token"
    loose.write_text("abc\n")
    loose.chmod(0o644)
    assert attach_main(URL, loose, tmp_path, environ={}) == 2
    assert "chmod 600" in capsys.readouterr().err
    from desk.cli import main

    assert main(["attach", URL, "--token", "abc"]) == 2
    assert "no --token flag" in capsys.readouterr().err
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    assert main(["attach", URL, "--state-dir", str(tmp_path)]) == 2  # the CLI reaches attach_main
    assert "no token: set $OPS_TOKEN or pass --token-file" in capsys.readouterr().err


def test_attach_main_unreachable_daemon_exits_1(tmp_path, capsys):
    class Refused(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            raise httpx.ConnectError("connection refused", request=request)

    assert attach_main(URL, None, tmp_path, environ={"OPS_TOKEN": TOKEN}, transport=Refused()) == 1
    err = capsys.readouterr().err
    assert "cannot reach the daemon" in err and TOKEN not in err
