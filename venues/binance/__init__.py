"""Binance venue through ccxt (async): spot trading on the testnet or live,
and USD-M perpetual futures on demo trading or live.

Modules: ``adapter`` (:class:`~venues.binance.adapter.BinanceVenue`, the
engine's venue), ``usdm`` (:class:`~venues.binance.usdm.BinanceUsdmVenue`,
``market: usdm``), ``exchange`` (ccxt's binance subclassed: injected clock,
request gate, typed errors), ``instruments`` (filters from exchangeInfo's
strings), ``errors`` (typed errors over ``core.venue_errors``), ``weights``
(request-weight budget on the engine clock), ``download`` (klines to CSV,
``desk data download``). Importing this package imports no ccxt; the
modules that need it import it (ccxt's import costs ~0.6 s).
"""
