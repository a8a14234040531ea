"""Message pacing toward IB: a token bucket on the injected clock.

IB accepts at most 50 messages per second from one API client (TWS API
reference, "Message Codes", error 100: *"Max rate of messages per second
has been exceeded. The client application has exceeded the rate of 50
messages/second. The TWS will likely disconnect the client application
after this message."*). The adapter spends one token per request it sends
(an order, a cancel, a contract-details or reconciliation request). On an
error 100 the bucket slows down: its rate is halved (never below
``min_rate``), its tokens dropped, and the full rate comes back only after
``hold_ns`` without another violation.

Integer arithmetic only: a token is ``1e9`` units, the bucket refills
``rate`` units per nanosecond of the clock, so nothing drifts.
"""

from __future__ import annotations

from core.clock import Clock

NANOS = 1_000_000_000


class TokenBucket:
    """A token bucket of ``rate`` tokens per second and ``rate`` tokens of
    burst (one second's worth), on ``clock`` (UTC ns).

    Raises:
        ValueError: at construction for a rate or minimum rate below 1, or a
            negative hold.
    """

    def __init__(self, clock: Clock, rate: int = 50, *, min_rate: int = 1,
                 hold_ns: int = 60 * NANOS) -> None:
        if rate < 1:
            raise ValueError(f"pacing rate: must be >= 1 message per second, got {rate}")
        if min_rate < 1 or min_rate > rate:
            raise ValueError(f"pacing min_rate: must be in [1, {rate}], got {min_rate}")
        if hold_ns < 0:
            raise ValueError(f"pacing hold_ns: must be >= 0, got {hold_ns}")
        self.clock = clock
        self.base_rate = rate
        self.rate = rate
        self.min_rate = min_rate
        self.hold_ns = hold_ns
        self._units = rate * NANOS
        self._last = clock.timestamp_ns()
        #: engine time until which the slower rate holds, or None at full rate
        self.slow_until_ns: int | None = None
        #: error-100 violations seen
        self.violations = 0

    def _refill(self) -> int:
        now = self.clock.timestamp_ns()
        if self.slow_until_ns is not None and now >= self.slow_until_ns:
            self.rate, self.slow_until_ns = self.base_rate, None
        if now > self._last:
            self._units = min(self._units + (now - self._last) * self.rate, self.rate * NANOS)
        self._last = max(self._last, now)
        return now

    @property
    def tokens(self) -> int:
        """Whole tokens available now."""
        self._refill()
        return self._units // NANOS

    def try_take(self, n: int = 1) -> bool:
        """Spend ``n`` tokens if the bucket holds them; False (nothing spent)
        otherwise."""
        self._refill()
        need = n * NANOS
        if self._units < need:
            return False
        self._units -= need
        return True

    def wait_ns(self, n: int = 1) -> int:
        """Nanoseconds of clock until ``n`` tokens are available (0 if now).
        ``n`` above the burst is capped at the burst."""
        self._refill()
        need = min(n, self.rate) * NANOS - self._units
        return 0 if need <= 0 else -(-need // self.rate)

    def slow_down(self) -> int:
        """React to a pacing violation (IB error 100): halve the rate (at
        least ``min_rate``), drop the tokens, hold the slower rate for
        ``hold_ns``. Returns the new rate (messages per second)."""
        now = self._refill()
        self.violations += 1
        self.rate = max(self.min_rate, self.rate // 2)
        self._units = 0
        self.slow_until_ns = now + self.hold_ns
        return self.rate
