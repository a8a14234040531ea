"""The crash test (issue 5): a headless replay in a subprocess is killed
with SIGKILL at named points and at seeded random bars, restarted each time
until it ends, and compared with an uninterrupted run of the same data: the
same orders by ClientOrderId, no duplicates at the venue, the same fills,
positions, balances and realized PnL to the last decimal."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import head_csv

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["after_order_written", "after_send", "after_fill_received", "before_fill_commit"]


def run(state: Path, data: Path, plan: dict | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DESK_CRASH_PLAN", None)
    if plan:
        env["DESK_CRASH_PLAN"] = json.dumps(plan)
    out, err = state.parent / f"{state.name}.out", state.parent / f"{state.name}.err"
    with open(out, "w") as fo, open(err, "w") as fe:  # files, not pipes: a killed run must not block the reader
        proc = subprocess.run(
            [sys.executable, "-m", "desk.cli", "run", "--headless", "--data", str(data), "--state-dir", str(state)],
            cwd=ROOT, env=env, stdout=fo, stderr=fe, timeout=120,
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())


def books(state: Path) -> dict:
    eng = sqlite3.connect(state / "desk.sqlite")
    ven = sqlite3.connect(state / "venue-paper.sqlite")
    out = {
        "orders": sorted(eng.execute("SELECT client_order_id, side, order_type, quantity, price, status, filled_qty "
                                     "FROM orders")),
        "fills": sorted(eng.execute("SELECT trade_id, client_order_id, side, last_qty, last_px, commission "
                                    "FROM fills")),
        "venue_orders": sorted(ven.execute("SELECT client_order_id, side, quantity, price, status, filled "
                                           "FROM orders")),
        "venue_fills": sorted(ven.execute("SELECT trade_id, client_order_id, qty, px, commission FROM fills")),
        "venue_state": dict(ven.execute("SELECT key, value FROM state WHERE key IN ('free', 'locked')")),
    }
    eng.close()
    ven.close()
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_and_restart_until_done_equals_one_run(tmp_path, klines_dir, seed):
    data = head_csv(klines_dir / "BTCUSDT-1h-2020-12-01_2021-07-17.csv", tmp_path / "BTCUSDT-1h-c.csv", 3000)
    straight = run(tmp_path / "straight", data, None)
    assert straight.returncode == 0, straight.stderr[-2000:]
    want = json.loads(straight.stdout)
    assert want["fills"] >= 20

    rng = random.Random(seed)
    state = tmp_path / "crashed"
    kills, hit, reconciled, runs = 0, set(), 0, 0
    got = None
    while got is None:
        runs += 1
        assert runs < 200, "the replay never finished"
        # cycle through the named points, with a seeded random bar kill every third run; after 40
        # runs, no more kills so the replay can finish
        if runs > 40:
            plan = None
        elif runs % 3 == 0:
            plan = {"bar": rng.randint(5, 60)}
        else:
            plan = {POINTS[(runs - runs // 3) % len(POINTS)]: 1}
        proc = run(state, data, plan)
        reconciled += proc.stderr.count("reconciliation:")
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            hit.add(next(iter(plan)))
            continue
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        if summary.get("finished"):
            got = summary
    assert kills >= 20, f"only {kills} kills"
    assert hit >= set(POINTS), f"named points never hit: {set(POINTS) - hit}"
    assert reconciled >= 1, "no disagreement between the two stores was ever reconciled"
    for k in ("bars", "orders", "fills", "fees", "realized_pnl", "unrealized_pnl", "equity_end", "cash_end",
              "positions", "per_model"):
        assert got[k] == want[k], k
    a, b = books(tmp_path / "straight"), books(state)
    assert a == b
    coids = [o[0] for o in b["venue_orders"]]
    assert len(coids) == len(set(coids))  # no duplicates at the venue
