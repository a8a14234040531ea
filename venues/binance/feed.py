"""The live bar feed of a Binance venue: ``core.engine.Feed`` over the
adapter's REST klines and kline streams (issue 6).

* **Warm-up** (:meth:`BinanceLiveFeed.prepare`, then ``warmup()``): on a new
  run, the last ``warmup_bars`` closed bars of each instrument from ``GET
  /api/v3/klines`` (:meth:`~venues.binance.adapter.BinanceVenue.fetch_bars`,
  exact strings), asked from an explicit ``startTime`` = the open of the
  N-th closed bar before the venue's time, in pages of 1,000 (Binance's
  largest ``limit``). On a continued run (after ``load_state_dict``) the
  bars closed since the last bar the engine processed, at most
  ``warmup_bars`` of them: the models observe them without trading (the
  engine's ``warm_up``), so a restart never trades a bar twice and never
  trades on bars that closed while the desk was down.
* **Steps** (``await next_step()``): the next closed bars from
  :meth:`~venues.binance.adapter.BinanceVenue.next_bars` (the kline
  streams through ccxt.pro, REST polling while they are down), grouped by
  close time, one group per step, oldest first, each bar once. Bars the
  stream skipped (a bar that closed between the warm-up and the
  subscription, or during a reconnect) are fetched over REST before the
  bar that revealed the gap. While the venue polls REST and has no new bar,
  the feed waits until the next bar should have closed (``poll_grace_ns``
  after it, at least ``poll_min_ns``). A failed read (``VenueError``) is
  logged and retried after ``min(2**n, 60)`` s. :meth:`stop` ends a pending
  step at once with ``[]``, which ends the engine's run (``finite`` is
  False, so no end-of-data cancel).
* **State** (``state_dict``): the open time of the last bar handed to the
  engine per instrument, and the venue's own restart state when it has one
  (USD-M: the funding cursor); the engine checkpoints it with each step.

Waits use the injected ``sleep`` (default ``asyncio.sleep``; wall seconds) and
the venue's clock (``venue.clock``, plus the measured ``clock_offset_ms``) for
what "now" is at Binance.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable

from core.data import Bar
from core.identifiers import InstrumentId
from core.livefeed import LiveFeedBase
from core.venue_errors import VenueError
from venues.klines import INTERVALS_NS

log = logging.getLogger("desk.venues.binance.feed")

NANOS_PER_MS = 1_000_000
NANOS_PER_SECOND = 1_000_000_000
#: Binance's largest ``limit`` of ``GET /api/v3/klines``
KLINES_PAGE = 1000


class BinanceLiveFeed(LiveFeedBase):
    """Closed bars of a started :class:`~venues.binance.adapter.BinanceVenue`
    (see the module docstring).

    Args:
        venue: the started venue (its ``instruments``, ``clock``,
            ``fetch_bars`` and ``next_bars`` are used).
        instruments: the instrument ids fed (default: every instrument of the
            venue).
        interval: Binance's kline interval (``1m``; fixed-length intervals
            only, ``venues.klines.INTERVALS_NS``).
        warmup_bars: closed bars per instrument the models observe before
            trading on a new run (at most this many on a continued run).
        sleep: ``await sleep(seconds)`` (tests pass a fake).
        poll_grace_ns: how long after a bar's close the REST poll asks for it
            (Binance publishes the closed kline within a second or two).
        poll_min_ns: the shortest wait between two REST polls.
        ws_retry_ns: how often the venue tries its kline stream again while
            polling REST (passed to ``next_bars``).

    Raises:
        ValueError: an unknown interval, a negative ``warmup_bars``, or an
            instrument the venue does not trade (named).
    """

    finite = False

    def __init__(self, venue: Any, instruments: Iterable[InstrumentId] | None = None, interval: str = "1m",
                 warmup_bars: int = 0, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 poll_grace_ns: int = 2 * NANOS_PER_SECOND, poll_min_ns: int = NANOS_PER_SECOND,
                 ws_retry_ns: int = 30 * NANOS_PER_SECOND) -> None:
        step = INTERVALS_NS.get(interval)
        if step is None:
            raise ValueError(f"interval: {interval!r} is not a fixed-length Binance kline interval")
        self._setup(venue, instruments, venue.instruments, "traded by venue", interval, step, warmup_bars, sleep)
        self.poll_grace_ns = int(poll_grace_ns)
        self.poll_min_ns = int(poll_min_ns)
        self.ws_retry_ns = int(ws_retry_ns)
        self._prepared = False
        #: bars fetched over REST to fill a gap the stream left
        self.gap_bars = 0

    # ------------------------------------------------------------ time
    def _venue_now_ns(self) -> int:
        return int(self.venue.clock.timestamp_ns()) + int(getattr(self.venue, "clock_offset_ms", 0)) * NANOS_PER_MS

    def _last_closed_open_ns(self) -> int:
        """Open time of the last bar closed at the venue's time."""
        return (self._venue_now_ns() // self.step_ns) * self.step_ns - self.step_ns

    def _seed_venue(self, iid: InstrumentId, ts_open: int) -> None:
        """Tell the adapter which bar was delivered last, so its stream and
        its REST fallback continue after it (``BinanceVenue._last_bar_ts``,
        the adapter's own dedup; same package)."""
        last = getattr(self.venue, "_last_bar_ts", None)
        if isinstance(last, dict) and ts_open > last.get(iid, -1):
            last[iid] = ts_open

    # ------------------------------------------------------------ REST
    async def _fetch_range(self, iid: InstrumentId, start_ns: int, end_open_ns: int) -> list[Bar]:
        """Closed bars of ``iid`` opened in ``[start_ns, end_open_ns]``,
        oldest first, in pages of 1,000 from ``startTime``.

        Raises:
            TransientVenueError, VenueThrottled: a read failed.
        """
        out: list[Bar] = []
        since = start_ns
        while since <= end_open_ns:
            page = await self.venue.fetch_bars(iid, self.interval, since_ms=since // NANOS_PER_MS, limit=KLINES_PAGE)
            page = [b for b in page if since <= b.ts_open <= end_open_ns]
            if not page:
                break
            out += page
            since = page[-1].ts_open + self.step_ns
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the bars of ``state`` (:meth:`LiveFeedBase.load_state_dict`)
        and tell the adapter which bar each instrument had last.

        Raises:
            ValueError: a state of another interval (named).
        """
        super().load_state_dict(state)
        for iid, t in self.last.items():
            self._seed_venue(iid, t)
        load = getattr(self.venue, "load_state_dict", None)
        if load is not None and state.get("venue") is not None:
            load(state["venue"])

    def state_dict(self) -> dict[str, Any]:
        """The shared feed state (``LiveFeedBase.state_dict``) plus, under
        ``"venue"``, the venue's own restart state when it has one (USD-M:
        the funding cursor, ``BinanceUsdmVenue.state_dict``), so the engine's
        checkpoint keeps it with the portfolio it matches."""
        out = super().state_dict()
        state = getattr(self.venue, "state_dict", None)
        if state is not None:
            out["venue"] = state()
        return out

    async def prepare(self) -> int:
        """Fetch the warm-up bars over REST (module docstring): the last
        ``warmup_bars`` closed bars per instrument on a new run, the bars
        closed since the last one processed on a continued run. Returns how
        many; ``warmup()`` hands them over.

        Raises:
            TransientVenueError, VenueThrottled: a read failed (the venue is
                unreachable at start: exit 2).
        """
        last_closed = self._last_closed_open_ns()
        bars: list[Bar] = []
        for iid in self.instruments:
            if iid in self.last:
                start = max(self.last[iid] + self.step_ns, last_closed - (self.warmup_bars - 1) * self.step_ns)
            else:
                start = last_closed - (self.warmup_bars - 1) * self.step_ns
            got = await self._fetch_range(iid, start, last_closed) if self.warmup_bars > 0 else []
            got = got[-self.warmup_bars:] if self.warmup_bars else []
            if got:
                self._seen[iid] = got[-1].ts_open
                self.last[iid] = got[-1].ts_open
                self._seed_venue(iid, got[-1].ts_open)
            bars += got
        self._warm = sorted(bars, key=lambda b: (b.ts_event, str(b.instrument_id)))
        self._prepared = True
        if self._warm:
            log.info("%s: %d warm-up bar(s) of %s over REST, the last closing at %d ns", self.venue.venue,
                     len(self._warm), ", ".join(str(i) for i in self.instruments), self._warm[-1].ts_event)
        return len(self._warm)

    # ------------------------------------------------------------ steps
    async def _accept(self, bars: list[Bar]) -> None:
        """Buffer the bars not seen yet; a bar that reveals a gap after the
        last one seen first has the gap fetched over REST."""
        for b in sorted(bars, key=lambda b: (b.ts_open, str(b.instrument_id))):
            iid = b.instrument_id
            if iid not in self.instruments:
                continue
            seen = self._seen.get(iid)
            if seen is not None and b.ts_open <= seen:
                continue
            if seen is not None and b.ts_open > seen + self.step_ns:
                gap = await self._fetch_range(iid, seen + self.step_ns, b.ts_open - self.step_ns)
                if gap:
                    log.warning("%s: %d bar(s) the stream skipped fetched over REST (%d..%d ns)", iid, len(gap),
                                gap[0].ts_open, gap[-1].ts_open)
                    self.gap_bars += len(gap)
                self._buffer += gap
            self._buffer.append(b)
            self._seen[iid] = b.ts_open

    def _poll_wait_ns(self) -> int:
        """While polling REST: how long until the next bar should be
        published (its close + the grace), at least ``poll_min_ns``."""
        if self._seen:
            next_close = min(self._seen.get(i, self._last_closed_open_ns()) for i in self.instruments) \
                + 2 * self.step_ns
        else:
            next_close = self._last_closed_open_ns() + 2 * self.step_ns
        return max(next_close + self.poll_grace_ns - self._venue_now_ns(), self.poll_min_ns)

    async def next_step(self) -> list[Bar]:
        """The bars of the next close time (module docstring); ``[]`` once
        :meth:`stop` was called. Venue errors are retried, never raised."""
        while True:
            if self._buffer:
                return self._pop_step()
            if self._stopped:
                return []
            try:
                ok, bars = await self._until_stopped(
                    self.venue.next_bars(self.interval, ws_retry_ns=self.ws_retry_ns))
                if not ok:
                    return []
                await self._accept(bars)
                self.failures = 0
            except VenueError as exc:
                self.failures += 1
                wait_s = min(2 ** (self.failures - 1), 60)
                log.warning("%s: bars could not be read (%s); trying again in %d s", self.venue.venue, exc, wait_s)
                if not (await self._until_stopped(self.sleep(wait_s)))[0]:
                    return []
                continue
            if not self._buffer and getattr(self.venue, "md_mode", "ws") == "rest":
                if not (await self._until_stopped(self.sleep(self._poll_wait_ns() / NANOS_PER_SECOND)))[0]:
                    return []

    # ------------------------------------------------------------ state