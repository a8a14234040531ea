"""A live daemon's store passes ``desk check-store`` (desk/check_store.py)
after the per-venue kill and resume, the global kill and resume and a
SIGTERM stop: on a live venue the engine clock is the wall clock, so a
governance row whose ``ts`` came from a second clock read (the tester's
``governance_actions 4: ts stored ...4621, journal gives ...5182`` after
``POST /kill {"enabled": false, "venue": "BINANCE"}``) is a difference.
Every governance row's ``ts`` is its journal event's ``ts_event``.

Driven as tests/live/test_live_daemon.py drives it (the fake Binance in a
thread of this process, ``desk.cli.main`` in the test's thread, a driver
thread on the API that ends with a real SIGTERM).
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from typing import Any

import httpx

from desk.check_store import run_check_store
from tests.live.test_live_binance import creds, fake  # noqa: F401 - fixtures
from tests.live.test_live_daemon import _root_log_handlers, free_port, live_config, run_daemon_with, until  # noqa: F401

BARS = 5


def test_live_kills_resumes_and_stop_leave_a_store_with_no_difference(tmp_path, fake, creds, capsys, monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    port = free_port()
    cfg = live_config(tmp_path, fake.srv)
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{port}"

    def drive(stopped: threading.Event) -> dict[str, Any]:
        until("/health", lambda: httpx.get(url + "/health", timeout=2).json(), stopped)
        h = {"X-OPS-TOKEN": (state / "ops_token").read_text().strip()}
        with httpx.Client(base_url=url, headers=h, timeout=5) as c:
            until(f"{BARS} bars", lambda: c.get("/status").json()["counts"]["bars"] == BARS, stopped)
            for path, body in [("/kill", {"enabled": False, "venue": "BINANCE", "reason": "venue drill"}),
                               ("/resume", {"venue": "BINANCE", "reason": "venue back"}),
                               ("/kill", {"enabled": False, "reason": "drill"}),
                               ("/resume", {"reason": "drill over"})]:
                r = c.post(path, json=body)
                assert r.status_code == 200, (path, r.text)
            return {"status": c.get("/status").json()}

    code, got = run_daemon_with(["run", "--config", str(cfg), "--headless", "--bars", str(BARS),
                                 "--api-port", str(port), "--state-dir", str(state)], drive)
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert got["status"]["trading_state"] == "ACTIVE" and got["status"]["halted_venues"] == []
    with sqlite3.connect(state / "desk.sqlite") as c:
        rows = c.execute("SELECT g.action, g.reason, g.ts, j.ts_event FROM governance_actions g "
                         "JOIN journal j ON j.seq = g.seq ORDER BY g.seq").fetchall()
    assert [(a, r) for a, r, _, _ in rows] == [("VENUE_HALTED", "venue drill"), ("VENUE_RESUMED", "venue back"),
                                               ("HALTED", "drill"), ("ACTIVE", "drill over"), ("STOP", "SIGTERM")]
    assert all(ts == ts_event for _, _, ts, ts_event in rows), rows
    out = io.StringIO()
    assert run_check_store(state, out=out) == 0, out.getvalue()
    assert "no difference" in out.getvalue().splitlines()[0]
    last = json.loads((state / "audit" / "orders.jsonl").read_text().splitlines()[-1])
    assert (last["code"], last["actor"], last["reason"]) == ("DAEMON_STOPPED", "daemon", "SIGTERM")
