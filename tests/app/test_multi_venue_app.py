"""The TUI on a desk with two venues (issue 6, "Isolation"): the header
shows each venue's connection state in its own tone, and the working orders
of a venue that dropped read UNKNOWN in the orders pane until that venue is
reconciled, while the other venue's orders show their status. The engine is
the two-paper-venue one of tests/recovery/test_multi_venue.py, driven by the
engine clock (nothing sleeps)."""

from __future__ import annotations

from desk.app import DeskApp
from desk.widgets.orders import STATUS_SHORT
from tests.app.test_order_management import _row
from tests.recovery.test_multi_venue import MIN, A, B, build


async def test_header_per_venue_and_unknown_orders_until_reconciled(tmp_path, wall):
    engine, faults = build(tmp_path, n=40, targets_a=("1",), targets_b=("1", "0"))
    await engine.warm_up()
    await engine.run(max_bars=6)
    working_a = [o for o in engine.working_orders() if o.instrument_id == A]
    assert len(working_a) == 1
    coid_a = working_a[0].client_order_id
    faults["VA"].disconnect(10 * MIN)
    await engine.run(max_bars=2)  # the session sees VA down at its next tick
    app = DeskApp(engine, wall_clock=wall, autostart=False, install_signals=False)
    async with app.run_test(size=(200, 48)) as pilot:
        app.sample(force=True)
        await pilot.pause()
        header = app.header._render_info(app.header.info).plain
        assert "VA DISCONNECTED since" in header and "VB OK" in header
        # what needs a look comes right after the desk's state, the venue that is fine last
        assert header.index(" ACTIVE ") < header.index("VA DISCONNECTED") < header.index("working") \
            < header.index("VB OK")
        cells = _row(app.orders_pane, coid_a)
        assert cells["status"] == "UNKNOWN"
        assert cells["reason"].startswith("VA not reconciled; last known ")
        b_working = [o for o in engine.working_orders() if o.instrument_id == B]
        for o in b_working:  # VB's orders keep their own status
            assert _row(app.orders_pane, o.client_order_id)["status"] != "UNKNOWN"
        # the outage ends; the reconnect reconciliation finds what VA did: the row shows it
        await engine.run(max_bars=20)
        app.sample(force=True)
        await pilot.pause()
        assert engine.session.suspect_venues() == set()
        status = engine.orders[coid_a].status.value
        assert _row(app.orders_pane, coid_a)["status"] == STATUS_SHORT.get(status, status) != "UNKNOWN"
        assert "VA OK" in app.header._render_info(app.header.info).plain


def test_header_tones_of_a_multi_venue_status():
    from desk.widgets.header import venue_tone

    # each "; "-separated part gets its own tone: a paper venue that is fine is green, a drop red
    parts = "VA OK; VB DISCONNECTED since 00:04:00 UTC; VB 1 cancels queued; IBKR DEGRADED since 00:05:00 UTC"
    assert [venue_tone(p) for p in parts.split("; ")] == ["active", "halted", "reducing", "reducing"]


async def test_palette_halts_one_venue_and_resumes_it_after_asking(tmp_path, wall):
    from core.enums import OrderStatus, TradingState
    from desk.commands import desk_commands
    from desk.screens import ConfirmScreen

    engine, _ = build(tmp_path, n=40)
    await engine.warm_up()
    await engine.run(max_bars=6)
    app = DeskApp(engine, wall_clock=wall, autostart=False, install_signals=False)
    async with app.run_test(size=(160, 48)) as pilot:
        names = [n for n, _, _ in desk_commands(app)]
        assert "Halt venue VA" in names and "Halt venue VB" in names
        dict((n, cb) for n, _, cb in desk_commands(app))["Halt venue VA"]()
        await app.wait_governance()
        await pilot.pause()
        assert engine.halted_venues == {"VA"} and engine.trading_state == TradingState.ACTIVE
        assert not [o for o in engine.working_orders() if o.instrument_id == A]  # its working order canceled
        cut = engine.stats.bars
        await engine.run(max_bars=6)
        later = [o for o in engine.orders.values() if o.step > cut]
        assert [o for o in later if o.instrument_id == A] == []  # the router sends a halted venue nothing
        assert any(o.status == OrderStatus.FILLED for o in later if o.instrument_id == B)
        gov = engine.store.conn.execute("SELECT who, action FROM governance_actions").fetchall()
        assert gov[-1][1] == "VENUE_HALTED"
        app.sample(force=True)
        header = app.header._render_info(app.header.info).plain
        assert "VA HALTED" in header and " ACTIVE " in header  # the venue is halted, the desk is not
        # right after the desk's state, so 80 columns never cut it off
        assert header.index("VA HALTED") < header.index("working")
        names = [n for n, _, _ in desk_commands(app)]
        assert "Resume venue VA" in names and "Halt venue VA" not in names
        dict((n, cb) for n, _, cb in desk_commands(app))["Resume venue VA"]()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and engine.halted_venues == {"VA"}  # it asks first
        await pilot.click("#confirm")
        await pilot.pause()
        assert engine.halted_venues == set()
