"""Instrument filters: from Binance ``exchangeInfo``, a built-in table, or the data.

Binance spot symbol filters (Binance Spot API docs, "Filters"):
``PRICE_FILTER.tickSize`` (price increment), ``LOT_SIZE.stepSize`` /
``minQty`` / ``maxQty`` (quantity increment and bounds, base units), the old
``MIN_NOTIONAL.minNotional`` (replaced in 2023 by ``NOTIONAL`` with
``minNotional`` and ``maxNotional``; quote units). Values are read from the
JSON *strings* into Decimal, never through float.

Where filters come from, in order (:func:`resolve_instrument`): an
exchangeInfo file when one is given and it lists the symbol; else the
built-in table :data:`BUILTIN_SPOT_FILTERS`; else inferred from the bars
(:func:`infer_filters`), which the caller reports once to the operator.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType

from core.data import Bar
from core.errors import ConfigError
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.values import ZERO, dec_str
from venues.klines import base_asset_of, quote_asset_of

#: defaults used by :func:`infer_filters` (the finest Binance spot BTC step,
#: and the NOTIONAL.minNotional of USDT pairs in the 2023-09-08 exchangeInfo)
INFERRED_STEP_SIZE = Decimal("0.00001")
INFERRED_MIN_NOTIONAL = Decimal("5")


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """The trading filters of one spot symbol.

    Attributes:
        symbol: venue symbol (``BTCUSDT``).
        status: Binance symbol status (``TRADING``, ``BREAK``, ...).
        base_asset, quote_asset: ``BTC``, ``USDT``.
        tick_size: price increment, quote per base unit (> 0).
        step_size: quantity increment, base units (> 0).
        min_qty: smallest quantity, base units.
        max_qty: largest quantity, base units, or ``None`` when unknown.
        min_notional: smallest price × quantity, quote units (0 when none).
        max_notional: largest price × quantity, quote units, or ``None``.
    """

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal | None = None
    min_notional: Decimal = ZERO
    max_notional: Decimal | None = None


def canonical_decimal(value: Decimal) -> Decimal:
    """Drop insignificant trailing zeros without switching to exponent form.

    ``Decimal("0.01000000")`` → ``Decimal("0.01")``; ``Decimal("9000.00000000")``
    → ``Decimal("9000")`` (plain ``normalize()`` would give ``9E+3``). The
    value is unchanged; prices rounded to such a tick print with the tick's
    own number of decimals.
    """
    norm = value.normalize()
    if norm.as_tuple().exponent > 0:  # type: ignore[operator]
        return norm.quantize(Decimal(1))
    return norm


def _filter_decimal(path: str, symbol: str, filter_type: str, key: str, raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
        raise ConfigError(f"{path}: {symbol} {filter_type}.{key}: expected a decimal string, got {raw!r}")
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise ConfigError(f"{path}: {symbol} {filter_type}.{key}: not a number: {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{path}: {symbol} {filter_type}.{key}: must be a finite number >= 0, got {raw!r}")
    return canonical_decimal(value)


def _symbol_filters(path: str, entry: object, index: int) -> SymbolFilters:
    if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
        raise ConfigError(f"{path}: symbols[{index}]: expected an object with a 'symbol' string")
    sym = entry["symbol"]
    raw_filters = entry.get("filters")
    if not isinstance(raw_filters, list):
        raise ConfigError(f"{path}: {sym}: 'filters' missing or not a list")
    by_type: dict[str, dict] = {}
    for f in raw_filters:
        if isinstance(f, dict) and isinstance(f.get("filterType"), str):
            by_type[f["filterType"]] = f

    def need(filter_type: str, key: str) -> Decimal:
        f = by_type.get(filter_type)
        if f is None or key not in f:
            raise ConfigError(f"{path}: {sym}: filter {filter_type}.{key} missing")
        return _filter_decimal(path, sym, filter_type, key, f[key])

    def opt(filter_type: str, key: str) -> Decimal | None:
        f = by_type.get(filter_type)
        if f is None or key not in f:
            return None
        return _filter_decimal(path, sym, filter_type, key, f[key])

    tick = need("PRICE_FILTER", "tickSize")
    step = need("LOT_SIZE", "stepSize")
    min_qty = need("LOT_SIZE", "minQty")
    max_qty = opt("LOT_SIZE", "maxQty")
    # NOTIONAL (2023 on) supersedes MIN_NOTIONAL (older responses)
    min_notional = opt("NOTIONAL", "minNotional")
    if min_notional is None:
        min_notional = opt("MIN_NOTIONAL", "minNotional")
    if min_notional is None:  # USD-M futures spell it MIN_NOTIONAL.notional
        min_notional = opt("MIN_NOTIONAL", "notional")
    if "contractType" in entry:
        raise ConfigError(
            f"{path}: {sym} is a futures contract (contractType {entry.get('contractType')!r}): "
            f"this exchangeInfo is not a spot one; the desk replays spot klines"
        )
    max_notional = opt("NOTIONAL", "maxNotional")

    base = entry.get("baseAsset")
    quote = entry.get("quoteAsset")
    try:
        base = base if isinstance(base, str) and base else base_asset_of(sym)
        quote = quote if isinstance(quote, str) and quote else quote_asset_of(sym)
    except ValueError:
        raise ConfigError(f"{path}: {sym}: 'baseAsset'/'quoteAsset' missing") from None
    status = entry.get("status")
    return SymbolFilters(
        symbol=sym,
        status=status if isinstance(status, str) else "UNKNOWN",
        base_asset=base,
        quote_asset=quote,
        tick_size=tick,
        step_size=step,
        min_qty=min_qty,
        max_qty=max_qty,
        min_notional=min_notional if min_notional is not None else ZERO,
        max_notional=max_notional,
    )


def load_exchange_info(path: str | Path) -> dict[str, SymbolFilters]:
    """Read a Binance ``GET /api/v3/exchangeInfo`` response saved as JSON.

    Args:
        path: plain JSON, or gzip (recognised by its magic bytes, so the
            ``.gz`` suffix is optional).

    Returns:
        ``{symbol: SymbolFilters}`` for every entry of ``symbols`` (any
        status; :func:`resolve_instrument` refuses non-``TRADING`` ones).
        Filter values are the exact Decimal values of the strings in
        ``filters`` (``PRICE_FILTER.tickSize``, ``LOT_SIZE.stepSize/minQty/
        maxQty``, ``NOTIONAL.minNotional/maxNotional`` or the older
        ``MIN_NOTIONAL.minNotional``), with trailing zeros dropped
        (:func:`canonical_decimal`).

    Raises:
        ConfigError: one line naming the file, for an unreadable file, bad
            gzip, bad JSON, a missing or non-list ``symbols``, or a symbol
            without PRICE_FILTER.tickSize / LOT_SIZE.stepSize / minQty, or a
            tick or step of zero.
    """
    spath = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        doc = json.loads(raw, parse_float=Decimal)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # BadGzipFile is an OSError: first
        raise ConfigError(f"{spath}: exchange info is not valid gzip: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{spath}: cannot read exchange info: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{spath}: exchange info is not UTF-8 text: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{spath}: exchange info is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("symbols"), list):
        raise ConfigError(f"{spath}: not a Binance exchangeInfo response: no 'symbols' list")
    out: dict[str, SymbolFilters] = {}
    for i, entry in enumerate(doc["symbols"]):
        sf = _symbol_filters(spath, entry, i)
        if sf.tick_size <= 0 or sf.step_size <= 0:
            raise ConfigError(f"{spath}: {sf.symbol}: tickSize and stepSize must be > 0, "
                              f"got {dec_str(sf.tick_size)} and {dec_str(sf.step_size)}")
        out[sf.symbol] = sf
    return out


def _builtin(sym: str, base: str, quote: str, tick: str, step: str, max_qty: str) -> SymbolFilters:
    return SymbolFilters(sym, "TRADING", base, quote, Decimal(tick), Decimal(step), Decimal(step),
                         Decimal(max_qty), Decimal("5"), Decimal("9000000"))


#: Binance spot filters of common USDT pairs, copied from the exchangeInfo of
#: 2023-09-08 (../shared/data/exchange-info/binance-spot-exchangeInfo-2023-09-08-full.json.gz):
#: PRICE_FILTER.tickSize, LOT_SIZE.stepSize (= minQty for all eight) and
#: maxQty, NOTIONAL.minNotional 5 and maxNotional 9000000 (USDT).
#: tests/unit/test_filters.py checks every entry against that file.
BUILTIN_SPOT_FILTERS: Mapping[str, SymbolFilters] = MappingProxyType({
    f.symbol: f
    for f in (
        #         symbol      base    quote   tickSize    stepSize    maxQty
        _builtin("BTCUSDT", "BTC", "USDT", "0.01", "0.00001", "9000"),
        _builtin("ETHUSDT", "ETH", "USDT", "0.01", "0.0001", "9000"),
        _builtin("BNBUSDT", "BNB", "USDT", "0.1", "0.001", "900000"),
        _builtin("SOLUSDT", "SOL", "USDT", "0.01", "0.01", "90000"),
        _builtin("XRPUSDT", "XRP", "USDT", "0.0001", "1", "9222449"),
        _builtin("ADAUSDT", "ADA", "USDT", "0.0001", "0.1", "900000"),
        _builtin("LTCUSDT", "LTC", "USDT", "0.01", "0.001", "90000"),
        _builtin("DOGEUSDT", "DOGE", "USDT", "0.00001", "1", "9000000"),
    )
})


def _finest_exponent(value: Decimal) -> int:
    """Exponent of the last significant digit (0.0285 → -4, 19720 → 1)."""
    sign, digits, exp = value.as_tuple()
    if not digits or digits == (0,):
        return 0
    n = len(digits)
    i = n - 1
    while i > 0 and digits[i] == 0:
        i -= 1
    return exp + (n - 1 - i)  # type: ignore[operator]


def infer_filters(symbol: str, bars: Iterable[Bar]) -> SymbolFilters:
    """Guess filters for a symbol known neither to exchangeInfo nor the table.

    tick size: the finest price increment seen, i.e. ``10**e`` with ``e`` the
    smallest exponent of the last significant digit over every open, high,
    low and close (``105597.1`` and ``105554.31`` → 0.01), at most 1;
    step size :data:`INFERRED_STEP_SIZE` (0.00001), ``min_qty`` = step,
    min notional :data:`INFERRED_MIN_NOTIONAL` (5, quote units); no maxima.

    Args:
        symbol: a Binance-style symbol (``ADABTC``); base and quote come from
            :func:`venues.klines.base_asset_of` / ``quote_asset_of``.
        bars: the instrument's bars (at least one).

    Raises:
        ValueError: naming the symbol when there are no bars or its quote
            asset cannot be told.
    """
    quote = quote_asset_of(symbol)
    base = base_asset_of(symbol)
    finest: int | None = None
    for b in bars:
        e = min(_finest_exponent(b.open), _finest_exponent(b.high),
                _finest_exponent(b.low), _finest_exponent(b.close))
        if finest is None or e < finest:
            finest = e
    if finest is None:
        raise ValueError(f"symbol {symbol!r}: no bars to infer a tick size from")
    tick = Decimal((0, (1,), min(finest, 0)))
    return SymbolFilters(
        symbol=symbol.upper(),
        status="TRADING",
        base_asset=base,
        quote_asset=quote,
        tick_size=tick,
        step_size=INFERRED_STEP_SIZE,
        min_qty=INFERRED_STEP_SIZE,
        max_qty=None,
        min_notional=INFERRED_MIN_NOTIONAL,
        max_notional=None,
    )


def instrument_from_filters(filters: SymbolFilters, venue: str, source: str) -> Instrument:
    """Build a :class:`core.instruments.Instrument` ``SYMBOL.VENUE`` from filters.

    Raises:
        ValueError: for an invalid symbol/venue or non-positive tick/step.
    """
    return Instrument(
        id=InstrumentId(filters.symbol, venue),
        base=filters.base_asset,
        quote=filters.quote_asset,
        tick_size=filters.tick_size,
        step_size=filters.step_size,
        min_qty=filters.min_qty,
        max_qty=filters.max_qty,
        min_notional=filters.min_notional,
        max_notional=filters.max_notional,
        filters_source=source,
    )


def _describe(f: SymbolFilters) -> str:
    return (f"tick {dec_str(f.tick_size)}, step {dec_str(f.step_size)}, min qty {dec_str(f.min_qty)}, "
            f"min notional {dec_str(f.min_notional)} {f.quote_asset}")


def resolve_instrument(
    symbol: str,
    venue: str,
    bars: Iterable[Bar],
    exchange_info: Mapping[str, SymbolFilters] | None,
) -> tuple[Instrument, str]:
    """Pick the filters of ``symbol`` and build its Instrument.

    Order: ``exchange_info`` when given and it lists the symbol
    (``filters_source="exchange-info"``); else :data:`BUILTIN_SPOT_FILTERS`
    (``"builtin"``); else :func:`infer_filters` over ``bars`` (``"inferred"``).

    Args:
        symbol: venue symbol (upper-cased here).
        venue: venue name for the instrument id (``BINANCE``, ``SIM``).
        bars: the symbol's bars; read only when the filters are inferred.
        exchange_info: the result of :func:`load_exchange_info`, or ``None``.

    Returns:
        ``(instrument, message)``; the message says where the filters came
        from (and, for a fallback, why), for the caller to log once.

    Raises:
        ConfigError: the symbol is in ``exchange_info`` with a status other
            than ``TRADING`` (named with its status), or nothing is known and
            the filters cannot be inferred (no bars, unknown quote asset).
    """
    sym = symbol.strip().upper()
    iid = f"{sym}.{venue}"
    prefix = ""
    if exchange_info is not None:
        f = exchange_info.get(sym)
        if f is not None:
            if f.status != "TRADING":
                raise ConfigError(f"{iid}: symbol {sym} has status {f.status} in the exchange info, not TRADING")
            return (instrument_from_filters(f, venue, "exchange-info"),
                    f"{iid}: filters from exchange info ({_describe(f)})")
        prefix = f"the exchange info does not list {sym}; "
    f = BUILTIN_SPOT_FILTERS.get(sym)
    if f is not None:
        return (instrument_from_filters(f, venue, "builtin"),
                f"{iid}: {prefix}filters from the built-in table of Binance spot filters "
                f"of 2023-09-08 ({_describe(f)})")
    try:
        f = infer_filters(sym, bars)
    except ValueError as exc:
        raise ConfigError(f"{iid}: {prefix}no known filters and none can be inferred: {exc}") from None
    return (instrument_from_filters(f, venue, "inferred"),
            f"{iid}: {prefix}no exchange info or built-in filters for {sym}; inferred from the data: "
            f"{_describe(f)} (check them before trading live)")
