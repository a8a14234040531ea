"""``desk export-pnl --tz ZONE`` with a zone other than the run's writes its
own file, ``pnl_<date>_<zone with / as ->.csv``: before, the export of the
same date in another zone (another span of time) overwrote the run's own
``pnl_<date>.csv``. The default name is unchanged."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal as D

import pytest

from core.store import Store
from desk.export import export_file_name, export_pnl
from tests.ops.test_export import JAN1, H, order


@pytest.fixture
def utc_run(tmp_path):
    """A run in UTC days with one fill: m1 BUY 1 @ 100, fee 0.001 BTC, at
    2026-01-01 23:30Z (UTC Jan 1; Berlin, UTC+1 in January, Jan 2 00:30)."""
    sd = tmp_path / "state"
    sd.mkdir()
    store = Store(sd / "desk.sqlite")
    store.meta_set("setup", json.dumps({"mode": "sim", "day_tz": "UTC", "capital": "10000"}))
    order(store, "1", "m1", "BUY", "1", "100", JAN1 + 23 * H + H // 2, "0.001", "BTC")
    store.flush()
    yield sd
    store.close()


def rows(path):
    """The data rows, money cells as Decimal (0.1 == 0.10000000)."""
    with open(path, newline="") as fh:
        return [[D(c) if i in (3, 4, 5, 6, 8) else c for i, c in enumerate(r)] for r in list(csv.reader(fh))[1:]]


def row(*cells):
    return [D(c) if i in (3, 4, 5, 6, 8) else c for i, c in enumerate(cells)]


def test_another_zone_gets_its_own_file_and_leaves_the_runs_export_alone(utc_run):
    own = export_pnl(utc_run, "2026-01-01")
    assert own.path == utc_run / "exports" / "pnl_2026-01-01.csv"
    # UTC Jan 1 holds the fill: fee value 0.001 x 100 = 0.1, volume 1 x 100 = 100, 1 trade
    assert rows(own.path)[-1] == row("2026-01-01", "TOTAL", "", "0", "0", "0.1", "0", "1", "100")

    berlin = export_pnl(utc_run, "2026-01-01", "Europe/Berlin")
    assert berlin.path == utc_run / "exports" / "pnl_2026-01-01_Europe-Berlin.csv"
    # Berlin Jan 1 ends at 23:00Z: the 23:30Z fill is on Berlin Jan 2, so the day is all zeros
    assert rows(berlin.path) == [row("2026-01-01", "TOTAL", "", "0", "0", "0", "0", "0", "0")]
    # the run's own export of that date is still there, unchanged
    assert rows(own.path)[-1] == row("2026-01-01", "TOTAL", "", "0", "0", "0.1", "0", "1", "100")

    # the run's zone given explicitly: the default name
    assert export_pnl(utc_run, "2026-01-01", "UTC").path == own.path
    assert sorted(p.name for p in (utc_run / "exports").iterdir()) == [
        "pnl_2026-01-01.csv", "pnl_2026-01-01_Europe-Berlin.csv"]


def test_export_file_names():
    d = date(2025, 6, 10)
    assert export_file_name(d, "UTC", "UTC") == "pnl_2025-06-10.csv"
    assert export_file_name(d, "Europe/Berlin", "Europe/Berlin") == "pnl_2025-06-10.csv"
    assert export_file_name(d, "Europe/Berlin", "UTC") == "pnl_2025-06-10_Europe-Berlin.csv"
    assert export_file_name(d, "UTC", "Europe/Berlin") == "pnl_2025-06-10_UTC.csv"
    assert export_file_name(d, "America/Argentina/Buenos_Aires", "UTC") == \
        "pnl_2025-06-10_America-Argentina-Buenos_Aires.csv"
