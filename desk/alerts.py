"""Alerts to the log and to Telegram, de-duplicated and rate-limited
(issue 8; DESIGN.md section 5 "Alerts"). The UI already reads the
``AlertRaised`` events from the engine's bus; this module adds the other
sinks.

:class:`AlertDispatcher` subscribes to ``AlertRaised`` on the engine's bus
(:meth:`AlertDispatcher.attach`). For each alert, on the injected clock
(engine time, integer UTC ns):

* **Severity**: ``INFO`` < ``WARNING`` < ``ERROR`` < ``CRITICAL``
  (:data:`LEVELS`, the stdlib logging numbers); an unknown level counts as
  ``ERROR`` (seen rather than lost). Each sink has a ``min_level``: the log
  takes ``INFO`` and above, Telegram ``WARNING`` and above by default.
* **De-duplication**: the key is ``(code, message)``. The first alert of a
  key is delivered and opens a window of ``dedupe_window_ns`` (default
  300 s); repeats inside the window are counted, not delivered. When the
  window closes (the first :meth:`AlertDispatcher.tick` or alert at or after
  ``first + window``) and there were ``N`` repeats, one summary goes out:
  ``<message> (repeated N times in 300 s)`` at the highest level seen. The
  next alert of the key after that opens a new window. At most
  ``max_keys`` windows are open; beyond that the oldest is closed early.
* **Rate limit** per sink: at most ``rate_per_minute`` alerts in any 60 s
  of engine time (a sliding window); an alert over the limit is dropped
  and counted, and the next alert queued for the sink ends with ``[N
  alerts not delivered]`` (the alerts dropped before it by the rate limit
  or a full queue; a failed send passes its own and its note's count on to
  the next one).
* **Never blocking the engine**: the bus handler only does the above and a
  ``put_nowait`` into the sink's bounded ``asyncio.Queue``
  (``queue_size``); a full queue drops the alert (counted). One task per
  sink drains its queue (:meth:`AlertDispatcher.start`); a send that raises
  or takes longer than ``send_timeout_s`` (wall seconds) is counted as
  failed and logged with secrets redacted; nothing ever raises into the
  engine.
* **Secrets** (``secrets=``: the bot token, API keys) are replaced by
  ``***`` in every text handed to a sink (:func:`redact`).

The text of an alert is ``[LEVEL] CODE: message``. Counters per sink are in
:meth:`AlertDispatcher.stats`.

Wiring (desk.daemon / desk.app, not done here)::

    dispatcher = AlertDispatcher(engine.clock, [LogSink(), TelegramSink(bot)],
                                 secrets=[token, api_key, api_secret])
    dispatcher.attach(engine.bus)
    dispatcher.start()              # inside the running event loop
    ...
    await dispatcher.stop()         # delivers what is queued, then ends the tasks
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.clock import Clock
from core.events import AlertRaised, Event

log = logging.getLogger("desk.alerts")

#: severities, with the stdlib logging numbers
LEVELS: dict[str, int] = {"INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
                          "CRITICAL": logging.CRITICAL}
_NAMES = {v: k for k, v in LEVELS.items()}
NS_PER_S = 1_000_000_000
#: secrets shorter than this are not redacted (they would mangle ordinary text)
MIN_SECRET_LEN = 4
REDACTED = "***"


def level_number(level: str) -> int:
    """The severity of ``level`` (:data:`LEVELS`); an unknown level is
    ``ERROR`` (logging.ERROR = 40)."""
    return LEVELS.get(str(level).upper(), logging.ERROR)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (non-empty strings of
    at least :data:`MIN_SECRET_LEN` characters; longer ones first, so one
    that contains another goes whole) replaced by ``***``."""
    for s in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts ``secrets`` from a record's formatted
    message and from its exception text (it formats them once, then clears
    ``args``). Add it to a logger (records created on that logger) or to a
    handler (every record the handler emits). Secrets can be added later
    (:meth:`add`). Never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s}

    def add(self, secret: str) -> None:
        """Redact ``secret`` from now on (empty strings are ignored)."""
        if secret:
            self.secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` with the secrets redacted; always True."""
        if not self.secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler
            return True
        clean = redact(msg, self.secrets)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert to deliver: ``ts_ns`` engine time (UTC ns), ``level``,
    ``code``, ``message``; ``repeated`` > 0 for the summary of a closed
    de-duplication window (the number of repeats it stands for)."""

    ts_ns: int
    level: str
    code: str
    message: str
    repeated: int = 0
    window_s: int = 0

    @property
    def text(self) -> str:
        """``[LEVEL] CODE: message``, with ``(repeated N times in W s)`` for a summary."""
        out = f"[{self.level}] {self.code}: {self.message}"
        if self.repeated:
            out += f" (repeated {self.repeated} times in {self.window_s} s)"
        return out


class AlertSink(Protocol):
    """Where alerts go. ``name`` (unique among a dispatcher's sinks),
    ``min_level`` (lowest severity taken), ``send`` delivers one text (may
    raise; the dispatcher counts and logs the failure)."""

    name: str
    min_level: str

    async def send(self, text: str, alert: Alert) -> None:
        """Deliver ``text`` (the alert's text, secrets redacted, with the
        not-delivered note when there is one)."""
        ...


class LogSink:
    """Alerts to the stdlib ``logging`` logger ``logger`` (default
    ``desk.alerts.sink``) at the alert's level (unknown levels at ERROR)."""

    def __init__(self, logger: logging.Logger | None = None, min_level: str = "INFO", name: str = "log") -> None:
        self.logger = logger or logging.getLogger("desk.alerts.sink")
        self.min_level = min_level
        self.name = name

    async def send(self, text: str, alert: Alert) -> None:
        """Log ``text`` at the alert's level."""
        self.logger.log(level_number(alert.level), "%s", text)


class TelegramSink:
    """Alerts to Telegram through ``bot`` (a :class:`desk.telegram.TelegramBot`
    or anything with ``async send(text)``), ``WARNING`` and above by default."""

    def __init__(self, bot: Any, min_level: str = "WARNING", name: str = "telegram") -> None:
        self.bot = bot
        self.min_level = min_level
        self.name = name

    async def send(self, text: str, alert: Alert) -> None:
        """Send ``text`` to the bot's allow-listed chats (raises its error)."""
        await self.bot.send(text)


@dataclass(slots=True)
class _Window:
    start_ns: int
    level: str
    repeats: int = 0


@dataclass(slots=True)
class _SinkState:
    sink: Any
    min_level: int
    queue: "asyncio.Queue[tuple[Alert, int]]"  # (alert, alerts not delivered before it)
    sent_at: deque[int] = field(default_factory=deque)
    undelivered: int = 0  # not delivered and not yet reported: goes with the next queued alert
    sent: int = 0
    failed: int = 0
    rate_dropped: int = 0
    queue_dropped: int = 0


class AlertDispatcher:
    """De-duplicates, rate-limits and fans ``AlertRaised`` out to ``sinks``
    (rules in the module docstring).

    Args:
        clock: the engine clock (``timestamp_ns()``, UTC ns): windows and
            rates run on it, so a replay behaves the same at any speed.
        sinks: :class:`AlertSink` objects with distinct names.
        dedupe_window_ns: de-duplication window (ns, default 300 s).
        rate_per_minute: alerts per sink per 60 s of engine time (default 20).
        queue_size: bound of each sink's queue (default 100).
        send_timeout_s: wall seconds a send may take before it counts as
            failed (default 15).
        secrets: strings never to hand to a sink (:func:`redact`).
        max_keys: open de-duplication windows kept (default 1000).
        tick_s: wall seconds between the checks for closed windows of the
            task :meth:`start` runs (default 1).

    Raises:
        ValueError: naming the field, for a non-positive window, rate, queue
            size, timeout or ``max_keys``, a sink name used twice, or a sink
            ``min_level`` not in :data:`LEVELS`.
    """

    def __init__(self, clock: Clock, sinks: Iterable[Any], *, dedupe_window_ns: int = 300 * NS_PER_S,
                 rate_per_minute: int = 20, queue_size: int = 100, send_timeout_s: float = 15.0,
                 secrets: Iterable[str] = (), max_keys: int = 1000, tick_s: float = 1.0) -> None:
        for name, value in (("dedupe_window_ns", dedupe_window_ns), ("rate_per_minute", rate_per_minute),
                            ("queue_size", queue_size), ("max_keys", max_keys)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        for name, fvalue in (("send_timeout_s", send_timeout_s), ("tick_s", tick_s)):
            if not isinstance(fvalue, (int, float)) or isinstance(fvalue, bool) or not fvalue > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {fvalue!r}")
        self.clock = clock
        self.window_ns = dedupe_window_ns
        self.rate = rate_per_minute
        self.send_timeout_s = float(send_timeout_s)
        self.max_keys = max_keys
        self.tick_s = float(tick_s)
        self.secrets = [s for s in secrets if s]
        self._sinks: dict[str, _SinkState] = {}
        for sink in sinks:
            if sink.name in self._sinks:
                raise ValueError(f"sinks: name {sink.name!r} used twice")
            if str(sink.min_level).upper() not in LEVELS:
                raise ValueError(f"sinks[{sink.name}].min_level: expected one of {', '.join(LEVELS)}, "
                                 f"got {sink.min_level!r}")
            self._sinks[sink.name] = _SinkState(sink, LEVELS[str(sink.min_level).upper()],
                                                asyncio.Queue(maxsize=queue_size))
        self._windows: dict[tuple[str, str], _Window] = {}
        self._next_close = None  # earliest window end (ns), or None
        self._tasks: list[asyncio.Task[Any]] = []
        self.suppressed = 0
        self.errors = 0

    # ------------------------------------------------------------ intake (synchronous, never raises)
    def attach(self, bus: Any) -> None:
        """Subscribe to ``AlertRaised`` on ``bus`` (a :class:`core.bus.MessageBus`)."""
        bus.subscribe("AlertRaised", self.on_event)

    def on_event(self, event: Event) -> None:
        """The bus handler: take an ``AlertRaised``; never raises (an
        internal error is counted in ``errors`` and logged)."""
        try:
            if isinstance(event, AlertRaised):
                self.submit(event.level, event.code, event.message)
        except Exception as exc:  # noqa: BLE001 - never into the engine
            self.errors += 1
            log.warning("alert dispatcher failed on an alert: %s", redact(f"{type(exc).__name__}: {exc}",
                                                                          self.secrets))

    def submit(self, level: str, code: str, message: str) -> None:
        """Take one alert at the clock's time: close due windows, then
        de-duplicate, rate-limit and queue it for each sink that takes its
        level. Synchronous; never blocks."""
        now = self.clock.timestamp_ns()
        self.tick()
        key = (str(code), str(message))
        win = self._windows.get(key)
        if win is not None:
            win.repeats += 1
            if level_number(level) > level_number(win.level):
                win.level = level
            self.suppressed += 1
            return
        if len(self._windows) >= self.max_keys:
            oldest = min(self._windows, key=lambda k: self._windows[k].start_ns)
            self._close(oldest, now)
        self._windows[key] = _Window(now, str(level))
        end = now + self.window_ns
        self._next_close = end if self._next_close is None else min(self._next_close, end)
        self._fan_out(Alert(now, str(level), str(code), str(message)), now)

    def tick(self) -> int:
        """Close the de-duplication windows that ended by the clock's time,
        sending their summaries; returns the number of summaries sent."""
        now = self.clock.timestamp_ns()
        if self._next_close is None or now < self._next_close:
            return 0
        n = 0
        for key in [k for k, w in self._windows.items() if now >= w.start_ns + self.window_ns]:
            n += self._close(key, now)
        self._next_close = min((w.start_ns + self.window_ns for w in self._windows.values()), default=None)
        return n

    def _close(self, key: tuple[str, str], now: int) -> int:
        win = self._windows.pop(key)
        if not win.repeats:
            return 0
        self._fan_out(Alert(now, win.level, key[0], key[1], win.repeats, self.window_ns // NS_PER_S), now)
        return 1

    def _fan_out(self, alert: Alert, now: int) -> None:
        lvl = level_number(alert.level)
        for st in self._sinks.values():
            if lvl < st.min_level:
                continue
            while st.sent_at and st.sent_at[0] <= now - 60 * NS_PER_S:
                st.sent_at.popleft()
            if len(st.sent_at) >= self.rate:
                st.rate_dropped += 1
                st.undelivered += 1
                continue
            try:
                st.queue.put_nowait((alert, st.undelivered))
            except asyncio.QueueFull:
                st.queue_dropped += 1
                st.undelivered += 1
                continue
            st.undelivered = 0
            st.sent_at.append(now)

    # ------------------------------------------------------------ delivery (async)
    async def _deliver(self, st: _SinkState, alert: Alert, note: int) -> None:
        text = alert.text + (f" [{note} alerts not delivered]" if note else "")
        text = redact(text, self.secrets)
        try:
            await asyncio.wait_for(st.sink.send(text, alert), self.send_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a sink's failure never reaches the engine
            st.failed += 1
            st.undelivered += 1 + note  # this one and those it was to report: told with the next
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            log.warning("alert sink %s failed: %s", st.sink.name, redact(why, self.secrets))
            return
        st.sent += 1

    async def drain(self) -> int:
        """Deliver everything queued now, sink by sink, in this task (tests,
        shutdown); returns the number of deliveries attempted."""
        n = 0
        for st in self._sinks.values():
            while not st.queue.empty():
                alert, note = st.queue.get_nowait()
                try:
                    await self._deliver(st, alert, note)
                finally:
                    st.queue.task_done()
                n += 1
        return n

    async def _worker(self, st: _SinkState) -> None:
        while True:
            alert, note = await st.queue.get()
            try:
                await self._deliver(st, alert, note)
            finally:
                st.queue.task_done()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001
                self.errors += 1
                log.warning("alert dispatcher tick failed: %s", redact(str(exc), self.secrets))

    def start(self) -> None:
        """Start one delivery task per sink and the window ticker in the
        running event loop (idempotent).

        Raises:
            RuntimeError: outside a running event loop.
        """
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(st), name=f"alerts-{name}")
                       for name, st in self._sinks.items()]
        self._tasks.append(loop.create_task(self._ticker(), name="alerts-ticker"))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` wall seconds for the queues to empty,
        then cancel the tasks; what is still queued is counted as dropped."""
        if self._tasks:
            try:
                await asyncio.wait_for(asyncio.gather(*(st.queue.join() for st in self._sinks.values())), timeout_s)
            except asyncio.TimeoutError:
                pass
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        for st in self._sinks.values():
            while not st.queue.empty():
                _, note = st.queue.get_nowait()
                st.queue.task_done()
                st.queue_dropped += 1
                st.undelivered += 1 + note

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per sink name: ``sent``, ``failed``, ``rate_dropped``,
        ``queue_dropped``, ``undelivered`` (not yet reported in a message),
        ``queued``; and under ``"*"``: ``suppressed`` (repeats folded by
        de-duplication), ``open_windows``, ``errors``."""
        out = {name: {"sent": st.sent, "failed": st.failed, "rate_dropped": st.rate_dropped,
                      "queue_dropped": st.queue_dropped, "undelivered": st.undelivered, "queued": st.queue.qsize()}
               for name, st in self._sinks.items()}
        out["*"] = {"suppressed": self.suppressed, "open_windows": len(self._windows), "errors": self.errors}
        return out
