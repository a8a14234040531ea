"""Binance instruments from ccxt's markets, read from the exact filter
strings of ``exchangeInfo``.

ccxt's unified ``precision`` and ``limits`` are floats; the desk reads the
filters from ``market['info']['filters']`` (the raw ``exchangeInfo`` symbol
entry) with :mod:`venues.filters`' parser: ``PRICE_FILTER.tickSize``,
``LOT_SIZE.stepSize/minQty/maxQty``, ``NOTIONAL.minNotional/maxNotional``
(2023 on) or ``MIN_NOTIONAL.minNotional`` (older responses). A symbol whose
``status`` is not ``TRADING`` (``BREAK``, ``HALT``...) is refused.

Names: the desk writes ``BTCUSDT.BINANCE`` (spot) and
``BTCUSDT-PERP.BINANCE`` (USD-M perpetual); ccxt's unified symbols are
``BTC/USDT`` and ``BTC/USDT:USDT``; Binance's own id is ``BTCUSDT`` for both.
"""

from __future__ import annotations

from typing import Any, Mapping

from core.errors import ConfigError
from core.identifiers import InstrumentId
from core.instruments import Instrument
from venues.binance.errors import BinanceStartupError
from venues.filters import SymbolFilters, _symbol_filters, instrument_from_filters

PERP_SUFFIX = "-PERP"


def desk_symbol(market: Mapping[str, Any]) -> str:
    """The desk's symbol of a ccxt market: Binance's id (``BTCUSDT``), with
    ``-PERP`` for a perpetual swap."""
    sym = str(market["id"]).upper()
    return sym + PERP_SUFFIX if market.get("swap") else sym


def unified_symbol(symbol: str, markets: Mapping[str, Mapping[str, Any]], market_type: str = "spot") -> str:
    """ccxt's unified symbol for a desk symbol: ``BTCUSDT`` -> ``BTC/USDT``
    (spot), ``BTCUSDT-PERP`` -> ``BTC/USDT:USDT`` (USD-M).

    Raises:
        BinanceStartupError: naming the symbol when the loaded markets have
            no such market of that type.
    """
    sym = symbol.strip().upper()
    want_swap = sym.endswith(PERP_SUFFIX) or market_type == "usdm"
    venue_id = sym[: -len(PERP_SUFFIX)] if sym.endswith(PERP_SUFFIX) else sym
    for unified, m in markets.items():
        if str(m.get("id", "")).upper() != venue_id:
            continue
        if want_swap and m.get("swap") and m.get("linear"):
            return unified
        if not want_swap and m.get("spot"):
            return unified
    kind = "USD-M perpetual" if want_swap else "spot"
    raise BinanceStartupError(f"symbols: {symbol!r} is not a Binance {kind} market in exchangeInfo")


def symbol_filters(market: Mapping[str, Any]) -> SymbolFilters:
    """The filters of one ccxt market, parsed from ``market['info']`` (the raw
    exchangeInfo entry) by :mod:`venues.filters`, exact Decimals.

    Raises:
        BinanceStartupError: when a filter is missing or not a decimal string
            (naming the symbol and the filter).
    """
    info = market.get("info")
    try:
        return _symbol_filters("BINANCE exchangeInfo", _spot_view(info), 0)
    except ConfigError as exc:
        raise BinanceStartupError(str(exc)) from None


def _spot_view(info: Any) -> Any:
    """venues.filters refuses entries with ``contractType`` (it parses spot
    files); a USD-M entry is parsed the same way without that key."""
    if isinstance(info, dict) and "contractType" in info:
        view = dict(info)
        view.pop("contractType")
        return view
    return info


def instrument_of(market: Mapping[str, Any], venue: str) -> Instrument:
    """The :class:`core.instruments.Instrument` of a ccxt market, with the
    filters of :func:`symbol_filters` (``filters_source="exchange-info"``).

    Raises:
        BinanceStartupError: the symbol's status is not ``TRADING`` (named
            with its status), a USD-M contract whose ``contractType`` is not
            ``PERPETUAL``, or its filters are missing.
    """
    f = symbol_filters(market)
    info = market.get("info") or {}
    status = info.get("status")
    if "contractType" in info and info.get("contractType") != "PERPETUAL":
        raise BinanceStartupError(
            f"{venue}: symbol {f.symbol} is a {info.get('contractType')} contract, not PERPETUAL; the desk trades "
            f"USD-M perpetuals only")
    if status != "TRADING":
        raise BinanceStartupError(
            f"{venue}: symbol {f.symbol} has status {status} in exchangeInfo, not TRADING; refused")
    inst = instrument_from_filters(f, venue, "exchange-info")
    if market.get("swap"):
        inst = Instrument(id=InstrumentId(desk_symbol(market), venue), base=inst.base, quote=inst.quote,
                          tick_size=inst.tick_size, step_size=inst.step_size, min_qty=inst.min_qty,
                          max_qty=inst.max_qty, min_notional=inst.min_notional, max_notional=inst.max_notional,
                          filters_source="exchange-info")
    return inst


def instruments_for(symbols: list[str] | tuple[str, ...], markets: Mapping[str, Mapping[str, Any]], venue: str,
                    market_type: str = "spot") -> tuple[dict[InstrumentId, Instrument], dict[InstrumentId, str]]:
    """Instruments of the configured ``symbols`` and their ccxt unified
    symbols: ``({InstrumentId: Instrument}, {InstrumentId: "BTC/USDT"})``.

    Raises:
        BinanceStartupError: an unknown symbol, a status other than
            ``TRADING``, missing filters, or instruments that do not share one
            quote currency (the engine keeps one cash currency per venue).
    """
    if not symbols:
        raise BinanceStartupError(f"{venue}: symbols: at least one symbol is required")
    out: dict[InstrumentId, Instrument] = {}
    unified: dict[InstrumentId, str] = {}
    for s in symbols:
        u = unified_symbol(s, markets, market_type)
        inst = instrument_of(markets[u], venue)
        out[inst.id] = inst
        unified[inst.id] = u
    quotes = {i.quote for i in out.values()}
    if len(quotes) > 1:
        raise BinanceStartupError(f"{venue}: symbols: all must share one quote currency, got {sorted(quotes)}")
    return out, unified


def market_lot(market: Mapping[str, Any]) -> tuple[Any, Any, Any] | None:
    """``(minQty, maxQty, stepSize)`` of the ``MARKET_LOT_SIZE`` filter of a
    ccxt market (exact Decimals from ``market['info']['filters']``; USD-M
    futures limit MARKET orders with it, e.g. BTCUSDT maxQty 1000 where
    LOT_SIZE allows more for limits), or None when the symbol has none.

    Raises:
        BinanceStartupError: a value that is not a decimal string (named).
    """
    from decimal import Decimal, InvalidOperation

    for f in (market.get("info") or {}).get("filters") or []:
        if isinstance(f, dict) and f.get("filterType") == "MARKET_LOT_SIZE":
            try:
                return Decimal(str(f["minQty"])), Decimal(str(f["maxQty"])), Decimal(str(f["stepSize"]))
            except (KeyError, InvalidOperation):
                raise BinanceStartupError(
                    f"{market.get('id')}: MARKET_LOT_SIZE filter unreadable: {f!r}") from None
    return None
