"""The store's materialized tables rebuilt from the journal (core.rebuild),
the schema migrations and refusals (core.store), and ``desk check-store``.

Values worked out by hand from the engine tests' scripted order flow:

* one round trip (tests/unit/test_engine.py::test_one_round_trip_by_hand):
  buy 5.0000 ETH at 2000.00, fee 0.005 ETH (valued 10.00 USDT) -> 4.9950
  ETH at cost 10000.00; sell 4.9950 at 2100.00 = 10489.50, fee 10.4895 USDT
  -> realized 479.0105, fees 20.4895, 2 fills. Book: USDT 10000 + 479.0105
  - 0 = 10479.0105, ETH 0.
* netting (tests/unit/test_netting.py::test_engine_nets_two_models_and_
  crosses_internally): m0 2.49875 ETH at cost 5000, fees 2.50 (0.00125 ETH
  at 2000), 2 fills (its NET part and the internal cross); m1 flat,
  realized -7.495, fees 5.00 + 2.495 = 7.495, 3 fills. Book: USDT 10000 -
  7.495 - 5000 = 4992.505 (the venue's cash), ETH 2.49875.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import core.store as store_mod
from core.rebuild import NOT_DERIVED, Difference, compute, rebuild
from core.store import STORE_SCHEMA_VERSION, Migration, Store, StoreError
from tests.conftest import head_csv
from tests.unit.test_engine import IID, build

D = Decimal
ROOT = Path(__file__).resolve().parents[2]

#: the v1 schema as the v1 desk created it (through sqlite-utils)
V1_SCHEMA = """
CREATE TABLE [meta] ([key] TEXT PRIMARY KEY, [value] TEXT);
CREATE TABLE [journal] ([seq] INTEGER PRIMARY KEY, [ts_event] INTEGER, [ts_init] INTEGER, [type] TEXT, [payload] TEXT);
CREATE INDEX [idx_journal_type] ON [journal] ([type]);
CREATE TABLE [orders] ([client_order_id] TEXT PRIMARY KEY, [model_id] TEXT, [instrument_id] TEXT, [side] TEXT,
    [order_type] TEXT, [quantity] TEXT, [price] TEXT, [time_in_force] TEXT, [status] TEXT, [filled_qty] TEXT,
    [avg_px] TEXT, [venue_order_id] TEXT, [reason] TEXT, [step] INTEGER, [ts_init] INTEGER, [ts_last] INTEGER);
CREATE TABLE [fills] ([trade_id] TEXT PRIMARY KEY, [client_order_id] TEXT, [model_id] TEXT, [instrument_id] TEXT,
    [side] TEXT, [last_qty] TEXT, [last_px] TEXT, [commission] TEXT, [commission_currency] TEXT,
    [liquidity_side] TEXT, [ts_event] INTEGER, [seq] INTEGER);
CREATE TABLE [governance_actions] ([seq] INTEGER PRIMARY KEY, [ts] INTEGER, [who] TEXT, [action] TEXT,
    [reason] TEXT, [details] TEXT);
CREATE TABLE [alerts] ([seq] INTEGER PRIMARY KEY, [ts] INTEGER, [level] TEXT, [code] TEXT, [message] TEXT);
CREATE TABLE [checkpoint] ([id] INTEGER PRIMARY KEY, [step] INTEGER, [snapshot] TEXT);
"""


def round_trip(tmp_path: Path, max_bars: int | None = None) -> Path:
    """Run test_one_round_trip_by_hand's engine; returns the store's path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    eng = build(tmp_path, ["2000", "2000", "2000", "2000", "2100", "2100", "2100"], ["1", "1", "0", "0", "0"],
                lows=["1999", "1999", "1999", "1990", "2099", "2099", "2099"])
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=max_bars))
    eng.store.close()
    eng.audit.close()
    return tmp_path / "desk.sqlite"


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------- (a) no difference
def test_round_trip_rebuilds_with_no_difference_and_the_book_by_hand(tmp_path):
    path = round_trip(tmp_path)
    assert rows(path, "SELECT model_id, instrument_id, quantity, cost, realized, fees, fills FROM positions") == [
        ("m0", "ETHUSDT.BINANCE", "0.00000000", "0.00000000", "479.01050000", "20.48950000", 2)]
    assert rows(path, "SELECT asset, total FROM balances ORDER BY asset") == [
        ("ETH", "0.00000000"), ("USDT", "10479.01050000")]
    report = rebuild(path)
    assert report.ok and report.differences == [] and not report.applied
    assert report.rows == {"orders": 2, "fills": 2, "positions": 1, "balances": 2, "governance_actions": 0,
                           "alerts": 0}
    assert "no difference" in report.lines()[0]


