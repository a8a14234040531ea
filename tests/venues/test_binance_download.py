"""``desk data download``: klines from the local fake Binance (answering the
recorded GET /api/v3/klines response, ../shared/data/binance/rest/
http_spot_market_klines.json: ten 1m BTCUSDT bars from 1634943780000) written
with Binance's exact strings, paged, resumed after an interruption, in both
layouts, only closed bars."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from core.clock import TestClock
from tests.venues.conftest import KLINES, T0
from venues.binance.download import download_klines, download_main, parse_when
from venues.binance.exchange import make_exchange
from venues.klines import load_klines

FIRST = 1634943780000


@pytest.fixture
def recorded(shared):
    return json.loads(KLINES.read_text())


@pytest.fixture
async def ex(server, clock):
    e = make_exchange(clock=clock, urls=server.urls)
    yield e
    e.timeout_on_exit = 0
    await e.close()


def expected_ccxt6(rows) -> str:
    return "open_time,open,high,low,close,volume\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]}\n" for r in rows)


async def test_paged_download_writes_the_exact_strings(ex, server, clock, recorded, tmp_path):
    out = tmp_path / "BTCUSDT-1m.csv"
    seen = []
    n = await download_klines("btcusdt", "1m", FIRST, None, out, exchange=ex, clock=clock, page_limit=4,
                              progress=lambda *a: seen.append(a))
    assert n == 10
    assert out.read_text() == expected_ccxt6(recorded)
    assert [r for r in server.requests if r[1] == "/api/v3/klines"] == [("GET", "/api/v3/klines")] * 3  # 4 + 4 + 2
    assert [s[0] for s in seen] == [4, 8, 10, 10]
    assert seen[-2][1] == recorded[-1][0] + 60_000
    bars = load_klines(out).bars
    assert (bars[0].open, bars[-1].close) == (Decimal(recorded[0][1]), Decimal(recorded[-1][4]))


async def test_an_interrupted_download_resumes_after_its_last_row(ex, server, clock, recorded, tmp_path):
    out = tmp_path / "k.csv"
    out.write_text(expected_ccxt6(recorded[:6]))  # killed after six rows
    n = await download_klines("BTCUSDT", "1m", FIRST, None, out, exchange=ex, clock=clock)
    assert n == 4
    assert out.read_text() == expected_ccxt6(recorded)
    assert server.requests == [("GET", "/api/v3/klines")]  # one page from the 7th bar on


async def test_binance12_layout_and_only_closed_bars(ex, server, recorded, tmp_path):
    # the clock inside the last bar: its close_time (1634944379999) is not before now, it is left out
    clock = TestClock(recorded[-1][0] * 1_000_000 + 30_000_000_000)
    e = make_exchange(clock=clock, urls=server.urls)
    out = tmp_path / "k12.csv"
    try:
        n = await download_klines("BTCUSDT", "1m", FIRST, None, out, exchange=e, clock=clock, layout="binance12")
    finally:
        e.timeout_on_exit = 0
        await e.close()
    assert n == 9
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == [str(x) for x in recorded[0]]  # all twelve fields, no header
    assert len(load_klines(out).bars) == 9


async def test_until_is_exclusive_and_a_layout_mismatch_is_refused(ex, clock, recorded, tmp_path):
    out = tmp_path / "u.csv"
    n = await download_klines("BTCUSDT", "1m", FIRST, FIRST + 3 * 60_000, out, exchange=ex, clock=clock)
    assert n == 3
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="ccxt6 layout, not --layout binance12"):
        await download_klines("BTCUSDT", "1m", FIRST, None, out, exchange=ex, clock=clock, layout="binance12")
    with pytest.raises(ValueError, match="interval: '7m'"):
        await download_klines("BTCUSDT", "7m", FIRST, None, out, exchange=ex, clock=clock)


async def test_download_main_cli(server, recorded, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    argv = ["BTCUSDT", "1m", "--since", "2021-10-22T23:03:00Z", "--out", str(out)]
    code = await asyncio.to_thread(download_main, argv, urls=server.urls, clock=TestClock(T0))
    assert code == 0
    assert out.read_text() == expected_ccxt6(recorded)  # 2021-10-22T23:03:00Z = 1634943780000
    captured = capsys.readouterr()
    assert "100.0% 10 rows" in captured.err
    assert "10 rows written" in captured.out
    assert download_main(["BTCUSDT", "1m", "--since", "yesterday"]) == 2


def test_parse_when():
    assert parse_when("2025-01-01", "--since") == 1735689600000
    assert parse_when("1634943780000", "--since") == FIRST
    with pytest.raises(ValueError, match="--until"):
        parse_when("soon", "--until")
