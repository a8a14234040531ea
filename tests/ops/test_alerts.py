"""Alerts (issue 8): severity per sink, de-duplication by (code, message)
within a window with a "(repeated N times)" summary, a rate limit per sink
whose drops are reported in the next message, a bounded queue drained by a
task so a slow or failing sink never blocks or raises into the engine, and
secrets redacted. All on an injected clock; nothing sleeps."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.bus import MessageBus
from core.clock import TestClock
from core.events import AlertRaised, TradingStateChanged
from desk.alerts import AlertDispatcher, LogSink, RedactingFilter, TelegramSink, redact

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


class Sink:
    """Records what it is given."""

    def __init__(self, name="rec", min_level="INFO"):
        self.name, self.min_level = name, min_level
        self.texts: list[str] = []

    async def send(self, text, alert):
        self.texts.append(text)


class Failing(Sink):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fail = True

    async def send(self, text, alert):
        if self.fail:
            raise RuntimeError("POST https://api.telegram.org/botSECRET-TOKEN-123/sendMessage: 502")
        self.texts.append(text)


class Blocking(Sink):
    """A sink stuck on its first send until released (a slow Telegram)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def send(self, text, alert):
        self.entered.set()
        await self.release.wait()
        self.texts.append(text)


def make(clock, *sinks, **kw):
    return AlertDispatcher(clock, list(sinks), **kw)


async def test_levels_per_sink():
    clock = TestClock(T0)
    log_sink, tg = Sink("log", "INFO"), Sink("tg", "WARNING")
    d = make(clock, log_sink, tg)
    d.submit("INFO", "FIT", "hmm_v1 fitted")
    d.submit("WARNING", "ORDER_REJECTED", "NHD-1 rejected")
    d.submit("CRITICAL", "STORE", "disk full")
    d.submit("BOGUS", "ODD", "an unknown level counts as ERROR")
    await d.drain()
    assert log_sink.texts == ["[INFO] FIT: hmm_v1 fitted", "[WARNING] ORDER_REJECTED: NHD-1 rejected",
                              "[CRITICAL] STORE: disk full", "[BOGUS] ODD: an unknown level counts as ERROR"]
    assert tg.texts == log_sink.texts[1:]


async def test_dedupe_window_and_summary_on_the_clock():
    clock = TestClock(T0)
    sink = Sink()
    d = make(clock, sink)  # window 300 s
    d.submit("WARNING", "STALE", "no bar for 90 s")
    for t in (10, 20, 30):
        clock.set_time(T0 + t * S)
        d.submit("WARNING", "STALE", "no bar for 90 s")
    clock.set_time(T0 + 40 * S)
    d.submit("ERROR", "STALE", "no bar for 90 s")  # a repeat at a higher level
    d.submit("WARNING", "STALE", "no bar for 120 s")  # another message: its own key
    clock.set_time(T0 + 299 * S)
    assert d.tick() == 0  # the window is still open at 299 s
    clock.set_time(T0 + 300 * S)
    assert d.tick() == 1
    clock.set_time(T0 + 301 * S)
    d.submit("WARNING", "STALE", "no bar for 90 s")  # a new window: delivered at once
    clock.set_time(T0 + 340 * S)
    d.tick()  # the 120 s message's window (opened at 40 s) closes with no repeat: nothing
    await d.drain()
    assert sink.texts == [
        "[WARNING] STALE: no bar for 90 s",
        "[WARNING] STALE: no bar for 120 s",
        "[ERROR] STALE: no bar for 90 s (repeated 4 times in 300 s)",
        "[WARNING] STALE: no bar for 90 s",
    ]
    assert d.stats()["*"]["suppressed"] == 4