def test_the_book_after_the_buy_only(tmp_path):
    # 4 bars: the buy (placed at bar 3) fills at bar 4: 5 - 0.005 = 4.995 ETH at cost 10000.00,
    # fee valued 0.005 * 2000 = 10.00; cash implied 10000 + 0 - 10000 = 0
    path = round_trip(tmp_path, max_bars=4)
    assert rows(path, "SELECT quantity, cost, realized, fees, fills FROM positions") == [
        ("4.99500000", "10000.00000000", "0", "10.00000000", 1)]
    assert [(a, D(t)) for a, t in rows(path, "SELECT asset, total FROM balances ORDER BY asset")] == [
        ("ETH", D("4.995")), ("USDT", D("0"))]
    assert rows(path, "SELECT status FROM orders") == [("FILLED",)]
    assert rebuild(path).ok


def test_netted_fills_and_internal_crosses_rebuild_by_hand(tmp_path):
    eng = build(tmp_path, ["2000"] * 6, ["1"], lows=["1999", "1999", "1999", "1990", "1999", "1999"],
                weights=("0.5", "0.5"))
    eng.models["m0"][IID].targets = [D("0.5"), D("0.5"), D("1"), D("1")]
    eng.models["m1"][IID].targets = [D("1"), D("1"), D("0"), D("0")]
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    eng.store.close()
    path = tmp_path / "desk.sqlite"
    got = [(m, D(q), D(c), D(r), D(f), n) for m, _, q, c, r, f, n in rows(path, "SELECT * FROM positions ORDER BY model_id")]
    assert got == [("m0", D("2.49875"), D("5000"), D("0"), D("2.5"), 2),
                   ("m1", D("0"), D("0"), D("-7.495"), D("7.495"), 3)]
    assert [(a, D(t)) for a, t in rows(path, "SELECT * FROM balances ORDER BY asset")] == [
        ("ETH", D("2.49875")), ("USDT", D("4992.505"))]
    report = rebuild(path)
    assert report.ok, report.lines()
    assert report.rows["fills"] == 4  # the NET buy, two internal crosses, m1's sell


# ---------------------------------------------------------------- (b) tampering
def test_tampered_rows_are_reported_by_table_key_and_column_and_restored(tmp_path):
    path = round_trip(tmp_path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE orders SET quantity='999' WHERE client_order_id='NHD-2-0-0'")
        conn.execute("UPDATE positions SET quantity='999' WHERE model_id='m0'")
    conn.close()
    report = rebuild(path)
    assert report.differences == [
        Difference("orders", "NHD-2-0-0", "quantity", "999", "5.0000"),
        Difference("positions", "m0 ETHUSDT.BINANCE", "quantity", "999", "0.00000000"),
    ]
    assert not report.ok
    assert "orders NHD-2-0-0: quantity stored '999', journal gives '5.0000'" in report.lines()
    assert rows(path, "SELECT quantity FROM orders WHERE client_order_id='NHD-2-0-0'") == [("999",)]  # a check only

    fixed = rebuild(path, apply=True)
    assert fixed.applied and fixed.differences == report.differences
    assert rows(path, "SELECT quantity FROM orders WHERE client_order_id='NHD-2-0-0'") == [("5.0000",)]
    assert rows(path, "SELECT quantity FROM positions WHERE model_id='m0'") == [("0.00000000",)]
    assert rebuild(path).ok


def test_missing_and_extra_rows_are_reported(tmp_path):
    path = round_trip(tmp_path)
    conn = sqlite3.connect(path)
    (tid,) = conn.execute("SELECT trade_id FROM fills ORDER BY seq LIMIT 1").fetchone()
    with conn:
        conn.execute("DELETE FROM fills WHERE trade_id=?", (tid,))
        conn.execute("INSERT INTO alerts VALUES (999, 1, 'INFO', 'FAKE', 'not in the journal')")
    conn.close()
    report = rebuild(path)
    assert report.differences == [
        Difference("fills", tid, "(row)", None, "present"),
        Difference("alerts", "999", "(row)", "present", None),
    ]
    assert f"fills {tid}: missing from the table (the journal has it)" in report.lines()
    rebuild(path, apply=True)
    assert rebuild(path).ok
    assert rows(path, "SELECT COUNT(*) FROM alerts") == [(0,)]


def test_governance_and_alerts_rebuild_from_their_events(tmp_path):
    eng = build(tmp_path, [str(2000 + 10 * k) for k in range(10)], ["1"], lows=[str(2000 + 10 * k) for k in range(10)])
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=4))
    asyncio.run(eng.governance.halt("test", "kill switch"))
    eng.governance.pause_model("m0", "ops", "look")
    eng.governance.resume("test", "ok")
    eng.store.close()
    path = tmp_path / "desk.sqlite"
    gov = rows(path, "SELECT who, action, reason, details FROM governance_actions ORDER BY seq")
    assert gov == [("test", "HALTED", "kill switch", '{"previous": "ACTIVE"}'),
                   ("ops", "MODEL_PAUSED", "look", '{"model_id": "m0"}'),
                   ("test", "ACTIVE", "ok", '{"previous": "HALTED"}')]
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE governance_actions SET reason='edited' WHERE action='MODEL_PAUSED'")
    conn.close()
    report = rebuild(path)
    assert [(d.table, d.column, d.stored, d.rebuilt) for d in report.differences] == [
        ("governance_actions", "reason", "edited", "look")]


