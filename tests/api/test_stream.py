"""``GET /stream``: server-sent events backed by the journal.

What is pinned: every committed journal row arrives once, in order, as
``id: <seq>`` / ``event: <type>`` / ``data: <payload>`` equal to the
journal's own row (``Store.iter_journal``, a second reader of the same
store); a resume with ``Last-Event-ID`` continues at the next sequence with
no gap and no duplicate, after a dropped connection and after an app and
engine restart on the same store; a client that does not read is dropped
when its bounded buffer would overflow while the engine runs on; one test
runs the app under a real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import uvicorn

from tests.api.conftest import (
    AUTH,
    SMALL_TARGETS,
    AsgiStream,
    close_desk,
    new_app,
    open_desk,
    parse_sse,
    pump,
    sim_engine,
)
from tests.app.engines import close_engine, scripted_sim_engine


def journal(engine, after: int) -> list[tuple[int, str, dict]]:
    return list(engine.store.iter_journal(after))


def as_rows(events: list[dict]) -> list[tuple[int, str, dict]]:
    return [(ev["id"], ev["event"], ev["data"]) for ev in events]


async def test_replay_after_last_event_id_then_live_events(desk):
    e = desk.engine
    head = desk.head()
    assert head > 10  # 6 bars of two models: registrations, signals, orders, fills
    k = head - 8
    s = await AsgiStream(desk.app, "/stream", {**AUTH, "Last-Event-ID": str(k)}).start()
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    assert as_rows(s.events()) == journal(e, k)  # the 8 rows after k, from the journal
    await e.run(max_bars=4)
    desk.hub.poll()
    await pump()
    got = s.events()
    assert [ev["id"] for ev in got] == list(range(k + 1, desk.head() + 1))  # contiguous, live part included
    assert as_rows(got) == journal(e, k)
    assert desk.head() > head
    await s.disconnect()
    assert not desk.hub.subscribers


async def test_a_dropped_connection_resumes_with_no_gap_and_no_duplicate(desk):
    e = desk.engine
    h0 = desk.head()
    a = await AsgiStream(desk.app, "/stream", AUTH).start()  # no Last-Event-ID: live from the head
    await e.run(max_bars=2)
    desk.hub.poll()
    await pump()
    seen_a = [ev["id"] for ev in a.events()]
    assert seen_a and seen_a[0] == h0 + 1
    await a.disconnect()  # the connection drops
    last = seen_a[-1]
    await e.run(max_bars=4)  # events the first connection never saw
    b = await AsgiStream(desk.app, "/stream", {**AUTH, "Last-Event-ID": str(last)}).start()
    await e.run(max_bars=2)
    desk.hub.poll()
    await pump()
    seen_b = [ev["id"] for ev in b.events()]
    assert seen_b[0] == last + 1
    assert seen_a + seen_b == list(range(h0 + 1, desk.head() + 1))
    await b.disconnect()


async def test_resume_after_an_app_and_engine_restart_on_the_same_store(tmp_path):
    state = tmp_path / "state"
    e1 = await sim_engine(state)
    d1 = await open_desk(e1)
    s = await AsgiStream(d1.app, "/stream", {**AUTH, "Last-Event-ID": "0"}).start()
    first = [ev["id"] for ev in s.events()]
    assert first == list(range(1, d1.head() + 1))
    last = first[-1]
    await s.disconnect()
    await e1.run(max_bars=4)  # committed after the client left
    h1 = d1.head()
    assert h1 > last
    await close_desk(d1)
    close_engine(e1)

    e2 = scripted_sim_engine(state, targets=SMALL_TARGETS)  # a new process on the same state dir
    e2.restore(e2.store.load_checkpoint()[1])
    d2 = await open_desk(e2)
    s2 = await AsgiStream(d2.app, "/stream", AUTH, query=f"last_event_id={last}").start()
    await e2.run(max_bars=4)
    d2.hub.poll()
    await pump()
    got = s2.events()
    ids = [ev["id"] for ev in got]
    assert ids[: h1 - last] == list(range(last + 1, h1 + 1))  # replayed from the journal
    assert ids == list(range(last + 1, d2.head() + 1))  # then the new engine's events, contiguous
    assert d2.head() > h1
    assert as_rows(got) == journal(e2, last)
    await s2.disconnect()
    await close_desk(d2)
    close_engine(e2)


async def test_a_slow_client_overflows_its_buffer_and_is_dropped_while_the_engine_goes_on(tmp_path):
    e = await sim_engine(tmp_path / "state")
    d = await open_desk(e, stream_queue_size=20)
    slow = AsgiStream(d.app, "/stream", AUTH)
    slow.reading.clear()  # the client reads nothing: the app's first send blocks
    await slow.start()
    fast = await AsgiStream(d.app, "/stream", AUTH).start()
    h0 = d.head()
    bars0 = e.stats.bars
    for _ in range(12):  # one engine step (two bars) per poll: each batch fits a buffer
        await e.run(max_bars=2)
        assert d.hub.poll() <= 20
        await pump()
    assert e.stats.bars == bars0 + 24  # the engine was never held up
    assert d.head() - h0 > 20  # more than the slow client's buffer
    assert d.hub.overflows == 1
    assert len(d.hub.subscribers) == 1  # only the reading client is left
    assert [ev["id"] for ev in fast.events()] == list(range(h0 + 1, d.head() + 1))
    slow.reading.set()  # the client reads at last: it gets the overflow notice and the end of the response
    await asyncio.wait_for(slow.done.wait(), 5)
    assert slow.events() == []
    assert any(c.startswith("overflow") for c in slow.comments())
    await fast.disconnect()
    await slow.task
    await close_desk(d)
    close_engine(e)


async def test_end_streams_completes_open_responses_after_their_events(desk):
    s = await AsgiStream(desk.app, "/stream", AUTH).start()
    h0 = desk.head()
    await desk.engine.run(max_bars=2)  # committed, not yet polled: end_all delivers them first
    assert desk.head() > h0
    assert desk.app.state.runtime.end_streams() == 1
    await asyncio.wait_for(s.done.wait(), 5)
    assert [ev["id"] for ev in s.events()] == list(range(h0 + 1, desk.head() + 1))
    assert any(c.startswith("server shutting down") for c in s.comments())
    await s.disconnect()
    assert not desk.hub.subscribers


async def test_follow_false_replays_and_ends(desk):
    k = desk.head() - 5
    r = await desk.client.get("/stream", params={"last_event_id": k, "follow": "false"}, headers=AUTH)
    assert r.status_code == 200
    events, _ = parse_sse(r.content)
    assert as_rows(events) == journal(desk.engine, k)
    assert len(events) == 5


async def test_bad_or_future_last_event_id(desk):
    r = await desk.client.get("/stream", headers={**AUTH, "Last-Event-ID": "x12"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
    r = await desk.client.get("/stream", params={"last_event_id": -1}, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "last_event_id"]
    ahead = desk.head() + 1
    r = await desk.client.get("/stream", headers={**AUTH, "Last-Event-ID": str(ahead)})
    assert r.status_code == 409
    assert f"Last-Event-ID {ahead}" in r.json()["detail"]
    assert not desk.hub.subscribers


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the test's loop owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def test_sse_over_a_real_loopback_socket_with_heartbeat(tmp_path):
    e = await sim_engine(tmp_path / "state")
    app = new_app(e, poll_interval_s=0.01, heartbeat_s=0.05)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning",
                                    access_log=False, timeout_graceful_shutdown=1))
    serving = asyncio.get_running_loop().create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        k = int(e.store.conn.execute("SELECT MAX(seq) FROM journal").fetchone()[0]) - 3
        buf = b""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            assert (await client.get("/health")).json()["status"] == "ok"
            async with client.stream("GET", "/stream", headers={**AUTH, "Last-Event-ID": str(k)}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                chunks = r.aiter_bytes()
                await e.run(max_bars=2)  # live events while connected, committed and polled by the app
                head = int(e.store.conn.execute("SELECT MAX(seq) FROM journal").fetchone()[0])
                while True:
                    buf += await asyncio.wait_for(chunks.__anext__(), 5)
                    events, comments = parse_sse(buf)
                    if events and events[-1]["id"] == head and "ping" in comments:
                        break  # all events, then a heartbeat while idle
        assert [ev["id"] for ev in events] == list(range(k + 1, head + 1))
        assert [(ev["id"], ev["event"], ev["data"]) for ev in events] == list(e.store.iter_journal(k))
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        await app.state.runtime.stop()
        app.state.runtime.metrics.detach()
        close_engine(e)
    assert not app.state.runtime.tasks
