"""A replay gives the same journal whatever the speed of the fit worker:
fits are applied at a bar fixed by the engine clock, and the engine waits
for them (issue 2)."""

import asyncio
import json
from pathlib import Path

from desk.wiring import RunOptions, build
from models.executor import DelayedFitExecutor, ProcessFitExecutor
from tests.conftest import head_csv


def journal_of(state: Path, data: Path, executor, speed=None) -> list[tuple[str, str]]:
    built = build(RunOptions(data=[data], state_dir=state, speed=speed), executor=executor)
    try:
        asyncio.run(built.engine.run())
        rows = list(built.engine.store.conn.execute("SELECT type, payload FROM journal ORDER BY seq"))
    finally:
        built.close()
    return rows


def test_same_journal_with_a_slow_fit_worker(tmp_path, klines_dir):
    data = head_csv(klines_dir / "BTCUSDT-1h-2020-12-01_2021-07-17.csv", tmp_path / "BTCUSDT-1h-d.csv", 1100)
    fast = journal_of(tmp_path / "fast", data, ProcessFitExecutor())
    slow = journal_of(tmp_path / "slow", data, DelayedFitExecutor(ProcessFitExecutor(), 0.5))
    types = [t for t, _ in fast]
    assert "ModelFitted" in types and "OrderFilled" in types
    assert fast == slow
    fills = [json.loads(p) for t, p in fast if t == "OrderFilled"]
    assert len(fills) > 5