async def test_an_alert_after_the_window_closes_it_first():
    clock = TestClock(T0)
    sink = Sink()
    d = make(clock, sink, dedupe_window_ns=60 * S)
    d.submit("WARNING", "X", "m")
    clock.set_time(T0 + 5 * S)
    d.submit("WARNING", "X", "m")
    clock.set_time(T0 + 60 * S)  # no tick in between: the alert itself closes the window
    d.submit("WARNING", "X", "m")
    await d.drain()
    assert sink.texts == ["[WARNING] X: m", "[WARNING] X: m (repeated 1 times in 60 s)", "[WARNING] X: m"]


async def test_rate_limit_per_sink_and_the_drop_count_in_the_next_message():
    clock = TestClock(T0)
    slow, fast = Sink("tg"), Sink("log")
    d = make(clock, slow, fast, rate_per_minute=3)
    for k in range(5):  # five distinct alerts at 0..4 s: the 4th and 5th are over 3 per minute
        clock.set_time(T0 + k * S)
        d.submit("WARNING", "C", f"alert {k}")
    clock.set_time(T0 + 60 * S)  # the alert sent at 0 s left the 60 s window (sent at 1 s and 2 s remain)
    d.submit("WARNING", "C", "alert 5")
    clock.set_time(T0 + 60 * S + 1)
    d.submit("WARNING", "C", "alert 6")  # 3 in the window again (1 s, 2 s, 60 s): dropped
    clock.set_time(T0 + 61 * S)  # 1 s is out: room for one
    d.submit("WARNING", "C", "alert 7")
    await d.drain()
    assert slow.texts == ["[WARNING] C: alert 0", "[WARNING] C: alert 1", "[WARNING] C: alert 2",
                          "[WARNING] C: alert 5 [2 alerts not delivered]",
                          "[WARNING] C: alert 7 [1 alerts not delivered]"]
    assert slow.texts == fast.texts  # each sink has its own limit; both saw the same
    st = d.stats()["tg"]
    assert (st["sent"], st["rate_dropped"], st["undelivered"]) == (5, 3, 0)


async def test_a_slow_sink_fills_its_bounded_queue_and_never_blocks_the_engine():
    clock = TestClock(T0)
    slow = Blocking("tg")
    d = make(clock, slow, queue_size=2)
    d.start()
    bus = MessageBus()
    d.attach(bus)
    bus.publish(AlertRaised(ts_event=T0, ts_init=T0, level="ERROR", code="A", message="first"))
    await slow.entered.wait()  # the worker holds "first" in a send that does not return
    for k in range(4):  # the publisher returns at once each time; the queue takes two
        bus.publish(AlertRaised(ts_event=T0, ts_init=T0, level="ERROR", code="A", message=f"m{k}"))
    st = d.stats()["tg"]
    assert (st["queued"], st["queue_dropped"]) == (2, 2)
    slow.release.set()
    await d.stop()
    # m2 and m3 found the queue full; the next alert queued after them would carry the note
    assert slow.texts == ["[ERROR] A: first", "[ERROR] A: m0", "[ERROR] A: m1"]
    assert d.stats()["tg"]["undelivered"] == 2
    d.submit("ERROR", "A", "m4")
    await d.drain()
    assert slow.texts[-1] == "[ERROR] A: m4 [2 alerts not delivered]"
    assert d.stats()["tg"]["sent"] == 4  # first, m0, m1, m4


async def test_a_failing_sink_is_counted_redacted_and_reported_never_raised(caplog):
    caplog.set_level(logging.DEBUG)
    clock = TestClock(T0)
    tg = Failing("tg")
    d = make(clock, tg, secrets=["SECRET-TOKEN-123"])
    d.submit("ERROR", "A", "one")
    await d.drain()  # the send raises; drain does not
    tg.fail = False
    d.submit("ERROR", "A", "two")
    await d.drain()
    assert tg.texts == ["[ERROR] A: two [1 alerts not delivered]"]
    assert d.stats()["tg"]["failed"] == 1
    assert "SECRET-TOKEN-123" not in caplog.text
    assert "bot***/sendMessage" in caplog.text


