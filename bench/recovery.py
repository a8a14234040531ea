"""Restart time and journal write throughput (issue 5), in one run.

Run:  .venv/bin/python bench/recovery.py [--sizes 10000,100000,1000000]

Prints:

* **restart time**, process start to trading again, for a state dir whose
  journal holds 10k, 100k and 1M events: a child process is started
  (``python bench/recovery.py --child``), imports the desk, builds the
  engine on the state dir (store open, audit log repaired from the journal,
  fit worker started, snapshot restored), reconciles with the paper venue
  (``Engine.recover``) and processes one step; the parent times it from
  ``Popen`` to the child's "trading" line. The child's own split of the
  phases is printed too. The state dir comes from a short real replay
  (``BTCUSDT-1h``, 2000 bars) whose journal is then padded, after its
  resume point, by repeating its own rows under new sequence numbers
  (``executemany`` in one transaction), and whose audit log is brought up
  to date first (the steady state of a desk that stopped cleanly);
* **journal write throughput** in events per second through
  ``core.store.Store`` (``synchronous=FULL``, WAL): one commit per event,
  against one ``executemany`` commit per flush of 64 and of 1000 events
  (the engine flushes once per event-loop turn).

A measurement, not a test. Temporary directories only; no network; no
sleeping. Takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CSV = ROOT.parent / "shared" / "data" / "binance" / "klines" / "BTCUSDT-1h-2020-12-01_2021-07-17.csv"
BASE_BARS = 2000


# ---------------------------------------------------------------- the state dir
def base_state(work: Path) -> tuple[Path, Path]:
    """A real replay of ``BASE_BARS`` bars on a copy of the first
    ``BASE_BARS + 500`` rows (the models trade once warmed up):
    returns (csv, state dir) with a committed resume point."""
    import asyncio

    from desk.wiring import RunOptions, build
    from tests.conftest import head_csv

    csv = head_csv(CSV, work / "BTCUSDT-1h-bench.csv", BASE_BARS + 500)
    state = work / "state"
    built = build(RunOptions(data=[csv], state_dir=state))
    try:
        async def go() -> None:
            await built.engine.warm_up()
            await built.engine.run(max_bars=BASE_BARS)

        asyncio.run(go())
    finally:
        built.close()
    return csv, state


def pad_journal(state: Path, target: int) -> tuple[int, float]:
    """Append copies of the journal's own rows until it holds ``target``
    events, in one transaction; then bring the audit log up to date.
    Returns (rows added, seconds spent writing them)."""
    from core.audit import repair_audit
    from core.store import Store

    db = state / "desk.sqlite"
    conn = sqlite3.connect(db)
    have = conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    if have >= target:
        conn.close()
        return 0, 0.0
    sample = conn.execute("SELECT ts_event, ts_init, type, payload FROM journal ORDER BY seq LIMIT 5000").fetchall()
    seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0]
    if not sample:
        raise RuntimeError("the base replay journaled nothing to repeat")
    need = target - have
    t0 = time.perf_counter()
    with conn:
        chunk = 50_000
        done = 0
        while done < need:
            n = min(chunk, need - done)
            rows = [(seq + done + i + 1, *sample[(done + i) % len(sample)]) for i in range(n)]
            conn.executemany("INSERT INTO journal VALUES (?,?,?,?,?)", rows)
            done += n
    wrote = time.perf_counter() - t0
    conn.close()
    store = Store(db)
    repair_audit(state / "audit" / "orders.jsonl", store.iter_journal())
    store.close()
    return need, wrote


def restart(csv: Path, state: Path) -> dict:
    """Start a child that restarts the desk on ``state``; returns its timings."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(csv), str(state)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    t_trading = time.perf_counter() - t0
    rest = proc.stdout.read()
    proc.wait(timeout=120)
    if not line.startswith("{"):
        raise RuntimeError(f"child failed: {line}{rest}")
    out = json.loads(line)
    out["process_start_to_trading_s"] = t_trading
    return out


