"""The keyboard kill switch's double-press logic (DESIGN.md section 5).

A first press arms the switch; a second press within ``window_ns`` of the
*wall* clock fires it (the app then halts through the governance facade).
An armed switch that is not pressed again disarms once the window has
passed. The clock is injected: ``core.clock.MonotonicClock`` in the app, a
``core.clock.TestClock`` in tests. Never the engine's replay clock, which
may run thousands of times faster than the operator.

No textual import here.
"""

from __future__ import annotations

from core.clock import Clock

#: the double-press window: two presses at most this far apart halt
KILL_WINDOW_NS = 2_000_000_000


class KillSwitch:
    """Arms on a first press, fires on a second press within the window.

    Args:
        clock: the wall clock (monotonic nanoseconds).
        window_ns: the double-press window (default 2 s).
    """

    def __init__(self, clock: Clock, window_ns: int = KILL_WINDOW_NS) -> None:
        self.clock = clock
        self.window_ns = int(window_ns)
        self.armed_at: int | None = None

    @property
    def armed(self) -> bool:
        """True between a first press and the end of its window (call
        :meth:`expire` to notice the end of the window)."""
        return self.armed_at is not None

    def press(self) -> bool:
        """Register a press. Returns True when this press fires the switch
        (a second press within the window); the switch is then disarmed.
        Otherwise the switch is (re-)armed from now and False is returned."""
        now = self.clock.timestamp_ns()
        if self.armed_at is not None and now - self.armed_at <= self.window_ns:
            self.armed_at = None
            return True
        self.armed_at = now
        return False

    def expire(self) -> bool:
        """Disarm when the window has passed. Returns True if this call
        disarmed the switch."""
        if self.armed_at is not None and self.clock.timestamp_ns() - self.armed_at > self.window_ns:
            self.armed_at = None
            return True
        return False

    def remaining_ns(self) -> int:
        """Nanoseconds left in the window (0 when not armed)."""
        if self.armed_at is None:
            return 0
        return max(0, self.window_ns - (self.clock.timestamp_ns() - self.armed_at))
