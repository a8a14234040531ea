"""Fixtures for the app tests: engines in the test's own tmp_path, an
injected wall clock, and helpers to wait without sleeping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from core.clock import TestClock
from tests.app.engines import close_engine, scripted_sim_engine, wired_sim


@pytest.fixture
def wall() -> TestClock:
    """The kill switch's wall clock, moved by hand."""
    return TestClock(1_000_000_000_000)


@pytest.fixture
def scripted(tmp_path: Path):
    """A SIM engine with scripted models (closed after the test)."""
    engine = scripted_sim_engine(tmp_path / "state")
    yield engine
    close_engine(engine)


@pytest.fixture
def wired(tmp_path: Path):
    """The real wiring of the SIM default (desk.wiring.build), not warmed up."""
    built = wired_sim(tmp_path / "state")
    yield built
    try:
        built.close()
    except Exception:
        pass


async def settle(pilot: Any, cond: Callable[[], bool], tries: int = 200) -> bool:
    """Let the app process messages until ``cond()`` holds (no sleeping:
    each round waits for the app to be idle)."""
    for _ in range(tries):
        if cond():
            return True
        await pilot.pause()
    return cond()


async def until_steps(app: Any, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait, event-driven (no polling, no sleep), until ``cond()`` holds at
    the end of an engine step of the app's running engine."""
    if cond():
        return
    done = asyncio.Event()

    def hook() -> None:
        if cond():
            done.set()

    app.link.step_hooks.append(hook)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        app.link.step_hooks.remove(hook)


def store_statuses(engine: Any, coids: list[str]) -> dict[str, str]:
    """``SELECT status FROM orders`` for the given ids (committed rows)."""
    q = ",".join("?" for _ in coids)
    return dict(engine.store.conn.execute(
        f"SELECT client_order_id, status FROM orders WHERE client_order_id IN ({q})", coids).fetchall())


def audit_lines(state_dir: Path) -> list[dict[str, Any]]:
    """The audit log's records."""
    path = state_dir / "audit" / "orders.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]



async def palette_run(pilot: Any, app: Any, text: str) -> None:
    """Open the command palette, type ``text``, wait until the highlighted
    command is it, and run it."""
    from textual.command import CommandPalette

    await pilot.press("ctrl+p")
    assert await settle(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*text)

    def highlighted() -> bool:
        ol = app.screen.query_one("CommandList")
        return ol.highlighted is not None and text.lower() in str(ol.get_option_at_index(ol.highlighted).prompt).lower()

    assert await settle(pilot, highlighted)
    await pilot.press("enter")
