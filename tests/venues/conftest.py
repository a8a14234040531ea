"""Fixtures for the venue tests: a local fake Binance (tests/venues/binance_server.py)
on a loopback port inside the test's event loop, the shared test clock, and the
``online`` marker (tests against the real spot testnet, deselected unless asked
for with ``-m online`` and skipped unless ``BINANCE_TESTNET_KEY`` is set)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import TestClock
from core.events import Event
from tests.conftest import SHARED_DATA
from tests.venues.binance_server import FakeBinance
from venues.binance.adapter import BinanceConfig, BinanceVenue

EXCHANGE_INFO_2023 = SHARED_DATA / "exchange-info" / "binance-spot-exchangeInfo-2023-09-08-subset.json"
EXCHANGE_INFO_2021 = SHARED_DATA / "exchange-info" / "binance-spot-exchangeInfo-2021-10-22-BTCUSDT-ETHUSDT.json"
BOOK_TICKER = SHARED_DATA / "binance" / "rest" / "http_spot_market_book_ticker.json"
KLINES = SHARED_DATA / "binance" / "rest" / "http_spot_market_klines.json"

#: 2021-10-22 23:04:00 UTC in ns: just after the last recorded 1m kline closes
#: (http_spot_market_klines.json's last open_time is 1634944320000)
T0 = 1_634_944_440_000 * 1_000_000
KEY, SECRET = "test-key-0123456789", "test-secret-abcdef"
ENV = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "online: against the real Binance spot testnet (needs BINANCE_TESTNET_KEY)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("markexpr", "") or ""
    if "online" in markexpr:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("online") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def shared() -> Path:
    if not EXCHANGE_INFO_2023.is_file():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def clock() -> TestClock:
    return TestClock(T0)


@pytest.fixture
async def server(shared: Path, clock: TestClock):
    srv = FakeBinance(clock, EXCHANGE_INFO_2023, api_key=KEY, secret=SECRET,
                      balances={"USDT": Decimal("10000"), "BTC": Decimal("1"), "BNB": Decimal("2")},
                      book_ticker=BOOK_TICKER, klines=KLINES)
    await srv.start()
    yield srv
    await srv.close()


class Recorder:
    """The engine's side of the callback: every event, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, type_name: str) -> list[Any]:
        return [e for e in self.events if e.type == type_name]

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def venue_for(server: FakeBinance, clock: TestClock, rec: Recorder | None = None, **kw: Any) -> BinanceVenue:
    cfg = BinanceConfig(symbols=tuple(kw.pop("symbols", ("BTCUSDT",))), urls=server.urls,
                        recv_window_ms=kw.pop("recv_window_ms", 5000), **kw.pop("cfg", {}))
    return BinanceVenue(cfg, clock, rec, env=kw.pop("env", ENV), **kw)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def venue(server: FakeBinance, clock: TestClock, rec: Recorder):
    v = venue_for(server, clock, rec)
    await v.start()
    rec.events.clear()  # the start's VenueStateChanged(CONNECTED): tests look at what follows
    yield v
    await v.close()


@pytest.fixture
def online_env() -> dict[str, str]:
    if not os.environ.get("BINANCE_TESTNET_KEY") or not os.environ.get("BINANCE_TESTNET_SECRET"):
        pytest.skip("BINANCE_TESTNET_KEY / BINANCE_TESTNET_SECRET not set")
    return {"BINANCE_API_KEY": os.environ["BINANCE_TESTNET_KEY"],
            "BINANCE_API_SECRET": os.environ["BINANCE_TESTNET_SECRET"]}