def test_a_flatten_report_is_not_in_the_journal_and_is_kept(tmp_path):
    eng = build(tmp_path, ["2000", "2000", "2000", "2000", "2100", "2100", "2100"], ["1"],
                lows=["1999", "1999", "1999", "1990", "2099", "2099", "2099"])
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run(max_bars=4))  # holds 4.995 ETH
    asyncio.run(eng.governance.flatten("ops", "drill"))
    eng.store.close()
    path = tmp_path / "desk.sqlite"
    (details,) = rows(path, "SELECT details FROM governance_actions WHERE action='FLATTEN'")[0]
    conn = sqlite3.connect(path)
    rebuilt = compute(conn)
    conn.close()
    flatten = [r for r in rebuilt.tables["governance_actions"].values() if r["action"] == "FLATTEN"]
    assert [(r["who"], r["reason"], r["details"]) for r in flatten] == [("ops", "drill", NOT_DERIVED)]
    assert rebuild(path).ok
    rebuild(path, apply=True)  # nothing differs: nothing rewritten, the report stays
    assert rows(path, "SELECT details FROM governance_actions WHERE action='FLATTEN'") == [(details,)]


# ---------------------------------------------------------------- (c) migration
def make_v1_store(src: Path, dst: Path, capital: str = "10000") -> None:
    """A v1 store by hand: the v1 schema, with the journal, orders (v1
    columns), fills and alerts of ``src`` and a setup naming the capital."""
    conn = sqlite3.connect(dst)
    for stmt in V1_SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.execute("ATTACH DATABASE ? AS src", (str(src),))
    with conn:
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO meta VALUES ('setup', ?)", (json.dumps({"capital": capital}),))
        conn.execute("INSERT INTO journal SELECT * FROM src.journal")
        conn.execute("INSERT INTO orders SELECT client_order_id, model_id, instrument_id, side, order_type, quantity,"
                     " price, time_in_force, status, filled_qty, avg_px, venue_order_id, reason, step, ts_init,"
                     " ts_last FROM src.orders")
        conn.execute("INSERT INTO fills SELECT * FROM src.fills")
        conn.execute("INSERT INTO alerts SELECT * FROM src.alerts")
    conn.execute("DETACH DATABASE src")
    conn.close()


