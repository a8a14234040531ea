"""The live TUI (``desk run --config`` without ``--headless``) after its
terminal goes away: an SSH drop or ``tmux kill-session`` closes the pty and
sends SIGHUP. The desk must halt, cancel its working orders, persist, mark
the run stopped, release ``desk.lock`` and exit within seconds.

Before the fix the process stayed alive (minutes) holding the lock: with its
terminal gone Textual's writer thread dies on the first write (EIO), its
30-entry queue fills and the next write blocks the event loop for good.

The desk runs in a child process (``desk.cli.main``) whose stdin, stdout and
stderr are the slave of a pty (``pty.openpty``), against the fake Binance
(tests/venues/binance_server.py) running on a thread of this process on
loopback. The child's models fit inline (``tests.helpers.scripted.InlineExecutor``).
The fake's book sits far above the bars' prices so the desk's buy limits
rest: they are the working orders the hangup must cancel. The test then
closes the pty's master (the terminal is gone: the child's writes fail with
EIO) and sends SIGHUP, as tmux does."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.live.test_live_binance import (  # noqa: F401 - fixtures
    EXCHANGE_INFO,
    KEY,
    KEY_ENV,
    LIVE_BARS,
    MIN_MS,
    SECRET,
    SECRET_ENV,
    WARMUP,
    ThreadedFake,
    kline_rows,
    price_path,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
#: the child: the CLI with the fit executor inline (no worker process)
CHILD = (
    "import sys; sys.path.insert(0, {root!r});"
    "import desk.live; from tests.helpers.scripted import InlineExecutor;"
    "desk.live.default_executor = InlineExecutor;"
    "from desk.cli import main; sys.exit(main(sys.argv[1:]))"
)
#: the child with the live desk's own fit worker process (it gets the SIGHUP too)
CHILD_WORKER = "import sys; sys.path.insert(0, {root!r}); from desk.cli import main; sys.exit(main(sys.argv[1:]))"
#: what the exit after a SIGHUP may take: the halt and the engine's stop are bounded by
#: desk.app.HANGUP_WAIT_S (5 s) and each venue wait of the stop by desk.live.STOP_VENUE_WAIT_S;
#: with the fake answering it takes well under a second
EXIT_WITHIN_S = 10.0


@pytest.fixture
def fake(tmp_path: Path):
    if not EXCHANGE_INFO.is_file():
        pytest.skip("../shared/data is absent")
    now_ms = time.time_ns() // 1_000_000
    last_closed_open = now_ms // MIN_MS * MIN_MS - MIN_MS
    first = last_closed_open - (WARMUP + 9) * MIN_MS
    rows = kline_rows(first, price_path(WARMUP + 10, LIVE_BARS))
    path = tmp_path / "klines.json"
    path.write_text(json.dumps(rows[:WARMUP + 10]))
    f = ThreadedFake(path, rows[WARMUP + 10:])
    # the touch far above every price (~30000-33000): a buy limit at the bar's close rests
    f.run(lambda: f.srv.set_book("BTCUSDT", "90000.00", "90000.01", "100", "100"))
    yield f
    f.close()


class Pty:
    """A pty whose master is drained on a thread (a full pty buffer would
    block the child's writes: another hang than the one under test)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.out = bytearray()
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self) -> None:
        while True:
            try:
                b = os.read(self.master, 65536)
            except OSError:
                return
            if not b:
                return
            self.out += b

    def hang_up(self) -> None:
        """Close the master: the terminal is gone (the slave's writes fail with EIO)."""
        os.close(self.master)


