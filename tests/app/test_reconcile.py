"""Pilot tests of the reconciliation differences: the helper that splits
core.recovery's messages, the modal that opens on its own once when
``engine.unreconciled`` becomes non-empty, the palette command that opens
it, escape closing it, and the kill switch staying live over it."""

from __future__ import annotations

from core.enums import TradingState
from desk.app import DeskApp
from desk.screens import ReconcileScreen, ReconDiff, parse_difference
from tests.app.conftest import palette_run, settle

DIFFS = ["BTCUSDT.SIM: the venue holds 0 BTC, the store 0.5", "cash: the venue holds 9300 USDT, the store 9400"]
ORDER_DIFF = "the venue has desk order O-1 that the store does not know"


def _app(engine, wall, **kw):
    kw.setdefault("autostart", False)
    kw.setdefault("install_signals", False)
    return DeskApp(engine, wall_clock=wall, **kw)


def _rows(app) -> list[tuple[str, ...]]:
    table = app.screen.query_one("#recon-table")
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def test_parse_difference():
    assert parse_difference("BTCUSDT.BINANCE: the venue holds 0 BTC, the store 0.28336227") == ReconDiff(
        "BTCUSDT.BINANCE", "0", "0.28336227", "-0.28336227", "")
    assert parse_difference(DIFFS[1]) == ReconDiff("cash USDT", "9300", "9400", "-100", "")
    assert parse_difference("cash: the venue holds 9400.50 USDT, the store 9300.25") == ReconDiff(
        "cash USDT", "9400.50", "9300.25", "100.25", "")
    assert parse_difference(ORDER_DIFF) == ReconDiff("", "", "", "", ORDER_DIFF)
    # not a number: free text, not a crash
    bad = "X.SIM: the venue holds many BTC, the store 1"
    assert parse_difference(bad) == ReconDiff("", "", "", "", bad)


async def test_opens_once_on_its_own_and_escape_closes(scripted, wall):
    engine = scripted
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert not isinstance(app.screen, ReconcileScreen)  # nothing unreconciled: no screen
        engine.unreconciled = list(DIFFS) + [ORDER_DIFF]
        app.sample()  # the 10 Hz tick
        assert await settle(pilot, lambda: isinstance(app.screen, ReconcileScreen))
        assert _rows(app) == [
            ("BTCUSDT.SIM", "0", "0.5", "-0.5", ""),
            ("cash USDT", "9300", "9400", "-100", ""),
            ("", "", "", "", ORDER_DIFF),
        ]
        body = " ".join(str(s.render()) for s in app.screen.query(".dialog-body"))
        assert "HALTED" in body and "Resume trading" in body
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, ReconcileScreen))
        app.sample(force=True)  # still unreconciled: it does not open again
        await pilot.pause()
        assert not isinstance(app.screen, ReconcileScreen)
        engine.unreconciled = []
        app.sample()
        engine.unreconciled = list(DIFFS)  # a new difference after it cleared: opens again
        app.sample()
        assert await settle(pilot, lambda: isinstance(app.screen, ReconcileScreen))
        assert len(app.screen_stack) == 2


async def test_opens_at_start_and_the_kill_switch_works_over_it(scripted, wall):
    engine = scripted
    engine.unreconciled = list(DIFFS)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await settle(pilot, lambda: isinstance(app.screen, ReconcileScreen))
        assert _rows(app) == [("BTCUSDT.SIM", "0", "0.5", "-0.5", ""), ("cash USDT", "9300", "9400", "-100", "")]
        await pilot.press("ctrl+k")
        await pilot.press("ctrl+k")
        await app.wait_governance()
        assert engine.trading_state == TradingState.HALTED
        assert isinstance(app.screen, ReconcileScreen)


async def test_palette_command_opens_it(scripted, wall):
    engine = scripted
    engine.unreconciled = list(DIFFS)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await settle(pilot, lambda: isinstance(app.screen, ReconcileScreen))
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, ReconcileScreen))
        await palette_run(pilot, app, "Show reconciliation differences")
        assert await settle(pilot, lambda: isinstance(app.screen, ReconcileScreen))
        assert _rows(app) == [("BTCUSDT.SIM", "0", "0.5", "-0.5", ""), ("cash USDT", "9300", "9400", "-100", "")]
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, ReconcileScreen))
        assert len(app.screen_stack) == 1


async def test_palette_command_with_nothing_unreconciled_opens_nothing(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await palette_run(pilot, app, "Show reconciliation differences")
        await settle(pilot, lambda: len(app.screen_stack) == 1)
        await pilot.pause()
        assert not isinstance(app.screen, ReconcileScreen) and len(app.screen_stack) == 1
