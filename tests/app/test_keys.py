"""Pilot tests of the keys and panes: quit (asks while orders work, Cancel
focused; quits at once otherwise), help, pane focus, pause of a model,
resume through the palette with a confirmation, ctrl+c, speed, the orders
filter and order, the engine failing, SIGHUP, SIGUSR1, the layouts at
80×24, 100×40, 120×40, 140×40 and 160×48, and start-up imports."""

from __future__ import annotations

from decimal import Decimal
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from textual.command import CommandPalette

from core.enums import OrderStatus, TradingState
from desk.app import DEFAULT_SPEED, DeskApp, faster, slower
from desk.screens import ConfirmScreen, HelpScreen, QuitScreen
from tests.app.conftest import settle, store_statuses
from tests.app.engines import place_resting_buys

ROOT = Path(__file__).resolve().parents[2]


def _app(engine, wall, **kw):
    kw.setdefault("autostart", False)
    kw.setdefault("install_signals", False)
    return DeskApp(engine, wall_clock=wall, **kw)


# ---------------------------------------------------------------- quit
async def test_quit_with_working_orders_asks_with_cancel_focused(wired, wall):
    engine = wired.engine
    coids = await place_resting_buys(engine, 3)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("q")
        assert await settle(pilot, lambda: isinstance(app.screen, QuitScreen))
        assert app.screen.focused is not None and app.screen.focused.id == "cancel"
        labels = [str(b.label) for b in app.screen.query("Button")]
        assert labels == ["Halt and quit", "Quit and leave orders", "Cancel"]
        await pilot.press("enter")  # Cancel
        assert await settle(pilot, lambda: not isinstance(app.screen, QuitScreen))
        assert app.is_running and engine.trading_state == TradingState.ACTIVE
        assert all(engine.orders[c].status == OrderStatus.ACCEPTED for c in coids)
        await pilot.press("q")
        assert await settle(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, QuitScreen))
        assert app.is_running


