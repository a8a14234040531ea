"""What the live bar feeds of every venue share (``venues.binance.feed``,
``venues.ibkr.feed``): the warm-up hand-over, a stop that ends a pending
step at once, one step per close time, and the restart state (the last bar
handed to the engine per instrument).

A subclass sets, in its ``__init__``: ``interval`` (``"1m"``), ``_warm``
(the warm-up bars its ``prepare`` fetched), ``_buffer`` (bars fetched and
not handed over yet), ``last`` and ``_seen`` (per instrument, the open time
in UTC ns of the last bar handed over / fetched), ``_stop`` (None) and
``_stopped`` (False); and implements ``async next_step()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable

from core.data import Bar
from core.identifiers import InstrumentId


class LiveFeedBase:
    """The shared part of a live feed (module docstring)."""

    interval: str
    _warm: list[Bar]
    _buffer: list[Bar]
    last: dict[InstrumentId, int]
    _seen: dict[InstrumentId, int]
    _stop: asyncio.Event | None
    _stopped: bool

    #: a live feed never ends by itself
    finite = False

    def _setup(self, venue: Any, instruments: Any, known: Any, what: str, interval: str, step_ns: int,
               warmup_bars: int, sleep: Any) -> None:
        """What every live feed's ``__init__`` sets: the venue, its
        instruments (default all of ``venue.instruments``, sorted), the
        interval and its length (ns), the warm-up length, the sleep, and the
        empty restart state (``last``, ``_seen``, ``_buffer``, ``_warm``,
        ``_stop``, ``failures``).

        Raises:
            ValueError: a negative ``warmup_bars``, or an instrument not in
                ``known`` (the venue's ``what``), naming it."""
        if warmup_bars < 0:
            raise ValueError(f"warmup_bars: must be >= 0, got {warmup_bars}")
        self.venue = venue
        self.instruments = sorted(instruments if instruments is not None else venue.instruments, key=str)
        for iid in self.instruments:
            if iid not in known:
                raise ValueError(f"instruments: {iid} is not {what} {venue.venue}")
        self.interval = interval
        self.step_ns = step_ns
        self.warmup_bars = int(warmup_bars)
        self.sleep = sleep
        #: open time (ns) of the last bar handed to the engine, per instrument (the resume point)
        self.last = {}
        #: open time of the last bar fetched (handed over or waiting in the buffer), per instrument
        self._seen = {}
        self._buffer = []
        self._warm = []
        self._stop = None
        self._stopped = False
        self.failures = 0

    def warmup(self) -> list[Bar]:
        """The bars fetched by ``prepare`` (then forgotten); ``[]`` when it
        was not called."""
        bars, self._warm = self._warm, []
        return bars

    def stop(self) -> None:
        """End a pending or the next ``next_step`` with ``[]``."""
        self._stopped = True
        if self._stop is not None:
            self._stop.set()

    async def _until_stopped(self, aw: Awaitable[Any]) -> tuple[bool, Any]:
        """Await ``aw`` unless :meth:`stop` comes first (then it is
        cancelled): ``(True, result)`` or ``(False, None)``."""
        if self._stop is None:
            self._stop = asyncio.Event()
            if self._stopped:
                self._stop.set()
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller was cancelled (the app quit): nothing is left running
            task.cancel()
            raise
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return False, None
        return True, task.result()

    def _pop_step(self) -> list[Bar]:
        """The buffered bars of the earliest close time (one per
        instrument), ordered by instrument id."""
        self._buffer.sort(key=lambda b: (b.ts_event, str(b.instrument_id)))
        ts = self._buffer[0].ts_event
        step = [b for b in self._buffer if b.ts_event == ts]
        self._buffer = [b for b in self._buffer if b.ts_event != ts]
        for b in step:
            self.last[b.instrument_id] = max(self.last.get(b.instrument_id, -1), b.ts_open)
        return step

    def state_dict(self) -> dict[str, Any]:
        """``{"interval": "1m", "last": {"BTCUSDT.BINANCE": <open ns>}}``:
        the last bar handed to the engine per instrument."""
        return {"interval": self.interval, "last": {str(i): t for i, t in sorted(self.last.items(), key=str)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the bars of ``state`` (call ``prepare`` after it
        for the catch-up bars).

        Raises:
            ValueError: a state of another interval (named).
        """
        if state.get("interval", self.interval) != self.interval:
            raise ValueError(f"feed state: interval {state.get('interval')!r} differs from {self.interval!r}")
        self.last = {InstrumentId.parse(i): int(t) for i, t in state.get("last", {}).items()}
        self._seen = dict(self.last)


class MergedLiveFeed:
    """The live feed of a multi-venue desk (issue 6, "Isolation"): one
    member feed per venue, each pumped by its venue's own task group
    (``desk.live``), their steps handed to the engine in the order they
    arrive. A venue whose feed fails or hangs stops adding steps; the others
    go on (the engine never waits on one venue's bars).

    Args:
        feeds: venue name -> that venue's live feed (``LiveFeedBase``).

    Attributes:
        feeds: as given.
        last_step_at: venue name -> the clock time (UTC ns, the ``now_ns``
            given to :meth:`pump`: the engine clock) its feed last handed a
            step over (the watchdog's measure).
    """

    finite = False

    def __init__(self, feeds: dict[str, Any]) -> None:
        if not feeds:
            raise ValueError("feeds: no venue feed")
        self.feeds = dict(feeds)
        self._queue: asyncio.Queue[list[Bar]] | None = None
        self._stop: asyncio.Event | None = None
        self._stopped = False
        self.last_step_at: dict[str, int] = {}

    def _q(self) -> "asyncio.Queue[list[Bar]]":
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def prepare(self) -> int:
        """Each member's ``prepare`` (warm-up or catch-up bars); their total."""
        n = 0
        for f in self.feeds.values():
            n += int(await f.prepare())
        return n

    def warmup(self) -> list[Bar]:
        """Every member's warm-up bars, by close time then instrument."""
        bars = [b for f in self.feeds.values() for b in f.warmup()]
        bars.sort(key=lambda b: (b.ts_event, str(b.instrument_id)))
        return bars

    async def pump(self, name: str, now_ns: Any, on_step: Any = None) -> None:
        """Forever (until stopped): venue ``name``'s steps into the queue the
        engine reads; ``on_step(name)`` after each; ``now_ns()`` (the engine
        clock, UTC ns) stamps ``last_step_at``. Raises what the member feed
        raises (its venue's task group handles it)."""
        feed = self.feeds[name]
        self.last_step_at.setdefault(name, now_ns())
        while not self._stopped:
            bars = await feed.next_step()
            if not bars:
                return  # stopped
            self.last_step_at[name] = now_ns()
            self._q().put_nowait(bars)
            if on_step is not None:
                on_step(name)

    async def next_step(self) -> list[Bar]:
        """The next step any venue handed over; ``[]`` once stopped."""
        if self._stopped:
            return []
        if self._stop is None:
            self._stop = asyncio.Event()
        getter = asyncio.ensure_future(self._q().get())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        return []

    def stop(self) -> None:
        """Stop every member and end a pending ``next_step`` with ``[]``."""
        self._stopped = True
        for f in self.feeds.values():
            f.stop()
        if self._stop is not None:
            self._stop.set()

    def state_dict(self) -> dict[str, Any]:
        """``{"venues": {name: member state}}`` (each member's
        ``state_dict``)."""
        return {"venues": {n: f.state_dict() for n, f in self.feeds.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore each member from :meth:`state_dict` output (a venue new
        to this state dir starts fresh).

        Raises:
            ValueError: a member refuses its state (named)."""
        for n, s in state.get("venues", {}).items():
            if n in self.feeds:
                self.feeds[n].load_state_dict(s)
