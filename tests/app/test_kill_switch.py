"""The keyboard kill switch on real working orders (issue 3).

The SIM engine built by desk.wiring (store, audit log, paper venue) holds
resting LIMIT buys far below the market; the wall clock is a TestClock
moved by hand, so the 2 s window is exact and nothing sleeps.
"""

from __future__ import annotations

import pytest
from textual.command import CommandPalette
from textual.widgets import Input

from core.enums import OrderStatus, TradingState
from desk.app import ALT_HALT_KEY, DeskApp
from desk.screens import ConfirmScreen, HelpScreen, QuitScreen
from tests.app.conftest import audit_lines, settle, store_statuses, until_steps
from tests.app.engines import place_resting_buys

SEC = 1_000_000_000


async def _app_with_orders(built, wall, n=3):
    engine = built.engine
    coids = await place_resting_buys(engine, n)
    assert all(engine.orders[c].status == OrderStatus.ACCEPTED for c in coids)
    app = DeskApp(engine, wall_clock=wall, autostart=False, install_signals=False)
    return app, engine, coids


def _assert_halted_and_canceled(engine, coids, state_dir):
    assert engine.trading_state == TradingState.HALTED
    assert all(engine.orders[c].status == OrderStatus.CANCELED for c in coids)
    assert set(store_statuses(engine, coids).values()) == {"CANCELED"}
    canceled = {ln["client_order_id"] for ln in audit_lines(state_dir) if ln["type"] == "OrderCanceled"}
    assert set(coids) <= canceled
    gov = engine.store.conn.execute("SELECT who, action FROM governance_actions").fetchall()
    assert ("tui", "HALTED") in gov


async def test_one_press_arms_and_cancels_nothing(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 4)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+k")
        await app.wait_governance()
        assert app.kill.armed
        assert app.banner.has_class("-armed")
        assert "press ctrl+k again to halt" in str(app.banner.render())
        assert engine.trading_state == TradingState.ACTIVE
        assert all(engine.orders[c].status == OrderStatus.ACCEPTED for c in coids)
        assert set(store_statuses(engine, coids).values()) == {"ACCEPTED"}
        assert not [ln for ln in audit_lines(wired.state.path) if ln["type"] == "OrderCanceled"]


