"""The ``desk`` command line.

``desk [--state-dir D]`` runs the embedded default; ``desk run [--data FILE
...] [--symbol S] [--exchange-info FILE] [--speed N|max] [--bars N]
[--headless] [--order-type LIMIT|MARKET] [--config desk.yaml]`` runs a
replay or the SIM market; ``desk run --headless --api-port 8002`` is the
daemon (desk/daemon.py). ``desk halt|resume|status`` are one-shot commands
against a running daemon, ``desk export-pnl`` writes a day's PnL CSV.
Exit codes (DESIGN.md section 1): 0 done (also when a rail halted trading),
2 usage / bad input / bad config / state dir refused, 3 ended halted by an
unreconciled difference. ``desk status``: 0 ACTIVE, 3 HALTED or REDUCING (or a venue halted),
1 daemon unreachable, 2 no or refused token.

Headless runs never import textual; hmmlearn is imported only in the fit
worker and where a model is fitted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from contextlib import closing as contextlib_closing
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence

from core.errors import EXIT_OK, EXIT_UNRECONCILED, EXIT_USAGE, ConfigError, DeskError

log = logging.getLogger("desk")



class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2, and
    no abbreviated flags (``--token`` must never be read as ``--token-file``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"desk: error: {message} (see desk --help)\n")
        raise SystemExit(EXIT_USAGE)


def _speed(text: str) -> float | str:
    if text.strip().lower() == "max":
        return "max"
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None
    if not (v > 0 and v <= 1e6):
        raise argparse.ArgumentTypeError(f"must be > 0 and at most 1000000 (or 'max'), got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


#: the largest trading capital accepted (quote): far above any account, and
#: small enough that every amount keeps its 8 decimals in Decimal's 28 digits
MAX_CAPITAL = Decimal("1e12")


def _capital(text: str) -> Decimal:
    try:
        v = Decimal(text.strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if "_" in text or not v.is_finite() or v <= 0 or v > MAX_CAPITAL:
        raise argparse.ArgumentTypeError(
            f"must be a positive number up to {MAX_CAPITAL:,.0f} in the quote currency, got {text!r}")
    return v


def _share(text: str) -> Decimal:
    try:
        v = Decimal(text.strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v.is_finite() or not (0 < v <= 1):
        raise argparse.ArgumentTypeError(f"a fraction in (0, 1], got {text!r}")
    return v


def _tz(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"not an IANA time zone: {text!r}") from None
    return text


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0-65535, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0-65535, got {text!r}")
    return v


def _date(text: str) -> str:
    import datetime as _dt

    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None
    if len(text) != 10:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}")
    return text


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _oneshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the daemon's API (default: the --config's api, else the URL the daemon on "
                                 "--state-dir wrote at start, else http://127.0.0.1:8002)")
    p.add_argument("--token-file", type=Path, metavar="PATH",
                   help="file holding the token (default: $OPS_TOKEN, else <state-dir>/ops_token)")
    p.add_argument("--config", type=Path, metavar="FILE", help="desk.yaml: its api address and state_dir")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the daemon")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (``--state-dir`` on the root and on every subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                        help="state directory (default ./var)")
    p = _Parser(prog="desk", description="nautilus-hmm desk: a terminal trading desk", parents=[common])
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", parents=[common], help="run a replay or the SIM market")
    run.add_argument("--data", action="append", type=Path, default=[], metavar="FILE",
                     help="Binance kline CSV to replay (repeatable)")
    run.add_argument("--symbol", help="symbol of a single --data file (default: from its name)")
    run.add_argument("--exchange-info", type=Path, help="Binance exchangeInfo JSON for the filters")
    run.add_argument("--speed", type=_speed, default=None, help="bar steps per second, or 'max'")
    run.add_argument("--bars", type=_positive_int, help="stop after N bars (all instruments)")
    run.add_argument("--headless", action="store_true", help="no UI: progress on stderr, summary on stdout")
    run.add_argument("--order-type", choices=["LIMIT", "MARKET"], default="LIMIT")
    run.add_argument("--volume-share", type=_share, metavar="F",
                     help="paper venue: a limit order fills at most this fraction of a bar's volume "
                          "(partial fills; default: whole fills)")
    run.add_argument("--risk", type=Path, metavar="FILE",
                     help="the rails' limits per venue, instrument and model (YAML; see README)")
    run.add_argument("--tz", type=_tz, default=None, metavar="ZONE",
                     help="IANA time zone of the venue day (daily PnL, daily loss limit; default UTC)")
    run.add_argument("--capital", type=_capital, default=None,
                     help="trading capital and starting cash, quote currency (default 10000)")
    run.add_argument("--config", type=Path, metavar="FILE",
                     help="desk.yaml: venues, rails, policy, api, alerts (flags given here win)")
    run.add_argument("--policy", type=Path, metavar="FILE", help="governance policy (YAML; examples/policy.yaml)")
    run.add_argument("--live", action="store_true", help="allow venues that trade real money (non-testnet)")
    run.add_argument("--api-host", metavar="HOST",
                     help="daemon: address of the control API (default 127.0.0.1; others need $OPS_TOKEN)")
    run.add_argument("--api-port", type=_port, metavar="PORT",
                     help="daemon: serve the control API on this port (needs --headless)")
    run.add_argument("--token-file", type=Path, metavar="PATH",
                     help="daemon: read the API token from this file (default $OPS_TOKEN, else "
                          "<state-dir>/ops_token, generated)")
    run.add_argument("--on-stop", choices=["keep", "cancel"],
                     help="daemon: the desk's working orders on SIGTERM/SIGINT (default cancel)")
    check = sub.add_parser("check-store", parents=[common],
                           help="rebuild the store's tables from its journal and report differences")
    check.add_argument("--apply", action="store_true", help="rewrite the tables that differ from the journal")
    halt = sub.add_parser("halt", parents=[common], help="halt the running daemon (falls back to the HALT file)")
    _oneshot_args(halt)
    halt.add_argument("--reason", type=_reason, default="desk halt from the command line")
    halt.add_argument("--mode", choices=["HALT", "REDUCE", "FLATTEN"], default="HALT",
                      help="HALT (cancel working orders), REDUCE (reduce-only) or FLATTEN (close positions)")
    resume = sub.add_parser("resume", parents=[common], help="resume trading on the running daemon")
    _oneshot_args(resume)
    resume.add_argument("--reason", type=_reason, required=True, help="why (audited)")
    attach = sub.add_parser("attach", parents=[common], help="the TUI driven by a running daemon (REST + SSE)")
    attach.add_argument("url", nargs="?", default="http://127.0.0.1:8002",
                        help="the daemon's API (default http://127.0.0.1:8002)")
    attach.add_argument("--token-file", type=Path, metavar="PATH",
                        help="file holding the token (default: $OPS_TOKEN, else <state-dir>/ops_token)")
    status = sub.add_parser("status", parents=[common],
                            help="the daemon's trading state (exit 0 ACTIVE, 3 HALTED/REDUCING or a venue halted, 1 unreachable)")
    _oneshot_args(status)
    status.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    export = sub.add_parser("export-pnl", parents=[common], help="write exports/pnl_YYYY-MM-DD.csv from the store")
    export.add_argument("--date", type=_date, help="the day (default: the last complete day on the engine clock)")
    export.add_argument("--tz", type=_tz, default=None, metavar="ZONE",
                        help="IANA zone of the day (default: the run's venue-day zone, --tz of desk run)")
    data = sub.add_parser("data", parents=[common], help="market data tools: desk data download SYMBOL INTERVAL ...")
    data.add_argument("action", choices=["download"])
    data.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the action (desk data download --help)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``desk`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--token" or a.startswith("--token=") for a in argv):
        # refused before argparse, which would echo the value in its error
        sys.stderr.write("desk: error: there is no --token flag: a token never goes on a command line; "
                         "set $OPS_TOKEN or use --token-file PATH\n")
        return EXIT_USAGE
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    cfg = None
    if getattr(args, "config", None) is not None:
        from desk.config import load_config

        try:
            cfg = load_config(args.config)
        except DeskError as exc:
            sys.stderr.write(f"desk: error: {exc}\n")
            return exc.exit_code
    state_dir = getattr(args, "state_dir", None) or (cfg.state_dir if cfg is not None else None) or Path("var")
    if args.command in ("halt", "resume", "status"):
        return _oneshot(args, state_dir, cfg)
    if args.command == "attach":
        from desk.attach import attach_main  # textual is imported only for the UI

        return attach_main(args.url, args.token_file, state_dir)
    _halt_on_usr1_during_startup(state_dir)
    daemon = args.command == "run" and _api_port(args, cfg) is not None
    redact = None
    if daemon and args.headless:
        from desk.daemon import setup_logging

        redact = setup_logging(logging.INFO)
    else:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        if args.command is None:
            from desk.app import run_app  # textual is imported only for the UI

            return run_app(_options(None, state_dir))
        if args.command == "check-store":
            from desk.check_store import run_check_store

            return run_check_store(state_dir, apply=args.apply)
        if args.command == "export-pnl":
            from desk.export import export_pnl_main

            return export_pnl_main(state_dir, args.date, args.tz)
        if args.command == "data":
            from venues.binance.download import download_main

            return download_main(list(args.rest))
        if args.command == "run":
            if args.exchange_info is not None and not (args.data or (cfg is not None and cfg.data)):
                raise ConfigError("--exchange-info: only with --data (the SIM market and live venues have "
                                  "their own filters)")
            if cfg is not None and any(v.kind in ("binance", "ibkr") for v in cfg.venues):
                from desk.live import run_live_main  # a real venue: desk/live.py builds and runs it

                return run_live_main(cfg, args, state_dir)
            opts = _options(args, state_dir, cfg)
            if cfg is not None:
                from desk.config import config_digest

                log.info("config %s sha256=%s", args.config, config_digest(args.config))
            if not args.headless:
                if args.api_port is not None:
                    raise ConfigError("--api-port: the control API is served by the headless daemon; "
                                      "add --headless")
                if daemon:
                    log.warning("api.port in %s is served only with --headless; no API in the TUI", args.config)
                from desk.app import run_app

                return run_app(opts, max_speed=_speed_of(args, cfg) == "max")
            if daemon:
                from desk.daemon import run_daemon

                return run_daemon(opts, _api_options(args, cfg), redact=redact)
            return run_headless(opts, default_bars=None)
    except DeskError as exc:
        sys.stderr.write(f"desk: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_USAGE


def _api_port(args: Any, cfg: Any) -> int | None:
    if getattr(args, "api_port", None) is not None:
        return int(args.api_port)
    if cfg is not None and args.command == "run":
        return cfg.api.port
    return None


def _speed_of(args: Any, cfg: Any) -> Any:
    if args.speed is not None:
        return args.speed
    return cfg.speed if cfg is not None else None


def _api_options(args: Any, cfg: Any) -> Any:
    from desk.daemon import ApiOptions

    secret_env: list[str] = []
    telegram = None
    if cfg is not None:
        for v in cfg.venues:
            secret_env += [getattr(v, "api_key_env", None), getattr(v, "api_secret_env", None)]
        telegram = cfg.alerts.telegram
        if telegram is not None:
            secret_env.append(telegram.bot_token_env)
    return ApiOptions(
        host=args.api_host or (cfg.api.host if cfg is not None else "127.0.0.1"),
        port=int(_api_port(args, cfg) or 0),
        on_stop=args.on_stop or (cfg.api.on_stop if cfg is not None else "cancel"),
        token_file=args.token_file, config_path=args.config,
        secret_env=[n for n in secret_env if n], telegram=telegram,
    )


# ---------------------------------------------------------------- one-shot commands
def _oneshot(args: Any, state_dir: Path, cfg: Any) -> int:
    """``desk halt`` / ``desk resume`` / ``desk status`` against a running
    daemon. Exit codes: 0 done (status: ACTIVE), 1 the daemon cannot be
    reached (status), 2 no token or a request the daemon refused, 3
    (status) HALTED or REDUCING. Messages go to stderr, answers to stdout."""
    from desk.client import DEFAULT_URL, DaemonClient, TokenError, resolve_client_token

    url = args.url
    if url is None and cfg is not None and cfg.api.port:
        from desk.config import is_loopback

        host = cfg.api.host if is_loopback(cfg.api.host) or cfg.api.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host if ':' not in host else f'[{host}]'}:{cfg.api.port}"
    if url is None:
        from desk.client import API_URL_FILE

        try:  # the URL the daemon serving this state dir wrote at start
            text = (Path(state_dir) / API_URL_FILE).read_text().strip()
        except OSError:
            text = ""
        url = text or None
    url = url or DEFAULT_URL
    try:
        token, source = resolve_client_token(args.token_file, state_dir)
    except TokenError as exc:
        sys.stderr.write(f"desk {args.command}: {exc}\n")
        return EXIT_USAGE
    client = DaemonClient(url, token, timeout=args.timeout)
    try:
        if args.command == "status":
            return _cmd_status(args, client, token, source)
        if args.command == "halt":
            return _cmd_halt(args, client, token, source, state_dir)
        return _cmd_resume(args, client, token, source, state_dir)
    finally:
        client.close()


def _print(text: str) -> None:
    """One answer on stdout; a reader that went away (``| head -1``) is
    not an error: the exit code still tells the state."""
    import os

    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _say(args: Any, text: str) -> None:
    sys.stderr.write(f"desk {args.command}: {text}\n")


def _cmd_status(args: Any, client: Any, token: str | None, source: str) -> int:
    from desk.client import DaemonRefused, DaemonUnreachable

    if token is None:  # no token here (monitoring from another account): the state from /health
        return _status_from_health(client.url, args.timeout, source)
    try:
        st = client.status()
    except DaemonUnreachable as exc:
        _say(args, f"daemon unreachable: {exc}")
        return 1
    except DaemonRefused as exc:
        _say(args, f"{client.url} refused: {exc}")
        return EXIT_USAGE if exc.status_code < 500 else 1
    state = str(st.get("trading_state") or st.get("state") or "") if isinstance(st, dict) else ""
    if args.json:
        _print(json.dumps(st, sort_keys=True))
    else:
        lines = [f"trading_state: {state or '?'}"]
        for k, v in sorted(st.items() if isinstance(st, dict) else []):
            if k not in ("trading_state", "state"):
                lines.append(f"{k}: {v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True)}")
        _print("\n".join(lines))
    halted = list(st.get("halted_venues") or []) if isinstance(st, dict) else []
    if state == "ACTIVE" and halted:  # the desk is ACTIVE, but some venue takes no order: worth a page
        _say(args, f"venues halted: {', '.join(halted)}")
        return 3
    if state == "ACTIVE":
        return EXIT_OK
    if state in ("HALTED", "REDUCING"):
        return 3
    _say(args, f"unexpected trading state {state!r} in the answer")
    return 1


def _local_url(url: str) -> bool:
    from urllib.parse import urlparse

    from desk.config import is_loopback

    return is_loopback(urlparse(url).hostname or "")


def _cmd_halt(args: Any, client: Any, token: str | None, source: str, state_dir: Path) -> int:
    from desk.client import DaemonRefused, DaemonUnreachable

    if token is not None:
        try:
            answer = client.kill(args.mode, args.reason)
            _print(json.dumps(answer, sort_keys=True))
            return EXIT_OK
        except DaemonRefused as exc:
            if exc.status_code < 500:
                _say(args, f"{client.url} refused the halt: {exc}" + (
                    f" (on the daemon's host, creating {state_dir / 'HALT'} halts it out of band)"
                    if exc.status_code in (401, 403) else ""))
                return EXIT_USAGE
            _say(args, f"{client.url} failed: {exc}")
        except DaemonUnreachable as exc:
            _say(args, f"the API does not answer: {exc}")
    else:
        _say(args, f"{source}; the API cannot be asked")
    if not _local_url(client.url):
        _say(args, f"{client.url} is not on this host: the HALT file fallback needs the daemon's own host")
        return 1
    return _halt_file_fallback(args, state_dir)


def _halt_file_fallback(args: Any, state_dir: Path) -> int:
    """Write ``<state_dir>/HALT`` (the out-of-band halt the engine checks
    at start and every second while running), then, when a desk runs on
    that state dir, look for the halt in the store for ``--timeout``
    seconds. 0 when the store says HALTED, or when no desk runs there (the
    file halts it when it starts: said so); 1 when the state dir does not
    exist (nothing written) or a running desk did not confirm in time."""
    import fcntl
    import sqlite3
    from datetime import datetime, timezone

    if not state_dir.is_dir():
        _say(args, f"no state dir {state_dir}: nothing halted (give the daemon's --state-dir)")
        return 1
    halt = state_dir / "HALT"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    halt.write_text(f"desk halt {now} mode={args.mode} reason={args.reason}\n")
    note = " (the HALT file halts; it does not reduce or flatten)" if args.mode != "HALT" else ""
    _say(args, f"falling back to the HALT file: wrote {halt}{note}")
    running = False
    try:
        with open(state_dir / "desk.lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                running = True
    except OSError:
        pass
    if not running:
        # the file is the halt: a desk started on this dir reads it at start (and every second while running)
        _say(args, f"no desk is running on {state_dir}: the desk will halt when it starts (the HALT file is read "
                   f"at start and while running); to trade again: desk resume once it runs, or remove {halt} "
                   "before it starts")
        return EXIT_OK
    db = state_dir / "desk.sqlite"
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with contextlib_closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)) as c:
                row = c.execute("SELECT value FROM meta WHERE key='trading_state'").fetchone()
            if row is not None and row[0] == "HALTED":
                _say(args, "HALTED (confirmed in the store)")
                return EXIT_OK
        except sqlite3.Error:
            pass
        if time.monotonic() >= deadline:
            _say(args, f"the HALT file is written but the halt is not in the store after {args.timeout:g} s")
            return 1
        time.sleep(0.1)


def _status_from_health(url: str, timeout: float, why: str) -> int:
    """``desk status`` without a token (monitoring from another account):
    the trading state from ``GET /health``, which needs none. Exit 0 ACTIVE,
    3 HALTED or REDUCING or a venue halted, 1 unreachable."""
    from desk.client import DaemonClient, DaemonRefused, DaemonUnreachable

    client = DaemonClient(url, None, timeout=timeout)
    try:
        health = client.health()
    except (DaemonUnreachable, DaemonRefused) as exc:
        sys.stderr.write(f"desk status: daemon unreachable: {exc}\n")
        return 1
    finally:
        client.close()
    state = str(((health or {}).get("components") or {}).get("engine", {}).get("trading_state", "UNKNOWN"))
    halted = sorted(n for n, v in ((health or {}).get("venues") or {}).items() if isinstance(v, dict) and v.get("halted"))
    sys.stdout.write(f"trading_state: {state}\n" + (f"halted_venues: {', '.join(halted)}\n" if halted else "")
                     + f"(from /health: {why}; the token gives the full status)\n")
    if state == "ACTIVE" and halted:
        return 3
    if state == "ACTIVE":
        return EXIT_OK
    return 3 if state in ("HALTED", "REDUCING") else 1


def _cmd_resume(args: Any, client: Any, token: str | None, source: str, state_dir: Path) -> int:
    from desk.client import DaemonRefused, DaemonUnreachable

    if token is None:
        _say(args, source)
        return EXIT_USAGE
    halt = state_dir / "HALT"
    said: str | None = None  # the removed HALT file's text (put back when the daemon refuses the resume)
    if _local_url(client.url) and halt.exists():
        # first, or the daemon would halt again from the file within a second of the resume
        try:
            said = halt.read_text(errors="replace")
            halt.unlink()
        except OSError as exc:
            _say(args, f"cannot remove the HALT file {halt}: {exc.strerror}; the desk would halt again")
            return EXIT_USAGE
        _say(args, f"removed the HALT file {halt} (it said: {said.strip()[:200]}); a desk on {state_dir} no "
                   "longer halts because of it")
    try:
        answer = client.resume(args.reason)
    except DaemonUnreachable as exc:
        _say(args, f"daemon unreachable: {exc}" + (
            "; the HALT file stays removed, and a halt the desk stored stays until a resume reaches it"
            if said is not None else ""))
        return 1
    except DaemonRefused as exc:
        _say(args, f"{client.url} refused the resume: {exc}")
        if said is not None and exc.status_code < 500:
            try:
                halt.write_text(said)
                _say(args, f"put the HALT file {halt} back (the resume was refused)")
            except OSError as err:
                _say(args, f"cannot put the HALT file {halt} back: {err.strerror}")
        return EXIT_USAGE if exc.status_code < 500 else 1
    _print(json.dumps(answer, sort_keys=True))
    return EXIT_OK


def _halt_on_usr1_during_startup(state_dir: Path) -> None:
    """Until the engine's loop installs its own handler, SIGUSR1 writes the
    state dir's ``HALT`` file (the out-of-band halt the engine checks at
    start and while running), so the signal never kills a starting desk.
    Remove the file, then resume, to trade again."""

    def handler(signum: int, frame: Any) -> None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / "HALT").write_text("SIGUSR1 received during start-up\n")
        except OSError:
            pass

    try:
        signal.signal(signal.SIGUSR1, handler)
    except (ValueError, OSError):  # not the main thread
        pass


def _options(args: Any, state_dir: Path, cfg: Any = None) -> Any:
    """RunOptions from the flags, then the config file (``cfg``), then the
    defaults: a flag given on the command line wins over the file.

    Raises:
        ConfigError: the config asks for something this build cannot wire
            (a venue kind, a policy file), or a live venue without --live.
    """
    import dataclasses

    from core.enums import OrderType
    from desk.wiring import DEFAULT_CAPITAL, RunOptions

    if args is None:
        return RunOptions(state_dir=state_dir)
    known = {f.name for f in dataclasses.fields(RunOptions)}
    extra: dict[str, Any] = {}
    data = list(args.data)
    capital = args.capital
    tz = args.tz
    risk = args.risk
    speed = args.speed
    policy = args.policy
    if cfg is not None:
        data = data or list(cfg.data)
        policy = policy or cfg.policy
        risk = risk or cfg.risk
        tz = tz or cfg.tz
        speed = speed if speed is not None else cfg.speed
        paper = [v for v in cfg.venues if v.kind == "paper"]
        cash = paper[0].starting_cash if paper and paper[0].starting_cash is not None else None
        if capital is None:
            capital = cfg.capital if cfg.capital is not None else cash
        if cash is not None and capital is not None and cash != capital and "starting_cash" not in known:
            raise ConfigError(f"venues[{cfg.venues.index(paper[0])}].starting_cash: {cash} differs from the "
                              f"capital {capital}; in this build the paper venue starts with the capital")
        live = cfg.live_venues
        if live and not getattr(args, "live", False):
            raise ConfigError(f"venues {', '.join(live)} trade real money: add --live to run them")
        if "config" in known:
            extra["config"] = cfg  # the wiring builds the venues from it
        else:
            for i, v in enumerate(cfg.venues):
                if v.kind != "paper":
                    raise ConfigError(f"venues[{i}]: kind {v.kind!r} is not wired in this build yet; "
                                      f"only 'paper' is")
    if policy is not None:
        if "policy_file" not in known:
            raise ConfigError(f"policy: {policy}: the governance policy is not wired in this build yet")
        if not Path(policy).is_file():
            raise ConfigError(f"--policy: no such file: {policy}")
        extra["policy_file"] = Path(policy)
    speed = None if speed in (None, "max") else speed
    return RunOptions(
        data=data, symbol=args.symbol.upper() if args.symbol else None,
        exchange_info=args.exchange_info, speed=speed, bars=args.bars, state_dir=state_dir,
        order_type=OrderType(args.order_type), capital=capital if capital is not None else DEFAULT_CAPITAL,
        day_tz=tz or "UTC", risk_file=risk, volume_share=args.volume_share, **extra,
    )


def reconcile(summary: dict[str, Any], engine: Any) -> list[str]:
    """Compare the two books: ``cash_end + Σ quantity × last = equity_end``
    and, per instrument, the venue's base balance = the portfolio's quantity.
    Returns the differences found (empty when reconciled)."""
    problems = []
    total = Decimal(summary["cash_end"])
    for iid, pos in summary["positions"].items():
        total += Decimal(pos["quantity"]) * Decimal(pos["last_price"])
    if total != Decimal(summary["equity_end"]):
        problems.append(f"cash_end + positions = {total} != equity_end {summary['equity_end']}")
    for iid, inst in engine.instruments.items():
        venue_qty = engine.venue.balance(inst.base)
        book_qty = engine.portfolio.quantity(iid)
        if venue_qty != book_qty:
            problems.append(f"{iid}: venue holds {venue_qty} {inst.base}, portfolio {book_qty}")
    return problems


def run_headless(opts: Any, default_bars: int | None) -> int:
    """Build and run the engine without UI; print one JSON summary on stdout.

    Returns the exit code. Raises :class:`DeskError` for refused input.
    """
    from desk.wiring import build

    built = build(opts)
    try:
        for m in built.messages:
            log.info(m)
        if built.finished_summary is not None:
            log.info("this replay already finished on %s; its stored summary follows", opts.state_dir)
            sys.stdout.write(json.dumps(built.finished_summary, sort_keys=True) + "\n")
            if built.finished_summary.get("unreconciled"):
                log.error("it ended with an unreconciled difference: %s", built.finished_summary["unreconciled"])
                return EXIT_UNRECONCILED
            return EXIT_OK
        engine = built.engine
        if built.continued:
            log.info("continuing the run on %s after bar %d", opts.state_dir, engine.stats.bars)
        if engine.trading_state.value != "ACTIVE":
            row = engine.store.conn.execute(
                "SELECT who, reason FROM governance_actions WHERE action=? ORDER BY seq DESC LIMIT 1",
                (engine.trading_state.value,)).fetchone()
            why = f" by {row[0]}: {row[1]}" if row else ""
            log.warning("trading is %s (stored%s): this run opens no new exposure until an operator resumes "
                        "(the TUI on this state dir: palette, Resume trading; a daemon: desk resume or "
                        "POST /resume)", engine.trading_state.value, why)
        # --bars counts the whole run, over its continuations: a continued run does the rest
        max_bars = (max(0, opts.bars - engine.stats.bars) if opts.bars is not None else default_bars)
        t0 = time.perf_counter()
        bars0 = engine.stats.bars
        asyncio.run(_drive(engine, built.continued, max_bars))
        wall = time.perf_counter() - t0
        summary = engine.summary(wall, engine.stats.bars - bars0)
        left = [o for o in engine.working_orders()]
        if left and not engine.stats.finished:
            log.warning("stopped with %d working order(s) left at the venue (%s); the next run on %s "
                        "reconciles them", len(left), ", ".join(o.client_order_id for o in left[:5]),
                        opts.state_dir)
        problems = list(engine.unreconciled) + reconcile(summary, engine)
        code = EXIT_OK
        if problems:
            for p in problems:
                log.error("UNRECONCILED: %s", p)
            summary["unreconciled"] = problems
            summary["trading_state"] = "HALTED"
            code = EXIT_UNRECONCILED
        if engine.stats.finished:
            engine.store.meta_set("status", "finished")
            engine.store.meta_set("summary", json.dumps({**summary, "wall_s": None, "bars_per_s": None}, sort_keys=True))
            engine.flush()
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        sys.stdout.flush()
        return code
    finally:
        built.close()


async def _drive(engine: Any, continued: bool, max_bars: int | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, engine.stop)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: engine.spawn(engine.governance.halt("SIGUSR1", "out-of-band halt signal")))
    except (NotImplementedError, RuntimeError):
        pass
    if not continued:
        log.info("warming the models up")
        await engine.warm_up()
    else:
        await engine.recover()
    progress = asyncio.create_task(_progress(engine))
    try:
        await engine.run(max_bars=max_bars)
    finally:
        progress.cancel()


async def _progress(engine: Any) -> None:
    while True:
        await asyncio.sleep(5)
        pf = engine.portfolio
        log.info("bars=%d equity=%s state=%s working=%d", engine.stats.bars, pf.equity().quantize(Decimal("0.01")),
                 engine.trading_state.value, len(engine.working))


if __name__ == "__main__":
    raise SystemExit(main())
