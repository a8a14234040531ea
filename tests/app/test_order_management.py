"""The TUI side of issue 4: flatten and reduce-only from the command
palette (with their confirmations), resume from HALTED and REDUCING, the
REDUCING banner, order types, contingencies and denial codes in the orders
pane, and repeated denials collapsed in the alerts pane.

Engines: the scripted SIM engine (tests/app/engines.py), driven by hand
(warm-up, a few bars) before the app opens; nothing sleeps."""

from __future__ import annotations

from decimal import Decimal

from textual.widgets import Button, Input

from core.enums import OrderSide, OrderType, TimeInForce, TradingState
from core.orders import Order
from desk.app import DeskApp
from desk.commands import desk_commands
from desk.screens import ConfirmScreen, FlattenScreen
from desk.widgets.orders import COLUMNS
from tests.app.conftest import palette_run, settle
from tests.app.engines import close_engine, scripted_sim_engine

D = Decimal
#: scripted targets that leave most of the cash free
SMALL = {"hmm_v1": ["0.1"], "hmm_v2_canary": ["0.1"]}


def _app(engine, wall, **kw):
    kw.setdefault("autostart", False)
    kw.setdefault("install_signals", False)
    return DeskApp(engine, wall_clock=wall, **kw)


async def _with_positions(engine, bars: int = 8):
    await engine.warm_up()
    await engine.run(max_bars=bars)
    longs = {k: p.quantity for k, p in engine.portfolio.positions.items() if p.quantity > 0}
    assert longs, "the scripted models hold something after a few bars"
    return longs


def _row(pane, coid: str) -> dict[str, str]:
    """The orders pane's cells (plain text) of one order."""
    i = pane.shown_ids().index(coid)
    return {col: pane.table.get_cell(f"s{i}", col).plain for col, *_ in COLUMNS}


# ---------------------------------------------------------------- flatten
async def test_flatten_asks_for_the_word_then_halts_and_closes_each_position(scripted, wall):
    engine = scripted
    longs = await _with_positions(engine)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await palette_run(pilot, app, "Flatten all positions")
        assert await settle(pilot, lambda: isinstance(app.screen, FlattenScreen))
        screen = app.screen
        assert screen.focused is not None and screen.focused.id == "cancel"
        # the dialog lists what will be closed: model, instrument, quantity, value at the last price
        listed = {(r.model, r.instrument): r for r in screen.rows}
        assert set(listed) == {(m, str(i)) for m, i in longs}
        for (m, i), qty in longs.items():
            r = listed[(m, str(i))]
            assert D(r.quantity) == qty
            assert D(r.value.replace(",", "")) == (qty * engine.portfolio.marks[i]).quantize(D("0.01"))
        confirm = screen.query_one("#confirm", Button)
        box = screen.query_one("#flatten-input", Input)
        assert confirm.disabled
        box.focus()
        await pilot.press(*"FLATTE")
        assert confirm.disabled
        await pilot.press("enter")  # not the word yet: nothing happens
        assert isinstance(app.screen, FlattenScreen) and engine.trading_state == TradingState.ACTIVE
        await pilot.press("N")
        assert not confirm.disabled
        await pilot.press("backspace", "n")  # case matters
        assert confirm.disabled
        await pilot.press("backspace", "N")
        assert not confirm.disabled
        await pilot.click("#confirm")
        assert await settle(pilot, lambda: not isinstance(app.screen, FlattenScreen))
        await app.wait_governance()
        await pilot.pause()
        assert engine.trading_state == TradingState.HALTED
        actions = [a for (a,) in engine.store.conn.execute("SELECT action FROM governance_actions")]
        assert "FLATTEN" in actions and "HALTED" in actions
        report = app.last_flatten_report
        assert report is not None and {(r["model"], r["instrument"]) for r in report} == set(listed)
        sells = [r["order"] for r in report if r["status"] != "DUST"]
        assert sells
        for coid in sells:
            cells = _row(app.orders_pane, coid)
            assert cells["side"] == "SELL" and cells["type"] == "MKT" and "RO" in cells["link"].split()
            assert engine.orders[coid].reduce_only and engine.orders[coid].order_type == OrderType.MARKET
        # the per-position report in the alerts pane: each close order sent (or dust) ...
        flat_lines = [ln for ln in app.alerts_pane.shown_lines() if " FLATTEN " in ln and " GOV " in ln]
        assert len(flat_lines) == len(report)
        assert all(": closing, reduce-only market sell" in ln or ": DUST" in ln for ln in flat_lines)
        assert app.banner.has_class("-halted")
        # ... then, as the market sells fill on the next bar, one "closed" line each
        await engine.run(max_bars=1)
        await pilot.pause()
        for coid in sells:
            assert engine.orders[coid].status.value == "FILLED"
            assert any(": closed, sold " in ln and coid in ln for ln in app.alerts_pane.shown_lines())
        for (m, i), pos in engine.portfolio.positions.items():
            if (m, str(i)) in {(r["model"], r["instrument"]) for r in report if r["status"] != "DUST"}:
                assert 0 <= pos.quantity < engine.instruments[i].step_size  # what is left is below the step


