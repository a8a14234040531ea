"""The link between a running engine and a reader such as the Textual app.

No textual import here: this module only reads the engine.

* :class:`EngineLink` subscribes to the engine's bus and hands every event,
  in order and in batches (one batch per event-loop turn), to a callback:
  the bus handler itself only appends to a list, so it stays cheap however
  fast the engine runs.
* :class:`StepTap` wraps the engine's feed so the link sees the end of every
  engine step (the engine publishes no per-bar event); it keeps per-model
  statistics on the engine clock, deterministic at any speed.
* :class:`ModelStats` holds one model's equity series statistics and its
  Sharpe ratio so far (formula below).
* :class:`Pacer` is the engine's pacing clock, re-based when the speed
  changes so a new speed applies from the current step (the engine computes
  its due times from the start of ``run``, see the module's notes).

Sharpe ratio so far (per model, shown in the models pane)::

    E_m(t)  = budget_m + realized_m(t) + unrealized_m(t)       (quote)
    budget_m = weight_m × capital
    r_k     = (E_m(t_k) − E_m(t_{k−1})) / budget_m              one return per
              engine-clock hour: t_k is the first engine step at or after
              the k-th hour boundary; an hour without trades is a 0 return
    Sharpe  = mean(r) / stdev(r) × √8760                        (stdev with n−1;
              24 × 365 hours a year, crypto trades every hour; risk-free 0)

It is shown once there are at least two returns and their stdev is not
zero; otherwise "—". It covers this session (the link's lifetime), not
the time before a restart.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from core.clock import Clock, MonotonicClock
from core.data import Bar
from core.events import Event

#: one Sharpe return per hour of engine clock
SHARPE_BUCKET_NS = 3_600_000_000_000
#: one UTC day in nanoseconds
DAY_NS = 86_400_000_000_000
#: hours in a year (24 × 365)
PERIODS_PER_YEAR = 8760


@dataclass(slots=True)
class ModelStats:
    """Running statistics of one model's hourly returns (Welford's method).

    Attributes:
        budget: the model's budget (weight × capital), quote.
        n: number of returns.
        mean: mean return (fraction of the budget).
        m2: sum of squared deviations.
        last_equity: the model's equity at the last bucket boundary.
        last_bucket: index of the last bucket seen.
    """

    budget: float
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    last_equity: float | None = None
    last_bucket: int | None = None

    def add(self, equity: float, bucket: int) -> None:
        """Record the equity seen at the first step of ``bucket``."""
        if self.last_bucket == bucket:
            return
        if self.last_equity is not None and self.budget > 0:
            r = (equity - self.last_equity) / self.budget
            self.n += 1
            d = r - self.mean
            self.mean += d / self.n
            self.m2 += d * (r - self.mean)
        self.last_equity = equity
        self.last_bucket = bucket

    @property
    def sharpe(self) -> float | None:
        """Annualized Sharpe ratio so far, or None (fewer than two returns,
        or zero variance)."""
        if self.n < 2:
            return None
        var = self.m2 / (self.n - 1)
        if var <= 0:
            return None
        return self.mean / math.sqrt(var) * math.sqrt(PERIODS_PER_YEAR)


class StepTap:
    """Wraps an engine feed (``core.engine.Feed``) and calls ``on_step()``
    each time the engine asks for the next step, i.e. after the previous
    step is complete (bars processed, equity sampled, orders sent)."""

    def __init__(self, inner: Any, on_step: Callable[[], None]) -> None:
        self.inner = inner
        self.on_step = on_step
        self.finite = inner.finite

    def warmup(self) -> list[Bar]:
        """The inner feed's warm-up bars."""
        return self.inner.warmup()

    def next_step(self) -> list[Bar]:
        """Report the end of the previous step, then return the inner feed's next bars."""
        self.on_step()
        return self.inner.next_step()

    def state_dict(self) -> dict[str, Any]:
        """The inner feed's state."""
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the inner feed's state."""
        self.inner.load_state_dict(state)


