"""venues.sim: the seeded regime-switching SIM market."""

from __future__ import annotations

import calendar
import json
import math
import statistics
from decimal import Decimal

import pytest

from core.data import Bar
from core.identifiers import InstrumentId
from venues.sim import REGIMES, SimMarket

NS = 1_000_000_000
START_2025 = calendar.timegm((2025, 1, 1, 0, 0, 0)) * NS


def fields(b: Bar) -> tuple:
    return (str(b.instrument_id), b.open, b.high, b.low, b.close, b.volume, b.ts_open, b.ts_event)


def run(m: SimMarket, steps: int) -> list[tuple]:
    return [fields(b) for _ in range(steps) for b in m.next_step()]


def check_bar(b: Bar) -> None:
    inst_tick = {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("0.01")}[b.instrument_id.symbol]
    assert b.low > 0
    assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high, b
    for p in (b.open, b.high, b.low, b.close):
        assert p % inst_tick == 0, b
    assert b.volume > 0
    assert b.ts_event - b.ts_open == 60 * NS


def test_defaults_and_instruments() -> None:
    m = SimMarket()
    assert m.venue == "SIM"
    assert m.symbols == ("BTCUSDT", "ETHUSDT")
    assert m.next_ts == START_2025
    btc = m.instrument("BTCUSDT")
    assert btc.id == InstrumentId("BTCUSDT", "SIM")
    # builtin Binance filters (2023-09-08 exchangeInfo: tick 0.01, step 0.00001 / 0.0001)
    assert (btc.tick_size, btc.step_size, btc.filters_source) == (Decimal("0.01"), Decimal("0.00001"), "builtin")
    assert m.instrument("ETHUSDT").step_size == Decimal("0.0001")
    assert m.last_close("BTCUSDT") == Decimal("60000")
    assert m.last_close("ETHUSDT") == Decimal("3000")
    with pytest.raises(ValueError, match="SOLUSDT"):
        m.regime_of("SOLUSDT")


def test_first_steps_shape() -> None:
    m = SimMarket()
    b1 = m.next_step()
    assert [b.instrument_id.symbol for b in b1] == ["BTCUSDT", "ETHUSDT"]
    assert all(b.ts_open == START_2025 and b.ts_event == START_2025 + 60 * NS for b in b1)
    assert [b.open for b in b1] == [Decimal("60000"), Decimal("3000")]
    b2 = m.next_step()
    assert [b.open for b in b2] == [b.close for b in b1]  # open = previous close
    assert all(b.ts_open == START_2025 + 60 * NS for b in b2)
    assert m.step_count == 2
    assert m.next_ts == START_2025 + 120 * NS


def test_symbols_sorted_and_validated() -> None:
    m = SimMarket(symbols=("ETHUSDT", "BTCUSDT"))
    assert m.symbols == ("BTCUSDT", "ETHUSDT")
    with pytest.raises(ValueError, match="FOOUSDT"):
        SimMarket(symbols=("FOOUSDT",))
    with pytest.raises(ValueError, match="repeated"):
        SimMarket(symbols=("BTCUSDT", "BTCUSDT"))
    with pytest.raises(ValueError):
        SimMarket(seed=-1)


def test_deterministic_from_seed() -> None:
    a, b, c = SimMarket(seed=11), SimMarket(seed=11), SimMarket(seed=12)
    ra, rb, rc = run(a, 300), run(b, 300), run(c, 300)
    assert ra == rb
    assert ra != rc
    assert [a.regime_of(s) for s in a.symbols] == [b.regime_of(s) for s in b.symbols]


def test_ohlc_invariants_over_5000_steps() -> None:
    m = SimMarket(seed=3)
    prev_close: dict[str, Decimal] = {}
    for _ in range(5000):
        for b in m.next_step():
            check_bar(b)
            s = b.instrument_id.symbol
            if s in prev_close:
                assert b.open == prev_close[s]
            prev_close[s] = b.close
            assert 0 <= m.regime_of(s) < len(REGIMES)