async def test_two_presses_within_two_seconds_halt_and_cancel_every_order(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+k")
        wall.advance(SEC // 2)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        await pilot.pause()
        _assert_halted_and_canceled(engine, coids, wired.state.path)
        assert app.last_halt_count == 3
        assert not app.kill.armed
        assert app.banner.has_class("-halted")
        assert "HALTED" in str(app.banner.render())
        assert not app.working
        assert app.orders_pane.border_subtitle.startswith("0 working")


async def test_a_second_press_after_the_window_only_arms_again(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+k")
        wall.advance(2 * SEC + SEC // 2)
        app.sample()  # the 10 Hz timer's job: the window has passed, disarm
        assert not app.kill.armed and not app.banner.has_class("-armed")
        await pilot.press("ctrl+k")
        await app.wait_governance()
        assert app.kill.armed
        assert engine.trading_state == TradingState.ACTIVE
        assert set(store_statuses(engine, coids).values()) == {"ACCEPTED"}
        # ... and a press within the new window halts
        wall.advance(SEC)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        _assert_halted_and_canceled(engine, coids, wired.state.path)


async def test_the_window_edge_is_two_seconds(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+k")
        wall.advance(2 * SEC)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        _assert_halted_and_canceled(engine, coids, wired.state.path)


async def test_the_alternate_key_halts_too(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(ALT_HALT_KEY)
        assert app.kill.armed
        wall.advance(SEC)
        await pilot.press(ALT_HALT_KEY)
        await app.wait_governance()
        _assert_halted_and_canceled(engine, coids, wired.state.path)


@pytest.mark.parametrize("keys,armed_text,reason", [
    (("ctrl+k", "ctrl+k"), "press ctrl+k again", "kill switch (ctrl+k twice)"),
    ((ALT_HALT_KEY, ALT_HALT_KEY), "press ctrl+\\ again", "kill switch (ctrl+\\ twice)"),
    (("ctrl+k", ALT_HALT_KEY), "press ctrl+k again", "kill switch (ctrl+k then ctrl+\\)"),
])
async def test_the_halt_reason_names_the_keys_pressed(wired, wall, keys, armed_text, reason):
    app, engine, coids = await _app_with_orders(wired, wall, 1)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(keys[0])
        assert armed_text in str(app.banner.render())
        wall.advance(SEC // 2)
        await pilot.press(keys[1])
        await app.wait_governance()
        await pilot.pause()
        assert engine.trading_state == TradingState.HALTED
        assert app.halt_reason == reason
        assert f"HALTED — {reason}" in str(app.banner.render())
        row = engine.store.conn.execute("SELECT who, reason FROM governance_actions WHERE action = 'HALTED'").fetchone()
        assert tuple(row) == ("tui", reason)


async def test_halt_with_focus_in_the_filter_input(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press("B", "T", "C", "home")
        await pilot.press("ctrl+k")
        wall.advance(SEC // 2)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        _assert_halted_and_canceled(engine, coids, wired.state.path)
        # the Input's own ctrl+k (delete to the end) never saw the keys
        assert app.orders_pane.filter_input.value == "BTC"
        assert isinstance(app.focused, Input)


async def test_halt_with_the_command_palette_open(wired, wall):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+p")
        assert await settle(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press("h", "a")
        await pilot.press("ctrl+k")
        wall.advance(SEC // 2)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        _assert_halted_and_canceled(engine, coids, wired.state.path)
        assert isinstance(app.screen, CommandPalette)


@pytest.mark.parametrize("dialog", ["quit", "help", "confirm"])
async def test_halt_with_a_dialog_open(wired, wall, dialog):
    app, engine, coids = await _app_with_orders(wired, wall, 3)
    expected = {"quit": QuitScreen, "help": HelpScreen, "confirm": ConfirmScreen}[dialog]
    async with app.run_test(size=(160, 48)) as pilot:
        if dialog == "quit":
            await pilot.press("q")
        elif dialog == "help":
            await pilot.press("question_mark")
        else:
            engine.trading_state = TradingState.REDUCING  # something to resume from
            app.action_resume_trading()
        assert await settle(pilot, lambda: isinstance(app.screen, expected))
        await pilot.press("ctrl+k")
        wall.advance(SEC // 2)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        _assert_halted_and_canceled(engine, coids, wired.state.path)
        assert isinstance(app.screen, expected)  # the dialog is still there, untouched
        await pilot.press("escape")


async def test_halt_while_the_engine_runs(scripted, wall, tmp_path):
    """The scripted SIM engine trading at full speed in its worker: the kill
    switch halts it mid-run, cancels the resting orders, and the router
    sends nothing afterwards."""
    engine = scripted
    await engine.warm_up()
    await engine.run(max_bars=20)
    coids = await place_resting_buys(engine, 3, model_id="manual")
    app = DeskApp(engine, wall_clock=wall, speed=None, install_signals=False)
    async with app.run_test(size=(160, 48)) as pilot:
        bars0 = engine.stats.bars
        await until_steps(app, lambda: engine.stats.bars > bars0 + 50)
        await pilot.press("ctrl+k")
        wall.advance(SEC // 4)
        await pilot.press("ctrl+k")
        await app.wait_governance()
        assert engine.trading_state == TradingState.HALTED
        assert all(engine.orders[c].status == OrderStatus.CANCELED for c in coids)
        n_orders = len(engine.orders)
        bars1 = engine.stats.bars
        await until_steps(app, lambda: engine.stats.bars > bars1 + 50)
        assert len(engine.orders) == n_orders  # halted: the router sends nothing
        assert not engine.working_orders()
        assert app.status == "running"
        await app.shutdown(halt=False)
    assert app.run_ended_cleanly
    assert set(store_statuses(engine, coids).values()) == {"CANCELED"}
