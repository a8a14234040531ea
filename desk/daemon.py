"""The headless daemon: ``desk run --headless --api-port 8002 [--config desk.yaml]``.

One process, one asyncio event loop: the engine (built by
``desk.wiring.build``, the same engine as the TUI's) and the control API
(``desk.api.create_app`` under uvicorn). It runs until stopped: a finite
replay runs to the end of its data, prints its JSON summary on stdout, and
then keeps serving the API (and a replay that already finished on this
state dir serves its stored state) until SIGTERM or SIGINT.

A config with a Binance or IBKR venue (``desk.live.run_live_main``) runs
the live engine the same way: ``desk.live.build_live`` is awaited in the
daemon's loop once the socket is bound (the venue's sessions belong to that
loop), the live housekeeping (commits between bars, the ``HALT`` file, the
fee asset's price) and the venue's order updates run beside the engine,
``--bars`` stops taking bars after that many (the API keeps serving), and a
stop reads the venue once more after its cancels and reconciles
(``desk.live.reconcile_at_stop``: a difference makes the exit 3) before the
stop is journaled, then prints the run's JSON summary on stdout and closes
the venue in the loop.

Signals (the daemon owns them; uvicorn's own capture is turned off, because
uvicorn 0.54 re-raises the captured signal once it has shut down, and the
process would die with 143 before the store is flushed):

* SIGTERM / SIGINT: stop. The engine finishes its current step (a fit
  in flight during the warm-up is waited for) and takes no more bars or
  model signals, open ``/stream`` responses are ended and the API stops
  taking requests (at most :data:`API_GRACE_S` for the others), the desk's
  working orders are canceled or kept per ``api.on_stop`` (default
  ``cancel``, reduce-only protective stops stay as with a halt; see
  desk/config.py), a ``DAEMON_STOPPED`` alert (WARNING, so it reaches
  Telegram) and a governance row (who ``daemon``, action ``STOP``) are
  journaled, ``meta.status`` becomes ``stopped`` (a finished replay stays
  ``finished``) and ``meta.stopped_by`` the signal, the store is
  checkpointed and committed, and the process exits 0 (3 when the replay
  ended with an unreconciled difference). A second signal while stopping
  is logged and ignored; one that arrives while the engine is being built
  is kept and acted on as soon as the loop runs.

Failures: a store failure halts the engine (it never trades without its
journal) and the daemon stays up, HALTED, serving ``/health`` (503) until
stopped, then exits 1; any other failure of the engine or the API halts
trading and stops the daemon with exit 1.
* SIGUSR1: halt (as everywhere): ``HALTED``, the desk's orders canceled.
* SIGHUP: ignored (logged): a daemon has no terminal to lose.

The ``HALT`` file in the state dir is checked every second (also while
warming up, and after a replay ended).

Address and token: ``--api-host`` (default 127.0.0.1) / ``--api-port``.
The token is ``$OPS_TOKEN``, else the content of ``--token-file``, else the
state dir's ``ops_token``, generated on first start with
``secrets.token_urlsafe(32)`` (created with ``O_CREAT|O_EXCL``, mode 0600);
its path is logged, never the token. A bind address other than loopback
needs ``$OPS_TOKEN`` or ``--token-file`` (at least 16 characters). The
socket is bound before the engine is built, so a busy port is exit 2 with
a clear message and nothing touched.

Telegram (``alerts.telegram`` in the config): alerts of WARNING and above
go to the allow-listed chats through ``desk.alerts.AlertDispatcher``
(de-duplicated, rate-limited) and the chats' commands are polled
(``desk.telegram.TelegramBot``); the bot token comes from the environment
variable the config names (exit 2 when it is not set).

Logs: one line per event on stderr, ``TS LEVEL LOGGER msg="..." key=value
...`` (:class:`KeyValueFormatter`; TS is UTC ISO 8601 with milliseconds;
values with spaces, quotes or ``=`` are JSON-quoted, so a line never
breaks), with the token and the configured secrets redacted. HTTP access
lines are off.

No textual import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from core.errors import EXIT_OK, EXIT_UNRECONCILED, ConfigError, DeskError

log = logging.getLogger("desk.daemon")

#: seconds the API waits for open requests (SSE streams) when stopping
API_GRACE_S = 2
#: seconds between two checks of the HALT file by the daemon
HALT_FILE_POLL_S = 1.0
#: seconds between two progress lines
PROGRESS_EVERY_S = 10.0
#: the shortest token accepted for a non-loopback bind
MIN_TOKEN_CHARS = 16


# ---------------------------------------------------------------- logging
def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``2026-11-30T09:21:00.123Z INFO desk.daemon msg="api serving" url=http://127.0.0.1:8002``.

    ``extra={"kv": {"key": value}}`` on a log call adds ``key=value``
    pairs; an exception goes in ``exc="..."`` on the same line. One record
    is always one line.
    """

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102 - see the class
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        parts = [ts, record.levelname, record.name, "msg=" + _quote(record.getMessage())]
        for k, v in (getattr(record, "kv", None) or {}).items():
            parts.append(f"{k}={_quote(str(v))}")
        if record.exc_info:
            parts.append("exc=" + _quote(self.formatException(record.exc_info)))
        return " ".join(parts)


