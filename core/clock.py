"""Clocks. All engine time comes from an injected clock (DESIGN.md section 4).

Time is integer UTC nanoseconds since the Unix epoch. ``LiveClock`` reads the
system clock; ``TestClock`` is set explicitly (by the replay engine, to each
bar's close time, or by tests). Nothing else in ``core`` reads the system
time.
"""

from __future__ import annotations

import time
from typing import Protocol

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_MILLI = 1_000_000
NANOS_PER_MICRO = 1_000


class Clock(Protocol):
    """A source of UTC nanoseconds."""

    def timestamp_ns(self) -> int:
        """Current time as integer UTC nanoseconds since the epoch."""
        ...


class LiveClock:
    """The system's real-time clock (``time.time_ns``)."""

    def timestamp_ns(self) -> int:
        """Current wall time in UTC nanoseconds."""
        return time.time_ns()


class MonotonicClock:
    """A monotonic clock in nanoseconds, for human timings such as the kill
    switch's double-press window (never the replay clock)."""

    def timestamp_ns(self) -> int:
        """Monotonic nanoseconds (arbitrary origin)."""
        return time.monotonic_ns()


class TestClock:
    """A clock that only moves when told to: the replay clock and the tests'.

    Raises ``ValueError`` when asked to move backwards, so a replay can never
    run time in reverse.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)

    def timestamp_ns(self) -> int:
        """The time last set, in UTC nanoseconds."""
        return self._now

    def set_time(self, ts_ns: int) -> None:
        """Move the clock to ``ts_ns``.

        Raises:
            ValueError: if ``ts_ns`` is earlier than the current time.
        """
        if ts_ns < self._now:
            raise ValueError(f"clock: cannot move back from {self._now} to {ts_ns}")
        self._now = int(ts_ns)

    def advance(self, delta_ns: int) -> None:
        """Move the clock forward by ``delta_ns`` nanoseconds (>= 0)."""
        self.set_time(self._now + int(delta_ns))
