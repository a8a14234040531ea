"""A store written by the daemon that did nothing wrong passes ``desk
check-store``: the SIM daemon (desk/daemon.py, in-process as in
tests/daemon/test_daemon.py, ``--bars 0``) warms its models up, the operator drives the
governance over the control API (kill, resume, per-venue kill and resume,
pause a model, an order canceled by the kill and one by the stop), and a
real SIGTERM stops it. Then ``desk check-store`` exits 0 with "no
difference" (the stop's ``STOP`` governance row is the one the journal's
``DAEMON_STOPPED`` alert gives, at its seq and ts), and the audit log's last
line, written at the stop (not repaired at the next start), is the stop.

The test polls the API with a deadline (the daemon runs on the same loop);
nothing sleeps on time to pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: ``--bars 0``: warmed up, then serving without a live bar (after one step the models hold all the
#: cash, and a manual buy resting below the market would be rejected)
BARS = 0
TOKEN = "in-process-token-0123456789"


async def _poll(what: str, check, deadline_s: float = 20.0):
    """Await ``check()`` until it returns something truthy."""
    end = time.monotonic() + deadline_s
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # a loop turn for the daemon's tasks


async def test_daemon_governance_and_sigterm_leave_a_store_check_store_passes(tmp_path):
    from desk.api import create_app
    from desk.daemon import ApiOptions, _Daemon, bind_socket
    from tests.app.engines import wired_sim

    state = tmp_path / "s"
    built = wired_sim(state)
    e = built.engine
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    d = _Daemon(built, type("O", (), {"bars": BARS})(), ApiOptions(port=port), create_app(e, token=TOKEN), sock, port)
    stray: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
    loop = asyncio.get_running_loop()
    try:
        main = asyncio.create_task(d.main())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-OPS-TOKEN": TOKEN},
                                     timeout=10) as c:
            async def warmed_up():
                return d.engine_started and (await c.get("/health")).json()["status"] == "ok"

            await _poll("the warm-up", warmed_up)
            price = str(int(e.portfolio.marks[next(iter(sorted(e.instruments, key=str)))] / 2))
            order = {"symbol": "BTCUSDT.SIM", "side": "BUY", "quantity": "0.001", "order_type": "LIMIT",
                     "price": price}
            r = await c.post("/orders", json=order)  # rests (half the market): the kill cancels it
            assert r.status_code == 201 and r.json()["status"] == "ACCEPTED", r.text
            r = await c.post("/kill", json={"enabled": False, "reason": "drill"})
            assert r.status_code == 200 and r.json()["cancels"] >= 1, r.text
            assert (await c.post("/resume", json={"reason": "drill over"})).status_code == 200
            r = await c.post("/kill", json={"enabled": False, "venue": "SIM", "reason": "venue drill"})
            assert r.status_code == 200, r.text
            assert (await c.post("/resume", json={"venue": "SIM", "reason": "venue back"})).status_code == 200
            r = await c.post("/models/hmm_v1/pause", json={"reason": "look at it"})
            assert r.status_code == 200, r.text
            r = await c.post("/orders", json=order)  # left working: the stop cancels it
            assert r.status_code == 201 and r.json()["status"] == "ACCEPTED", r.text
            st = (await c.get("/status")).json()
            assert (st["trading_state"], st["paused_models"]) == ("ACTIVE", ["hmm_v1"])
        os.kill(os.getpid(), signal.SIGTERM)  # taken by the daemon's loop handler
        assert await asyncio.wait_for(main, 20) == 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        built.close()
    assert not stray, "the SIGTERM reached the test's own handler, not the daemon's"

    with sqlite3.connect(state / "desk.sqlite") as conn:
        gov = [(w.split(":")[0], a, r, json.loads(dt)) for w, a, r, dt in conn.execute(
            "SELECT who, action, reason, details FROM governance_actions ORDER BY seq")]
        last_seq, last_type, last_payload = conn.execute(
            "SELECT seq, type, payload FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    # every command over the API (who api:127.0.0.1), then the stop; the stop canceled the second order
    assert gov == [
        ("api", "HALTED", "drill", {"previous": "ACTIVE"}),
        ("api", "ACTIVE", "drill over", {"previous": "HALTED"}),
        ("api", "VENUE_HALTED", "venue drill", {"venue": "SIM"}),
        ("api", "VENUE_RESUMED", "venue back", {"venue": "SIM"}),
        ("api", "MODEL_PAUSED", "look at it", {"model_id": "hmm_v1"}),
        ("daemon", "STOP", "SIGTERM", {"on_stop": "cancel", "orders": 1, "still_working": 0}),
    ]
    assert (meta["status"], meta["stopped_by"]) == ("stopped", "SIGTERM")
    assert last_type == "AlertRaised" and json.loads(last_payload)["code"] == "DAEMON_STOPPED"

    # the audit's last line is the stop, written at the stop
    last = json.loads((state / "audit" / "orders.jsonl").read_text().splitlines()[-1])
    assert (last["seq"], last["type"], last["code"], last["actor"], last["reason"]) == (
        last_seq, "AlertRaised", "DAEMON_STOPPED", "daemon", "SIGTERM")

    # desk check-store: no difference, exit 0
    env = {k: v for k, v in os.environ.items() if k != "OPS_TOKEN"}
    p = subprocess.run([sys.executable, "-m", "desk.cli", "check-store", "--state-dir", str(state)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no difference" in p.stdout.splitlines()[0], p.stdout
    assert "governance_actions 6" in p.stdout.splitlines()[0]