class RedactFilter(logging.Filter):
    """Replaces each secret value by ``***`` in a record's message and
    arguments (defence in depth: nothing should log them anyway)."""

    def __init__(self, values: list[str]) -> None:
        super().__init__()
        self.values = [v for v in values if v and len(v) >= 6]

    def add(self, value: str | None) -> None:
        """Redact ``value`` too (ignored when shorter than 6 characters)."""
        if value and len(value) >= 6 and value not in self.values:
            self.values.append(value)

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - see the class
        if not self.values:
            return True
        msg = record.getMessage()
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        if any(v in msg or v in exc for v in self.values):
            for v in self.values:
                msg = msg.replace(v, "***")
                exc = exc.replace(v, "***")
            record.msg, record.args = msg, None
            if record.exc_info:
                record.exc_info = None
                record.msg = f"{msg} [exception: {exc}]"
        return True


def setup_logging(level: int = logging.INFO, secrets_: list[str] | None = None) -> RedactFilter:
    """Route every logger to stderr through :class:`KeyValueFormatter` and
    a :class:`RedactFilter` (returned, so later secrets can be added)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    redact = RedactFilter(list(secrets_ or []))
    handler.addFilter(redact)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return redact


# ---------------------------------------------------------------- options
@dataclass(slots=True)
class ApiOptions:
    """How the daemon serves the control API.

    Attributes:
        host: the bind address (default loopback).
        port: the TCP port (0: the system picks; the log says which).
        on_stop: ``cancel`` or ``keep`` the desk's working orders on stop.
        token_file: read the token from this file instead of the state
            dir's ``ops_token`` (``$OPS_TOKEN`` wins over both).
        config_path: the ``--config`` file, for the log line.
        secret_env: names of environment variables whose values are
            redacted from the log (the config's ``*_env`` fields).
        telegram: the config's ``alerts.telegram`` section, or None.
    """

    host: str = "127.0.0.1"
    port: int = 8002
    on_stop: str = "cancel"
    token_file: Path | None = None
    config_path: Path | None = None
    secret_env: list[str] = field(default_factory=list)
    telegram: Any = None


# ---------------------------------------------------------------- token
def explicit_token(token_file: Path | None, environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The token given explicitly: ``$OPS_TOKEN``, else ``--token-file``.

    Returns ``(token or None, where it came from)``.

    Raises:
        ConfigError: ``$OPS_TOKEN`` set but blank, or an unusable token file.
    """
    from desk.client import TOKEN_ENV, TokenError, read_token_file

    env = os.environ if environ is None else environ
    if TOKEN_ENV in env:
        tok = env[TOKEN_ENV].strip()
        if not tok:
            raise ConfigError(f"${TOKEN_ENV} is set but empty")
        return tok, f"${TOKEN_ENV}"
    if token_file is not None:
        try:
            return read_token_file(token_file), str(token_file)
        except TokenError as exc:
            raise ConfigError(f"--token-file: {exc}") from None
    return None, ""


def state_dir_token(state_dir: Path) -> tuple[str, Path, bool]:
    """The state dir's ``ops_token``: read it, or generate it on first use
    (``secrets.token_urlsafe(32)``: 32 random bytes, 43 characters; created
    with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and mode 0600 so it is never
    readable by others, not even for an instant).

    Returns ``(token, path, created)``.

    Raises:
        ConfigError: an existing file that is empty, unreadable or readable
            by others.
    """
    from desk.client import TokenError, read_token_file

    path = Path(state_dir) / "ops_token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        try:
            return read_token_file(path), path, False
        except TokenError as exc:
            raise ConfigError(f"{exc} (remove it to have a new one generated)") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return token, path, True


# ---------------------------------------------------------------- socket
def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (IPv4 or IPv6) before anything else
    starts, so a busy port is reported at once.

    Raises:
        ConfigError: the address cannot be resolved, or the port is in use
            or not allowed.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--api-host: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart within TIME_WAIT binds
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--api-port: {host}:{port} is already in use (another desk daemon, or another "
                              f"program); pick another port with --api-port") from None
        raise ConfigError(f"--api-port: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class _Server:
    """Factory of the uvicorn server with its signal capture turned off
    (the daemon owns SIGTERM/SIGINT); built lazily so importing this
    module does not import uvicorn."""

    @staticmethod
    def make(app: Any, *, grace_s: int = API_GRACE_S) -> Any:
        import uvicorn

        class NoSignalServer(uvicorn.Server):
            """uvicorn.Server without ``capture_signals``: in uvicorn 0.54
            it installs its own SIGINT/SIGTERM handlers and re-raises the
            signal after shutdown (uvicorn/server.py ``capture_signals``)."""

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=grace_s, server_header=False)
        return NoSignalServer(config)


def _default_app_factory() -> Callable[..., Any]:
    try:
        from desk.api import create_app
    except ImportError as exc:
        raise ConfigError(f"the control API is not available in this build ({exc})") from None
    return create_app


# ---------------------------------------------------------------- run
def run_daemon(opts: Any, api: ApiOptions, *, app_factory: Callable[..., Any] | None = None,
               environ: dict[str, str] | None = None, redact: RedactFilter | None = None,
               live_build: Callable[[], Awaitable[Any]] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code.

    Args:
        opts: ``desk.wiring.RunOptions`` (a live venue: anything with a
            ``bars`` attribute, the run's bar limit or None).
        api: how to serve the API.
        app_factory: ``create_app(engine, *, token)`` (default
            ``desk.api.create_app``).
        environ: the environment (default ``os.environ``).
        redact: the log's redaction filter, to add the token to.
        live_build: a live venue (``desk.live.run_live_main``): a coroutine
            function returning a started ``desk.live.LiveBuilt``. It is
            awaited in the daemon's event loop (the venue's sessions belong
            to it) after the socket is bound, instead of
            ``desk.wiring.build(opts)``; the venue is closed in that loop
            at the end (``LiveBuilt.aclose``).

    Raises:
        DeskError: refused at start (exit 2): busy port, a non-loopback
            bind without an explicit token, a bad token file, a bad setup.
    """
    from desk.config import is_loopback

    env = os.environ if environ is None else environ
    token, source = explicit_token(api.token_file, env)
    if not is_loopback(api.host):
        if token is None:
            raise ConfigError(f"--api-host {api.host}: not a loopback address; binding it needs an explicit "
                              f"token: set $OPS_TOKEN (or --token-file)")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"--api-host {api.host}: the token from {source} is {len(token)} characters; "
                              f"a non-loopback bind needs at least {MIN_TOKEN_CHARS}")
    factory = app_factory or _default_app_factory()
    telegram = _telegram_token(api, env)  # missing credentials: exit 2 before anything is touched
    # until the loop's handlers are in place, a stop signal is remembered, not fatal
    early: list[str] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[sig] = signal.signal(sig, lambda signum, frame: early.append(signal.Signals(signum).name))
    try:
        return _run_bound(opts, api, factory, env, token, source, telegram, early, redact, live_build)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_bound(opts: Any, api: ApiOptions, factory: Callable[..., Any], env: Any, token: str | None, source: str,
               telegram: str | None, early: list[str], redact: RedactFilter | None,
               live_build: Callable[[], Awaitable[Any]] | None = None) -> int:
    """Bind, build, serve (the rest of :func:`run_daemon`)."""
    sock = bind_socket(api.host, api.port)
    port = sock.getsockname()[1]
    if redact is not None:
        for name in api.secret_env:
            redact.add(env.get(name))
    if live_build is not None:
        try:
            return asyncio.run(_run_live(live_build, opts, api, factory, env, token, source, telegram, early,
                                         redact, sock, port))
        finally:
            sock.close()
    try:
        from desk.wiring import build

        built = build(opts)
    except BaseException:
        sock.close()
        raise
    try:
        daemon = _make_daemon(built, opts, api, factory, env, token, source, telegram, early, redact, sock, port)
        return asyncio.run(daemon.main())
    finally:
        try:
            sock.close()
        finally:
            built.close()


async def _run_live(live_build: Callable[[], Awaitable[Any]], opts: Any, api: ApiOptions,
                    factory: Callable[..., Any], env: Any, token: str | None, source: str, telegram: str | None,
                    early: list[str], redact: RedactFilter | None, sock: socket.socket, port: int) -> int:
    """A live venue: build it in this loop, serve, close the venue here."""
    built = await live_build()
    try:
        daemon = _make_daemon(built, opts, api, factory, env, token, source, telegram, early, redact, sock, port)
        return await daemon.main()
    finally:
        await built.aclose()


def _make_daemon(built: Any, opts: Any, api: ApiOptions, factory: Callable[..., Any], env: Any, token: str | None,
                 source: str, telegram: str | None, early: list[str], redact: RedactFilter | None,
                 sock: socket.socket, port: int) -> "_Daemon":
    """The token (given, or the state dir's), the start-up lines, the app
    and the :class:`_Daemon` around a built engine."""
    if token is None:
        token, path, created = state_dir_token(built.state.path)
        log.info("ops token %s", "generated" if created else "read", extra={"kv": {"path": path, "mode": "0600"}})
    else:
        log.info("ops token given", extra={"kv": {"source": source}})
    if redact is not None:
        redact.add(token)
    skip = getattr(built, "venue_lines", 0)  # a live venue logged its own start-up lines
    from desk.live import log_start_line

    for i, m in enumerate(built.messages):
        if not 1 <= i <= skip:
            log_start_line(m)  # a "desk: WARNING: ..." line at WARNING
    app = factory(built.engine, token=token)
    daemon = _Daemon(built, opts, api, app, sock, port)
    daemon.early_signals = early
    daemon.telegram_token = telegram
    daemon.secrets = [token] + [env[n] for n in api.secret_env if env.get(n)]
    return daemon


def _telegram_token(api: ApiOptions, env: Any) -> str | None:
    """The bot token named by ``alerts.telegram.bot_token_env``, or None
    without a Telegram section.

    Raises:
        ConfigError: the variable is not set (missing credentials, exit 2).
    """
    if api.telegram is None:
        return None
    name = api.telegram.bot_token_env
    tok = (env.get(name) or "").strip()
    if not tok:
        raise ConfigError(f"alerts.telegram.bot_token_env: ${name} is not set (the Telegram bot token)")
    return tok


class _Daemon:
    def __init__(self, built: Any, opts: Any, api: ApiOptions, app: Any, sock: socket.socket | None,
                 port: int) -> None:
        self.built = built
        self.engine = built.engine
        self.opts = opts
        self.api = api
        self.app = app
        self.sock = sock
        self.port = port
        self.stop_signal: str | None = None
        self.exit_code = EXIT_OK
        self._stop: asyncio.Event | None = None
        self.early_signals: list[str] = []
        self.telegram_token: str | None = None
        self.secrets: list[str] = []
        #: warm-up (or recovery) done: only then is a checkpoint a valid resume point
        self.engine_started = False
        self.dispatcher: Any = None
        self.bot: Any = None
        #: a live venue (``desk.live.LiveBuilt``): its feed, order updates and final reconciliation
        self.live = getattr(built, "mode", None) == "live"
        self._t0 = 0.0
        self._bars0 = 0

    def _stop_intake(self) -> None:
        """No more bars or model signals; a live feed's pending read ends too."""
        self.engine.stop()
        if self.live:
            self.built.feed.stop()

    # ------------------------------------------------------------ signals
    def _on_stop_signal(self, name: str) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            log.warning("%s received while stopping: ignored", name)
            return
        log.warning("%s received: stopping", name, extra={"kv": {"on_stop": self.api.on_stop}})
        self.stop_signal = name
        self._stop.set()
        self._stop_intake()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig.name)
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.engine.spawn(
            self.engine.governance.halt("SIGUSR1", "out-of-band halt signal")))
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored (send SIGTERM to stop)"))

    # ------------------------------------------------------------ tasks
    async def _serve_api(self, server: Any) -> None:
        try:
            await server.serve(sockets=[self.sock])
        except SystemExit as exc:  # uvicorn exits when the app's lifespan fails to start
            raise DeskError(f"the control API failed to start (uvicorn exit {exc.code})") from None

    async def _run_engine(self) -> None:
        e = self.engine
        assert self._stop is not None
        if self._stop.is_set():
            return  # stopped before it started
        if self.built.finished_summary is not None:
            log.info("this replay already finished; serving its stored state until stopped")
            sys.stdout.write(json.dumps(self.built.finished_summary, sort_keys=True) + "\n")
            sys.stdout.flush()
            if self.built.finished_summary.get("unreconciled"):
                self.exit_code = EXIT_UNRECONCILED
            return
        self._t0, self._bars0 = time.perf_counter(), e.stats.bars
        if self.live:  # reconciliation with the venue first when continued, then the warm-up (desk/live.py)
            from desk.live import start_engine

            await start_engine(self.built)
        elif self.built.continued:
            log.info("continuing the run", extra={"kv": {"after_bar": e.stats.bars}})
            await e.recover()
            self.engine_started = True
        else:
            log.info("warming the models up")
            await e.warm_up()
        self.engine_started = True
        max_bars = max(0, self.opts.bars - e.stats.bars) if self.opts.bars is not None else None
        t0 = time.perf_counter()
        bars0 = e.stats.bars
        await e.run(max_bars=max_bars)
        if e.stats.finished:
            self._finish(time.perf_counter() - t0, e.stats.bars - bars0)
            log.info("replay finished; serving until stopped", extra={"kv": {"bars": e.stats.bars}})
        elif self.stop_signal is None:
            log.info("bar limit reached; serving until stopped", extra={"kv": {"bars": e.stats.bars}})

    def _finish(self, wall: float, bars_here: int) -> None:
        """The end of a finite replay, as ``desk.cli.run_headless`` does it:
        summary, reconciliation, ``meta.status = finished``, JSON on stdout."""
        from desk.cli import reconcile

        e = self.engine
        summary = e.summary(wall, bars_here)
        problems = list(e.unreconciled) + reconcile(summary, e)
        if problems:
            for p in problems:
                log.error("UNRECONCILED: %s", p)
            summary["unreconciled"] = problems
            summary["trading_state"] = "HALTED"
            self.exit_code = EXIT_UNRECONCILED
        e.store.meta_set("status", "finished")
        e.store.meta_set("summary", json.dumps({**summary, "wall_s": None, "bars_per_s": None}, sort_keys=True))
        e.flush()
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        sys.stdout.flush()

    async def _poll_halt_file(self) -> None:
        while True:
            await asyncio.sleep(HALT_FILE_POLL_S)
            try:
                await self.engine.check_halt_file()
            except Exception:  # noqa: BLE001 - the poller must not die; the engine logs its own errors
                log.exception("HALT file check failed")

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            e = self.engine
            log.info("progress", extra={"kv": {
                "bars": e.stats.bars, "equity": e.portfolio.equity().quantize(Decimal("0.01")),
                "state": e.trading_state.value, "working": len(e.working_orders())}})

    # ------------------------------------------------------------ main
    async def main(self) -> int:
        """Serve and run until stopped; returns the exit code (0; 3 when
        the replay ended unreconciled, or a live venue's reconciliation at
        the stop found a difference; 1 after a store failure or when a
        task failed: the engine is then halted first).

        Raises:
            DeskError: the API failed to start.
        """
        from core.store import StoreError

        self._stop = asyncio.Event()
        self._install_signals()
        for name in self.early_signals:
            self._on_stop_signal(name)
        e = self.engine
        if e.store.meta_get("status") != "finished":
            e.store.meta_set("status", "running")
            e.flush()
        server = _Server.make(self.app)
        api_task = asyncio.create_task(self._serve_api(server), name="api")
        while not server.started and not api_task.done():
            await asyncio.sleep(0.01)
        if api_task.done():
            api_task.result()  # raises the start failure
        host = self.api.host if ":" not in self.api.host else f"[{self.api.host}]"
        url = f"http://{host}:{self.port}"
        log.info("api serving", extra={"kv": {"url": url, "on_stop": self.api.on_stop}})
        try:  # desk status/halt/resume --state-dir find the daemon here (no --url needed)
            from desk.client import API_URL_FILE

            (self.built.state.path / API_URL_FILE).write_text(url + "\n")
        except OSError as exc:
            log.warning("cannot write the api url file", extra={"kv": {"error": exc.strerror}})
        helpers = [asyncio.create_task(self._progress(), name="progress")]
        if self.live:  # commits between bars and the HALT file every second, the venue's order updates
            from desk.live import start_venue_tasks

            helpers += start_venue_tasks(self.built, asyncio.sleep)  # one supervised task group per venue
        else:
            helpers.append(asyncio.create_task(self._poll_halt_file(), name="halt-file"))
        if self.telegram_token is not None:
            helpers.append(asyncio.create_task(self._start_telegram(), name="telegram"))
        engine_task = asyncio.create_task(self._run_engine(), name="engine")
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop")
        failure: BaseException | None = None
        pending = {stop_wait, engine_task, api_task}
        while not stop_wait.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = None if t is stop_wait else t.exception()
                if t is engine_task and isinstance(exc, StoreError):
                    # the engine halted itself (no trading without its journal); stay up, HALTED, so the
                    # operator sees it (/health answers 503) until stopped; then exit 1
                    log.error("store failure: trading halted; the API keeps serving until stopped: %s", exc)
                    self.exit_code = 1
                    continue
                if exc is not None:
                    failure = exc
                    log.error("%s task failed: %s", t.get_name(), exc, exc_info=exc)
                if t is api_task and failure is None:
                    failure = DeskError("the control API stopped unexpectedly")
                    log.error("the control API stopped unexpectedly")
            if failure is not None:
                if e.trading_state.value != "HALTED":  # halting is the safe direction
                    with contextlib.suppress(Exception):
                        await e.governance.halt("daemon", f"daemon failure: {type(failure).__name__}: {failure}"[:500])
                break
        # stop: no more bars, model signals or API commands; open /stream responses end now
        self._stop_intake()
        runtime = getattr(getattr(self.app, "state", None), "runtime", None)
        if runtime is not None and hasattr(runtime, "end_streams"):
            with contextlib.suppress(Exception):
                n = runtime.end_streams()
                if n:
                    log.info("ended %d open streams", n)
        server.should_exit = True
        for t in (engine_task, api_task):
            if not t.done():
                with contextlib.suppress(Exception):
                    await t
        for t in (*helpers, stop_wait):
            t.cancel()
        await asyncio.gather(*helpers, stop_wait, return_exceptions=True)
        tasks = list(getattr(e, "_tasks", ()))
        if tasks:  # halts in progress (SIGUSR1, HALT file, API) finish before the last commit
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._stop_orders(failure)
        await self._stop_telegram()
        if failure is not None:
            if isinstance(failure, DeskError):
                raise failure
            return 1
        return self.exit_code

    async def _stop_orders(self, failure: BaseException | None) -> None:
        """Cancel or keep the desk's working orders, journal the stop
        (``Governance.daemon_stopped``), commit (the audit line too)."""
        from core.identifiers import is_desk_order
        from core.orders import STOP_TYPES
        from core.store import StoreError

        e = self.engine
        working = [o for o in e.working_orders()
                   if is_desk_order(o.client_order_id) and o.client_order_id not in e.exempt_orders
                   and not (o.reduce_only and o.order_type in STOP_TYPES)]
        why = self.stop_signal or ("failure" if failure is not None else "stop")
        try:
            if self.api.on_stop == "cancel" and working:
                await asyncio.gather(*(e.cancel(o, f"DAEMON_STOP {why}") for o in working), return_exceptions=True)
            problems = await self._final_reconcile() if self.live else []
            # the DAEMON_STOPPED alert and its STOP governance row at one clock read (core.rebuild derives
            # the row from the alert); the checkpoint below commits both and writes the audit line
            _, msg = e.governance.daemon_stopped(why, self.api.on_stop, len(working), len(e.working_orders()))
            if e.store.meta_get("status") != "finished":
                e.store.meta_set("status", "stopped")
            e.store.meta_set("stopped_by", why)
            if self.engine_started or self.built.finished_summary is not None:
                e.checkpoint()
            else:  # never warmed up: no resume point, or the next start would skip the warm-up
                e.flush()
            log.info(msg)
            if self.live:
                self._live_summary(problems)
            elif self.built.finished_summary is None and not e.stats.finished:
                self._stop_summary()  # a replay or the SIM market stopped before its end: the summary so far
        except StoreError as exc:
            log.error("the last commit failed: %s", exc)
            self.exit_code = 1

    async def _final_reconcile(self) -> list[str]:
        """A live venue, after the stop's cancels: the venue read once more
        and the books reconciled (``desk.live.reconcile_at_stop``); a
        difference is logged and makes the exit 3 (it halts the desk, so
        the next start looks again)."""
        from desk.live import reconcile_at_stop

        problems = await reconcile_at_stop(self.built, checkpoint=self.engine_started)
        if problems:
            for p in problems:
                log.error("UNRECONCILED: %s", p)
            if self.exit_code == EXIT_OK:
                self.exit_code = EXIT_UNRECONCILED
        return problems

    def _stop_summary(self) -> None:
        """A paper run stopped before its end (the SIM market never ends):
        its JSON summary so far on stdout, ``finished`` false (a finished
        replay printed its own at its end)."""
        e = self.engine
        summary = e.summary(time.perf_counter() - self._t0 if self._t0 else 0.0, e.stats.bars - self._bars0)
        sys.stdout.write(json.dumps(summary, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def _live_summary(self, problems: list[str]) -> None:
        """A live venue: the run's JSON summary on stdout at the stop (as
        ``desk run --config --headless`` without the API writes it)."""
        e = self.engine
        summary = e.summary(time.perf_counter() - self._t0 if self._t0 else 0.0, e.stats.bars - self._bars0)
        summary["venue"] = self.built.venue.venue
        summary["live"] = self.built.live
        summary["venue_state"] = e.session.status()
        if problems:
            summary["unreconciled"] = problems
        sys.stdout.write(json.dumps(summary, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    # ------------------------------------------------------------ telegram
    def _status_text(self) -> str:
        e = self.engine
        halted = ",".join(sorted(e.halted_venues)) or "none"
        return (f"{e.trading_state.value}; halted venues: {halted}; equity {e.portfolio.equity():.2f}; "
                f"working orders {len(e.working_orders())}; bars {e.stats.bars}")

    def _pnl_text(self) -> str:
        e = self.engine
        pf = e.portfolio
        return (f"today {e.day_pnl():.2f}; realized {pf.realized():.2f}; unrealized {pf.unrealized():.2f}; "
                f"equity {pf.equity():.2f}")

    async def _start_telegram(self) -> None:
        """Alerts (WARNING and above) to the allow-listed chats, and their
        commands (/status /pnl /halt, /resume when allowed), until stopped."""
        from desk.alerts import AlertDispatcher, TelegramSink
        from desk.telegram import TelegramBot

        tg = self.api.telegram
        assert self.telegram_token is not None and self._stop is not None
        self.bot = TelegramBot(self.telegram_token, tg.chat_ids, self.engine.governance, self._status_text,
                               self._pnl_text, allow_resume=tg.allow_resume, api_url=tg.api_url)
        self.dispatcher = AlertDispatcher(self.engine.clock, [TelegramSink(self.bot)], secrets=self.secrets)
        self.dispatcher.attach(self.engine.bus)
        self.dispatcher.start()
        log.info("telegram alerts and commands on", extra={"kv": {"chats": len(tg.chat_ids),
                                                                  "allow_resume": tg.allow_resume}})
        await self.bot.run(self._stop)

    async def _stop_telegram(self) -> None:
        """Deliver the queued alerts (the stop's own among them), then close."""
        if self.dispatcher is not None:
            with contextlib.suppress(Exception):
                await self.dispatcher.stop()
            self.engine.bus.unsubscribe("AlertRaised", self.dispatcher.on_event)
        if self.bot is not None:
            with contextlib.suppress(Exception):
                await self.bot.close()
