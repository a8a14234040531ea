"""``desk attach URL``: the desk's TUI driven by a remote daemon (issue 8,
"Attach"; DESIGN.md sections 1, 5 and 6).

The same app (``desk.app.DeskApp``: panes, keys, palette, kill switch) runs
over a :class:`desk.remote.RemoteEngine` instead of an in-process engine:
the panes are fed by ``GET /stream`` and periodic ``GET /snapshot``, the keys
become API commands (``ctrl+k`` twice is ``POST /kill``). :class:`AttachedApp`
is the attached mode of the app:

* the engine worker is replaced by the mirror's stream worker
  (:meth:`desk.remote.RemoteEngine.run`);
* while the link is down a full-width line says ``DISCONNECTED —
  reconnecting (last state at HH:MM:SS UTC)`` (the wall-clock time the last
  state arrived) and the panes are greyed (class ``-stale`` on ``#panes``);
  the mirror reconnects on its own and resumes the stream after the last
  event it applied;
* a halt that could not be delivered shows ``HALT NOT DELIVERED`` in red
  (with the attempt count and the last error) until the daemon acknowledges
  it; the mirror retries it with backoff and at once when the link is back.
  Quitting while it is pending asks for a second ``q``;
* the terminal going away (``SIGHUP``) detaches: the daemon keeps running
  and keeps its orders (that is the point of attaching);
* the replay speed keys only say that the pace belongs to the daemon.

:func:`attach_main` is the CLI entry: the token comes from ``$OPS_TOKEN``,
else ``--token-file``, else ``<state dir>/ops_token`` (never from the command
line); the log goes to ``<state dir>/attach.log``. Exit codes: 0 detached, 1
the daemon cannot be reached at start (or answered a server error), 2 no
token, a refused token or a bad URL.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from textual.containers import Vertical
from textual.widgets import Static

from core.clock import Clock
from core.enums import TradingState
from core.errors import EXIT_OK, EXIT_USAGE
from desk.app import WHO, DeskApp
from desk.remote import LINK_DOWN, LINK_LIVE, RemoteCommandError, RemoteEngine

log = logging.getLogger("desk.attach")

#: exit code when the daemon cannot be reached at start
EXIT_UNREACHABLE = 1

#: header status per link state
LINK_STATUS = {"connecting": "connecting", LINK_LIVE: "attached", LINK_DOWN: "DISCONNECTED"}


def fmt_wall(ts_ns: int | None) -> str:
    """Wall-clock UTC nanoseconds as ``HH:MM:SS UTC`` (``never`` for None)."""
    if ts_ns is None:
        return "never"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S UTC")


class AttachedApp(DeskApp):
    """The desk app over a :class:`RemoteEngine` (see the module docstring).

    Args:
        mirror: a connected :class:`RemoteEngine` (its first snapshot read).
        wall_clock: the kill switch's double-press clock (monotonic by default).
        kwargs: passed to :class:`DeskApp` (``install_signals``,
            ``close_hook``, ``hard_exit_on_hangup``, ``sample_interval``).
    """

    CSS = """
    #panes.-stale { opacity: 45%; }
    #link-banner, #halt-undelivered {
        display: none; height: 1; width: 100%; text-style: bold; content-align: center middle;
    }
    #link-banner.-down { display: block; background: $reducing-background; color: $reducing-foreground; }
    #halt-undelivered.-pending { display: block; background: $halted-background; color: $halted-foreground; }
    """

    def __init__(self, mirror: RemoteEngine, *, wall_clock: Clock | None = None, **kwargs: Any) -> None:
        import httpx

        host = httpx.URL(mirror.url).netloc.decode("ascii", "replace")
        venues = ", ".join(sorted({i.venue for i in mirror.instruments})) or "daemon"
        super().__init__(mirror, wall_clock=wall_clock, speed=mirror.speed, warm_up=False, autostart=True,
                         mode="ATTACHED", market=f"{venues} @ {host}", **kwargs)
        self.mirror = mirror
        self.reconciled = True
        self.status = LINK_STATUS.get(mirror.link_state, mirror.link_state)
        self.link_banner = Static("", id="link-banner")
        self.halt_banner = Static("", id="halt-undelivered")
        self._link_text = ""
        self._halt_text = ""
        self._leave_anyway = False
        mirror.on_change = self._link_changed
        mirror.on_notice = self._notice

    async def on_mount(self) -> None:
        """Put the two link lines under the header (before ``DeskApp.on_mount``
        fills the panes and starts the stream worker)."""
        await self.query_one("#heading", Vertical).mount(self.halt_banner, self.link_banner)

    def _load_history(self) -> None:
        """The daemon's last alerts (from the first snapshot)."""
        for a in self.mirror.alerts:
            try:
                self.alerts_pane.add(int(a["ts"]), str(a["level"]), str(a["code"]), str(a["message"]))
            except (KeyError, TypeError, ValueError):
                continue
        if self.mirror.trading_state == TradingState.HALTED:
            self.halt_reason = "halted at the daemon before this attach"
        elif self.mirror.trading_state == TradingState.REDUCING:
            self.reduce_reason = "set at the daemon before this attach"

    # ------------------------------------------------------------ the worker
    async def _engine_main(self) -> None:
        """The stream worker: follow the daemon until detached."""
        try:
            await self.mirror.run()
            self.run_ended_cleanly = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the screen stays up, readable
            log.exception("the attach worker failed")
            self.engine_failed = exc
            self.notify(f"{type(exc).__name__}: {exc}", title="Attach failed", severity="error")
        self._dirty = True

    def finalize(self) -> None:
        """Nothing to persist here (the daemon keeps its own store): close the link."""
        if self.finalized:
            return
        self.finalized = True
        self.link.close()

    # ------------------------------------------------------------ link lines
    def sample(self, force: bool = False) -> None:
        """The app's sampling, then the two link lines and the greyed panes."""
        self.status = LINK_STATUS.get(self.mirror.link_state, self.mirror.link_state)
        super().sample(force)
        self._show_link()

    def _show_link(self) -> None:
        m = self.mirror
        down = m.link_state == LINK_DOWN
        text = f"DISCONNECTED — reconnecting (last state at {fmt_wall(m.last_update_ns)})" if down else ""
        if text != self._link_text:
            self._link_text = text
            self.link_banner.update(text)
            self.link_banner.set_class(down, "-down")
            if self._layout_up():
                self.query_one("#panes").set_class(down, "-stale")
        h = m.halt
        htext = ""
        if h is not None:
            htext = (f"HALT NOT DELIVERED — retrying until the daemon acknowledges "
                     f"({h.error}; attempt {h.attempts} since {fmt_wall(h.since_ns)})")
        if htext != self._halt_text:
            self._halt_text = htext
            self.halt_banner.update(htext)
            self.halt_banner.set_class(h is not None, "-pending")

    def _layout_up(self) -> bool:
        """True while the layout is up (the ``#panes`` container exists)."""
        try:
            self.query_one("#panes")
        except Exception:  # noqa: BLE001 - not composed yet, or torn down
            return False
        return True

    @property
    def link_text(self) -> str:
        """The DISCONNECTED line as shown ("" while the link is up)."""
        return self._link_text

    @property
    def halt_text(self) -> str:
        """The HALT NOT DELIVERED line as shown ("" when no halt is pending)."""
        return self._halt_text

    def _link_changed(self) -> None:
        """The mirror's link or pending halt changed: show it now."""
        if self._quitting or not self._layout_up():
            return
        self.sample(force=True)

    def _notice(self, title: str, message: str, severity: str) -> None:
        self.notify(message, title=title, severity=severity)  # type: ignore[arg-type]

    # ------------------------------------------------------------ keys
    def action_speed_up(self) -> None:
        """``+``: the pace is the daemon's."""
        self.notify("The replay speed belongs to the daemon; an attached desk cannot change it.", title="Speed")

    def action_slow_down(self) -> None:
        """``-``: the pace is the daemon's."""
        self.action_speed_up()

    async def flatten(self, who: str, reason: str) -> list[dict[str, str]]:
        """The palette's flatten, sent to the daemon: one alerts-pane line
        per position (DUST, or closing; the outcome line follows when the
        close order's last event arrives on the stream)."""
        try:
            report = await self.mirror.governance.flatten(who, reason)
        except RemoteCommandError as exc:
            self.notify(f"Flatten {exc}", title="Flatten", severity="error")
            return []
        self.last_flatten_report = report
        self.link.drain()
        now = self.mirror.clock.timestamp_ns()
        for r in report:
            what = f"{r['model']} {r['instrument']} {r['quantity']}"
            coid = r.get("order") or ""
            order = self.mirror.orders.get(coid) if coid else None
            if r.get("status") == "DUST" or not coid:
                self.alerts_pane.add(now, "GOV", "FLATTEN", f"{what}: DUST, not sold ({r.get('detail', '')})")
            elif order is not None and order.is_closed:
                self.alerts_pane.add(now, *self._flatten_outcome(what, order))
            else:
                self._flatten_open[coid] = what
                self.alerts_pane.add(now, "GOV", "FLATTEN", f"{what}: closing, reduce-only {r.get('detail', '')} "
                                     f"({coid} {r.get('status', '')})")
        if not report:
            self.alerts_pane.add(now, "GOV", "FLATTEN", "no positions to close")
        self.sample(force=True)
        closed = sum(1 for r in report if r.get("status") != "DUST")
        self.notify(f"HALTED; {closed} position{'s' if closed != 1 else ''} closing, "
                    f"{len(report) - closed} dust. Report in the alerts pane (6).", title="Flatten")
        return report

    async def shutdown(self, halt: bool, who: str = WHO, reason: str = "halt and quit") -> None:
        """Detach (the daemon keeps running); with ``halt`` send the halt
        first. While a halt is not delivered, the first quit only warns."""
        self._quitting = True
        if halt:
            await self.halt(who, reason)
        if self.mirror.halt_pending and self.hangup:
            log.error("HALT NOT DELIVERED and the terminal went away: the halt is dropped")
        if self.mirror.halt_pending and not self.hangup and not self._leave_anyway:
            self._leave_anyway = True
            self._quitting = False
            self.notify("HALT NOT DELIVERED: still retrying. Quit again to leave without it.",
                        title="Quit", severity="error")
            self.sample(force=True)
            return
        await super().shutdown(False, who, reason)

    def on_sighup(self) -> None:
        """The terminal went away: detach; the daemon and its orders stay."""
        if self.hangup:
            return
        self.hangup = True
        log.warning("SIGHUP: the terminal went away; detaching (the daemon keeps running)")
        asyncio.get_running_loop().create_task(self.shutdown(halt=False))