def child(csv: Path, state: Path) -> None:
    """The restarted desk: build (store, audit repair, fit worker, restore),
    recover, one step; prints one JSON line when trading again."""
    import asyncio

    import desk.wiring as wiring
    from desk.wiring import RunOptions, build

    t_imp = time.perf_counter()
    repair = [0.0]
    real_repair = wiring.repair_audit

    def timed_repair(*a: object, **k: object) -> dict:
        t = time.perf_counter()
        try:
            return real_repair(*a, **k)  # type: ignore[arg-type]
        finally:
            repair[0] += time.perf_counter() - t

    wiring.repair_audit = timed_repair  # type: ignore[assignment]
    built = build(RunOptions(data=[csv], state_dir=state))
    t_build = time.perf_counter()
    eng = built.engine
    assert built.continued, "no resume point"

    async def go() -> float:
        await eng.recover()
        t = time.perf_counter()
        await eng.run(max_bars=1)
        return t

    t_rec = asyncio.run(go())
    t_step = time.perf_counter()
    journal = eng.store.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    print(json.dumps({
        "journal_events": journal,
        "interpreter_and_imports_s": t_imp - T_START,
        "build_s": t_build - t_imp,
        "audit_repair_s": repair[0],
        "recover_s": t_rec - t_build,
        "first_step_s": t_step - t_rec,
    }), flush=True)
    built.close()


# ---------------------------------------------------------------- journal throughput
def throughput(work: Path, seconds: float = 2.0) -> list[tuple[str, int, float]]:
    """Events/s through ``Store`` with one commit per event and with one
    commit per flush of 64 and 1000 events (each measured for about
    ``seconds``)."""
    from decimal import Decimal

    from core.events import OrderFilled
    from core.identifiers import InstrumentId
    from core.store import Store

    iid = InstrumentId("BTCUSDT", "BINANCE")

    def event(i: int) -> OrderFilled:
        return OrderFilled(ts_event=i, ts_init=i, client_order_id=f"NHD-{i:x}-0-0", instrument_id=iid,
                           model_id="hmm_v1", venue_order_id=f"P-{i}", trade_id=f"T-{i}", side="BUY",
                           last_qty=Decimal("0.00100"), last_px=Decimal("27777.78"), commission=Decimal("0.000001"),
                           commission_currency="BTC", liquidity_side="MAKER")

    out = []
    for label, batch in (("one commit per event", 1), ("executemany per flush of 64", 64),
                         ("executemany per flush of 1000", 1000)):
        path = work / f"tp-{batch}.sqlite"
        store = Store(path)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(batch):
                n += 1
                store.append(event(n))
            store.flush()
        wall = time.perf_counter() - t0
        store.close()
        out.append((label, n, wall))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="journal sizes (events), ascending")
    ap.add_argument("--child", nargs=2, metavar=("CSV", "STATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        t = time.perf_counter()
        csv, state = base_state(work)
        conn = sqlite3.connect(state / "desk.sqlite")
        base = conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        conn.close()
        print(f"base state: a {BASE_BARS}-bar replay, {base} journal events ({time.perf_counter() - t:.1f} s)")
        print("restart, process start to trading again (build + restore + recover + one step):")
        for size in sizes:
            added, wrote = pad_journal(state, size)
            r = restart(csv, state)
            mb = sum(f.stat().st_size for f in state.rglob("*") if f.is_file()) / 1e6
            print(f"  {r['journal_events']:>9,} events ({mb:,.0f} MB in the state dir; {added:,} rows padded in "
                  f"{wrote:.1f} s): {r['process_start_to_trading_s']:.2f} s "
                  f"[imports {r['interpreter_and_imports_s']:.2f}, build {r['build_s']:.2f} of which audit repair "
                  f"{r['audit_repair_s']:.2f}, recover {r['recover_s']:.3f}, first step {r['first_step_s']:.3f}]")
        shutil.rmtree(state, ignore_errors=True)
        print("journal write throughput (core.store.Store, synchronous=FULL, WAL):")
        res = throughput(work)
        per_event = res[0][1] / res[0][2]
        for label, n, wall in res:
            print(f"  {label:<31} {n / wall:>10,.0f} events/s ({n:,} events in {wall:.1f} s; "
                  f"x{(n / wall) / per_event:.0f})")
    print(f"total {time.perf_counter() - t_all:.0f} s; pid {os.getpid()}")


if __name__ == "__main__":
    main()
