"""The live bar feed of an IBKR venue: ``core.engine.Feed`` over IB's
historical bars (issue 6).

IB has no stream of closed 1-minute bars (``reqRealTimeBars`` sends 5-second
bars, ``keepUpToDate`` sends the bar still forming); the feed asks
``reqHistoricalData`` (ib_async ``reqHistoricalDataAsync``) once a bar should
have closed, like a REST poll:

* **Warm-up** (:meth:`IbkrLiveFeed.prepare`, then ``warmup()``): the last
  ``warmup_bars`` closed bars per contract (``endDateTime=""``: up to now,
  ``durationStr`` covering them, ``useRTH=False``), on a continued run only
  the bars closed since the last one processed (at most ``warmup_bars``).
* **Steps** (``await next_step()``): after each bar's close plus
  ``poll_grace_ns`` the feed asks for the bars since the last one it has
  (``durationStr`` from it, at most a day) and hands over the closed ones
  (``open + interval <= now``; IB's last bar may still be forming), grouped
  by close time, oldest first, each bar once. While the gateway is down it
  waits (the adapter reconnects by itself); a request that fails or times
  out is logged and asked again after ``min(2**n, 60)`` s. :meth:`stop` ends
  a pending step with ``[]`` (``finite`` is False).
* **Values**: IB sends doubles; prices become Decimal through their shortest
  repr (``Decimal(repr(x))``, DESIGN.md section 4) rounded to the contract's
  tick; volume likewise (IB's -1, "no volume" for FX midpoints, becomes 0).
  ``whatToShow`` is ``TRADES`` for stocks, ETFs and futures, ``MIDPOINT`` for
  FX (IB has no trades for it). Bar times: ``formatDate=2`` (epoch seconds,
  UTC), the bar's start.

Every request spends a token of the adapter's pacing bucket
(``venue.pacing``, IB's 50 messages a second); IB's historical-data pacing
(at most 60 requests in 10 minutes, none identical within 15 s: "Historical
Data Limitations") is kept by polling each contract once per bar.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable, Iterable

from core.data import Bar
from core.identifiers import InstrumentId
from core.livefeed import LiveFeedBase
from core.values import ZERO

log = logging.getLogger("desk.venues.ibkr.feed")

NANOS = 1_000_000_000
#: the desk's interval names -> (IB ``barSizeSetting``, seconds)
BAR_SIZES: dict[str, tuple[str, int]] = {
    "1m": ("1 min", 60), "2m": ("2 mins", 120), "3m": ("3 mins", 180), "5m": ("5 mins", 300),
    "15m": ("15 mins", 900), "30m": ("30 mins", 1800), "1h": ("1 hour", 3600),
}


def duration_str(seconds: int) -> str:
    """IB's ``durationStr`` covering ``seconds``: ``"<n> S"`` up to a day
    (86,400 s), else whole days ``"<n> D"`` (TWS API "Historical Bar Data":
    durations in S, D, W, M, Y)."""
    seconds = max(int(seconds), 60)
    if seconds <= 86_400:
        return f"{seconds} S"
    return f"{-(-seconds // 86_400)} D"


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


class IbkrLiveFeed(LiveFeedBase):
    """Closed bars of a started :class:`~venues.ibkr.adapter.IbkrVenue` (see
    the module docstring).

    Args:
        venue: the started venue (``ib``, ``contracts``, ``instruments``,
            ``clock``, ``pacing``, ``is_up``).
        instruments: the instrument ids fed (default: every contract).
        interval: ``1m`` (default) ... ``1h`` (:data:`BAR_SIZES`).
        warmup_bars: closed bars per contract the models observe before trading.
        sleep: ``await sleep(seconds)`` (tests pass a fake).
        poll_grace_ns: how long after a bar's close it is asked for.
        request_timeout_s: how long one historical request may take.

    Raises:
        ValueError: an unknown interval, a negative ``warmup_bars``, or an
            instrument the venue does not trade (named).
    """

    finite = False

    def __init__(self, venue: Any, instruments: Iterable[InstrumentId] | None = None, interval: str = "1m",
                 warmup_bars: int = 0, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 poll_grace_ns: int = 5 * NANOS, request_timeout_s: float = 30.0) -> None:
        if interval not in BAR_SIZES:
            raise ValueError(f"interval: {interval!r} is not one of {', '.join(BAR_SIZES)} for IBKR")
        self.bar_size, step_s = BAR_SIZES[interval]
        self._setup(venue, instruments, venue.contracts, "a qualified contract of venue", interval, step_s * NANOS,
                    warmup_bars, sleep)
        self.poll_grace_ns = int(poll_grace_ns)
        self.request_timeout_s = float(request_timeout_s)
        #: historical-data requests sent
        self.requests = 0

    # ------------------------------------------------------------ IB
    def _now(self) -> int:
        return int(self.venue.clock.timestamp_ns())

    def _what(self, iid: InstrumentId) -> str:
        return "MIDPOINT" if self.venue.contracts[iid].spec.sec_type in ("CASH", "FX") else "TRADES"

    def _bar_of(self, iid: InstrumentId, b: Any) -> Bar | None:
        """A desk bar from ib_async's ``BarData`` (``date`` the bar's start)."""
        d = b.date
        if isinstance(d, datetime):
            ts = int((d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)).timestamp()) * NANOS
        elif isinstance(d, date):
            return None  # a daily bar: not an intraday interval
        else:
            return None
        inst = self.venue.instruments[iid]
        o, h, lo, c = (inst.round_price(_dec(x)) for x in (b.open, b.high, b.low, b.close))
        vol = _dec(b.volume) if b.volume is not None and float(b.volume) > 0 else ZERO
        return Bar(iid, o, h, lo, c, vol, ts, ts + self.step_ns)

    async def _history(self, iid: InstrumentId, seconds: int) -> list[Bar]:
        """Closed bars of ``iid`` over the last ``seconds`` (oldest first).

        Raises:
            Exception: what ib_async raises for a refused request (an IB
                error such as 162), or ``TimeoutError``.
        """
        qc = self.venue.contracts[iid]
        self.venue.pacing.try_take()  # counted in the adapter's 50-per-second budget
        self.requests += 1
        rows = await self.venue.ib.reqHistoricalDataAsync(
            qc.contract, endDateTime="", durationStr=duration_str(seconds), barSizeSetting=self.bar_size,
            whatToShow=self._what(iid), useRTH=False, formatDate=2, keepUpToDate=False,
            timeout=self.request_timeout_s)
        now = self._now()
        out = []
        for r in rows or []:
            bar = self._bar_of(iid, r)
            if bar is not None and bar.ts_event <= now:
                out.append(bar)
        out.sort(key=lambda b: b.ts_open)
        return out

    # ------------------------------------------------------------ warm-up
    async def prepare(self) -> int:
        """Fetch the warm-up (or catch-up) bars; ``warmup()`` hands them
        over. Returns how many.

        Raises:
            Exception: a refused or timed-out request (at start: exit 2).
        """
        bars: list[Bar] = []
        if self.warmup_bars:
            now = self._now()
            for iid in self.instruments:
                seconds = (self.warmup_bars + 2) * self.step_ns // NANOS
                if iid in self.last:
                    seconds = min(seconds, (now - self.last[iid]) // NANOS + self.step_ns // NANOS)
                got = [b for b in await self._history(iid, seconds) if b.ts_open > self.last.get(iid, -1)]
                got = got[-self.warmup_bars:]
                if got:
                    self._seen[iid] = self.last[iid] = got[-1].ts_open
                bars += got
        self._warm = sorted(bars, key=lambda b: (b.ts_event, str(b.instrument_id)))
        return len(self._warm)

    # ------------------------------------------------------------ steps
    def _due_ns(self) -> int:
        """When the next bar should be asked for: the close of the bar after
        the oldest last one seen, plus the grace."""
        now = self._now()
        last_closed_open = now // self.step_ns * self.step_ns - self.step_ns
        seen = [self._seen.get(i, last_closed_open - self.step_ns) for i in self.instruments]
        return min(seen) + 2 * self.step_ns + self.poll_grace_ns

    async def _poll(self) -> None:
        now = self._now()
        for iid in self.instruments:
            seen = self._seen.get(iid)
            seconds = 2 * self.step_ns // NANOS if seen is None else (now - seen) // NANOS + self.step_ns // NANOS
            for b in await self._history(iid, min(seconds, 86_400)):
                if seen is None or b.ts_open > seen:
                    self._buffer.append(b)
                    seen = b.ts_open
            if seen is not None:
                self._seen[iid] = seen

    async def next_step(self) -> list[Bar]:
        """The bars of the next close time (module docstring); ``[]`` once
        :meth:`stop` was called. Failed requests are retried, never raised."""
        while True:
            if self._buffer:
                return self._pop_step()
            if self._stopped:
                return []
            wait_ns = self._due_ns() - self._now()
            if wait_ns > 0:
                if not (await self._until_stopped(self.sleep(wait_ns / NANOS)))[0]:
                    return []
                continue
            if not self.venue.is_up():
                if not (await self._until_stopped(self.sleep(1.0)))[0]:
                    return []
                continue
            try:
                ok, _ = await self._until_stopped(self._poll())
                if not ok:
                    return []
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 - an IB error or a timeout: asked again later
                self.failures += 1
                wait_s = min(2 ** (self.failures - 1), 60)
                log.warning("%s: historical bars could not be read (%r); asked again in %d s", self.venue.venue,
                            exc, wait_s)
                if not (await self._until_stopped(self.sleep(wait_s)))[0]:
                    return []
                continue
            if not self._buffer:  # not published yet: ask again a little later
                if not (await self._until_stopped(self.sleep(self.poll_grace_ns / NANOS)))[0]:
                    return []

    # ------------------------------------------------------------ state