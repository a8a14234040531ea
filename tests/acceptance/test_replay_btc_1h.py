"""Acceptance: the main job on recorded data, as a user runs it.

Replays ../shared/data/binance/klines/BTCUSDT-1h-2020-12-01_2021-07-17.csv
headless in a subprocess; the summary reconciles with the stores, and a
second run on a fresh state dir gives the identical summary (apart from
wall_s and bars_per_s)."""

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from core.events import ORDER_EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]


def run_desk(state: Path, data: Path) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "desk.cli", "run", "--headless", "--data", str(data), "--speed", "max",
         "--state-dir", str(state)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must carry exactly one JSON object"
    return json.loads(lines[0]), proc.stderr


def test_btc_1h_replay_reconciles_and_repeats(tmp_path, klines_dir):
    data = klines_dir / "BTCUSDT-1h-2020-12-01_2021-07-17.csv"
    s1, err = run_desk(tmp_path / "a", data)
    assert s1["bars"] == 5482  # rows in the file (data README)
    assert s1["fills"] > 0 and s1["signals"] > 0
    assert set(s1["orders"]) <= {"FILLED", "CANCELED", "DENIED", "REJECTED"}  # nothing left working

    # two independent books: venue cash + positions at last price = portfolio equity
    cash = Decimal(s1["cash_end"])
    held = sum(Decimal(p["quantity"]) * Decimal(p["last_price"]) for p in s1["positions"].values())
    assert cash + held == Decimal(s1["equity_end"])  # exactly: no rounding between the books
    assert s1["positions"]["BTCUSDT.BINANCE"]["last_price"] == "31723.09"  # the file's last close

    db = sqlite3.connect(tmp_path / "a" / "desk.sqlite")
    venue = sqlite3.connect(tmp_path / "a" / "venue-paper.sqlite")
    # fees: each fill's commission valued in USDT (base fees at the fill price), summed = fees
    # (a fill of an order netted for several models is valued per model part, FillAllocated)
    allocated = {}
    for (payload,) in db.execute("SELECT payload FROM journal WHERE type='FillAllocated'"):
        e = json.loads(payload)
        allocated.setdefault(e["trade_id"], []).append(Decimal(e["commission"]))
    fees = Decimal(0)
    for tid, px, fee, ccy in db.execute("SELECT trade_id, last_px, commission, commission_currency FROM fills"):
        for part in allocated.get(tid, [Decimal(fee)]):
            fees += (part * Decimal(px)).quantize(Decimal("0.00000001")) if ccy == "BTC" else part
    assert fees == Decimal(s1["fees"])
    assert db.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == s1["fills"]
    # the venue saw every fill but the internal crosses of netted models
    assert venue.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == s1["fills"] - s1["internal_fills"]
    # realized and unrealized per model sum exactly to the totals
    assert sum(Decimal(m["realized"]) for m in s1["per_model"].values()) == Decimal(s1["realized_pnl"])
    assert sum(Decimal(m["unrealized"]) for m in s1["per_model"].values()) == Decimal(s1["unrealized_pnl"])
    # order events in the store = order lines in the audit log
    journal = [(t, json.loads(p)["client_order_id"]) for t, p in
               db.execute("SELECT type, payload FROM journal ORDER BY seq") if t in ORDER_EVENT_TYPES]
    audit = [json.loads(ln) for ln in (tmp_path / "a" / "audit" / "orders.jsonl").read_text().splitlines()]
    assert [(a["type"], a["client_order_id"]) for a in audit if a["type"] in ORDER_EVENT_TYPES] == journal
    assert all(isinstance(a["seq"], int) for a in audit)

    # daily PnL by UTC day: the rows add up to the whole run's PnL
    days = s1["daily_pnl"]
    # one row per UTC day of data from 2020-12-01; nothing traded during the 520-bar (21.7-day) warm-up
    assert days[0]["date"] == "2020-12-01" and days[-1]["date"] == "2021-07-17"
    assert all(Decimal(d["pnl"]) == 0 for d in days if d["date"] < "2020-12-22")
    total = sum(Decimal(d["pnl"]) for d in days)
    assert total == Decimal(s1["equity_end"]) - Decimal(s1["equity_start"])
    assert sum(Decimal(d["realized"]) for d in days) == Decimal(s1["realized_pnl"])
    # a second method: desk export-pnl reads the journal's fills and EndOfDayMarked rows, not the engine's
    # daily figures; every day's TOTAL row equals the summary's daily row (realized and unrealized change)
    from desk.export import export_pnl

    checked = 0
    for d in days[30:200:17]:
        res = export_pnl(tmp_path / "a", d["date"], "UTC")
        rows = {r.split(",")[1]: r.split(",") for r in Path(res.path).read_text().splitlines()[1:]}
        total = rows["TOTAL"]  # date, TOTAL, instrument, realized, unrealized, fees, pnl, trades, volume
        assert (Decimal(total[3]), Decimal(total[4])) == (Decimal(d["realized"]), Decimal(d["unrealized_change"])), d
        checked += 1
    assert checked >= 10

    s2, _ = run_desk(tmp_path / "b", data)
    for s in (s1, s2):
        s.pop("wall_s"), s.pop("bars_per_s")
    assert s1 == s2