def lock_is_free(state: Path) -> bool:
    """A second ``flock`` on ``desk.lock`` succeeds (what a restart takes)."""
    with open(state / "desk.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return True


def _controlling_tty(slave: int):
    """The child's ``preexec_fn``: a session of its own whose controlling
    terminal is the pty's slave (as a shell's under tmux or sshd): closing
    the master then makes the kernel send SIGHUP to its foreground group."""

    def pre() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    return pre


@pytest.mark.parametrize("inline_fits", [
    True,
    # the live desk's own fit worker process (it gets the hangup's SIGHUP too): ~5 s more
    pytest.param(False, marks=pytest.mark.slow),
], ids=["inline-fits", "fit-worker-process"])
def test_sighup_with_the_terminal_gone_halts_cancels_and_exits(tmp_path, fake, inline_fits):
    cfg = write_config(tmp_path, fake.srv)
    state = tmp_path / "state"
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40",
           KEY_ENV: KEY, SECRET_ENV: SECRET}
    env.pop("TEXTUAL", None)
    term = Pty()
    proc = subprocess.Popen(
        [sys.executable, "-c", (CHILD if inline_fits else CHILD_WORKER).format(root=str(ROOT)), "run", "--config", str(cfg),
         "--state-dir", str(state)],
        stdin=term.slave, stdout=term.slave, stderr=term.slave, env=env, cwd=str(tmp_path),
        preexec_fn=_controlling_tty(term.slave))
    os.close(term.slave)
    try:
        # wait for a resting desk order at the fake (the TUI is up and trading)
        deadline = time.monotonic() + 90
        while True:
            open_ = fake.run(lambda: [o.client_order_id for o in fake.srv.orders.values() if o.is_open])
            if open_:
                break
            assert proc.poll() is None, f"the desk exited early ({proc.returncode}): {term.out[-3000:]!r}"
            assert time.monotonic() < deadline, f"no resting order; log: {_log(state)[-3000:]}"
            time.sleep(0.2)
        assert not lock_is_free(state)
        term.hang_up()  # the kernel sends SIGHUP to the child's foreground group (the fit worker too)
        os.killpg(proc.pid, signal.SIGHUP)  # and so does tmux kill-session
        t0 = time.monotonic()
        try:
            proc.wait(EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_WITHIN_S} s after SIGHUP; log: {_log(state)[-4000:]}")
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = _log(state)
    assert "SIGHUP" in log and "halting" in log
    assert took < EXIT_WITHIN_S
    assert lock_is_free(state), "desk.lock still held after the exit"
    # every desk order the fake saw is closed there (the halt's and the stop's cancels)
    assert fake.run(lambda: [o.client_order_id for o in fake.srv.orders.values() if o.is_open]) == []
    cancels = fake.run(lambda: [p for m, p in fake.srv.requests if m == "DELETE" and p == "/api/v3/order"])
    assert cancels, "no cancel reached the venue"
    with sqlite3.connect(state / "desk.sqlite") as c:
        meta = dict(c.execute("SELECT key, value FROM meta WHERE key IN ('status', 'trading_state')").fetchall())
        working = c.execute("SELECT COUNT(*) FROM orders WHERE status IN"
                            " ('SUBMITTED', 'ACCEPTED', 'PARTIALLY_FILLED', 'PENDING_CANCEL')").fetchone()[0]
    assert meta.get("status") == "stopped", meta
    assert meta.get("trading_state") == "HALTED", meta
    assert working == 0


def _log(state: Path) -> str:
    p = state / "desk.log"
    return p.read_text(errors="replace") if p.is_file() else "(no desk.log)"


# ---------------------------------------------------------------- a venue that does not answer
class _Stuck:
    """A venue whose reads never answer (an exchange gone quiet)."""

    venue = "STUCK"

    def __init__(self) -> None:
        self.polls = 0

    async def poll(self) -> None:
        self.polls += 1
        await asyncio.Event().wait()


class _Session:
    def __init__(self, venue: Any) -> None:
        self.venue = venue
        self.name = None
        self.reconciled = 0

    async def reconcile(self, mode: str) -> None:
        self.reconciled += 1


class _Store:
    def __init__(self) -> None:
        self.meta = {"status": "running"}

    def meta_get(self, key: str) -> Any:
        return self.meta.get(key)

    def meta_set(self, key: str, value: str) -> None:
        self.meta[key] = value


class _Order:
    client_order_id = "NHD-1-99-0-abcde"


class _Engine:
    def __init__(self, venue: Any) -> None:
        self.session = _Session(venue)
        self.store = _Store()
        self.unreconciled: list[str] = []
        self.checkpoints = 0
        self.cancels = 0

    def working_orders(self) -> list[Any]:
        return [_Order()]

    async def cancel(self, order: Any, reason: str) -> None:  # the cancel's request never answers
        self.cancels += 1
        await asyncio.Event().wait()

    def checkpoint(self) -> None:
        self.checkpoints += 1


async def test_the_stop_does_not_wait_on_a_venue_that_does_not_answer(monkeypatch, caplog):
    import desk.live

    monkeypatch.setattr(desk.live, "STOP_VENUE_WAIT_S", 0.05)
    venue = _Stuck()
    engine = _Engine(venue)
    built = SimpleNamespace(engine=engine, on_stop="cancel")
    caplog.set_level("WARNING", logger="desk.live")
    problems = await asyncio.wait_for(desk.live.finish(built), 5)
    assert problems == []
    # the cancel was sent and given up on; the venue was read once, not reconciled; the store committed
    assert engine.cancels == 1 and venue.polls == 1 and engine.session.reconciled == 0
    assert engine.checkpoints == 1
    assert engine.store.meta["status"] == "stopped"
    text = caplog.text
    assert "the cancel of NHD-1-99-0-abcde did not answer" in text
    assert "the final reconciliation of the venue STUCK did not answer" in text


async def test_a_finished_run_stays_finished_at_the_stop(monkeypatch):
    import desk.live

    venue = _Stuck()
    venue.poll = None  # type: ignore[assignment] - a venue without a final read
    engine = _Engine(venue)
    engine.store.meta["status"] = "finished"
    built = SimpleNamespace(engine=engine, on_stop="keep")
    assert await desk.live.finish(built) == []
    assert engine.store.meta["status"] == "finished" and engine.session.reconciled == 1 and engine.cancels == 0