def test_a_v1_store_is_migrated_to_v2_on_open(tmp_path):
    src = round_trip(tmp_path / "a")
    v1 = tmp_path / "v1.sqlite"
    make_v1_store(src, v1)
    assert rows(v1, "SELECT name FROM sqlite_master WHERE name='positions'") == []
    store = Store(v1)
    assert store.schema_version == STORE_SCHEMA_VERSION == 2 and store.schema_version_found == 1
    store.close()
    tables = {r[0] for r in rows(v1, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"positions", "balances", "models", "allocations"} <= tables
    # the new tables and columns are filled from the journal at once
    assert rows(v1, "SELECT model_id, quantity, realized, fees, fills FROM positions") == [
        ("m0", "0.00000000", "479.01050000", "20.48950000", 2)]
    assert rows(v1, "SELECT asset, total FROM balances ORDER BY asset") == [("ETH", "0.00000000"),
                                                                          ("USDT", "10479.01050000")]
    assert rows(v1, "SELECT contingency, post_only, trailing_offset_type FROM orders") == [
        ("NO_CONTINGENCY", 0, "PRICE")] * 2
    assert rows(v1, "SELECT COUNT(*) FROM journal") == rows(src, "SELECT COUNT(*) FROM journal")
    assert rows(v1, "SELECT count(*) FROM models") == rows(v1, "SELECT count(*) FROM allocations") == [(0,)]
    assert rebuild(v1).ok
    Store(v1).close()  # opening again changes nothing
    assert rows(v1, "SELECT value FROM meta WHERE key='schema_version'") == [("2",)]


def test_a_failed_migration_leaves_the_store_at_v1(tmp_path, monkeypatch):
    src = round_trip(tmp_path / "a")
    v1 = tmp_path / "v1.sqlite"
    make_v1_store(src, v1)

    def boom(conn, path):
        conn.execute("CREATE TABLE positions (x TEXT)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store_mod, "MIGRATIONS", [Migration(1, 2, "test", boom)])
    with pytest.raises(StoreError) as err:
        Store(v1)
    msg = str(err.value)
    assert str(v1) in msg and "from schema version 1 to 2" in msg and "disk on fire" in msg
    assert rows(v1, "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]
    assert rows(v1, "SELECT name FROM sqlite_master WHERE name='positions'") == []


def test_a_new_store_is_created_at_the_current_version(tmp_path):
    store = Store(tmp_path / "new.sqlite")
    assert store.schema_version == STORE_SCHEMA_VERSION and store.schema_version_found == 0
    store.close()
    assert rebuild(tmp_path / "new.sqlite").ok


# ---------------------------------------------------------------- (d) refusals
def store_with_version(path: Path, value: str | None) -> Path:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        if value is not None:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (value,))
    conn.close()
    return path


def test_a_newer_store_is_refused_naming_the_file_and_both_versions(tmp_path):
    path = store_with_version(tmp_path / "desk.sqlite", "99")
    with pytest.raises(StoreError) as err:
        Store(path)
    msg = str(err.value)
    assert str(path) in msg and "version 99" in msg and "this desk's 2" in msg
    with pytest.raises(StoreError, match="newer"):
        rebuild(path)
    assert rows(path, "SELECT value FROM meta") == [("99",)]  # untouched


@pytest.mark.parametrize("value, shown", [("banana", "schema_version 'banana'"), ("0", "schema_version '0'"),
                                          (None, "no schema_version")])
def test_an_unknown_or_damaged_meta_is_refused_naming_the_file(tmp_path, value, shown):
    path = store_with_version(tmp_path / "desk.sqlite", value)
    with pytest.raises(StoreError) as err:
        Store(path)
    msg = str(err.value)
    assert str(path) in msg and "unknown store schema" in msg and shown in msg and "1 to 2" in msg


def test_a_database_that_is_not_a_desk_store_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.close()
    with pytest.raises(StoreError, match=r"not a desk store.*things"):
        Store(path)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="garbage.sqlite"):
        Store(garbage)
    with pytest.raises(StoreError, match="no such store"):
        rebuild(tmp_path / "absent.sqlite")


# ---------------------------------------------------------------- desk check-store
def test_check_store_command_reports_then_applies(tmp_path, capsys):
    from desk.cli import main

    state = tmp_path / "state"
    state.mkdir()
    path = round_trip(state)
    assert main(["check-store", "--state-dir", str(state)]) == 0
    assert "no difference" in capsys.readouterr().out
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE positions SET realized='1' WHERE model_id='m0'")
    conn.close()
    assert main(["check-store", "--state-dir", str(state)]) == 1
    out = capsys.readouterr().out
    assert "positions m0 ETHUSDT.BINANCE: realized stored '1', journal gives '479.01050000'" in out
    assert main(["check-store", "--state-dir", str(state), "--apply"]) == 0
    assert "rewrote positions from the journal" in capsys.readouterr().out
    assert main(["check-store", "--state-dir", str(state)]) == 0
    assert main(["check-store", "--state-dir", str(tmp_path / "empty")]) == 2
    assert "no store" in capsys.readouterr().err


# ---------------------------------------------------------------- the acceptance replay
def test_a_headless_replay_rebuilds_with_no_difference(tmp_path, klines_dir):
    data = head_csv(klines_dir / "BTCUSDT-1h-2020-12-01_2021-07-17.csv", tmp_path / "BTCUSDT-1h-head.csv", 1500)
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-m", "desk.cli", "run", "--headless", "--data", str(data), "--speed", "max",
         "--state-dir", str(state)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["fills"] > 0
    report = rebuild(state / "desk.sqlite")
    assert report.ok, report.lines()[:20]
    # the 1500 bars include a netted order whose fill was split to the models
    assert rows(state / "desk.sqlite", "SELECT COUNT(*) FROM journal WHERE type='FillAllocated'")[0][0] > 0
    assert report.rows["fills"] == summary["fills"]
    # the book's cash is the venue's cash (two independent books agree)
    balances = dict(rows(state / "desk.sqlite", "SELECT asset, total FROM balances"))
    assert D(balances["USDT"]) == D(summary["cash_end"])
    assert D(balances["BTC"]) == D(summary["positions"]["BTCUSDT.BINANCE"]["quantity"])
    realized = sum(D(r) for (r,) in rows(state / "desk.sqlite", "SELECT realized FROM positions"))
    assert realized == D(summary["realized_pnl"])
