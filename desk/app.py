"""The desk on screen: the Textual app around the engine (issue 3,
DESIGN.md section 6).

``run_app(opts)`` builds the engine through ``desk.wiring.build`` (the same
wiring as the headless runner) and runs :class:`DeskApp` on it. The engine
runs in a Textual worker on the app's event loop; the HMM fits run in the
fit worker process (``models.executor``), so the loop never waits on them.

How the screen follows the engine:

* discrete facts (order events, trading-state and model-state changes,
  alerts) arrive through a bus subscription (``desk.link.EngineLink``) and
  reach the panes in the same event-loop turn, batched;
* continuous figures (prices, regimes, PnL, allocations, the header clock)
  are sampled from the engine at most 10 times a second by a timer, and
  only changed cells are redrawn.

Governance is reached only through ``engine.governance``: the kill switch
(``ctrl+k`` twice within 2 s of the injected wall clock, or the alternate
key ``ctrl+backslash`` for terminals that take ``ctrl+k``), ``p`` (pause or
resume the selected model), the command palette's "Resume trading" (from
HALTED or REDUCING, with a confirmation, Cancel focused), "Halt trading",
"Reduce-only (REDUCING)" (a confirmation, Cancel focused) and "Flatten all
positions" (a dialog that lists what will be closed and asks for the word
FLATTEN; the per-position report goes to the alerts pane), the quit
question, ``SIGHUP`` and ``SIGUSR1`` (``kill -USR1 <pid>``: halt, the app
keeps running).

Start-up imports neither hmmlearn nor ccxt: hmmlearn is imported only in the
fit worker process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer
from textual.worker import Worker

from core.clock import Clock, MonotonicClock
from core.enums import TradingState
from core.errors import EXIT_OK, DeskError
from core.events import Event, OrderEvent
from desk.commands import DeskCommands
from desk.killswitch import KillSwitch
from desk.link import EngineLink
from desk.screens import ConfirmScreen, FlattenRow, FlattenScreen, HelpScreen, QuitScreen, ReconcileScreen
from desk.widgets.alerts import AlertsPane
from desk.widgets.allocations import AllocationsPane
from desk.widgets.header import DeskHeader, HaltBanner, HeaderInfo
from desk.widgets.market import MarketPane
from desk.widgets.models import ModelsPane
from desk.widgets.orders import MAX_FINISHED, OrdersPane
from desk.widgets.positions import PositionsPane
from themes import DEFAULT_THEME, DESK_TCSS, THEMES, VARIABLE_DEFAULTS

log = logging.getLogger("desk.app")

#: bar steps per second when the app opens without --speed
DEFAULT_SPEED = 20.0
#: the speeds ``+`` and ``-`` step through (None = as fast as possible)
SPEED_LADDER: tuple[float | None, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, None)
#: how often the survivors of the young GC generations are frozen
GC_FREEZE_INTERVAL_S = 2.0
#: the continuous figures' sampling period (10 Hz)
SAMPLE_INTERVAL_S = 0.1
#: the kill switch's key and its alternate (for terminals that take ctrl+k;
#: ctrl+\ reaches the app in tmux, screen and over SSH because Textual turns
#: ISIG off, so it never raises SIGQUIT while the app runs)
HALT_KEY = "ctrl+k"
ALT_HALT_KEY = "ctrl+backslash"
#: the out-of-band halt signal (``kill -USR1 <pid>``): who and why it halts as
USR1_WHO = "SIGUSR1"
USR1_REASON = "out-of-band halt signal"
#: who the app's governance commands are recorded as
WHO = "tui"
#: after a SIGHUP, the longest the halt (its cancels) and then the engine's stop are each waited for (s)
HANGUP_WAIT_S = 5.0
#: a screen write waits for room in Textual's writer queue in steps of this (s), checking the terminal is there
TERMINAL_PUT_WAIT_S = 0.5

PANES = ("market", "orders", "positions", "models", "allocations", "alerts")


def venue_line(engine: Any) -> str:
    """The header's venue part: the session's status (each venue's
    connection state) and ``<V> HALTED`` for each venue under a per-venue
    halt (beside the global state: a venue halt leaves the desk ACTIVE)."""
    session = getattr(engine, "session", None)
    text = session.status() if session is not None else ""
    halted = [f"{v} HALTED" for v in sorted(getattr(engine, "halted_venues", ()) or ())]
    return "; ".join(p for p in [text, *halted] if p)


class DeskApp(App[int]):
    """The desk's Textual app over one engine.

    Args:
        engine: a ``core.engine.Engine``, built and not yet running.
        wall_clock: the clock of human timings (only the kill switch's 2 s
            double-press window); ``MonotonicClock`` by default, a
            ``TestClock`` in tests. Never the engine clock.
        speed: bar steps per second (None = as fast as possible).
        warm_up: run ``engine.warm_up()`` first (a new run, not a continued one).
        autostart: start the engine worker on mount (tests may drive the
            engine themselves).
        mode: ``PAPER`` or ``LIVE`` (the header).
        market: what the header names as the market (``SIM``, ``replay …``).
        max_bars: stop the engine after this many bars (None = until quit).
        sample_interval: seconds between samples of the continuous figures.
        install_signals: handle SIGHUP, SIGTERM and SIGUSR1 on the app's loop
            (the handlers in place before are restored on unmount).
        close_hook: closes the engine's resources (``Built.close``); called
            before a hard exit.
        hard_exit_on_hangup: after a SIGHUP, once halted and persisted, call
            ``close_hook`` and leave with ``os._exit``: with its terminal
            gone Textual's own shutdown blocks writing to it (seen under
            tmux: the writer thread dies on EIO and the queue fills).
    """

    CSS_PATH = DESK_TCSS
    TITLE = "nautilus-hmm desk"
    COMMANDS = App.COMMANDS | {DeskCommands}
    #: widths: compact below 120 columns, the market and models panes
    #: stacked full-width below 160 (the market's regimes need ~60 columns),
    #: side by side from 160 (themes/desk.tcss)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-medium"), (160, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    #: a pane maximized (keys 1-6 in the compact layout) keeps the header
    #: and the HALTED banner above it, and the footer
    ALLOW_IN_MAXIMIZED_VIEW = "Footer, #heading"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(HALT_KEY, f"kill_switch('{HALT_KEY}')", "Halt (×2)", id="halt-trading", priority=True,
                tooltip="Press twice within 2 s: HALTED, every working order canceled"),
        Binding(ALT_HALT_KEY, f"kill_switch('{ALT_HALT_KEY}')", "Halt (×2, alternate key)", id="halt-trading-alt",
                priority=True,
                show=False, tooltip="Same as ctrl+k, for terminals that take ctrl+k"),
        Binding("question_mark,f1", "help", "Help", id="help", tooltip="This list of keys"),
        Binding("ctrl+p", "command_palette", "Commands", id="command-palette", show=False, priority=True,
                tooltip="Command palette: Resume trading, Halt trading, pause/resume a model, speed, theme"),
        Binding("colon", "command_palette", "Commands", id="command-palette-colon", show=False,
                tooltip="Command palette (as ctrl+p)"),
        Binding("slash", "filter_orders", "Filter", id="filter-orders",
                tooltip="Filter the orders pane (id, model, instrument, side, status; !text inverts)"),
        Binding("p", "toggle_model", "Pause model", id="pause-model",
                tooltip="Pause or resume the model selected in the models pane (4)"),
        Binding("plus,equals_sign", "speed_up", "Faster", id="speed-up", key_display="+", show=False,
                tooltip="Faster replay: more bar steps per second (up to max)"),
        Binding("minus", "slow_down", "Slower", id="slow-down", key_display="-", show=False,
                tooltip="Slower replay: fewer bar steps per second"),
        Binding("1", "focus_pane('market')", "Market", id="focus-market", show=False),
        Binding("2", "focus_pane('orders')", "Orders", id="focus-orders", show=False),
        Binding("3", "focus_pane('positions')", "Positions", id="focus-positions", show=False),
        Binding("4", "focus_pane('models')", "Models", id="focus-models", show=False),
        Binding("5", "focus_pane('allocations')", "Allocations", id="focus-allocations", show=False),
        Binding("6", "focus_pane('alerts')", "Alerts", id="focus-alerts", show=False),
        Binding("q", "quit", "Quit", id="quit", tooltip="Quit (asks first while orders are working)"),
    ]

    def __init__(
        self,
        engine: Any,
        *,
        wall_clock: Clock | None = None,
        speed: float | None = DEFAULT_SPEED,
        warm_up: bool = False,
        autostart: bool = True,
        mode: str = "PAPER",
        market: str | None = None,
        max_bars: int | None = None,
        sample_interval: float = SAMPLE_INTERVAL_S,
        install_signals: bool = True,
        close_hook: Callable[[], None] | None = None,
        hard_exit_on_hangup: bool = False,
    ) -> None:
        super().__init__()
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DEFAULT_THEME
        self.engine = engine
        self.wall_clock = wall_clock or MonotonicClock()
        self.kill = KillSwitch(self.wall_clock)
        self.needs_warm_up = warm_up
        self.reconciled = False
        self.autostart = autostart
        self.mode = mode
        self.market = market or ", ".join(sorted({i.venue for i in engine.instruments}))
        self.max_bars = max_bars
        self.sample_interval = sample_interval
        self.install_signals = install_signals
        self.close_hook = close_hook
        self.hard_exit_on_hangup = hard_exit_on_hangup
        self.status = "idle"
        self.halt_reason = ""
        self.reduce_reason = ""
        #: the report of the last flatten (``governance.flatten``'s rows)
        self.last_flatten_report: list[dict[str, str]] | None = None
        #: flatten orders still working: ClientOrderId -> "model instrument quantity"
        self._flatten_open: dict[str, str] = {}
        self.working: dict[str, Any] = {o.client_order_id: o for o in engine.orders.values() if o.is_working}
        # at max speed the engine lets the loop run every step, not every 64
        # (keys, the kill switch and redraws wait at most one step)
        engine.config.yield_every = 1
        self.link = EngineLink(engine, self._on_events)
        self.link.set_speed(speed)
        self.engine_worker: Worker[None] | None = None
        self.engine_failed: BaseException | None = None
        self.warmed = not warm_up
        self.run_ended_cleanly = False
        self.hangup = False
        self.finalized = False
        self._quitting = False
        self._dirty = True
        self._last_sample_key: tuple[Any, ...] | None = None
        #: the reconciliation differences opened on their own since ``engine.unreconciled`` was last empty
        self._recon_shown = False
        #: the signals handled on the app's loop, with the handlers they had before
        self._signals: list[tuple[int, Any]] = []
        #: the key of the kill switch's first (arming) press
        self._armed_key = HALT_KEY
        self._governance_tasks: set[asyncio.Task[Any]] = set()
        self.last_halt_count: int | None = None
        self.header = DeskHeader(id="header")
        self.banner = HaltBanner(id="banner")
        self.market_pane = MarketPane()
        self.orders_pane = OrdersPane()
        self.positions_pane = PositionsPane()
        self.models_pane = ModelsPane()
        self.allocations_pane = AllocationsPane()
        self.alerts_pane = AlertsPane()

    # ------------------------------------------------------------ layout
    def get_theme_variable_defaults(self) -> dict[str, str]:
        """The desk's own theme variables (``$pnl-up``, ``$pnl-down`` …)."""
        return dict(VARIABLE_DEFAULTS)

    def compose(self) -> ComposeResult:
        """Header and banner (docked on top: they stay above a maximized
        pane), the six panes, footer. The panes: market and models on top
        (side by side, or stacked full-width at medium widths), under them
        two columns: orders and alerts, allocations and positions."""
        with Vertical(id="heading"):
            yield self.header
            yield self.banner
        with Vertical(id="panes"):
            with Horizontal(id="top"):
                yield self.market_pane
                yield self.models_pane
            with Horizontal(id="bottom"):
                with Vertical(id="left"):
                    yield self.orders_pane
                    yield self.alerts_pane
                with Vertical(id="right"):
                    yield self.allocations_pane
                    yield self.positions_pane
        yield Footer()

    def pane(self, name: str) -> Any:
        """A pane by name (``market``, ``orders``, ``positions``, ``models``,
        ``allocations``, ``alerts``)."""
        return getattr(self, f"{name}_pane")

    def on_mount(self) -> None:
        """Fill the panes, start sampling, install signal handlers, start the engine."""
        e = self.engine
        self.market_pane.setup(e)
        self.orders_pane.setup(e)
        self.positions_pane.setup(e)
        self.models_pane.setup(e, self.link.stats)
        self.allocations_pane.setup(e, self.working.values())
        self._load_history()
        self.sample(force=True)
        self.set_interval(self.sample_interval, self.sample, name="sampler")
        if self.install_signals:
            self._install_signal_handlers()
        self.models_pane.focus_target.focus()
        if self.autostart:
            self.start_engine()
        self.call_after_refresh(lambda: gc.freeze())
        self.set_interval(GC_FREEZE_INTERVAL_S, self._gc_janitor, name="gc-janitor")

    def _load_history(self) -> None:
        """A continued run: recent orders, alerts and governance actions
        from the store, and why the desk is halted."""
        e = self.engine
        conn = e.store.conn
        try:
            rows = conn.execute(
                "SELECT client_order_id, model_id, instrument_id, side, order_type, quantity, price, time_in_force,"
                " status, filled_qty, avg_px, venue_order_id, reason, step, ts_init, ts_last FROM orders"
                " ORDER BY ts_init DESC, client_order_id DESC LIMIT ?", (MAX_FINISHED,)).fetchall()
            denied = {r[0] for r in rows if r[8] == "DENIED"}
            if denied:  # their denial codes: the DENIED_<CODE> alerts name the order first
                for code, msg in conn.execute(
                        "SELECT code, message FROM alerts WHERE code LIKE 'DENIED!_%' ESCAPE '!'"
                        " ORDER BY seq DESC LIMIT ?", (4 * MAX_FINISHED,)).fetchall():
                    coid = msg.split(" ", 1)[0].rstrip(":")
                    if coid in denied:
                        self.orders_pane.order_denied(coid, code[len("DENIED_"):])
            for r in reversed(rows):
                if r[0] not in e.orders:
                    self.orders_pane.order_changed(_order_from_row(r))
            self.orders_pane.end_batch()
            lines = conn.execute(
                "SELECT seq, ts, 'GOV', action, who || ': ' || reason FROM governance_actions"
                " UNION ALL SELECT seq, ts, level, code, message FROM alerts ORDER BY seq DESC LIMIT 100").fetchall()
            for _seq, ts, level, code, msg in reversed(lines):
                self.alerts_pane.add(ts, level, code, msg)
            if e.trading_state == TradingState.HALTED:
                row = conn.execute("SELECT who, reason FROM governance_actions WHERE action = 'HALTED'"
                                   " ORDER BY seq DESC LIMIT 1").fetchone()
                self.halt_reason = f"{row[1]} (by {row[0]})" if row else "restored"
            elif e.trading_state == TradingState.REDUCING:
                row = conn.execute("SELECT who, reason FROM governance_actions WHERE action = 'REDUCING'"
                                   " ORDER BY seq DESC LIMIT 1").fetchone()
                self.reduce_reason = f"{row[1]} (by {row[0]})" if row else "restored"
        except Exception as exc:  # history is a convenience; never fail the screen on it
            log.warning("could not load history from the store: %s", exc)

    def _gc_janitor(self) -> None:
        """Collect the young generations, then freeze the survivors.

        ``gc.freeze()`` after start-up keeps the start-up objects out of the
        cyclic collector. The engine and the screen keep allocating
        long-lived objects (orders, rendered cells), and each full
        collection walks all of them: at max speed these pauses grew to
        ~200 ms (bench/ui.py). Freezing the survivors every few seconds
        keeps full collections short. The cost: cyclic garbage made of
        frozen objects is never collected (young cycles are collected just
        before each freeze)."""
        gc.collect(1)
        gc.freeze()

    def on_unmount(self) -> None:
        """Remove the signal handlers (restoring the ones in place before)."""
        self._remove_signal_handlers()

    # ------------------------------------------------------------ engine
    def start_engine(self) -> Worker[None]:
        """Run the engine in a worker (warm-up first for a new run)."""
        self.engine_worker = self.run_worker(self._engine_main(), name="engine", group="engine",
                                             exclusive=True, exit_on_error=False)
        return self.engine_worker

    async def _engine_main(self) -> None:
        e = self.engine
        try:
            if self.needs_warm_up:
                self.status = "warming up models"
                self._dirty = True
                await e.warm_up()
                e.flush()
                self.needs_warm_up = False
                self.warmed = True
                gc.collect(1)
                gc.freeze()
            elif not self.reconciled:
                self.status = "reconciling with the venue"
                self._dirty = True
                await e.recover()  # a continued run: orders, fills and balances checked first
            self.reconciled = True
            self.status = "running"
            self._dirty = True
            self.link.pacer.run_started(e.stats.steps)
            await e.run(max_bars=self.max_bars)
            self.run_ended_cleanly = True
            self.status = "finished" if e.stats.finished else "stopped"
            self._dirty = True
        except asyncio.CancelledError:
            self.status = "stopped"
            raise
        except Exception as exc:  # the engine failing must not take the screen down
            await self._engine_failed(exc)

    async def _engine_failed(self, exc: BaseException) -> None:
        """The engine raised: alert, halt through governance, stay readable."""
        e = self.engine
        self.engine_failed = exc
        self.status = "engine failed"
        self._dirty = True
        msg = f"{type(exc).__name__}: {exc}"
        log.error("engine failed: %s", msg, exc_info=exc)
        try:
            e.alert("ERROR", "ENGINE_FAILED", f"the engine stopped: {msg}; trading halted")
        except Exception:  # the store itself may be what failed
            self.alerts_pane.add(e.clock.timestamp_ns(), "ERROR", "ENGINE_FAILED", f"the engine stopped: {msg}")
        try:
            await e.governance.halt("engine", f"engine failed: {msg}")
        except Exception as exc2:
            e.trading_state = TradingState.HALTED
            self.alerts_pane.add(e.clock.timestamp_ns(), "ERROR", "HALT_INCOMPLETE",
                                 f"halt could not be journaled: {type(exc2).__name__}: {exc2}")
        self.halt_reason = "engine failed"
        self.link.drain()
        self.sample(force=True)

    async def stop_engine(self) -> None:
        """Ask the engine to stop after its current step and wait for it
        (``run`` then checkpoints). A warm-up in progress is cancelled."""
        self.engine.stop()
        w = self.engine_worker
        if w is None or not w.is_running:
            return
        if not self.warmed:
            w.cancel()
            return
        try:
            await w.wait()
        except Exception:  # a failed or cancelled worker: finalize() flushes
            pass

    def finalize(self) -> None:
        """Persist on the way out (idempotent): after a clean stop the
        engine's checkpoint (and, for a finished replay, its stored
        summary, as the headless runner writes it); otherwise a flush of
        what the store holds."""
        if self.finalized:
            return
        self.finalized = True
        e = self.engine
        try:
            if self.run_ended_cleanly and self.engine_failed is None:
                e.checkpoint()
                if e.stats.finished:
                    summary = e.summary(0.0, 0)
                    e.store.meta_set("status", "finished")
                    e.store.meta_set("summary", json.dumps({**summary, "wall_s": None, "bars_per_s": None},
                                                           sort_keys=True))
                    e.flush()
            else:
                e.flush()
        except Exception as exc:
            log.error("could not persist on exit: %s", exc)
        self.link.close()

    # ------------------------------------------------------------ events
    def _on_events(self, batch: list[Event]) -> None:
        """A batch of engine events (same event-loop turn as published)."""
        orders = self.orders_pane
        alerts = self.alerts_pane
        engine_orders = self.engine.orders
        state_changed = False
        for ev in batch:
            if isinstance(ev, OrderEvent):
                if ev.type == "OrderDenied":
                    orders.order_denied(ev.client_order_id, ev.code)  # type: ignore[attr-defined]
                order = engine_orders.get(ev.client_order_id)
                if order is not None:
                    if order.is_working:
                        self.working[order.client_order_id] = order
                    else:
                        self.working.pop(order.client_order_id, None)
                        if order.client_order_id in self._flatten_open and order.is_closed:
                            what = self._flatten_open.pop(order.client_order_id)
                            alerts.add(ev.ts_event, *self._flatten_outcome(what, order))
                    orders.order_changed(order)
            else:
                t = ev.type
                if t == "TradingStateChanged":
                    state_changed = True
                    self.halt_reason = ev.reason if ev.state == "HALTED" else ""  # type: ignore[attr-defined]
                    self.reduce_reason = ev.reason if ev.state == "REDUCING" else ""  # type: ignore[attr-defined]
                elif t == "ModelStateChanged":
                    state_changed = True
                alerts.add_event(ev)
        orders.end_batch()
        self._dirty = True
        if state_changed:
            self.sample(force=True)

    # ------------------------------------------------------------ sampling
    def sample(self, force: bool = False) -> None:
        """Sample the continuous figures (the 10 Hz timer); redraw only
        when the engine moved or an event arrived."""
        if self.kill.expire():
            force = True
        e = self.engine
        self.header.show(HeaderInfo(
            mode=self.mode, market=self.market, clock_ns=e.clock.timestamp_ns(), speed=e.speed,
            state=e.trading_state.value, status=self.status, bars=e.stats.bars, working=len(self.working),
            venue=venue_line(e),
        ))
        suspect = getattr(getattr(e, "session", None), "suspect_venues", None)
        if callable(suspect):
            self.orders_pane.set_unknown_venues(suspect())
        state = e.trading_state
        self.banner.set_state(state == TradingState.HALTED, self.kill.armed, key_name(self._armed_key),
                              self.halt_reason if state == TradingState.HALTED else self.reduce_reason,
                              reducing=state == TradingState.REDUCING)
        if e.unreconciled:
            if not self._recon_shown:
                self._recon_shown = True
                self.call_later(self.action_show_reconciliation)  # on the app's own message loop
        else:
            self._recon_shown = False
        key = (e.stats.steps, e.stats.warmup_bars, len(e.portfolio.positions))
        if not force and not self._dirty and key == self._last_sample_key:
            return
        self._last_sample_key = key
        self._dirty = False
        self.market_pane.sample(e, self.link.day_open)
        self.positions_pane.sample(e)
        self.models_pane.sample(e, self.link.stats)
        self.allocations_pane.sample(e, self.working.values())

    # ------------------------------------------------------------ governance
    def action_kill_switch(self, key: str = HALT_KEY) -> None:
        """``ctrl+k`` (or the alternate key): the first press arms, a second
        press within 2 s of the wall clock halts. The halt's reason names
        the key(s) pressed."""
        if self.kill.press():
            first, second = key_name(self._armed_key), key_name(key)
            keys = f"{second} twice" if first == second else f"{first} then {second}"
            self._start_halt(WHO, f"kill switch ({keys})")
        else:
            self._armed_key = key
        self.sample(force=True)

    def _start_halt(self, who: str, reason: str) -> None:
        """Start the halt as a plain task at once (a Textual worker would
        cost extra event-loop turns, each possibly a frame, before the
        first cancel leaves)."""
        self._start_governance(self.halt(who, reason))

    def action_halt_now(self) -> None:
        """Halt at once (the palette's "Halt trading")."""
        self._start_halt(WHO, "halt from the command palette")

    def halt_venue_now(self, venue: str) -> None:
        """Halt one venue at once (the palette's "Halt venue V"): its working
        desk orders canceled (protective stops kept), new orders to it
        denied; the other venues keep trading. No confirmation (halting is
        the safe direction)."""
        async def go() -> None:
            n = await self.engine.governance.halt_venue(venue, WHO, "venue halt from the command palette")
            self.link.drain()
            self.sample(force=True)
            self.notify(f"{venue} halted: {n} working order{'s' if n != 1 else ''} canceled; "
                        f"the other venues keep trading.", title="Halt venue")
        self._start_governance(go())

    def confirm_resume_venue(self, venue: str) -> None:
        """Ask, then lift venue ``venue``'s halt (the palette's "Resume venue
        V"; Cancel focused). The desk's own trading state is not touched."""
        def done(ok: bool | None) -> None:
            """Resume only on the confirm button."""
            if ok:
                self.engine.governance.resume_venue(venue, WHO, "venue resume from the command palette")
                self.link.drain()
                self.sample(force=True)
                self.notify(f"{venue} resumed.", title="Resume venue")

        body = (f"{venue} is halted. Resuming lets the models send orders to it again"
                f" (the desk is {self.engine.trading_state.value}).")
        self.push_screen(ConfirmScreen(f"Resume venue {venue}?", body, "Resume venue"), done)

    async def halt(self, who: str, reason: str) -> int:
        """HALTED and every working order canceled, through governance.
        Returns the number of cancels sent."""
        n = await self.engine.governance.halt(who, reason)
        self.last_halt_count = n
        self.link.drain()
        self.sample(force=True)
        return n

    async def wait_governance(self) -> None:
        """Wait for governance commands started by keys (tests, bench)."""
        while self._governance_tasks:
            await asyncio.gather(*list(self._governance_tasks), return_exceptions=True)

    def action_show_reconciliation(self) -> None:
        """The reconciliation differences (opened on their own once when
        ``engine.unreconciled`` becomes non-empty; the palette's "Show
        reconciliation differences")."""
        if any(isinstance(s, ReconcileScreen) for s in self.screen_stack):
            return
        if not self.engine.unreconciled:
            self.notify("No unreconciled difference with the venue.", title="Reconciliation")
            return
        self.push_screen(ReconcileScreen(list(self.engine.unreconciled)))

    def action_resume_trading(self) -> None:
        """Ask, then resume trading (the palette's "Resume trading")."""
        if self.engine.trading_state == TradingState.ACTIVE:
            self.notify("Trading is ACTIVE: nothing to resume.", title="Resume trading")
            return
        halt_file = getattr(self.engine, "halt_file", None)
        if halt_file is not None and halt_file.exists():  # it would halt the desk again within a second
            self.notify(f"The HALT file {halt_file} is in the state dir: remove it first.", title="Resume trading",
                        severity="warning")
            return
        working = len(self.working)
        paused = sorted(self.engine.paused)
        body = (f"The desk is {self.engine.trading_state.value}"
                + (f" ({self.halt_reason})" if self.halt_reason else "")
                + ". Resuming lets every model trade again"
                + (f" (paused models stay paused: {', '.join(paused)})" if paused else "")
                + f". Working orders now: {working}.")

        def done(ok: bool | None) -> None:
            """Resume only on the confirm button."""
            if ok:
                self.engine.governance.resume(WHO, "operator resume from the command palette")
                self.link.drain()
                self.sample(force=True)
                self.notify("Trading resumed: ACTIVE.", title="Resume trading")

        self.push_screen(ConfirmScreen("Resume trading?", body, "Resume trading"), done)

    def action_reduce_only(self) -> None:
        """Ask, then set REDUCING (the palette's "Reduce-only"): only
        orders that reduce exposure pass. Not from HALTED: only a resume
        lifts a halt."""
        state = self.engine.trading_state
        if state == TradingState.REDUCING:
            self.notify("Trading is already REDUCING.", title="Reduce-only")
            return
        if state == TradingState.HALTED:
            self.notify("Trading is HALTED, stricter than reduce-only; only Resume trading lifts a halt.",
                        title="Reduce-only", severity="warning")
            return
        body = ("Only orders that reduce exposure will pass (sells of what the desk holds); "
                "every new entry is denied with REDUCE_ONLY. Working orders stay. "
                f"Working orders now: {len(self.working)}. Back to ACTIVE: ctrl+p → Resume trading.")

        def done(ok: bool | None) -> None:
            """Reduce-only only on the confirm button."""
            if ok:
                self.engine.governance.reduce_only(WHO, "reduce-only from the command palette")
                self.link.drain()
                self.sample(force=True)
                self.notify("Trading is REDUCING: only exposure-reducing orders pass.", title="Reduce-only")

        self.push_screen(ConfirmScreen("Reduce-only (REDUCING)?", body, "Reduce only"), done)

    def flatten_rows(self) -> tuple[list[FlattenRow], str]:
        """What a flatten would close now: each long position with its
        quantity, its value at the last price and how it would be closed
        (the same rule as ``governance.flatten``: a reduce-only MARKET sell
        of the quantity floored to the step; dust below the step or the
        instrument's minimums is reported, not sold). Returns the rows and
        their total value."""
        from decimal import Decimal

        from core.values import floor_to_step
        from desk.widgets.common import fmt_money, fmt_step

        e = self.engine
        rows: list[FlattenRow] = []
        total = Decimal(0)
        for (model_id, iid), pos in sorted(e.portfolio.positions.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            if pos.quantity <= 0:
                continue
            inst = e.instruments[iid]
            mark = e.portfolio.marks.get(iid)
            qty = floor_to_step(pos.quantity, inst.step_size)
            value = pos.quantity * mark if mark is not None else None
            if value is not None:
                total += value
            if mark is None:
                note = "DUST: no last price"
            elif qty <= 0:
                note = f"DUST: below the step {inst.step_size}"
            elif qty < inst.min_qty:
                note = f"DUST: below the minimum quantity {inst.min_qty}"
            elif inst.min_notional and qty * mark < inst.min_notional:
                note = f"DUST: below the minimum notional {inst.min_notional}"
            else:
                note = f"market sell {fmt_step(qty, inst.step_size)}"
            rows.append(FlattenRow(model_id, str(iid), format(pos.quantity, "f"),
                                   "—" if value is None else fmt_money(value), note))
        return rows, fmt_money(total)

    def action_flatten(self) -> None:
        """The palette's "Flatten all positions": list what will be closed
        and ask for the word FLATTEN (Cancel focused); on confirmation halt
        and close every position (``governance.flatten``)."""
        rows, total = self.flatten_rows()

        def done(ok: bool | None) -> None:
            """Flatten only on confirmation."""
            if ok:
                self._start_governance(self.flatten(WHO, "flatten from the command palette"))

        self.push_screen(FlattenScreen(rows, len(self.working), total), done)

    def _start_governance(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._governance_tasks.add(task)
        task.add_done_callback(self._governance_tasks.discard)

    async def flatten(self, who: str, reason: str) -> list[dict[str, str]]:
        """Halt, then close each position with a reduce-only MARKET sell
        (``governance.flatten``); one alerts-pane line per position with
        its outcome (a close order sent, or DUST). Returns the report."""
        e = self.engine
        report = await e.governance.flatten(who, reason)
        self.last_flatten_report = report
        self.link.drain()
        now = e.clock.timestamp_ns()
        for r in report:
            what = f"{r['model']} {r['instrument']} {r['quantity']}"
            order = e.orders.get(r["order"]) if r["order"] else None
            if r["status"] == "DUST" or order is None:
                self.alerts_pane.add(now, "GOV", "FLATTEN", f"{what}: DUST, not sold ({r['detail']})")
            elif order.is_closed:
                self.alerts_pane.add(now, *self._flatten_outcome(what, order))
            else:
                self._flatten_open[order.client_order_id] = what
                self.alerts_pane.add(now, "GOV", "FLATTEN", f"{what}: closing, reduce-only {r['detail']} "
                                     f"({order.client_order_id} {order.status.value})")
        if not report:
            self.alerts_pane.add(now, "GOV", "FLATTEN", "no positions to close")
        self.sample(force=True)
        closed = sum(1 for r in report if r["status"] != "DUST")
        self.notify(f"HALTED; {closed} position{'s' if closed != 1 else ''} closing, "
                    f"{len(report) - closed} dust. Report in the alerts pane (6).", title="Flatten")
        return report

    def _flatten_outcome(self, what: str, order: Any) -> tuple[str, str, str]:
        """The alerts-pane line ``(level, code, message)`` of a flatten
        order that has finished: closed (filled), or not (rejected,
        canceled, partly filled)."""
        inst = self.engine.instruments.get(order.instrument_id)
        avg = order.avg_px
        if avg is not None and inst is not None:
            from desk.widgets.common import fmt_step

            avg_text = fmt_step(avg, inst.tick_size)
        else:
            avg_text = str(avg)
        coid = order.client_order_id
        if order.status.value == "FILLED":
            return "GOV", "FLATTEN", f"{what}: closed, sold {order.filled_qty} at {avg_text} ({coid})"
        if order.filled_qty:
            return ("ERROR", "FLATTEN", f"{what}: partly closed, sold {order.filled_qty} of {order.quantity} "
                    f"at {avg_text}, then {order.status.value}: {order.reason} ({coid})")
        return "ERROR", "FLATTEN", f"{what}: NOT closed, {order.status.value}: {order.reason} ({coid})"

    def set_model_paused(self, model_id: str, paused: bool) -> None:
        """Pause or resume a model through governance."""
        gov = self.engine.governance
        if paused:
            gov.pause_model(model_id, WHO, "paused from the desk")
        else:
            gov.resume_model(model_id, WHO, "resumed from the desk")
        self.link.drain()
        self.sample(force=True)
        self.notify(f"{model_id} {'paused: no new exposure' if paused else 'resumed'}.", title="Model")

    def confirm_lifecycle(self, action: str, model_id: str) -> None:
        """Ask (Cancel focused), then ``promote`` or ``rollback`` the canary
        ``model_id`` through governance (journaled and audited as ``tui``)."""
        rows = {r["model_id"]: r for r in self.engine.lifecycle.rows()}
        row = rows.get(model_id, {})
        live = next((m for m, r in rows.items() if r["family"] == row.get("family") and r["stage"] == "live"), "-")
        if action == "promote":
            verb = "Promote"
            body = (f"{model_id} becomes the live version of family {row.get('family')} at 100 % of the family "
                    f"budget; {live} is retired and its position unwound (crossed internally where they overlap). "
                    f"Analysis so far: {row.get('intervals')} intervals, PSR {_psr_text(row.get('psr'))}.")
        else:
            verb = "Roll back"
            body = (f"{model_id} is retired and its position unwound; {live} keeps trading. "
                    f"Analysis so far: {row.get('intervals')} intervals, PSR {_psr_text(row.get('psr'))}.")

        def done(ok: bool | None) -> None:
            if ok:
                self.run_worker(self._apply_lifecycle(action, model_id), group="lifecycle")

        self.push_screen(ConfirmScreen(f"{verb} {model_id}?", body, verb), done)

    async def _apply_lifecycle(self, action: str, model_id: str) -> None:
        gov = self.engine.governance
        fn = gov.promote if action == "promote" else gov.rollback
        try:
            await fn(model_id, WHO, f"{action} from the desk")
        except Exception as exc:  # GovernanceError: not a canary any more, unknown
            self.notify(str(exc), title="Models", severity="error")
            return
        self._refresh_after_command(f"{model_id} {'promoted to live' if action == 'promote' else 'rolled back'}.")

    def _refresh_after_command(self, message: str) -> None:
        """Show a governance command's effect at once and say it."""
        link = getattr(self, "link", None)
        if link is not None:
            link.drain()
        self.sample(force=True)
        self.notify(message, title="Models")

    def set_model_weight(self, model_id: str, weight: Any) -> None:
        """Pin ``model_id``'s stage weight (a Decimal fraction) or clear the
        pin (None) through governance; refusals are shown, nothing changes."""
        try:
            self.engine.governance.set_weights({model_id: weight}, WHO, "weight set from the desk")
        except Exception as exc:  # GovernanceError: unknown, retired, out of range
            self.notify(str(exc), title="Models", severity="error")
            return
        self._refresh_after_command(
            f"{model_id}: stage weight {'pinned at ' + format(weight, 'f') if weight is not None else 'unpinned'}.")

    def action_show_policy(self) -> None:
        """Show the governance policy in force (palette: "Show governance policy")."""
        from desk.policy_screen import PolicyScreen

        rt = getattr(self.engine, "policy_runtime", None)
        self.push_screen(PolicyScreen(rt.policy if rt is not None else None))

    def action_reload_policy(self) -> None:
        """Re-read the policy file; a bad file keeps the policy in force."""
        from desk.policy_config import reload_policy

        rt = getattr(self.engine, "policy_runtime", None)
        if rt is None or rt.path is None:
            self.notify("No governance policy is configured (desk run --policy FILE).", title="Policy",
                        severity="warning")
            return
        ok, message = reload_policy(rt.policy, rt.path)
        self.notify(message, title="Policy", severity="information" if ok else "error")

    def action_toggle_model(self) -> None:
        """``p``: pause or resume the model selected in the models pane,
        only while that pane has the focus (elsewhere its cursor is not
        what the operator is looking at): otherwise say so, do nothing."""
        focused = self.focused
        in_models = focused is not None and self.models_pane in focused.ancestors_with_self
        mid = self.models_pane.selected_model() if in_models else None
        if mid is None:
            self.notify("Select a model in pane 4 first (p acts on the models pane's selected model).",
                        title="Pause model", severity="warning")
            return
        self.set_model_paused(mid, mid not in self.engine.paused)

    # ------------------------------------------------------------ keys
    @property
    def compact(self) -> bool:
        """True in the compact layout (narrow or short terminal)."""
        return self.screen.has_class("-narrow") or self.screen.has_class("-short")

    def action_focus_pane(self, name: str) -> None:
        """``1``-``6``: focus a pane; in the compact layout also maximize
        it (``escape`` restores the layout)."""
        pane = self.pane(name)
        target = pane.focus_target
        target.focus()
        screen = self.screen
        if self.compact and len(self.screen_stack) == 1:
            if screen.maximized is pane:
                screen.minimize()
            else:
                screen.maximize(pane, container=False)
        elif screen.maximized is not None:
            screen.minimize()

    def action_filter_orders(self) -> None:
        """``/``: open the orders filter."""
        self.orders_pane.open_filter()

    def action_speed_up(self) -> None:
        """``+``: the next faster speed."""
        self.link.set_speed(faster(self.engine.speed))
        self.sample(force=True)

    def action_slow_down(self) -> None:
        """``-``: the next slower speed."""
        self.link.set_speed(slower(self.engine.speed))
        self.sample(force=True)

    def help_rows(self) -> list[tuple[str, str, str]]:
        """``(keys, description, id)`` for every binding of the desk."""
        rows = []
        by_id: dict[str, list[str]] = {}
        descs: dict[str, str] = {}
        order: list[str] = []
        for b in self.BINDINGS:
            assert isinstance(b, Binding)
            bid = b.id or b.action
            for key in b.key.split(","):
                shown = self.get_key_display(Binding(key.strip(), b.action, key_display=b.key_display))
                by_id.setdefault(bid, []).append(shown)
            if bid not in descs:
                order.append(bid)
            descs[bid] = b.tooltip or b.description
        for bid in order:
            rows.append((" ".join(dict.fromkeys(by_id[bid])), descs[bid], bid))
        from desk.widgets.models import ModelsPane

        pane_keys = {"promote": "Promote the selected canary to live (asks first; models pane)",
                     "rollback": "Roll the selected canary back (asks first; models pane)",
                     "weight": "Pin the selected version's stage weight; empty clears (models pane)"}
        for b in ModelsPane.BINDINGS:  # the models pane's own keys (pane 4 focused)
            assert isinstance(b, Binding)
            rows.append((b.key, pane_keys.get(b.action, b.description), f"models-{b.action}"))
        rows += [
            (self.get_key_display(Binding("ctrl+q", "")), "Quit (asks while orders are working)", "quit"),
            (self.get_key_display(Binding("ctrl+c", "")), "Does not quit: tells how to quit", "help-quit"),
            ("tab shift+tab", "Next / previous widget", "focus-next"),
            ("escape", "Close the filter, a dialog or this help", "close"),
        ]
        return rows

    def action_help(self) -> None:
        """``?``: the help screen."""
        notes = [
            f"Kill switch: {HALT_KEY} twice within 2 s halts (HALTED, every working order canceled). "
            f"The first press only arms it; it disarms after 2 s. Where the terminal takes {HALT_KEY} "
            f"(some terminal emulators and editors bind it), {ALT_HALT_KEY.replace('backslash', chr(92))} "
            "does the same; it works under tmux and over SSH.",
            "Resume after a halt or reduce-only: command palette (ctrl+p) → Resume trading, then confirm.",
            "Reduce-only and flatten: command palette → Reduce-only (REDUCING), Flatten all positions "
            "(lists what will be closed; type FLATTEN to confirm).",
            "Models (pane 4): u promotes and b rolls back the selected canary (both ask first), w pins a "
            "version's stage weight (empty clears), p pauses or resumes it. The palette also has promote, roll "
            "back, pause/resume per version, Show governance policy and Reload governance policy.",
            "Profit is blue and marked +, loss orange and marked -.",
        ]
        self.push_screen(HelpScreen(self.help_rows(), notes))

    def action_help_quit(self) -> None:
        """``ctrl+c`` never quits silently: say how to quit."""
        self.notify("Press [b]q[/b] (or ctrl+q) to quit. ctrl+k twice halts trading.",
                    title="Do you want to quit?")

    async def action_quit(self) -> None:
        """``q`` / ``ctrl+q``: with working orders ask first (Cancel
        focused), with none quit at once."""
        if self._quitting:
            return
        n = len(self.working)
        if n:
            if isinstance(self.screen, QuitScreen):
                return

            async def chosen(choice: str | None) -> None:
                """Act on the quit question's answer (cancel does nothing)."""
                if choice == "halt":
                    await self.shutdown(halt=True)
                elif choice == "leave":
                    await self.shutdown(halt=False)

            self.push_screen(QuitScreen(n), chosen)
            return
        await self.shutdown(halt=False)

    async def shutdown(self, halt: bool, who: str = WHO, reason: str = "halt and quit") -> None:
        """Quit: optionally halt first, stop the engine, persist, exit.

        After a SIGHUP nobody is there to wait for: the halt (its cancels)
        and the engine's stop are each bounded by :data:`HANGUP_WAIT_S`
        seconds (a venue that does not answer is logged and left; the
        caller's stop sequence cancels again and reconciles at the next
        start)."""
        self._quitting = True
        if self.hangup:
            await self._bounded("the halt's cancels", self.halt(who, reason) if halt else None)
            await self._bounded("the engine's stop", self.stop_engine())
            self.finalize()
            if self.hard_exit_on_hangup:
                log.warning("SIGHUP: halted and persisted; exiting")
                try:
                    if self.close_hook is not None:
                        self.close_hook()
                finally:
                    logging.shutdown()
                    os._exit(EXIT_OK)
            self.exit(EXIT_OK)
            return
        if halt:
            await self.halt(who, reason)
        await self.stop_engine()
        self.finalize()
        if self.hangup and self.hard_exit_on_hangup:
            log.warning("SIGHUP: halted and persisted; exiting")
            try:
                if self.close_hook is not None:
                    self.close_hook()
            finally:
                logging.shutdown()
                os._exit(EXIT_OK)
        self.exit(EXIT_OK)

    async def _bounded(self, what: str, aw: Any) -> None:
        """Await ``aw`` (None: nothing) at most :data:`HANGUP_WAIT_S`
        seconds; a timeout or an error is logged, never raised (the
        hangup's exit must go on)."""
        if aw is None:
            return
        try:
            await asyncio.wait_for(aw, HANGUP_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("SIGHUP: %s did not finish within %.0f s; going on with the exit", what, HANGUP_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - the exit must go on
            log.warning("SIGHUP: %s failed: %s", what, exc)

    # ------------------------------------------------------------ signals
    def _guard_terminal_writes(self) -> None:
        """Make the driver's writes give up once the terminal is gone.

        Textual writes the screen through a thread (``WriterThread``) fed by
        a 30-entry queue. When the terminal goes away (SSH drop, ``tmux
        kill-session``) the thread dies on its first write (EIO); the queue
        then fills and the next ``put`` blocks the event loop for good: the
        desk never gets to its stop sequence and keeps ``desk.lock``. (The
        kernel's hangup also sends SIGCONT, on which Textual starts a new
        writer thread, which dies the same way.) The driver's ``write`` here
        waits for room as before while the thread it feeds is alive and
        current (a slow terminal still slows the screen down, it loses
        nothing), and drops the text once that thread is dead or a SIGHUP
        came; its ``close`` no longer waits on a full queue or a dead
        thread. A driver without a writer thread (tests' headless driver)
        is left alone."""
        driver = getattr(self, "_driver", None)
        if driver is None or not hasattr(driver, "_writer_thread") or getattr(driver, "_desk_guarded", False):
            return
        from queue import Full

        def write(data: str) -> None:
            while not self.hangup:
                wt = driver._writer_thread
                queue = getattr(wt, "_queue", None)
                if queue is None or not wt.is_alive():
                    return
                try:
                    queue.put(data, timeout=TERMINAL_PUT_WAIT_S)
                    return
                except Full:
                    continue

        def close() -> None:
            wt = driver._writer_thread
            queue = getattr(wt, "_queue", None)
            if queue is None or not wt.is_alive():
                return
            try:
                queue.put(None, timeout=TERMINAL_PUT_WAIT_S)
            except Full:
                return
            wt.join(TERMINAL_PUT_WAIT_S)

        driver.write = write
        driver.close = close
        driver._desk_guarded = True

    def _install_signal_handlers(self) -> None:
        """SIGHUP, SIGTERM and SIGUSR1 on the app's loop. They replace any
        handler installed before the app ran (e.g. the CLI's early SIGUSR1
        handler, which only writes the HALT file); :meth:`on_unmount` puts
        those back. The terminal's writes are guarded against a terminal
        gone (:meth:`_guard_terminal_writes`)."""
        self._guard_terminal_writes()
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGHUP, self.on_sighup), (signal.SIGTERM, self.on_sigterm),
                             (signal.SIGUSR1, self.on_sigusr1)):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, handler)
                self._signals.append((sig, previous))
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _remove_signal_handlers(self) -> None:
        """Remove the loop's handlers and restore the previous ones
        (``remove_signal_handler`` alone would leave the default action:
        a SIGUSR1 after the app would then kill the process)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for sig, previous in reversed(self._signals):
            try:
                if loop is not None:
                    loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)
            except (RuntimeError, ValueError, OSError, TypeError) as exc:
                log.warning("could not restore the handler of %s: %s", signal.Signals(sig).name, exc)
        self._signals.clear()

    def on_sighup(self) -> None:
        """The terminal went away: halt (who="sighup"), cancel the working
        orders, flush, exit."""
        if self.hangup:
            return
        self.hangup = True
        log.warning("SIGHUP: the terminal went away; halting")
        asyncio.get_running_loop().create_task(
            self.shutdown(halt=True, who="sighup", reason="terminal hung up (SIGHUP)"))

    def on_sigusr1(self) -> None:
        """``kill -USR1 <pid>``: halt (who="SIGUSR1", every working order
        canceled) through governance; the app keeps running, HALTED."""
        log.warning("SIGUSR1: out-of-band halt")
        self._start_halt(USR1_WHO, USR1_REASON)
        self.notify(f"{USR1_WHO}: halting ({USR1_REASON}).", title="Halt", severity="error")

    def on_sigterm(self) -> None:
        """SIGTERM: stop cleanly (checkpoint), like the headless runner;
        working orders stay."""
        if not self._quitting:
            asyncio.get_running_loop().create_task(self.shutdown(halt=False))


def _order_from_row(r: tuple[Any, ...]) -> Any:
    """An ``Order`` (for display) from a row of the store's ``orders`` table."""
    from decimal import Decimal

    from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
    from core.identifiers import InstrumentId
    from core.orders import Order

    return Order(
        client_order_id=r[0], model_id=r[1], instrument_id=InstrumentId.parse(r[2]), side=OrderSide(r[3]),
        order_type=OrderType(r[4]), quantity=Decimal(r[5]), price=None if r[6] is None else Decimal(r[6]),
        time_in_force=TimeInForce(r[7]), status=OrderStatus(r[8]), filled_qty=Decimal(r[9]),
        avg_px=None if r[10] is None else Decimal(r[10]), venue_order_id=r[11], reason=r[12] or "",
        step=int(r[13]), ts_init=int(r[14]), ts_last=int(r[15]),
    )


def _psr_text(psr: Any) -> str:
    """A canary's PSR for a dialog: 4 decimals, or a dash before its first judgement."""
    try:
        return f"{float(psr):.4f}"
    except (TypeError, ValueError):
        return "—"


def key_name(key: str) -> str:
    """A key as the operator reads it: ``ctrl+backslash`` is ``ctrl+\\``."""
    return key.replace("backslash", "\\")


def faster(speed: float | None) -> float | None:
    """The next speed up the ladder (None = max stays max)."""
    if speed is None:
        return None
    for v in SPEED_LADDER[:-1]:
        if v is not None and v > speed:
            return v
    return None


def slower(speed: float | None) -> float | None:
    """The next speed down the ladder (the slowest stays)."""
    finite = [v for v in SPEED_LADDER if v is not None]
    if speed is None:
        return finite[-1]
    lower = [v for v in finite if v < speed]
    return lower[-1] if lower else finite[0]


def make_app(built: Any, *, wall_clock: Clock | None = None, speed: float | None = DEFAULT_SPEED,
             max_bars: int | None = None, **kwargs: Any) -> DeskApp:
    """The app over a ``desk.wiring.Built`` (warm-up when the run is new).

    Args:
        built: what ``desk.wiring.build`` returned.
        wall_clock: the kill switch's clock (default monotonic).
        speed: bar steps per second, None for max.
        max_bars: stop the engine after this many bars.
        kwargs: passed to :class:`DeskApp`.
    """
    engine = built.engine
    if built.mode == "replay":
        market = "replay " + ", ".join(str(i.symbol) for i in sorted(engine.instruments, key=str))
    else:
        market = "SIM"
    return DeskApp(engine, wall_clock=wall_clock, speed=speed, warm_up=not built.continued, market=market,
                   max_bars=max_bars, **kwargs)


def run_app(opts: Any, *, max_speed: bool = False, app_factory: Callable[..., DeskApp] = make_app) -> int:
    """Build the engine for ``opts`` (a ``desk.wiring.RunOptions``) and run
    the app in this terminal. Returns the exit code.

    Speed: ``opts.speed`` when set; otherwise :data:`DEFAULT_SPEED` (20 bar
    steps per second), or as fast as possible when ``max_speed`` (the CLI's
    ``--speed max``, which ``RunOptions`` also spells None).

    Errors of the build (``DeskError``) are printed on stderr and their exit
    code returned. The engine's log goes to ``<state dir>/desk.log``.
    """
    from desk.wiring import build

    _log_to_file(Path(opts.state_dir))
    try:
        built = build(opts)
    except DeskError as exc:
        sys.stderr.write(f"desk: error: {exc}\n")
        return exc.exit_code
    app: DeskApp | None = None
    try:
        for m in built.messages:
            log.info(m)
        speed = opts.speed if opts.speed is not None else (None if max_speed else DEFAULT_SPEED)
        close = _Once(built.close)
        remaining = None if opts.bars is None else max(0, opts.bars - built.engine.stats.bars)  # whole-run count
        app = app_factory(built, speed=speed, max_bars=remaining, close_hook=close, hard_exit_on_hangup=True)
        code = app.run()
        return EXIT_OK if code is None else int(code)
    finally:
        if app is not None:
            _after_app(app)
        (app.close_hook if app is not None and app.close_hook is not None else built.close)()


class _Once:
    """Call a function at most once."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


def _after_app(app: DeskApp) -> None:
    """Make sure the exit path ran even if the app ended abruptly (a panic,
    a terminal gone): a SIGHUP halt that could not finish is done here."""
    e = app.engine
    if app.hangup and (e.trading_state != TradingState.HALTED or e.working_orders()):
        try:
            asyncio.run(e.governance.halt("sighup", "terminal hung up (SIGHUP)"))
        except Exception as exc:
            log.error("halt after SIGHUP failed: %s", exc)
    app.finalize()


def _log_to_file(state_dir: Path) -> None:
    """Send the desk's log to ``<state dir>/desk.log`` (stderr would draw
    over the screen)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(state_dir / "desk.log", encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):  # a terminal handler (the CLI's basicConfig) would draw over the screen
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
