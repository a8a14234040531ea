"""A restart after a kill between the paper venue's commit of a step's
fills and the desk's commit of that step (the SIM default: two instruments
per step): the fills the venue made in that step are handed to the engine at
their bar when the step runs again, so the restarted run equals an
uninterrupted one (summary and journal of order events)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def desk(state: Path, plan: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DESK_CRASH_PLAN", None)
    if plan:
        env["DESK_CRASH_PLAN"] = json.dumps(plan)
    return subprocess.run([sys.executable, "-m", "desk.cli", "run", "--headless", "--bars", "3000",
                           "--state-dir", str(state)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def order_events(state: Path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(state / "desk.sqlite") as c:
        rows = c.execute("SELECT type, payload FROM journal WHERE type LIKE 'Order%' ORDER BY seq").fetchall()
    return [(t, json.loads(p).get("client_order_id", "")) for t, p in rows]


def test_fills_of_the_step_the_process_died_in_arrive_at_their_bar(tmp_path):
    one = desk(tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    crashed = desk(tmp_path / "two", {"before_fill_commit": 3})  # killed by SIGKILL inside a step's commit
    assert crashed.returncode == -9
    again = desk(tmp_path / "two")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(at its bar)" in again.stderr  # a fill the venue made in the lost step waited for its bar
    a, b = json.loads(one.stdout), json.loads(again.stdout)
    for k in ("wall_s", "bars_per_s"):
        a.pop(k), b.pop(k)
    assert a == b
    assert order_events(tmp_path / "one") == order_events(tmp_path / "two")
