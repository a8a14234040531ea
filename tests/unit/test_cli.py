"""The CLI on bad input, locks, setups, and continued runs.

Every case writes into its own tmp_path; bad input exits 2 with
``FILE:LINE: field …`` and trades nothing."""

import json
import sqlite3
from pathlib import Path


from desk.cli import main
from desk.wiring import StateDir
from tests.conftest import head_csv

HEADER = "open_time,open,high,low,close,volume\n"


def good_rows(n, start_ms=1_600_000_000_000, price=100.0):
    out = []
    for k in range(n):
        p = price * (1 + ((k % 7) - 3) / 100)
        out.append(f"{start_ms + k * 60_000},{p:.6f},{p * 1.01:.6f},{p * 0.99:.6f},{p * 1.005:.6f},{10 + k % 3}\n")
    return out


def write(tmp_path, name, rows, header=True):
    f = tmp_path / name
    f.write_text((HEADER if header else "") + "".join(rows))
    return f


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def orders_in(state: Path) -> int:
    db = state / "desk.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM orders").fetchone()[0]


def test_missing_column(tmp_path, capsys):
    rows = good_rows(10)
    rows[5] = "1600000300000,100,101,99\n"
    f = write(tmp_path, "BTCUSDT-1m-x.csv", rows)
    code, out, err = run(["run", "--headless", "--data", str(f), "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and out == ""
    assert f"{f}:7:" in err and "close" in err
    assert orders_in(tmp_path / "s") == 0


def _bad_case(tmp_path, capsys, row_index, new_row, expect_line, expect_field):
    rows = good_rows(1000)
    rows[row_index] = new_row
    f = write(tmp_path, "BTCUSDT-1m-x.csv", rows)
    state = tmp_path / "s"
    code, out, err = run(["run", "--headless", "--data", str(f), "--state-dir", str(state)], capsys)
    assert code == 2, err
    assert out == ""
    assert f"{f}:{expect_line}:" in err, err
    assert expect_field in err, err
    assert "Traceback" not in err
    assert orders_in(state) == 0


def test_non_numeric_field(tmp_path, capsys):
    _bad_case(tmp_path, capsys, 3, "1600000180000,100,abc,99,100,10\n", 5, "high")


def test_nan_field(tmp_path, capsys):
    _bad_case(tmp_path, capsys, 4, "1600000240000,100,101,99,NaN,10\n", 6, "close")


def test_high_below_low(tmp_path, capsys):
    _bad_case(tmp_path, capsys, 5, "1600000300000,100,98,99,100,10\n", 7, "high")


def test_timestamp_backwards(tmp_path, capsys):
    _bad_case(tmp_path, capsys, 6, "1600000000000,100,101,99,100,10\n", 8, "open_time")


def test_timestamp_repeated(tmp_path, capsys):
    _bad_case(tmp_path, capsys, 6, "1600000300000,100,101,99,100,10\n", 8, "open_time")


def test_bad_last_row_of_1000_trades_nothing(tmp_path, capsys):
    # the whole file is validated before the first bar: line 1001 is the last data row
    _bad_case(tmp_path, capsys, 999, "1600059940000,100,101,99,oops,10\n", 1001, "close")


def test_unknown_flag_and_missing_file_are_one_line(tmp_path, capsys):
    code, out, err = run(["run", "--bogus"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--bogus" in err
    code, out, err = run(["run", "--headless", "--data", str(tmp_path / "nope.csv"), "--state-dir",
                          str(tmp_path / "s")], capsys)
    assert code == 2 and "nope.csv" in err and "Traceback" not in err


def test_unreadable_exchange_info(tmp_path, capsys):
    f = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    bad = tmp_path / "xinfo.json"
    bad.write_text("{not json")
    code, out, err = run(["run", "--headless", "--data", str(f), "--exchange-info", str(bad),
                          "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and "xinfo.json" in err and "Traceback" not in err


def test_mixed_quote_currencies_refused(tmp_path, capsys):
    a = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    b = write(tmp_path, "ETHBTC-1m-x.csv", good_rows(10, price=0.05))
    code, out, err = run(["run", "--headless", "--data", str(a), "--data", str(b), "--state-dir",
                          str(tmp_path / "s")], capsys)
    assert code == 2 and "quote currency" in err and "USDT" in err and "BTC" in err


def test_locked_state_dir_is_refused(tmp_path, capsys):
    f = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    holder = StateDir(tmp_path / "s")
    try:
        code, out, err = run(["run", "--headless", "--data", str(f), "--state-dir", str(tmp_path / "s")], capsys)
    finally:
        holder.release()
    assert code == 2 and "another desk" in err


def test_gap_is_allowed_and_logged(tmp_path, capsys):
    rows = good_rows(30)
    rows = rows[:10] + [r.replace(r.split(",")[0], str(int(r.split(",")[0]) + 3_600_000)) for r in rows[10:]]
    f = write(tmp_path, "BTCUSDT-1m-x.csv", rows)
    code, out, err = run(["run", "--headless", "--data", str(f), "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 0, err
    assert "gap" in err and json.loads(out)["bars"] == 30


def test_continue_another_setup_and_finished(tmp_path, capsys, klines_dir):
    """A replay stopped after 700 bars and continued ends with the same
    books as one run straight through; another setup on the same dir is
    refused; a finished replay prints its stored summary."""
    src = head_csv(klines_dir / "BTCUSDT-1h-2020-12-01_2021-07-17.csv", tmp_path / "BTCUSDT-1h-a.csv", 1200)
    code, out, err = run(["run", "--headless", "--data", str(src), "--state-dir", str(tmp_path / "one")], capsys)
    assert code == 0, err
    straight = json.loads(out)
    assert straight["bars"] == 1200 and straight["fills"] > 0

    split = tmp_path / "two"
    code, out, err = run(["run", "--headless", "--data", str(src), "--bars", "700", "--state-dir", str(split)], capsys)
    assert code == 0 and json.loads(out)["bars"] == 700
    code, out, err = run(["run", "--headless", "--data", str(src), "--bars", "700", "--state-dir", str(split)], capsys)
    assert code == 0 and json.loads(out)["bars"] == 700  # the same --bars again: nothing left to do
    code, out, err = run(["run", "--headless", "--data", str(src), "--state-dir", str(split)], capsys)
    assert code == 0, err
    continued = json.loads(out)
    for k in ("bars", "orders", "fills", "fees", "realized_pnl", "unrealized_pnl", "equity_end", "cash_end",
              "positions", "per_model", "signals"):
        assert continued[k] == straight[k], k

    for _ in range(2):  # and again: a finished replay stays finished
        code, out, err = run(["run", "--headless", "--data", str(src), "--state-dir", str(split)], capsys)
        assert code == 0 and json.loads(out)["equity_end"] == straight["equity_end"]
        assert "already finished" in err

    other = write(tmp_path, "ETHUSDT-1m-x.csv", good_rows(10))
    code, out, err = run(["run", "--headless", "--data", str(other), "--state-dir", str(split)], capsys)
    assert code == 2 and str(split) in err and "another setup" in err


def test_sim_default_continues_with_its_generator_state(tmp_path, capsys):
    """The SIM market stopped after 300 bars and continued for 300 more ends
    where one run of 600 bars ends (generator state and clock saved)."""
    code, out, err = run(["run", "--headless", "--bars", "600", "--state-dir", str(tmp_path / "one")], capsys)
    assert code == 0, err
    straight = json.loads(out)
    assert straight["bars"] == 600 and set(straight["positions"]) == {"BTCUSDT.SIM", "ETHUSDT.SIM"}
    for total in ("300", "600"):  # --bars counts the whole run: 300, then continued up to 600
        code, out, err = run(["run", "--headless", "--bars", total, "--state-dir", str(tmp_path / "two")], capsys)
        assert code == 0, err
    continued = json.loads(out)
    for k in ("bars", "orders", "fills", "fees", "equity_end", "cash_end", "positions", "per_model", "signals"):
        assert continued[k] == straight[k], k


def test_tz_flag(tmp_path, capsys):
    f = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    code, out, err = run(["run", "--headless", "--data", str(f), "--tz", "Mars/Olympus", "--state-dir",
                          str(tmp_path / "s")], capsys)
    assert code == 2 and "Mars/Olympus" in err and "IANA" in err
    # 2020-09-13 12:26:40 UTC (1600000000000 ms) is 15:26 in Moscow: one row dated 2020-09-13 either way
    code, out, err = run(["run", "--headless", "--data", str(f), "--tz", "Europe/Moscow", "--state-dir",
                          str(tmp_path / "m")], capsys)
    s = json.loads(out)
    assert code == 0 and s["day_tz"] == "Europe/Moscow" and [d["date"] for d in s["daily_pnl"]] == ["2020-09-13"]


def test_volume_share_gives_partial_fills_that_reconcile(tmp_path, capsys, klines_dir):
    from decimal import Decimal as D

    src = head_csv(klines_dir / "BTCUSDT-1h-2020-12-01_2021-07-17.csv", tmp_path / "BTCUSDT-1h-v.csv", 1200)
    code, out, err = run(["run", "--headless", "--data", str(src), "--volume-share", "0.0001", "--state-dir",
                          str(tmp_path / "s")], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["fills"] > sum(n for st, n in s["orders"].items() if st == "FILLED")  # some orders filled in parts
    held = sum(D(p["quantity"]) * D(p["last_price"]) for p in s["positions"].values())
    assert D(s["cash_end"]) + held == D(s["equity_end"])
