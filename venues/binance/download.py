"""Download Binance spot klines to a CSV file (``desk data download``).

``GET /api/v3/klines`` (public, request weight 2, at most 1000 rows per
request) through ccxt's implicit API, so the exact decimal strings Binance
sends are written (ccxt's ``fetch_ohlcv`` would turn them into floats).
Two layouts:

* ``ccxt6`` (default): the header ``open_time,open,high,low,close,volume``
  and those six columns, as the desk's recorded files
  (``../shared/data/binance/klines/``);
* ``binance12``: Binance's public-data layout, no header, all twelve
  columns (open_time, open, high, low, close, volume, close_time,
  quote_asset_volume, number_of_trades, taker_buy_base_asset_volume,
  taker_buy_quote_asset_volume, ignore).

Both are read by :func:`venues.klines.load_klines`. Only closed bars are
written (a bar whose ``close_time`` is not before the clock's now is left
for the next run). Resumable: with an existing file, the last row's
``open_time`` is read and the download continues one interval after it;
each page is appended and flushed whole, so a killed download loses at most
the page in flight and never leaves a torn line. Request weight is budgeted
per minute (``venues.binance.weights``); a 429 waits its ``Retry-After``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from core.clock import Clock, LiveClock
from core.errors import EXIT_OK, EXIT_USAGE, ConfigError
from core.venue_errors import TransientVenueError, VenueError
from venues.binance.errors import BinanceBanned, BinanceRateLimited
from venues.binance.weights import WeightBudget, weight_of
from venues.klines import INTERVALS_NS, KLINE_FIELDS

LAYOUTS = ("ccxt6", "binance12")
#: Binance's maximum rows per klines request
MAX_PAGE = 1000
HEADER = ",".join(KLINE_FIELDS)

Progress = Callable[[int, int, int, int], None]


def _last_open_time(path: Path, layout: str) -> int | None:
    """``open_time`` (ms) of the last row of an existing file, or None when
    it has no data row.

    Raises:
        ConfigError: the file's layout is not ``layout`` (named), or its last
            row does not start with an integer time.
    """
    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8", "replace").strip()
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 4096))
        tail = fh.read().decode("utf-8", "replace")
    if not head:
        return None
    has_header = head.lower().startswith("open_time")
    if has_header != (layout == "ccxt6"):
        raise ConfigError(f"{path}: the file is in the {'ccxt6' if has_header else 'binance12'} layout, not "
                          f"--layout {layout}")
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines or (has_header and lines[-1].strip() == head):
        return None
    last = lines[-1].split(",")[0].strip()
    try:
        return int(last)
    except ValueError:
        raise ConfigError(f"{path}: last row's open_time is not an integer: {last!r}") from None


def _translate(exc: Exception) -> Exception:
    import ccxt.async_support as ccxt_async

    from venues.binance.errors import BinanceRejected
    from venues.binance.exchange import redact

    if isinstance(exc, ccxt_async.NetworkError):
        return TransientVenueError("BINANCE", f"klines: {type(exc).__name__}: {redact(str(exc))[:200]}",
                                   kind="disconnected")
    if isinstance(exc, ccxt_async.BaseError):
        return BinanceRejected("BINANCE", f"klines: {redact(str(exc))[:300]}")
    return exc


def _row(r: list[Any], layout: str) -> str:
    if layout == "ccxt6":
        return ",".join(str(x) for x in r[:6])
    return ",".join(str(x) for x in r[:12])


async def download_klines(symbol: str, interval: str, since_ms: int, until_ms: int | None, out_path: str | Path, *,
                          exchange: Any = None, layout: str = "ccxt6", progress: Progress | None = None,
                          clock: Clock | None = None, page_limit: int = MAX_PAGE,
                          sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> int:
    """Append the closed klines of ``symbol`` from ``since_ms`` (inclusive)
    to ``until_ms`` (exclusive; None: up to now) to ``out_path``; returns the
    number of rows written by this call.

    Args:
        symbol: Binance symbol (``BTCUSDT``; upper-cased).
        interval: a fixed-length Binance interval (``1m``, ``5m``, ``1h``...).
        since_ms, until_ms: bar open times, UTC epoch milliseconds.
        out_path: the CSV file; created (with parents) or continued after its
            last row.
        exchange: a ccxt binance (``DeskBinance``); by default a public one on
            Binance's production endpoints (market data needs no key), closed
            at the end.
        layout: ``ccxt6`` or ``binance12`` (see the module docstring).
        progress: called after each page with ``(rows written so far, open
            time reached (ms), start (ms), end (ms))``, and once at the end
            with the end as the time reached.
        clock: decides which bars are closed (default: the system clock).
        page_limit: rows per request (1..1000).
        sleep: how to wait for the next weight window or a ``Retry-After``.

    Raises:
        ValueError: a bad interval, layout, page limit or time range (named).
        ConfigError: an existing file in another layout.
        VenueError: the venue refused (a 418 ban, a bad symbol) or could not
            be reached.
    """
    step_ns = INTERVALS_NS.get(interval)
    if step_ns is None:
        raise ValueError(f"interval: {interval!r} is not one of {', '.join(INTERVALS_NS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not 1 <= page_limit <= MAX_PAGE:
        raise ValueError(f"page_limit: must be 1..{MAX_PAGE}, got {page_limit}")
    if until_ms is not None and until_ms <= since_ms:
        raise ValueError(f"until: {until_ms} must be after since {since_ms}")
    step_ms = step_ns // 1_000_000
    clock = clock or LiveClock()
    symbol = symbol.strip().upper()
    path = Path(out_path)
    start = since_ms
    new_file = not path.exists() or path.stat().st_size == 0
    if not new_file:
        last = _last_open_time(path, layout)
        if last is not None:
            start = max(start, last + step_ms)
    own = exchange is None
    budget = WeightBudget(clock, 6000)
    if own:
        from venues.binance.exchange import make_exchange

        exchange = make_exchange(clock=clock, testnet=False, venue_name="BINANCE")
    written = 0
    end_ms = until_ms if until_ms is not None else clock.timestamp_ns() // 1_000_000
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8", newline="") as fh:
            if new_file and layout == "ccxt6":
                fh.write(HEADER + "\n")
                fh.flush()
            while until_ms is None or start < until_ms:
                refusal = budget.charge(weight_of("public", "GET", "klines"))
                if refusal is not None:
                    await sleep(refusal.retry_after_ns / 1e9)
                    continue
                params: dict[str, Any] = {"symbol": symbol, "interval": interval, "startTime": start,
                                          "limit": page_limit}
                if until_ms is not None:
                    params["endTime"] = until_ms - 1
                try:
                    rows = await exchange.publicGetKlines(params)
                except BinanceBanned:
                    raise
                except BinanceRateLimited as exc:
                    await sleep(exc.retry_after_ns / 1e9)
                    continue
                except VenueError:
                    raise
                except Exception as exc:  # ccxt's own: network errors, bad symbol
                    raise _translate(exc) from None
                now_ms = clock.timestamp_ns() // 1_000_000
                page = [r for r in rows if int(r[0]) >= start and int(r[6]) < now_ms
                        and (until_ms is None or int(r[0]) < until_ms)]
                if page:
                    fh.write("".join(_row(r, layout) + "\n" for r in page))
                    fh.flush()
                    written += len(page)
                    start = int(page[-1][0]) + step_ms
                if progress is not None:
                    progress(written, start, since_ms, end_ms)
                if len(page) < len(rows) or len(rows) < page_limit or not page:
                    break
            if progress is not None:
                progress(written, max(start, end_ms), since_ms, end_ms)  # done: up to the end
    finally:
        if own:
            exchange.timeout_on_exit = 0
            await exchange.close()
    return written


def parse_when(text: str, field: str) -> int:
    """A date (``2025-01-01``, UTC midnight), an ISO date-time (UTC unless it
    says otherwise) or epoch milliseconds, as epoch milliseconds.

    Raises:
        ValueError: naming ``field`` and the text.
    """
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: expected YYYY-MM-DD, an ISO date-time or epoch ms, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _bar(written: int, reached: int, start: int, end: int) -> str:
    span = max(1, end - start)
    frac = min(1.0, max(0.0, (reached - start) / span))
    filled = int(frac * 30)
    return f"\r[{'#' * filled}{'.' * (30 - filled)}] {frac * 100:5.1f}% {written} rows"


def download_main(argv: list[str] | None = None, *, urls: dict[str, str] | None = None,
                  clock: Clock | None = None) -> int:
    """``desk data download SYMBOL INTERVAL --since WHEN [--until WHEN]
    [--out FILE] [--layout ccxt6|binance12]``: download klines (see
    :func:`download_klines`), a progress bar on stderr, one summary line on
    stdout. ``urls`` (tests) points ccxt at another server. Returns the exit
    code: 0 done, 2 bad input or the venue refused or could not be reached.
    """
    p = argparse.ArgumentParser(prog="desk data download", description="Download Binance spot klines to CSV.")
    p.add_argument("symbol", help="Binance symbol, e.g. BTCUSDT")
    p.add_argument("interval", help=f"kline interval: {', '.join(INTERVALS_NS)}")
    p.add_argument("--since", required=True, help="first bar open time: YYYY-MM-DD, ISO date-time or epoch ms (UTC)")
    p.add_argument("--until", help="stop before this open time (default: now)")
    p.add_argument("--out", help="CSV file (default ./data/SYMBOL-INTERVAL.csv); continued when it exists")
    p.add_argument("--layout", choices=LAYOUTS, default="ccxt6", help="ccxt6 (header, 6 columns) or binance12")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        since = parse_when(args.since, "--since")
        until = parse_when(args.until, "--until") if args.until else None
        out = Path(args.out) if args.out else Path("data") / f"{args.symbol.upper()}-{args.interval}.csv"
        clk = clock or LiveClock()

        def show(written: int, reached: int, start: int, end: int) -> None:
            sys.stderr.write(_bar(written, reached, start, end))
            sys.stderr.flush()

        async def run() -> int:
            exchange = None
            if urls is not None:
                from venues.binance.exchange import make_exchange

                exchange = make_exchange(clock=clk, urls=urls)
            try:
                return await download_klines(args.symbol, args.interval, since, until, out, exchange=exchange,
                                             layout=args.layout, progress=show, clock=clk)
            finally:
                if exchange is not None:
                    exchange.timeout_on_exit = 0
                    await exchange.close()

        n = asyncio.run(run())
    except (ValueError, ConfigError) as exc:
        sys.stderr.write(f"desk data download: {exc}\n")
        return EXIT_USAGE
    except VenueError as exc:
        sys.stderr.write(f"\ndesk data download: {exc}\n")
        return EXIT_USAGE
    sys.stderr.write("\n")
    print(f"{out}: {n} rows written ({args.symbol.upper()} {args.interval}, {args.layout})")
    return EXIT_OK
