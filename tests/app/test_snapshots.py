"""Snapshot tests (pytest-textual-snapshot): the main screen running, with
the kill switch armed, halted, and the compact 80×24 layout.

Deterministic by construction: the engine is the seeded SIM market with
scripted models (tests/app/engines.py), run for a fixed number of bars
inside the app before the capture; the engine clock is the replay clock
(2025-01-01 UTC, never wall time); the kill switch's wall clock is a
TestClock that never moves; animations are off; the terminal size is
fixed; the title is static. They guard against regressions and replace no
test of a right value (see test_kill_switch.py, test_keys.py).

Create or update the SVGs with ``pytest tests/app/test_snapshots.py
--snapshot-update`` after looking at the report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.clock import TestClock
from desk.app import DeskApp
from tests.app.engines import close_engine, place_resting_buys, scripted_sim_engine

BARS = 400
ROOMY = (160, 48)
COMPACT = (80, 24)


@pytest.fixture
def snap_app(tmp_path: Path):
    """A DeskApp over the scripted SIM engine, the engine not started."""
    engine = scripted_sim_engine(tmp_path / "state")
    app = DeskApp(engine, wall_clock=TestClock(1_000_000_000_000), speed=10.0, autostart=False,
                  install_signals=False)
    yield app
    close_engine(engine)


async def _trade(pilot) -> None:
    """Run the engine BARS bars (as fast as possible), leave three resting
    orders, and sample once."""
    app = pilot.app
    app.animation_level = "none"
    engine = app.engine
    engine.speed = None
    engine.config.yield_every = 10_000  # no redraws half-way: faster, same end state
    await engine.warm_up()
    await engine.run(max_bars=BARS)
    engine.config.yield_every = 1
    await place_resting_buys(engine, 3)
    app.link.set_speed(10.0)
    app.status = "running"
    app.link.drain()
    app.sample(force=True)
    await pilot.pause()


async def _armed(pilot) -> None:
    await _trade(pilot)
    await pilot.press("ctrl+k")


async def _halted(pilot) -> None:
    await _trade(pilot)
    await pilot.press("ctrl+k", "ctrl+k")
    await pilot.app.wait_governance()
    await pilot.pause()


class TestMainScreen:
    """The roomy layout at 160×48."""

    def test_running(self, snap_app, snap_compare):
        """Six panes, ACTIVE, three resting buys at the top of the orders pane."""
        assert snap_compare(snap_app, terminal_size=ROOMY, run_before=_trade)

    def test_armed(self, snap_app, snap_compare):
        """One ctrl+k: the yellow banner says press ctrl+k again to halt."""
        assert snap_compare(snap_app, terminal_size=ROOMY, run_before=_armed)
        assert snap_app.engine.trading_state.value == "ACTIVE"

    def test_halted(self, snap_app, snap_compare):
        """Two ctrl+k: red HALTED banner, the three orders CANCELED."""
        assert snap_compare(snap_app, terminal_size=ROOMY, run_before=_halted)
        assert snap_app.engine.trading_state.value == "HALTED"


class TestCompactLayout:
    """The compact layout at 80×24."""

    def test_running(self, snap_app, snap_compare):
        """Two narrow columns, no horizontal scrollbars, the short header."""
        assert snap_compare(snap_app, terminal_size=COMPACT, run_before=_trade)

    def test_halted(self, snap_app, snap_compare):
        """The HALTED banner fits in 80 columns."""
        assert snap_compare(snap_app, terminal_size=COMPACT, run_before=_halted)
