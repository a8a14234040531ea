"""Right-value tests of the app's parts: the kill switch's window, the
Sharpe ratio so far (hand-computed), the pacing clock's re-basing, the
money formats, the themes, and a replay run to its end in the app."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

from core.clock import TestClock
from desk.app import DeskApp, make_app
from desk.killswitch import KillSwitch
from desk.link import PERIODS_PER_YEAR, ModelStats, Pacer
from desk.widgets.common import fmt_money, fmt_step, pnl_cell
from themes import DESK_HIGH_CONTRAST, VARIABLE_DEFAULTS

SEC = 1_000_000_000


def test_kill_switch_window():
    clock = TestClock(0)
    ks = KillSwitch(clock)
    assert ks.press() is False and ks.armed
    clock.advance(2 * SEC)
    assert ks.press() is True and not ks.armed  # 2 s exactly is within the window
    assert ks.press() is False
    clock.advance(2 * SEC + 1)
    assert ks.expire() is True and not ks.armed
    assert ks.press() is False and ks.armed
    assert ks.remaining_ns() == 2 * SEC


def test_sharpe_so_far_by_hand():
    # budget 1000; equity at hourly boundaries 1000, 1010, 1005, 1020:
    # returns 0.010, -0.005, 0.015; mean 0.00666…, sample sd 0.0104083…
    st = ModelStats(1000.0)
    for k, eq in enumerate([1000.0, 1010.0, 1005.0, 1020.0]):
        st.add(eq, k)
        st.add(eq + 99, k)  # a second sample in the same hour is ignored
    r = [0.010, -0.005, 0.015]
    mean = sum(r) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    assert st.n == 3
    assert math.isclose(st.sharpe, mean / sd * math.sqrt(PERIODS_PER_YEAR), rel_tol=1e-9)
    assert math.isclose(st.sharpe, 0.6405126152203485 * math.sqrt(8760), rel_tol=1e-9)
    flat = ModelStats(1000.0)
    for k in range(5):
        flat.add(1000.0, k)
    assert flat.sharpe is None  # zero variance
    one = ModelStats(1000.0)
    one.add(1000.0, 0)
    one.add(1010.0, 1)
    assert one.sharpe is None  # a single return


def test_pacer_rebase_makes_the_current_step_due_now():
    base = TestClock(0)
    p = Pacer(base)
    p.run_started(steps=100)  # t0 = 0, run starts at engine step 100
    base.advance(5 * SEC)  # 50 steps done at 10/s
    p.rebase(steps=150, speed=100.0)
    t0 = 0
    due_next = t0 + int((150 - 100 + 1) * 1e9 / 100.0)
    assert due_next - p.timestamp_ns() == 10_000_000  # the next step 10 ms from now
    p.rebase(steps=150, speed=1.0)
    due_next = t0 + int((150 - 100 + 1) * 1e9 / 1.0)
    assert due_next - p.timestamp_ns() == SEC  # not the 45 s stall of the unrebased schedule


def test_money_formats_carry_a_sign():
    assert fmt_money(Decimal("1234.565"), signed=True) == "+1,234.56"  # half-even
    assert fmt_money(Decimal("-0.004"), signed=True) == "0.00"
    assert pnl_cell(Decimal("-12.5")) == ("-12.50", "down")
    assert pnl_cell(Decimal("3")) == ("+3.00", "up")
    assert pnl_cell(Decimal("0")) == ("0.00", "muted")
    assert fmt_step(Decimal("0.123456"), Decimal("0.0001")) == "0.1234"


async def test_high_contrast_theme_recolours(scripted):
    app = DeskApp(scripted, wall_clock=TestClock(), autostart=False, install_signals=False)
    async with app.run_test(size=(160, 48)) as pilot:
        assert app.theme == "desk-dark"
        up_dark = app.positions_pane.table.tone_style("up").color
        app.theme = DESK_HIGH_CONTRAST.name
        await pilot.pause()
        await pilot.pause()
        up_hc = app.positions_pane.table.tone_style("up").color
        assert up_dark is not None and up_hc is not None
        assert up_dark.triplet.hex.upper() == VARIABLE_DEFAULTS["pnl-up"].upper()
        assert up_hc.triplet.hex.upper() == DESK_HIGH_CONTRAST.variables["pnl-up"].upper()


async def test_a_replay_runs_to_its_end_in_the_app(tmp_path: Path):
    """A short Binance kline CSV through desk.wiring: the app runs it to the
    end, says so, and stores the finished summary as the headless runner does."""
    from desk.wiring import RunOptions, build
    from tests.helpers.scripted import InlineExecutor

    csv = tmp_path / "BTCUSDT-1m-test.csv"
    t0 = 1747699200000
    rows = ["open_time,open,high,low,close,volume"]
    for k in range(60):
        px = 100000 + 10 * k
        rows.append(f"{t0 + 60000 * k},{px},{px + 5},{px - 5},{px + 1},1.5")
    csv.write_text("\n".join(rows) + "\n")
    built = build(RunOptions(data=[csv], state_dir=tmp_path / "state"), executor=InlineExecutor())
    try:
        app = make_app(built, wall_clock=TestClock(), speed=None, install_signals=False)
        assert app.market == "replay BTCUSDT"
        async with app.run_test(size=(160, 48)) as pilot:
            await app.engine_worker.wait()
            await pilot.pause()
            assert app.status == "finished"
            assert built.engine.stats.finished and built.engine.stats.bars == 60
            await pilot.press("q")
        assert app.finalized
        assert built.engine.store.meta_get("status") == "finished"
    finally:
        built.close()


async def test_the_positions_pane_shows_every_book_with_a_position(tmp_path):
    """Refit versions and manual orders (the API's "manual" book) have
    positions too: the pane shows each of them, not only the seed specs."""
    from decimal import Decimal

    from core.events import OrderFilled
    from desk.app import DeskApp
    from tests.app.engines import scripted_sim_engine

    engine = scripted_sim_engine(tmp_path / "state")
    iid = sorted(engine.instruments, key=str)[0]
    engine.portfolio.mark(iid, Decimal("100"))
    engine.portfolio.apply_fill(OrderFilled(
        ts_event=1, ts_init=1, client_order_id="NHD-0-90-0", instrument_id=iid, model_id="manual",
        venue_order_id="V", trade_id="T-1", side="BUY", last_qty=Decimal("0.5"), last_px=Decimal("100"),
        commission=Decimal("0"), commission_currency=engine.venue.quote, liquidity_side="TAKER"))
    app = DeskApp(engine, autostart=False, install_signals=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        rows = [app.positions_pane.table.get_row_at(k) for k in range(app.positions_pane.table.row_count)]
        assert any(str(r[0]) == "manual" and str(r[1]) == str(iid) for r in rows)


def test_a_budget_the_allocator_moves_is_not_a_return_in_the_sharpe(tmp_path):
    # a model that never traded: its budget halves between two hours; its returns are 0, so no Sharpe
    from decimal import Decimal

    from desk.link import EngineLink
    from tests.app.engines import scripted_sim_engine

    engine = scripted_sim_engine(tmp_path / "state")
    link = EngineLink(engine, lambda batch: None)
    hour = 3_600_000_000_000
    for k, w in enumerate(("0.9", "0.45", "0.45")):
        engine.weights["hmm_v1"] = Decimal(w)
        engine.clock.set_time((k + 1) * hour)
        link._on_step()
    st = link.stats["hmm_v1"]
    assert (st.n, st.mean) == (2, 0.0) and st.sharpe is None
    assert st.budget == 0.45 * 10000