async def test_flatten_cancel_is_focused_and_escape_does_nothing(scripted, wall):
    engine = scripted
    await _with_positions(engine)
    app = _app(engine, wall)
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_flatten()
        assert await settle(pilot, lambda: isinstance(app.screen, FlattenScreen))
        await pilot.press("enter")  # Cancel has the focus
        assert await settle(pilot, lambda: not isinstance(app.screen, FlattenScreen))
        app.action_flatten()
        assert await settle(pilot, lambda: isinstance(app.screen, FlattenScreen))
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, FlattenScreen))
        assert engine.trading_state == TradingState.ACTIVE
        assert not engine.store.conn.execute("SELECT 1 FROM governance_actions").fetchall()


# ---------------------------------------------------------------- reduce-only, resume
async def test_reduce_only_asks_shows_a_warning_banner_and_resume_lifts_it(scripted, wall):
    engine = scripted
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await palette_run(pilot, app, "Reduce-only")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.focused is not None and app.screen.focused.id == "cancel"
        await pilot.press("enter")  # Cancel
        assert await settle(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert engine.trading_state == TradingState.ACTIVE
        app.action_reduce_only()  # what the palette command calls
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("tab", "enter")
        assert await settle(pilot, lambda: engine.trading_state == TradingState.REDUCING)
        await pilot.pause()
        assert app.banner.has_class("-reducing") and not app.banner.has_class("-halted")
        assert str(app.banner.render()).startswith("REDUCING: only orders that reduce exposure pass")
        assert app.header.info is not None and app.header.info.state == "REDUCING"
        # the banner's colours are the warning ones, not the halt's red
        css = app.get_css_variables()
        assert app.banner.styles.background.hex.upper() == css["reducing-background"].upper()
        assert css["reducing-background"].upper() != css["halted-background"].upper()
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions ORDER BY seq").fetchall()
        assert gov == [("tui", "REDUCING")]
        # a halt shows the red banner over it; resume goes back to ACTIVE from HALTED
        await app.halt("tui", "test")
        await pilot.pause()
        assert app.banner.has_class("-halted") and not app.banner.has_class("-reducing")
        app.action_reduce_only()  # only a resume lifts a halt
        await pilot.pause()
        assert engine.trading_state == TradingState.HALTED and not isinstance(app.screen, ConfirmScreen)
        app.action_resume_trading()  # the palette's "Resume trading" (through the palette: test_keys.py)
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("tab", "enter")
        assert await settle(pilot, lambda: engine.trading_state == TradingState.ACTIVE)
        # ... and from REDUCING
        engine.governance.reduce_only("test", "again")
        app.link.drain()
        helps = {name: help_text for name, help_text, _cb in desk_commands(app)}
        assert helps["Resume trading"].startswith("Lift reduce-only")
        app.action_resume_trading()
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("tab", "enter")
        assert await settle(pilot, lambda: engine.trading_state == TradingState.ACTIVE)
        await pilot.pause()
        assert not app.banner.has_class("-reducing") and not app.banner.display
        gov = [a for _w, a in engine.store.conn.execute("SELECT who, action FROM governance_actions ORDER BY seq")]
        assert gov == ["REDUCING", "HALTED", "ACTIVE", "REDUCING", "ACTIVE"]


# ---------------------------------------------------------------- orders pane
async def test_orders_pane_shows_types_triggers_brackets_and_denial_codes(tmp_path, wall):
    engine = scripted_sim_engine(tmp_path / "state", targets=SMALL)  # cash left for the bracket
    try:
        await _bracket_and_denial(engine, wall)
    finally:
        close_engine(engine)


async def _bracket_and_denial(engine, wall):
    await engine.warm_up()
    await engine.run(max_bars=4)
    iid = sorted(engine.instruments, key=str)[0]
    inst = engine.instruments[iid]
    mark = engine.portfolio.marks[iid]
    # a bracket whose entry (a marketable limit) fills on the next bar, releasing its legs
    qty = max(inst.min_qty, (D("50") / mark).quantize(inst.step_size))
    entry_px = inst.round_price(str(mark * D("1.01")))
    entry = Order("NHD-B-1", "manual", iid, OrderSide.BUY, OrderType.LIMIT, qty, entry_px, TimeInForce.GTC,
                  engine.clock.timestamp_ns(), engine.stats.bars)
    tp_px = inst.round_price(str(mark * D("1.5")))
    sl_px = inst.round_price(str(mark * D("0.5")))
    br = engine.emulator.submit_bracket(entry, take_profit_price=tp_px, stop_trigger_price=sl_px)
    await engine.send_pending()
    await engine.run(max_bars=2)
    await engine.send_pending()
    engine.flush()
    sl, tp = engine.orders[br.stop_loss_id], engine.orders[br.take_profit_id]
    assert sl.order_type == OrderType.STOP_MARKET and sl.is_working and tp.is_working
    # a denial: the smallest quantity at the market price is below the minimum notional
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        denied = engine.submit("manual", iid, OrderSide.BUY, inst.min_qty, inst.round_price(str(mark)),
                               mark, OrderType.LIMIT)
        assert denied.status.value == "DENIED"
        await pilot.pause()
        pane = app.orders_pane
        s = _row(pane, sl.client_order_id)
        assert s["type"] == "STP" and s["side"] == "SELL" and s["tif"] == "GTC"
        assert D(s["trigger"].replace(",", "")) == sl_px
        assert s["link"] == "↳B-1 OCO RO"  # a bracket leg: its parent, its OCO sibling, reduce-only
        assert s["model"] == "manual"
        t = _row(pane, tp.client_order_id)
        assert t["type"] == "LMT" and D(t["price"].replace(",", "")) == tp_px and t["trigger"] == ""
        assert t["link"] == "↳B-1 OCO RO"
        e = _row(pane, entry.client_order_id)
        assert e["type"] == "LMT" and e["link"] == "OTO" and e["status"] == "FILLED"
        d = _row(pane, denied.client_order_id)
        assert d["status"] == "DENIED" and d["reason"].startswith("MIN_NOTIONAL: ")
        # the filter finds orders by type and by denial code
        pane.set_filter("stp")
        assert pane.shown_ids() == [sl.client_order_id]
        pane.set_filter("min_notional")
        assert pane.shown_ids() == [denied.client_order_id]
        pane.set_filter("")


async def test_orders_pane_keeps_the_most_important_columns_at_80_columns(scripted, wall):
    app = _app(scripted, wall)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")  # maximized in the compact layout
        await pilot.pause()
        table = app.orders_pane.table
        width = table.scrollable_content_region.width
        x, seen = 0, []
        for col in table.ordered_columns:
            x += col.get_render_width(table)
            if x > width:
                break
            seen.append(col.key.value)
        assert seen[:6] == ["status", "side", "qty", "type", "iid", "price"]


# ---------------------------------------------------------------- alerts pane
async def test_repeated_denials_collapse_into_one_line(scripted, wall):
    engine = scripted
    await engine.warm_up()
    await engine.run(max_bars=4)
    iid = sorted(engine.instruments, key=str)[0]
    inst = engine.instruments[iid]
    mark = engine.portfolio.marks[iid]
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.alerts_pane
        before = len(pane.shown_lines())

        def deny() -> None:
            o = engine.submit("manual", iid, OrderSide.BUY, inst.min_qty, inst.round_price(str(mark)), mark,
                              OrderType.LIMIT)
            assert o.status.value == "DENIED"

        for _ in range(3):
            deny()
        await pilot.pause()
        engine.governance.pause_model("hmm_v1", "tui", "between the denials")  # a GOV line of its own
        for _ in range(2):
            deny()
        await pilot.pause()
        lines = pane.shown_lines()[before:]
        denial_lines = [ln for ln in lines if "DENIED_MIN_NOTIONAL" in ln]
        assert len(denial_lines) == 1
        assert "DENIED_MIN_NOTIONAL ×5, last: " in denial_lines[0]
        assert lines[-1] is denial_lines[0] or lines[-1] == denial_lines[0]  # moved to the bottom
        assert any(" GOV " in ln and "MODEL_PAUSED" in ln for ln in lines)
        assert [c for _lv, c, _m in pane.lines].count("DENIED_MIN_NOTIONAL") == 5  # every one is counted
        assert pane.border_subtitle.endswith("total")


async def test_flatten_typing_goes_to_the_word_even_with_cancel_focused(scripted, wall):
    engine = scripted
    await _with_positions(engine)
    app = _app(engine, wall)
    async with app.run_test(size=(160, 48)) as pilot:
        await palette_run(pilot, app, "Flatten all positions")
        assert await settle(pilot, lambda: isinstance(app.screen, FlattenScreen))
        screen = app.screen
        assert screen.focused is not None and screen.focused.id == "cancel"
        await pilot.press(*"FLATTEN")  # typed straight away, Cancel still focused first
        assert screen.query_one("#flatten-input", Input).value == "FLATTEN"
        assert not screen.query_one("#confirm", Button).disabled
        await pilot.press("enter")  # the input has the focus now: enter confirms
        assert await settle(pilot, lambda: engine.trading_state == TradingState.HALTED)