def test_history_is_deterministic_and_does_not_disturb_live_bars() -> None:
    plain = SimMarket(seed=5)
    with_history = SimMarket(seed=5)
    h1 = with_history.history(500)
    live_a = run(plain, 200)
    live_b = run(with_history, 200)
    assert live_a == live_b
    h2 = with_history.history(500)  # after stepping: still the same history
    assert [fields(b) for b in h1] == [fields(b) for b in h2]
    assert [fields(b) for b in SimMarket(seed=5).history(500)] == [fields(b) for b in h1]
    assert [fields(b) for b in SimMarket(seed=6).history(500)] != [fields(b) for b in h1]


def test_history_shape_and_continuity() -> None:
    m = SimMarket(seed=9)
    n = 1000
    h = m.history(n)
    assert len(h) == 2 * n
    assert h[0].ts_open == START_2025 - n * 60 * NS
    assert [b.instrument_id.symbol for b in h[:2]] == ["BTCUSDT", "ETHUSDT"]
    by_sym: dict[str, list[Bar]] = {}
    for b in h:
        check_bar(b)
        by_sym.setdefault(b.instrument_id.symbol, []).append(b)
    for s, bars in by_sym.items():
        assert [b.ts_open for b in bars] == [START_2025 - (n - i) * 60 * NS for i in range(n)]
        for prev, cur in zip(bars, bars[1:]):
            assert cur.open == prev.close
        assert bars[-1].ts_event == START_2025
    live = {b.instrument_id.symbol: b for b in m.next_step()}
    for s in m.symbols:
        assert live[s].open == by_sym[s][-1].close  # history ends where live starts
    # a shorter history is the tail of a longer one
    short = m.history(100)
    assert [fields(b) for b in short] == [fields(b) for b in h[-200:]]
    assert m.history(0) == []
    with pytest.raises(ValueError):
        m.history(-1)


def test_state_dict_round_trip_continues_identically() -> None:
    ref = SimMarket(seed=21)
    run(ref, 250)
    expected = run(ref, 300)

    first = SimMarket(seed=21)
    run(first, 250)
    saved = json.loads(json.dumps(first.state_dict()))  # through real JSON
    resumed = SimMarket(seed=21)
    resumed.load_state_dict(saved)
    assert resumed.step_count == 250
    assert resumed.next_ts == START_2025 + 250 * 60 * NS
    assert [resumed.regime_of(s) for s in resumed.symbols] == [first.regime_of(s) for s in first.symbols]
    got = run(resumed, 300)
    assert got == expected  # Decimal fields compared exactly
    assert run(first, 300) == expected  # saving did not disturb the original


def test_load_state_dict_refuses_another_setup() -> None:
    state = SimMarket(seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        SimMarket(seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="symbols"):
        SimMarket(seed=1, symbols=("BTCUSDT",)).load_state_dict(state)
    broken = dict(state)
    del broken["last_close"]
    with pytest.raises(ValueError, match="malformed"):
        SimMarket(seed=1).load_state_dict(broken)


def test_volatile_regime_has_larger_realized_volatility() -> None:
    m = SimMarket(seed=7)
    returns: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for _ in range(20_000):
        for b in m.next_step():
            returns[m.regime_of(b.instrument_id.symbol)].append(math.log(b.close / b.open))
    counts = {k: len(v) for k, v in returns.items()}
    assert min(counts.values()) >= 1_000, counts  # every regime visited at length
    vol = {k: statistics.pstdev(v) for k, v in returns.items()}
    volatile = max(range(len(REGIMES)), key=lambda k: REGIMES[k].vol)
    calm = [k for k in vol if k != volatile]
    # the volatile regime's realized vol is more than twice either calm one
    assert all(vol[volatile] > 2 * vol[k] for k in calm), vol
    # and its mean return is the lowest ("volatile-down")
    means = {k: statistics.fmean(v) for k, v in returns.items()}
    assert means[volatile] < min(means[k] for k in calm), means


def test_regimes_switch_but_are_sticky() -> None:
    m = SimMarket(seed=7)
    path = []
    for _ in range(5000):
        m.next_step()
        path.append(m.regime_of("BTCUSDT"))
    switches = sum(a != b for a, b in zip(path, path[1:]))
    assert 5 <= switches <= 250  # sticky (diagonals >= 0.99) yet not frozen
