"""The ``desk`` command line.

``desk [--state-dir D]`` runs the embedded default; ``desk run [--data FILE
...] [--symbol S] [--exchange-info FILE] [--speed N|max] [--bars N]
[--headless] [--order-type LIMIT|MARKET]`` runs a replay or the SIM market.
Exit codes (DESIGN.md section 1): 0 done (also when a rail halted trading),
2 usage / bad input / bad config / state dir refused, 3 ended halted by an
unreconciled difference.

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
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence

from core.errors import EXIT_OK, EXIT_UNRECONCILED, EXIT_USAGE, DeskError

log = logging.getLogger("desk")



class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

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
    run.add_argument("--tz", type=_tz, default="UTC", metavar="ZONE",
                     help="IANA time zone of the venue day (daily PnL, daily loss limit; default UTC)")
    run.add_argument("--capital", type=_capital, default=Decimal("10000"),
                     help="trading capital and starting cash, quote currency (default 10000)")
    check = sub.add_parser("check-store", parents=[common],
                           help="rebuild the store's tables from its journal and report differences")
    check.add_argument("--apply", action="store_true", help="rewrite the tables that differ from the journal")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``desk`` console script; returns the exit code."""
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    _halt_on_usr1_during_startup(getattr(args, "state_dir", Path("var")))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    state_dir = getattr(args, "state_dir", Path("var"))
    try:
        if args.command is None:
            from desk.app import run_app  # textual is imported only for the UI

            return run_app(_options(None, state_dir))
        if args.command == "check-store":
            from desk.check_store import run_check_store

            return run_check_store(state_dir, apply=args.apply)
        if args.command == "run":
            opts = _options(args, state_dir)
            if not args.headless:
                from desk.app import run_app

                return run_app(opts, max_speed=args.speed == "max")
            return run_headless(opts, default_bars=None)
    except DeskError as exc:
        sys.stderr.write(f"desk: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_USAGE


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


def _options(args: Any, state_dir: Path) -> Any:
    from core.enums import OrderType
    from desk.wiring import RunOptions

    if args is None:
        return RunOptions(state_dir=state_dir)
    speed = None if args.speed in (None, "max") else args.speed
    return RunOptions(
        data=list(args.data), symbol=args.symbol.upper() if args.symbol else None,
        exchange_info=args.exchange_info, speed=speed, bars=args.bars, state_dir=state_dir,
        order_type=OrderType(args.order_type), capital=args.capital, day_tz=args.tz, risk_file=args.risk,
        volume_share=args.volume_share,
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
        # --bars counts the whole run, over its continuations: a continued run does the rest
        max_bars = (max(0, opts.bars - engine.stats.bars) if opts.bars is not None else default_bars)
        t0 = time.perf_counter()
        bars0 = engine.stats.bars
        asyncio.run(_drive(engine, built.continued, max_bars))
        wall = time.perf_counter() - t0
        summary = engine.summary(wall, engine.stats.bars - bars0)
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