async def test_halt_and_quit_cancels_the_orders(wired, wall):
    engine = wired.engine
    coids = await place_resting_buys(engine, 3)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("q")
        assert await settle(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.click("#halt")
        await settle(pilot, lambda: not app.is_running)
    assert app.return_value == 0
    assert engine.trading_state == TradingState.HALTED
    assert set(store_statuses(engine, coids).values()) == {"CANCELED"}


async def test_quit_and_leave_orders_keeps_them_working(wired, wall):
    engine = wired.engine
    coids = await place_resting_buys(engine, 3)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("q")
        assert await settle(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.click("#leave")
        await settle(pilot, lambda: not app.is_running)
    assert app.return_value == 0
    assert engine.trading_state == TradingState.ACTIVE
    assert set(store_statuses(engine, coids).values()) == {"ACCEPTED"}


async def test_quit_without_working_orders_quits_at_once(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("q")
        await settle(pilot, lambda: not app.is_running)
        assert not isinstance(app.screen, QuitScreen)
    assert app.return_value == 0 and app.finalized


async def test_ctrl_c_does_not_quit_and_says_how(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running
        notes = [n.message for n in app._notifications]
        assert any("to quit" in m and "q" in m for m in notes)


# ---------------------------------------------------------------- help, panes
async def test_help_lists_every_binding(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("question_mark")
        assert await settle(pilot, lambda: isinstance(app.screen, HelpScreen))
        ids = {bid for _k, _d, bid in app.screen.rows}
        assert {b.id for b in DeskApp.BINDINGS} <= ids
        keys = " ".join(k for k, _d, _b in app.screen.rows)
        assert "^k" in keys or "ctrl+k" in keys.lower()
        assert any("ctrl+\\" in n or "ctrl+backslash" in n for n in app.screen.notes)
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, HelpScreen))


@pytest.mark.parametrize("key,pane", [("1", "market"), ("2", "orders"), ("3", "positions"),
                                      ("4", "models"), ("5", "allocations"), ("6", "alerts")])
async def test_number_keys_focus_the_panes(scripted, wall, key, pane):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("6" if key != "6" else "1")
        await pilot.press(key)
        assert app.focused is app.pane(pane).focus_target
        assert app.screen.maximized is None  # the roomy layout shows every pane


async def test_compact_layout_maximizes_the_focused_pane(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.compact
        await pilot.press("2")
        assert app.focused is app.orders_pane.table
        assert app.screen.maximized is app.orders_pane
        await pilot.press("2")
        assert app.screen.maximized is None


def _shown(app, widget) -> bool:
    """``widget`` is drawn on the screen (in the compositor's map, a
    non-empty region)."""
    from textual.errors import NoWidget

    try:
        return app.screen.find_widget(widget).region.area > 0
    except NoWidget:
        return False


async def test_a_maximized_pane_keeps_the_header_and_the_halted_banner(scripted, wall):
    """80×24, pane 2 maximized: a halt shows HALTED in the header and the
    red banner above the pane."""
    app = _app(scripted, wall)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        assert app.screen.maximized is app.orders_pane
        assert _shown(app, app.header) and not _shown(app, app.market_pane)
        await pilot.press("ctrl+k")
        await pilot.pause()
        assert _shown(app, app.banner) and app.banner.has_class("-armed")
        await pilot.press("ctrl+k")
        await app.wait_governance()
        await pilot.pause()
        assert scripted.trading_state == TradingState.HALTED
        assert app.screen.maximized is app.orders_pane
        header, banner = app.screen.find_widget(app.header).region, app.screen.find_widget(app.banner).region
        pane = app.screen.find_widget(app.orders_pane).region
        assert (header.y, header.height, banner.y, banner.height) == (0, 1, 1, 1)
        assert pane.y >= 2 and pane.bottom <= 23  # under the banner, above the footer
        assert app.banner.has_class("-halted") and "HALTED" in str(app.banner.render())
        assert app.header.info is not None and app.header.info.state == "HALTED"


@pytest.mark.parametrize("size", [(100, 40), (120, 40), (140, 40), (160, 48)])
async def test_the_market_pane_shows_every_column(scripted, wall, size):
    """Outside the compact 80×24 layout the market pane is wide enough for
    the last price, each model's regime and the day's change."""
    app = _app(scripted, wall)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        table = app.market_pane.table
        assert table.virtual_size.width <= table.scrollable_content_region.width, (
            table.virtual_size, table.scrollable_content_region)
        assert [str(c.label) for c in table.ordered_columns][-1] == "Day %"
        models = app.models_pane.table
        assert models.virtual_size.width <= models.scrollable_content_region.width
        assert app.screen.maximized is None


# ---------------------------------------------------------------- governance
async def test_p_pauses_and_resumes_the_selected_model(scripted, wall):
    engine = scripted
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        assert app.models_pane.selected_model() == "hmm_v1"
        await pilot.press("p")
        assert engine.paused == {"hmm_v1"}
        assert app.models_pane.table.get_cell("hmm_v1", "stage").plain == "PAUSED"
        await pilot.press("down", "p")
        assert engine.paused == {"hmm_v1", "hmm_v2_canary"}
        await pilot.press("up", "p")
        assert engine.paused == {"hmm_v2_canary"}
        gov = engine.store.conn.execute("SELECT who, action, details FROM governance_actions ORDER BY seq").fetchall()
        assert [(w, a) for w, a, _ in gov] == [("tui", "MODEL_PAUSED"), ("tui", "MODEL_PAUSED"), ("tui", "MODEL_ACTIVE")]
        assert "hmm_v1" in gov[0][2] and "hmm_v2_canary" in gov[1][2]


@pytest.mark.parametrize("key", ["2", "3", "6"])
async def test_p_outside_the_models_pane_pauses_nothing_and_says_why(scripted, wall, key):
    engine = scripted
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(key)
        assert app.focused is not app.models_pane.table
        await pilot.press("p")
        await pilot.pause()
        assert engine.paused == set()
        assert app.models_pane.table.get_cell("hmm_v1", "stage").plain == "live"
        assert any("select a model in pane 4 first" in n.message.lower() for n in app._notifications)
        assert engine.store.conn.execute("SELECT COUNT(*) FROM governance_actions").fetchone()[0] == 0
        await pilot.press("4", "p")  # in the models pane it acts
        assert engine.paused == {"hmm_v1"}


async def _palette_run(pilot, app, text):
    await pilot.press("ctrl+p")
    assert await settle(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*text)

    def highlighted():
        ol = app.screen.query_one("CommandList")
        return ol.highlighted is not None and text.lower() in str(ol.get_option_at_index(ol.highlighted).prompt).lower()

    assert await settle(pilot, highlighted)
    await pilot.press("enter")


async def test_resume_through_the_palette_asks_with_cancel_focused(scripted, wall):
    engine = scripted
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await app.halt("test", "setup")
        assert engine.trading_state == TradingState.HALTED
        await _palette_run(pilot, app, "Resume trading")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.focused is not None and app.screen.focused.id == "cancel"
        await pilot.press("enter")  # Cancel
        assert await settle(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert engine.trading_state == TradingState.HALTED
        await _palette_run(pilot, app, "Resume trading")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("tab", "enter")  # focus moves to "Resume trading"
        assert await settle(pilot, lambda: engine.trading_state == TradingState.ACTIVE)
        assert not app.banner.has_class("-halted")
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions ORDER BY seq").fetchall()
        assert gov[-1] == ("tui", "ACTIVE")


async def test_resume_is_refused_while_the_halt_file_exists(scripted, wall, tmp_path):
    engine = scripted
    engine.halt_file = tmp_path / "HALT"
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await app.halt("test", "setup")
        engine.halt_file.write_text("ops\n")
        await _palette_run(pilot, app, "Resume trading")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)  # not even asked: the file would halt it again
        assert engine.trading_state == TradingState.HALTED


async def test_halt_from_the_palette(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await _palette_run(pilot, app, "Halt trading")
        await app.wait_governance()
        assert scripted.trading_state == TradingState.HALTED


# ---------------------------------------------------------------- speed, orders
def test_speed_ladder():
    assert faster(10.0) == 20.0 and slower(10.0) == 5.0
    assert faster(1000.0) is None and faster(None) is None
    assert slower(None) == 1000.0 and slower(1.0) == 1.0
    assert faster(7.0) == 10.0 and slower(7.0) == 5.0


async def test_plus_and_minus_change_the_speed_live(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        assert scripted.speed == DEFAULT_SPEED == 20.0
        await pilot.press("plus")
        assert scripted.speed == 50.0
        await pilot.press("minus", "minus")
        assert scripted.speed == 10.0
        assert app.header.info is not None and app.header.info.speed == 10.0


async def test_orders_newest_first_and_filter(scripted, wall):
    engine = scripted
    await engine.warm_up()
    app = _app(engine, wall, speed=None, max_bars=120)
    async with app.run_test(size=(160, 48)) as pilot:
        app.start_engine()
        await app.engine_worker.wait()
        await pilot.pause()
        shown = app.orders_pane.shown_ids()
        created = [c for c in engine.orders]
        assert shown and shown == list(reversed(created))[: len(shown)]
        await pilot.press("slash", *"btc")
        assert await settle(pilot, lambda: app.orders_pane.query_text == "btc")
        ids = app.orders_pane.shown_ids()
        assert ids and all(engine.orders[c].instrument_id.symbol == "BTCUSDT" for c in ids)
        await pilot.press("escape")
        assert app.orders_pane.shown_ids() == shown
        assert app.focused is app.orders_pane.table


# ---------------------------------------------------------------- failures, signals
class _Boom(Exception):
    pass


async def test_engine_failure_halts_and_the_screen_stays(scripted, wall):
    engine = scripted
    await engine.warm_up()
    inner = engine.feed
    count = {"n": 0}

    class FailingFeed:
        finite = False

        def warmup(self):
            return []

        def next_step(self):
            count["n"] += 1
            if count["n"] > 30:
                raise _Boom("feed broke")
            return inner.next_step()

        def state_dict(self):
            return inner.state_dict()

        def load_state_dict(self, s):
            inner.load_state_dict(s)

    engine.feed = FailingFeed()
    app = _app(engine, wall, speed=None)
    async with app.run_test(size=(160, 48)) as pilot:
        app.start_engine()
        await app.engine_worker.wait()
        await pilot.pause()
        assert app.status == "engine failed"
        assert engine.trading_state == TradingState.HALTED
        assert app.banner.has_class("-halted")
        assert any(code == "ENGINE_FAILED" for _lv, code, _m in app.alerts_pane.lines)
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions").fetchall()
        assert ("engine", "HALTED") in gov
        await pilot.press("2")  # still readable and driven by keys
        assert app.focused is app.orders_pane.table
        assert app.is_running


async def test_sighup_halts_cancels_flushes_and_exits(wired, wall):
    engine = wired.engine
    coids = await place_resting_buys(engine, 3)
    app = _app(engine, wall, install_signals=True)
    async with app.run_test(size=(160, 48)) as pilot:
        os.kill(os.getpid(), signal.SIGHUP)
        await settle(pilot, lambda: not app.is_running)
    assert app.hangup and app.finalized
    assert engine.trading_state == TradingState.HALTED
    assert set(store_statuses(engine, coids).values()) == {"CANCELED"}
    gov = engine.store.conn.execute("SELECT who, action FROM governance_actions").fetchall()
    assert ("sighup", "HALTED") in gov


async def test_sigusr1_halts_and_the_app_keeps_running(wired, wall):
    """``kill -USR1 <pid>``: HALTED by SIGUSR1, the working orders canceled,
    the red banner with the reason, the app still running; on unmount the
    handler in place before the app (the CLI's early one) is back."""
    engine = wired.engine
    coids = await place_resting_buys(engine, 3)
    early_calls = []

    def early(signum, frame):  # stands for desk/cli.py's pre-app handler
        early_calls.append(signum)

    previous = signal.signal(signal.SIGUSR1, early)
    try:
        app = _app(engine, wall, install_signals=True)
        async with app.run_test(size=(160, 48)) as pilot:
            assert signal.SIGUSR1 in {sig for sig, _ in app._signals}
            os.kill(os.getpid(), signal.SIGUSR1)
            assert await settle(pilot, lambda: engine.trading_state == TradingState.HALTED)
            await app.wait_governance()
            await pilot.pause()
            assert app.is_running
            assert app.banner.has_class("-halted")
            assert "out-of-band halt signal" in str(app.banner.render())
            assert set(store_statuses(engine, coids).values()) == {"CANCELED"}
            who = [w for (w,) in engine.store.conn.execute("SELECT who FROM governance_actions").fetchall()]
            assert "SIGUSR1" in who
            assert early_calls == []  # the app's handler replaced the early one
        assert signal.getsignal(signal.SIGUSR1) is early  # restored on unmount
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_first_screen_without_hmmlearn_or_ccxt(tmp_path):
    """The app's first frame on the real SIM wiring, in a fresh interpreter:
    neither hmmlearn nor ccxt is imported by then."""
    code = f"""
import asyncio, sys
from pathlib import Path
from desk.wiring import RunOptions, build
from desk.app import make_app
from tests.helpers.scripted import InlineExecutor
built = build(RunOptions(state_dir=Path({str(tmp_path / 'state')!r})), executor=InlineExecutor())
app = make_app(built, autostart=False, install_signals=False)
async def main():
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        print(sorted(m for m in ("hmmlearn", "ccxt") if m in sys.modules))
asyncio.run(main())
built.close()
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- venue status in the header
async def test_the_header_says_until_when_a_throttled_venue_is_blocked(wired, wall):
    from core.venue_errors import VenueThrottled

    engine = wired.engine
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        now = engine.clock.timestamp_ns()
        engine.session.note_error(VenueThrottled(engine.venue.venue, 90 * 1_000_000_000))  # HTTP 429, retry in 90 s
        app.sample(force=True)
        await pilot.pause()
        text = str(app.header.render())
        from datetime import datetime, timezone

        until = datetime.fromtimestamp((now + 90 * 10**9) / 1e9, tz=timezone.utc).strftime("%H:%M:%S")
        assert "THROTTLED until" in text and until in text, text


# ---------------------------------------------------------------- model lifecycle
async def test_u_promotes_the_selected_canary_after_asking_with_cancel_focused(scripted, wall):
    engine = scripted
    engine.register_seeds()  # hmm_v1 live, hmm_v2_canary canary at its 10 % step weight
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4", "u")  # the cursor is on hmm_v1, a live version: refused, nothing asked
        await pilot.pause()
        assert len(app.screen_stack) == 1
        assert engine.lifecycle.registry["hmm_v1"].stage == "live"
        await pilot.press("down", "u")
        await pilot.pause()
        screen = app.screen
        assert screen.title_text == "Promote hmm_v2_canary?"
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("enter")  # Cancel has the focus: nothing happens
        await pilot.pause()
        assert engine.lifecycle.registry["hmm_v2_canary"].stage == "canary"
        await pilot.press("u")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert engine.lifecycle.registry["hmm_v2_canary"].stage == "live"
        assert engine.weights["hmm_v2_canary"] == engine.lifecycle.family_weights["hmm_v2_canary"]
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions ORDER BY seq").fetchall()
        assert ("tui", "CANARY_PROMOTED") in gov
        assert app.models_pane.table.get_cell("hmm_v2_canary", "stage").plain == "live"


async def test_b_rolls_the_selected_canary_back(scripted, wall):
    engine = scripted
    engine.register_seeds()
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4", "down", "b")
        await pilot.pause()
        assert app.screen.title_text == "Roll back hmm_v2_canary?"
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert engine.lifecycle.registry["hmm_v2_canary"].stage == "retired"
        assert engine.weights["hmm_v2_canary"] == 0
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions ORDER BY seq").fetchall()
        assert ("tui", "CANARY_ROLLED_BACK") in gov


async def test_w_pins_a_stage_weight_and_empty_clears_it(scripted, wall):
    engine = scripted
    engine.register_seeds()  # family hmm_v2_canary weight 1 (no live seed in it), canary stage weight 0.10
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4", "down", "w")
        await pilot.pause()
        assert app.screen.query_one("#confirm").disabled  # nothing typed, nothing pinned: Set disabled
        await pilot.press("2", "5", "%")
        await pilot.pause()
        assert not app.screen.query_one("#confirm").disabled
        await pilot.press("enter")
        await pilot.pause()
        rec = engine.lifecycle.registry["hmm_v2_canary"]
        assert (rec.weight, rec.manual) == (Decimal("0.25"), True)
        assert engine.weights["hmm_v2_canary"] == Decimal("0.25")  # family weight 1 x 0.25
        assert app.models_pane.table.get_cell("hmm_v2_canary", "weight").plain == "pin"
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("1", ".", "5")  # 1.5 is not a weight: Set stays disabled, enter does nothing
        await pilot.pause()
        assert app.screen.query_one("#confirm").disabled
        await pilot.press("backspace", "backspace", "backspace", "enter")  # empty: clear the pin
        await pilot.pause()
        assert (rec.weight, rec.manual) == (Decimal("0.10"), False)
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions ORDER BY seq").fetchall()
        assert gov == [("tui", "MODEL_STAGE_CANARY"), ("tui", "MODEL_STAGE_CANARY")]


async def test_a_weight_out_of_range_says_why(scripted, wall):
    engine = scripted
    engine.register_seeds()
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4", "down", "w", "5", "enter")
        await pilot.pause()
        err = str(app.screen.query_one("#weight-error").render())
        assert "expected a fraction in [0, 1]" in err and "'5'" in err
        assert engine.lifecycle.registry["hmm_v2_canary"].weight == Decimal("0.10")  # nothing changed


async def test_help_lists_the_models_pane_keys(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        keys = {k for k, _, _ in app.help_rows()}
        assert {"u", "b", "w"} <= keys
