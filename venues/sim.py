"""The embedded SIM market: a seeded Markov regime-switching random walk of bars.

Each symbol follows its own hidden three-state Markov chain (a Hamilton-style
regime-switching model); in regime ``s`` the log return of a bar is
``N(drift_s * m, (vol_s * m)**2)`` with ``m`` the symbol's volatility
multiplier. Within a bar the log price is taken as a Brownian bridge from 0
to the bar's return ``r`` with variance ``sigma**2`` over the bar, whose
maximum and minimum are sampled exactly (reflection principle, e.g.
Glasserman, *Monte Carlo Methods in Financial Engineering*, section 6.4):

    max = (r + sqrt(r**2 - 2 sigma**2 ln U)) / 2,  min = (r - sqrt(r**2 - 2 sigma**2 ln V)) / 2

so high and low always bracket open and close. Prices are Decimal, rounded to
the instrument tick (high up, low down), volumes rounded down to the step.

Randomness: ``SeedSequence(seed).spawn(3)`` gives three independent streams:
the live steps (one ``Generator(PCG64)``, saved by :meth:`SimMarket.state_dict`),
the warm-up history (:meth:`SimMarket.history`, so calling it never changes the
live bars) and the initial regimes. Nothing here reads the wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from types import MappingProxyType
from typing import Any

import numpy as np

from core.data import Bar
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.values import dec_str, floor_to_step, round_to_tick
from venues.filters import BUILTIN_SPOT_FILTERS, instrument_from_filters

SIM_VENUE = "SIM"
#: 2025-01-01T00:00:00Z in UTC nanoseconds (1735689600 s since the epoch)
SIM_START_NS = 1_735_689_600 * 1_000_000_000
ONE_MINUTE_NS = 60 * 1_000_000_000
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Regime:
    """One hidden market regime.

    Attributes:
        name: label for the UI.
        drift: mean log return per 1-minute bar (before the symbol multiplier).
        vol: standard deviation of the log return per 1-minute bar.
        volume_mult: multiplier of the symbol's mean volume per bar.
    """

    name: str
    drift: float
    vol: float
    volume_mult: float


#: the three regimes (index = regime number returned by ``regime_of``);
#: calm vol 0.05-0.07 %/minute (about 2-2.7 %/day), volatile 0.22 %/minute
REGIMES: tuple[Regime, ...] = (
    Regime("calm-up", 5.5e-5, 0.0005, 1.0),
    Regime("calm-flat", -1.0e-5, 0.0007, 1.2),
    Regime("volatile-down", -1.2e-4, 0.0022, 2.5),
)

#: regime transition matrix per bar, rows sum to 1; sticky diagonals give
#: mean stays of 200, 143 and 100 bars. Stationary law about (0.44, 0.39,
#: 0.16), mean drift about +1e-6 per bar.
TRANSITION: tuple[tuple[float, ...], ...] = (
    (0.995, 0.004, 0.001),
    (0.004, 0.993, 0.003),
    (0.004, 0.006, 0.990),
)


@dataclass(frozen=True, slots=True)
class SimSymbol:
    """Per-symbol SIM parameters: start price (quote), volatility multiplier,
    mean volume per 1-minute bar (base units)."""

    start_price: str
    vol_mult: float
    mean_volume: float


#: symbols the SIM venue can list (each also has builtin filters)
SIM_SYMBOLS: Mapping[str, SimSymbol] = MappingProxyType({
    "BTCUSDT": SimSymbol("60000", 1.0, 12.0),
    "ETHUSDT": SimSymbol("3000", 1.25, 250.0),
    "BNBUSDT": SimSymbol("600", 1.1, 400.0),
    "SOLUSDT": SimSymbol("150", 1.6, 3000.0),
    "XRPUSDT": SimSymbol("0.6", 1.4, 300000.0),
    "ADAUSDT": SimSymbol("0.45", 1.4, 400000.0),
    "LTCUSDT": SimSymbol("80", 1.2, 800.0),
    "DOGEUSDT": SimSymbol("0.15", 1.7, 2000000.0),
})


def _stationary(p: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(p.T)
    pi = np.real(v[:, int(np.argmin(np.abs(w - 1.0)))])
    return pi / pi.sum()


def _rng_state_to_json(state: dict) -> dict:
    return {
        "bit_generator": state["bit_generator"],
        "state": {"state": str(state["state"]["state"]), "inc": str(state["state"]["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _rng_state_from_json(d: Mapping[str, Any]) -> dict:
    return {
        "bit_generator": d["bit_generator"],
        "state": {"state": int(d["state"]["state"]), "inc": int(d["state"]["inc"])},
        "has_uint32": int(d["has_uint32"]),
        "uinteger": int(d["uinteger"]),
    }


class SimMarket:
    """A seeded regime-switching market of bars for the ``SIM`` venue.

    Args:
        seed: non-negative int; the same seed (and symbols, start, interval)
            gives the same bars on every run.
        symbols: symbols from :data:`SIM_SYMBOLS`; kept sorted.
        start_ns: ``ts_open`` of the first live bar, UTC ns (default
            2025-01-01T00:00Z).
        interval_ns: bar length in ns (default 60 s). The regime parameters
            are per bar whatever the length.

    Attributes:
        venue: ``"SIM"``.
        symbols: the sorted symbols.
        instruments: ``{symbol: Instrument}``, ``SYMBOL.SIM`` with the
            builtin Binance filters (``filters_source="builtin"``).

    Raises:
        ValueError: for a negative seed, an unknown or repeated symbol, or a
            non-positive interval.
    """

    def __init__(
        self,
        seed: int = 7,
        symbols: tuple[str, ...] | list[str] = ("BTCUSDT", "ETHUSDT"),
        start_ns: int = SIM_START_NS,
        interval_ns: int = ONE_MINUTE_NS,
    ) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"SIM seed: must be an int >= 0, got {seed!r}")
        syms = tuple(s.strip().upper() for s in symbols)
        if not syms:
            raise ValueError("SIM symbols: at least one is needed")
        if len(set(syms)) != len(syms):
            raise ValueError(f"SIM symbols: repeated symbol in {list(symbols)}")
        for s in syms:
            if s not in SIM_SYMBOLS:
                raise ValueError(f"SIM symbol {s!r}: unknown (known: {', '.join(sorted(SIM_SYMBOLS))})")
        if int(interval_ns) <= 0:
            raise ValueError(f"SIM interval_ns: must be > 0, got {interval_ns}")
        self.venue = SIM_VENUE
        self.seed = seed
        self.symbols: tuple[str, ...] = tuple(sorted(syms))
        self.start_ns = int(start_ns)
        self.interval_ns = int(interval_ns)
        self.instruments: Mapping[str, Instrument] = MappingProxyType({
            s: instrument_from_filters(BUILTIN_SPOT_FILTERS[s], SIM_VENUE, "builtin") for s in self.symbols
        })
        self._ids = {s: InstrumentId(s, SIM_VENUE) for s in self.symbols}
        self._p = np.array(TRANSITION, dtype=float)
        self._cum_p: list[list[float]] = np.cumsum(self._p, axis=1).tolist()
        pi = _stationary(self._p)
        # time reversal of the chain: Q[i, j] = pi[j] P[j, i] / pi[i]
        q = (self._p.T * pi[None, :]) / pi[:, None]
        self._cum_q: list[list[float]] = np.cumsum(q / q.sum(axis=1, keepdims=True), axis=1).tolist()

        live_ss, hist_ss, init_ss = np.random.SeedSequence(seed).spawn(3)
        self._rng = np.random.Generator(np.random.PCG64(live_ss))
        # one child per symbol, four streams each: regimes, returns, extremes, volumes
        self._hist_seeds = {s: ss.spawn(4) for s, ss in zip(self.symbols, hist_ss.spawn(len(self.symbols)))}
        init_u = np.random.Generator(np.random.PCG64(init_ss)).random(len(self.symbols)).tolist()
        cum_pi = np.cumsum(pi).tolist()
        self._initial_regime = {s: self._draw(cum_pi, u) for s, u in zip(self.symbols, init_u)}
        self._start_close = {s: self.instruments[s].round_price(SIM_SYMBOLS[s].start_price) for s in self.symbols}

        self._regime = dict(self._initial_regime)
        self._last_close = dict(self._start_close)
        self._next_ts = self.start_ns
        self._step = 0

    # -- queries -----------------------------------------------------------

    @property
    def next_ts(self) -> int:
        """``ts_open`` (UTC ns) of the bars the next :meth:`next_step` returns."""
        return self._next_ts

    @property
    def step_count(self) -> int:
        """Number of :meth:`next_step` calls so far (restored by load_state_dict)."""
        return self._step

    def instrument(self, symbol: str) -> Instrument:
        """The ``SYMBOL.SIM`` instrument. Raises ValueError for an unknown symbol."""
        self._check_symbol(symbol)
        return self.instruments[symbol]

    def regime_of(self, symbol: str) -> int:
        """The true hidden regime (index into :data:`REGIMES`) of the last bar
        generated for ``symbol`` (before any step: the regime at start).

        Raises:
            ValueError: for a symbol this market does not list.
        """
        self._check_symbol(symbol)
        return self._regime[symbol]

    def last_close(self, symbol: str) -> Decimal:
        """Close of the last bar of ``symbol`` (the start price before any step)."""
        self._check_symbol(symbol)
        return self._last_close[symbol]

    # -- generation ----------------------------------------------------------

    def next_step(self) -> list[Bar]:
        """Generate one bar per symbol at :attr:`next_ts` and advance the clock.

        Returns:
            ``len(symbols)`` bars sorted by symbol, ``ts_open = next_ts``,
            ``ts_event = ts_open + interval_ns``, ``open`` = previous close.
        """
        n = len(self.symbols)
        u = self._rng.random((n, 3)).tolist()  # regime, high, low
        z = self._rng.standard_normal((n, 2)).tolist()  # return, volume
        ts = self._next_ts
        bars = []
        for i, s in enumerate(self.symbols):
            regime = self._draw(self._cum_p[self._regime[s]], u[i][0])
            reg, sym = REGIMES[regime], SIM_SYMBOLS[s]
            sigma = reg.vol * sym.vol_mult
            r = reg.drift * sym.vol_mult + sigma * z[i][0]
            open_ = self._last_close[s]
            bar = self._make_bar(s, open_, None, r, sigma, u[i][1], u[i][2], z[i][1], regime, ts)
            self._regime[s] = regime
            self._last_close[s] = bar.close
            bars.append(bar)
        self._next_ts = ts + self.interval_ns
        self._step += 1
        return bars

    def history(self, n: int) -> list[Bar]:
        """``n`` bars per symbol just before the start, for model warm-up.

        The walk runs backwards from the start: the last history bar closes
        at the start price (the first live bar's open) in the regime at start,
        and earlier regimes follow the time-reversed chain. It uses its own
        seed streams, so it is the same on every call, the last ``k`` bars of
        ``history(n)`` are ``history(k)``, and :meth:`next_step` is unaffected.

        Returns:
            ``n * len(symbols)`` bars sorted by ``(ts_open, symbol)``; the
            first has ``ts_open = start_ns - n * interval_ns``.

        Raises:
            ValueError: if ``n < 0`` or the history would start before 1970.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"history: n must be an int >= 0, got {n!r}")
        if self.start_ns - n * self.interval_ns < 0:
            raise ValueError(f"history: {n} bars would start before 1970")
        if n == 0:
            return []
        per_symbol = {s: self._history_symbol(s, n) for s in self.symbols}
        # per_symbol[s][k] is k+1 bars before the start; emit oldest first
        out: list[Bar] = []
        for k in range(n - 1, -1, -1):
            for s in self.symbols:
                out.append(per_symbol[s][k])
        return out

    def _history_symbol(self, s: str, n: int) -> list[Bar]:
        ss_reg, ss_ret, ss_ext, ss_vol = self._hist_seeds[s]
        u_reg = np.random.Generator(np.random.PCG64(ss_reg)).random(n).tolist()
        z_ret = np.random.Generator(np.random.PCG64(ss_ret)).standard_normal(n)
        u_ext = np.random.Generator(np.random.PCG64(ss_ext)).random((n, 2)).tolist()
        z_vol = np.random.Generator(np.random.PCG64(ss_vol)).standard_normal(n).tolist()
        sym = SIM_SYMBOLS[s]
        regimes = [self._initial_regime[s]]
        for k in range(1, n):
            regimes.append(self._draw(self._cum_q[regimes[-1]], u_reg[k]))
        reg_arr = np.array(regimes)
        drift = np.array([r.drift for r in REGIMES])[reg_arr] * sym.vol_mult
        sigma = np.array([r.vol for r in REGIMES])[reg_arr] * sym.vol_mult
        r = drift + sigma * z_ret
        # log close of bar k (k = 0 is the bar just before the start)
        log_close = math.log(float(self._start_close[s])) - np.concatenate(([0.0], np.cumsum(r[:-1])))
        log_open = log_close - r
        close_f = np.exp(log_close).tolist()
        open_f = np.exp(log_open).tolist()
        r_l, sigma_l = r.tolist(), sigma.tolist()
        inst = self.instruments[s]
        closes = [self._start_close[s]] + [self._round_close(inst, c) for c in close_f[1:]]
        bars = []
        for k in range(n):
            ts = self.start_ns - (k + 1) * self.interval_ns
            open_ = closes[k + 1] if k + 1 < n else self._round_close(inst, open_f[k])
            bars.append(self._make_bar(s, open_, closes[k], r_l[k], sigma_l[k], u_ext[k][0], u_ext[k][1],
                                       z_vol[k], regimes[k], ts, open_f=open_f[k]))
        return bars

    @staticmethod
    def _draw(cum: list[float], u: float) -> int:
        """Index of the first cumulative probability above ``u`` (inverse CDF)."""
        for j, c in enumerate(cum):
            if u < c:
                return j
        return len(cum) - 1

    @staticmethod
    def _round_close(inst: Instrument, price: float) -> Decimal:
        return max(round_to_tick(Decimal(repr(price)), inst.tick_size), inst.tick_size)

    def _make_bar(
        self,
        s: str,
        open_: Decimal,
        close: Decimal | None,
        r: float,
        sigma: float,
        u_hi: float,
        u_lo: float,
        z_vol: float,
        regime: int,
        ts_open: int,
        open_f: float | None = None,
    ) -> Bar:
        """Build one bar from its open and log return ``r``; ``close`` is
        given by history (already rounded), computed here when ``None``."""
        inst = self.instruments[s]
        tick = inst.tick_size
        o = float(open_) if open_f is None else open_f
        if close is None:
            close = self._round_close(inst, o * math.exp(r))
        var2 = 2.0 * sigma * sigma
        # 1 - u lies in (0, 1], so the log is finite and <= 0
        m_hi = 0.5 * (r + math.sqrt(r * r - var2 * math.log(1.0 - u_hi)))
        m_lo = 0.5 * (r - math.sqrt(r * r - var2 * math.log(1.0 - u_lo)))
        high = round_to_tick(Decimal(repr(o * math.exp(m_hi))), tick, ROUND_CEILING)
        low = round_to_tick(Decimal(repr(o * math.exp(m_lo))), tick, ROUND_FLOOR)
        high = max(high, open_, close)
        low = max(min(low, open_, close), tick)
        mean_vol = SIM_SYMBOLS[s].mean_volume * REGIMES[regime].volume_mult
        vol_f = mean_vol * math.exp(0.6 * z_vol - 0.18)  # lognormal with mean mean_vol
        volume = max(floor_to_step(Decimal(repr(vol_f)), inst.step_size), inst.step_size)
        return Bar(self._ids[s], open_, high, low, close, volume, ts_open, ts_open + self.interval_ns, 0)

    # -- persistence -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The live state as a JSON-serializable dict.

        Keys: ``version``, ``venue``, ``seed``, ``symbols``, ``start_ns``,
        ``interval_ns`` (the setup, checked on load), ``bit_generator`` (the
        PCG64 state; its 128-bit integers as decimal strings), ``last_close``
        (``{symbol: str}``), ``regimes`` (``{symbol: int}``), ``next_ts``
        (UTC ns), ``step``.
        """
        return {
            "version": STATE_VERSION,
            "venue": self.venue,
            "seed": self.seed,
            "symbols": list(self.symbols),
            "start_ns": self.start_ns,
            "interval_ns": self.interval_ns,
            "bit_generator": _rng_state_to_json(self._rng.bit_generator.state),
            "last_close": {s: dec_str(self._last_close[s]) for s in self.symbols},
            "regimes": {s: int(self._regime[s]) for s in self.symbols},
            "next_ts": self._next_ts,
            "step": self._step,
        }

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (e.g. after a restart): the next
        bars are exactly those the saved market would have produced.

        Raises:
            ValueError: naming the key, when ``d`` is of another version or
                setup (seed, symbols, start, interval), or malformed.
        """
        try:
            if d.get("version") != STATE_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {STATE_VERSION}")
            setup = {"seed": self.seed, "symbols": list(self.symbols), "start_ns": self.start_ns,
                     "interval_ns": self.interval_ns}
            for key, want in setup.items():
                if d.get(key) != want:
                    raise ValueError(f"{key} is {d.get(key)!r}, this market has {want!r}")
            closes = {s: Decimal(str(d["last_close"][s])) for s in self.symbols}
            for s, c in closes.items():
                if not c.is_finite() or c <= 0:
                    raise ValueError(f"last_close[{s}] is {c}, must be > 0")
            regimes = {s: int(d["regimes"][s]) for s in self.symbols}
            for s, g in regimes.items():
                if not 0 <= g < len(REGIMES):
                    raise ValueError(f"regimes[{s}] is {g}, must be in 0..{len(REGIMES) - 1}")
            next_ts, step = int(d["next_ts"]), int(d["step"])
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = _rng_state_from_json(d["bit_generator"])
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise ValueError(f"SIM state: malformed: {exc!r}") from None
        except ValueError as exc:
            raise ValueError(f"SIM state: {exc}") from None
        self._rng = rng
        self._last_close = closes
        self._regime = regimes
        self._next_ts = next_ts
        self._step = step

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self._ids:
            raise ValueError(f"SIM: unknown symbol {symbol!r} (listed: {', '.join(self.symbols)})")