def _log_to_file(state_dir: Path) -> Callable[[], None]:
    """Send the log to ``<state dir>/attach.log`` while the screen is up
    (a handler writing to the terminal would draw over it: those are taken
    off meanwhile). Returns the function that puts things back."""
    root = logging.getLogger()
    httpx_log = logging.getLogger("httpx")
    saved = (root.level, httpx_log.level)
    on_terminal = [h for h in root.handlers if getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler | None = logging.FileHandler(state_dir / "attach.log", encoding="utf-8")
    except OSError:
        handler = None
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for h in on_terminal:
        root.removeHandler(h)
    root.setLevel(logging.INFO)
    httpx_log.setLevel(logging.WARNING)  # one line per request (a snapshot a second) otherwise

    def restore() -> None:
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
        for h in on_terminal:
            root.addHandler(h)
        root.setLevel(saved[0])
        httpx_log.setLevel(saved[1])

    return restore


def attach_main(url: str, token_file: Path | None, state_dir: Path, *, environ: dict[str, str] | None = None,
                transport: Any = None, app_factory: Callable[[RemoteEngine], AttachedApp] | None = None) -> int:
    """``desk attach URL``: open the TUI on the daemon at ``url``.

    Args:
        url: the daemon's API, ``http://host:port``.
        token_file: ``--token-file`` (used when ``$OPS_TOKEN`` is not set).
        state_dir: ``--state-dir``: its ``ops_token`` is the last resort for
            the token; the log goes to its ``attach.log``.
        environ: the environment (tests); ``os.environ`` by default.
        transport: an httpx async transport (tests).
        app_factory: builds the app over the connected mirror (tests).

    Returns:
        0 detached; 1 the daemon could not be reached at start (or failed);
        2 no token, a token file others can read, a refused token, or a bad URL.
    """
    from desk.client import DaemonRefused, DaemonUnreachable, TokenError, resolve_client_token

    try:
        token, source = resolve_client_token(token_file, Path(state_dir), environ)
    except TokenError as exc:
        sys.stderr.write(f"desk: error: {exc}\n")
        return EXIT_USAGE
    if token is None:
        sys.stderr.write(f"desk: error: {source}\n")
        return EXIT_USAGE
    try:
        mirror = RemoteEngine(url, token, transport=transport)
    except ValueError as exc:
        sys.stderr.write(f"desk: error: {exc}\n")
        return EXIT_USAGE
    restore_log = _log_to_file(Path(state_dir))

    async def main() -> int:
        try:
            try:
                await mirror.connect()
            except DaemonUnreachable as exc:
                sys.stderr.write(f"desk: error: cannot reach the daemon: {exc}\n")
                return EXIT_UNREACHABLE
            except DaemonRefused as exc:
                sys.stderr.write(f"desk: error: {mirror.url} refused the attach ({source}): {exc}\n")
                return EXIT_USAGE if exc.status_code in (401, 403) else EXIT_UNREACHABLE
            app = (app_factory or (lambda m: AttachedApp(m, hard_exit_on_hangup=True)))(mirror)
            code = await app.run_async()
            return EXIT_OK if code is None else int(code)
        finally:
            await mirror.aclose()

    try:
        return asyncio.run(main())
    finally:
        restore_log()