class Pacer:
    """The engine's pacing clock (``Engine.pace_clock``): monotonic time plus
    an offset.

    ``Engine.run`` paces step ``n`` of a run to ``t0 + n / speed`` with
    ``t0`` read at the start of the run. Changing the speed mid-run would
    then jump (a burst when speeding up, a long stall when slowing down), so
    :meth:`rebase` moves the offset such that the current step is due now
    and later steps follow at the new speed.
    """

    def __init__(self, base: Clock | None = None) -> None:
        self.base = base or MonotonicClock()
        self.offset = 0
        self.t0: int | None = None
        self.steps0 = 0

    def timestamp_ns(self) -> int:
        """Monotonic nanoseconds plus the offset."""
        return self.base.timestamp_ns() + self.offset

    def run_started(self, steps: int) -> None:
        """Call right before ``await engine.run()`` with ``engine.stats.steps``."""
        self.t0 = self.timestamp_ns()
        self.steps0 = steps

    def rebase(self, steps: int, speed: float | None) -> None:
        """Make step ``steps`` (``engine.stats.steps``) due now at ``speed``
        (steps per second; None = as fast as possible needs no pacing)."""
        if speed is None or self.t0 is None:
            return
        n = steps - self.steps0
        self.offset = self.t0 + int(n * 1e9 / speed) - self.base.timestamp_ns()


class EngineLink:
    """Connects a reader to an engine: bus events in batches, per-step
    model statistics, and the pacing clock.

    Args:
        engine: a ``core.engine.Engine`` (not yet running).
        on_events: called with each batch of events, in publication order,
            once per event-loop turn (from ``loop.call_soon``).
        bucket_ns: the Sharpe bucket (default one hour of engine clock).
    """

    def __init__(self, engine: Any, on_events: Callable[[list[Event]], None],
                 bucket_ns: int = SHARPE_BUCKET_NS) -> None:
        self.engine = engine
        self.on_events = on_events
        self.bucket_ns = bucket_ns
        self._pending: list[Event] = []
        self._scheduled = False
        capital = engine.config.router.capital
        self.stats: dict[str, ModelStats] = {
            mid: ModelStats(float(engine.weights[mid] * capital)) for mid in engine.weights
        }
        self.steps_seen = 0
        #: per instrument, the mark at the first step of the current UTC day (engine clock)
        self.day_open: dict[Any, Decimal] = {}
        self._day: int | None = None
        #: callables run at the end of every engine step (tests, bench)
        self.step_hooks: list[Callable[[], None]] = []
        self.tap = StepTap(engine.feed, self._on_step)
        engine.feed = self.tap
        self.pacer = Pacer()
        engine.pace_clock = self.pacer
        engine.bus.subscribe("*", self._on_event)

    def close(self) -> None:
        """Unsubscribe from the bus and restore the engine's feed."""
        self.engine.bus.unsubscribe("*", self._on_event)
        if self.engine.feed is self.tap:
            self.engine.feed = self.tap.inner

    # ----------------------------------------------------------- events
    def _on_event(self, event: Event) -> None:
        self._pending.append(event)
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.drain)
            except RuntimeError:  # no loop (engine driven synchronously): drain later
                self._scheduled = False

    def drain(self) -> None:
        """Hand the pending events to ``on_events`` (also callable directly)."""
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self.on_events(batch)

    # ----------------------------------------------------------- steps
    def _on_step(self) -> None:
        e = self.engine
        self.steps_seen += 1
        bucket = e.clock.timestamp_ns() // self.bucket_ns
        for mid in e.weights:
            if mid not in self.stats:  # a refit version appeared
                self.stats[mid] = ModelStats(float(e.weights[mid] * e.config.router.capital))
        capital = e.config.router.capital
        for mid, st in self.stats.items():
            if st.last_bucket != bucket:
                budget = float(e.weights.get(mid, 0) * capital)
                if budget > 0:
                    st.budget = budget  # returns are PnL changes over the budget in force
                st.add(float(self.model_pnl(mid)), bucket)
        day = e.clock.timestamp_ns() // DAY_NS
        if day != self._day:
            self._day = day
            self.day_open = dict(e.portfolio.marks)
        elif len(self.day_open) < len(e.portfolio.marks):
            for iid, px in e.portfolio.marks.items():
                self.day_open.setdefault(iid, px)
        for hook in self.step_hooks:
            hook()

    def model_pnl(self, model_id: str) -> Decimal:
        """realized + unrealized PnL of one model (quote). Its Sharpe is
        taken on changes of this over the budget: a budget that the
        allocator moves is not a return (a model that never traded has
        none)."""
        pf = self.engine.portfolio
        return pf.realized(model_id) + pf.unrealized(model_id)

    def set_speed(self, speed: float | None) -> None:
        """Change the engine's speed live (steps per second, None = max)."""
        self.engine.set_speed(speed)
        self.pacer.rebase(self.engine.stats.steps, speed)