async def test_secrets_are_redacted_from_alert_texts():
    clock = TestClock(T0)
    sink = Sink()
    d = make(clock, sink, secrets=["abcd1234efgh", "", "xy"])  # empty and too short: ignored
    d.submit("ERROR", "AUTH", "key abcd1234efgh refused (xy)")
    await d.drain()
    assert sink.texts == ["[ERROR] AUTH: key *** refused (xy)"]


def test_the_bus_handler_takes_only_alerts_and_never_raises():
    clock = TestClock(T0)
    d = make(clock, Sink())
    d.on_event(TradingStateChanged(ts_event=T0, ts_init=T0, state="HALTED", previous="ACTIVE", who="k", reason=""))
    assert d.stats()["rec"]["queued"] == 0

    class Broken:
        def timestamp_ns(self):
            raise RuntimeError("clock broke")

    bad = make(Broken(), Sink())
    bad.on_event(AlertRaised(ts_event=T0, ts_init=T0, level="ERROR", code="A", message="m"))  # no raise
    assert bad.stats()["*"]["errors"] == 1


async def test_max_keys_closes_the_oldest_window_early():
    clock = TestClock(T0)
    sink = Sink()
    d = make(clock, sink, max_keys=2)
    d.submit("WARNING", "A", "a")
    d.submit("WARNING", "A", "a")  # a repeat in A's window
    clock.set_time(T0 + S)
    d.submit("WARNING", "B", "b")
    clock.set_time(T0 + 2 * S)
    d.submit("WARNING", "C", "c")  # a third key: A (the oldest) is closed with its summary
    await d.drain()
    assert sink.texts == ["[WARNING] A: a", "[WARNING] B: b", "[WARNING] A: a (repeated 1 times in 300 s)",
                          "[WARNING] C: c"]


async def test_log_and_telegram_sinks(caplog):
    caplog.set_level(logging.INFO, logger="desk.alerts.sink")

    class Bot:
        def __init__(self):
            self.sent = []

        async def send(self, text):
            self.sent.append(text)

    bot = Bot()
    d = make(TestClock(T0), LogSink(), TelegramSink(bot))
    d.submit("INFO", "FIT", "fitted")
    d.submit("ERROR", "HALT", "halted")
    await d.drain()
    assert bot.sent == ["[ERROR] HALT: halted"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "desk.alerts.sink"] == [
        ("INFO", "[INFO] FIT: fitted"), ("ERROR", "[ERROR] HALT: halted")]


def test_redacting_filter_covers_args_and_tracebacks(caplog):
    lg = logging.getLogger("tests.ops.redact")
    f = RedactingFilter(["tok-9876543"])
    lg.addFilter(f)
    try:
        caplog.set_level(logging.INFO, logger="tests.ops.redact")
        lg.info("url %s", "https://h/bottok-9876543/getMe")
        try:
            raise ValueError("bad url https://h/bottok-9876543/x")
        except ValueError:
            lg.exception("failed")
    finally:
        lg.removeFilter(f)
    assert "tok-9876543" not in caplog.text
    assert "https://h/bot***/getMe" in caplog.text and "bad url https://h/bot***/x" in caplog.text
    assert redact("aaaa-bbbb aaaa", ["aaaa", "aaaa-bbbb"]) == "*** ***"


@pytest.mark.parametrize("kw, field", [({"dedupe_window_ns": 0}, "dedupe_window_ns"),
                                       ({"rate_per_minute": -1}, "rate_per_minute"),
                                       ({"queue_size": 1.5}, "queue_size"),
                                       ({"send_timeout_s": 0}, "send_timeout_s")])
def test_bad_settings_are_refused_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        make(TestClock(T0), Sink(), **kw)
    with pytest.raises(ValueError, match="min_level"):
        make(TestClock(T0), Sink(min_level="LOUD"))
    with pytest.raises(ValueError, match="used twice"):
        make(TestClock(T0), Sink(), Sink())
