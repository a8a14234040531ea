"""One venue's supervised task group (``desk.live._venue_group``, issue 6
"Isolation") on the engine clock: the watchdog calls a feed hung after
``HUNG_AFTER_INTERVALS`` bar intervals plus ``HUNG_GRACE_S`` of engine
clock without a bar, the venue is DEGRADED once (one alert), a working
order-update stream does not clear a feed fault (no DEGRADED/CONNECTED
flapping at every watchdog round), and the next bar clears it after a
successful poll of the account. Time moves only through the injected sleep
(nothing waits for real)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import desk.live
from core.clock import TestClock
from core.livefeed import MergedLiveFeed

NANOS = 1_000_000_000


class VirtualTime:
    """Sleeps on the engine clock: ``sleep(s)`` waits until the clock has
    moved ``s`` seconds; :meth:`run_until` lets every ready task run, then
    moves the clock to the earliest wake-up, until ``done()``."""

    def __init__(self, clock: TestClock) -> None:
        self.clock = clock
        self.waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self.n = 0

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.n += 1
        self.waiting.append((self.clock.timestamp_ns() + int(seconds * NANOS), self.n, fut))
        await fut

    async def run_until(self, done: Any, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            for _ in range(20):  # let what is ready run
                await asyncio.sleep(0)
            if done():
                return
            self.waiting = [w for w in self.waiting if not w[2].done()]
            if not self.waiting:
                continue
            self.waiting.sort()
            due, _, fut = self.waiting.pop(0)
            if due > self.clock.timestamp_ns():
                self.clock.set_time(due)
            fut.set_result(None)
        raise AssertionError("virtual time: condition never met")


class Session:
    def __init__(self) -> None:
        self.fault: str | None = None
        self.faults: list[str] = []
        self.cleared = 0

    def mark_fault(self, detail: str) -> None:
        if self.fault is None:
            self.faults.append(detail)  # the real session alerts once per fault, as here
        self.fault = detail

    def clear_fault(self) -> None:
        if self.fault is not None:
            self.cleared += 1
        self.fault = None

    def note_error(self, exc: Exception) -> None:
        pass


class Venue:
    venue = "VB"
    user_mode = "poll"

    def __init__(self) -> None:
        self.reads = 0
        self.polls = 0

    async def next_order_updates(self) -> int:
        self.reads += 1
        return 0

    async def poll(self) -> None:
        self.polls += 1

    def balance(self, asset: str) -> Any:
        raise KeyError(asset)


class HangingFeed:
    """A member feed whose next step waits until ``release`` hands it bars."""

    interval = "1m"

    def __init__(self) -> None:
        self.gate: asyncio.Future[list[Any]] | None = None

    async def next_step(self) -> list[Any]:
        self.gate = asyncio.get_running_loop().create_future()
        return await self.gate

    def release(self, bars: list[Any]) -> None:
        assert self.gate is not None
        self.gate.set_result(bars)

    def stop(self) -> None:
        if self.gate is not None and not self.gate.done():
            self.gate.set_result([])


async def test_a_hung_feed_is_degraded_once_and_cleared_by_its_next_bar(monkeypatch):
    monkeypatch.setattr(desk.live, "HUNG_AFTER_INTERVALS", 2)
    monkeypatch.setattr(desk.live, "HUNG_GRACE_S", 60.0)
    monkeypatch.setattr(desk.live, "WATCH_EVERY_S", 5.0)
    clock = TestClock(1_700_000_000 * NANOS)
    session, venue, member = Session(), Venue(), HangingFeed()

    vt = VirtualTime(clock)
    sleep = vt.sleep

    feed = MergedLiveFeed({"VB": member})
    engine = SimpleNamespace(clock=clock, session=SimpleNamespace(sessions={"VB": session}))
    built = SimpleNamespace(engine=engine, feed=feed, venue=venue)
    task = asyncio.create_task(desk.live._venue_group(built, "VB", venue, sleep))
    start = clock.timestamp_ns()
    # limit = 2 x 60 s + 60 s = 180 s of engine clock without a bar, looked at every 5 s: fires at 185 s
    await vt.run_until(lambda: session.fault is not None)
    assert session.faults == ["VenueHung: no bar from its feed for 185.0 s (limit 180.0 s)"]
    assert clock.timestamp_ns() - start >= 185 * NANOS
    # the order updates go on (polled every 10 s) and the group restarts (backoff 2 s): the fault stays,
    # alerted once, however many reads and watchdog rounds pass
    reads = venue.reads
    t1 = clock.timestamp_ns()
    await vt.run_until(lambda: clock.timestamp_ns() - t1 >= 600 * NANOS)
    assert venue.reads > reads + 10
    assert session.fault is not None and len(session.faults) == 1 and session.cleared == 0
    # a bar comes: the account is polled first, then the fault clears (the session reconciles on fresh reads)
    polls = venue.polls
    await vt.run_until(lambda: member.gate is not None and not member.gate.done())
    member.release(["bar"])
    await vt.run_until(lambda: session.fault is None)
    assert venue.polls == polls + 1 and session.cleared == 1
    assert await feed.next_step() == ["bar"]
    feed.stop()
    await asyncio.wait_for(task, 5)  # the feed stopped: the group ends


async def test_a_disconnected_venue_is_not_called_hung(monkeypatch):
    # no bar for 10 minutes while the adapter says it is disconnected (a gateway restart): the header already
    # reads DISCONNECTED and the adapter reconnects; the watchdog does not add a fault and restart the group
    monkeypatch.setattr(desk.live, "HUNG_AFTER_INTERVALS", 2)
    monkeypatch.setattr(desk.live, "HUNG_GRACE_S", 60.0)
    monkeypatch.setattr(desk.live, "WATCH_EVERY_S", 5.0)
    clock = TestClock(1_700_000_000 * NANOS)
    vt = VirtualTime(clock)
    session, venue, member = Session(), Venue(), HangingFeed()
    venue.is_connected = lambda: False  # type: ignore[attr-defined]
    feed = MergedLiveFeed({"VB": member})
    built = SimpleNamespace(engine=SimpleNamespace(clock=clock, session=SimpleNamespace(sessions={"VB": session})),
                            feed=feed, venue=venue)
    task = asyncio.create_task(desk.live._venue_group(built, "VB", venue, vt.sleep))
    t0 = clock.timestamp_ns()
    await vt.run_until(lambda: clock.timestamp_ns() - t0 >= 600 * NANOS)
    assert session.faults == []
    feed.stop()
    await vt.run_until(lambda: task.done())


async def test_a_futures_venue_has_its_positions_read_every_minute():
    # the liquidation-price check (BinanceUsdmVenue.position_risk) runs in the venue's task group: 10 minutes of
    # engine clock and a half -> 10 reads; a read that fails is logged and the group goes on (no fault)
    clock = TestClock(1_700_000_000 * NANOS)
    vt = VirtualTime(clock)
    session, venue = Session(), Venue()
    reads = []

    async def position_risk():
        reads.append(clock.timestamp_ns())
        if len(reads) == 3:
            from core.venue_errors import TransientVenueError
            raise TransientVenueError("timeout", "read timed out")
        return {}

    venue.position_risk = position_risk  # type: ignore[attr-defined]
    built = SimpleNamespace(engine=SimpleNamespace(clock=clock, session=SimpleNamespace(sessions={"VB": session})),
                            feed=SimpleNamespace(), venue=venue)
    task = asyncio.create_task(desk.live._venue_group(built, "VB", venue, vt.sleep))
    t0 = clock.timestamp_ns()
    await vt.run_until(lambda: clock.timestamp_ns() - t0 >= 630 * NANOS)
    assert len(reads) == 10 and session.faults == []
    assert [t - t0 for t in reads[:2]] == [60 * NANOS, 120 * NANOS]
    task.cancel()
