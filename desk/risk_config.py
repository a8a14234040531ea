"""The rails' limits from a YAML (or JSON) file: ``desk run --risk FILE``.

Shape (every key optional; money in the quote currency as decimal strings
or numbers, fractions as fractions, times in seconds of engine clock)::

    max_submits: 60          # per venue per window (token bucket)
    max_cancels: 120
    max_modifies: 60
    window_s: 60
    defaults:                # every instrument, venue and model
      max_order_notional: "10000"
      max_order_qty: "5"
      collar_pct: "0.05"     # 5 % from the last price
      max_position_notional: "9000"
      max_gross_exposure: "20000"
      daily_loss_limit: "500"
      stale_after_s: 300
      duplicate_window_s: 10
      max_fills_per_window: 20
      fills_window_s: 600
    venues:      {BINANCE: {max_gross_exposure: "20000"}}
    instruments: {BTCUSDT.BINANCE: {max_position_notional: "5000"}}
    models:      {hmm_v2_canary: {max_order_notional: "1000"}}

The most specific scope wins (model, instrument, venue, defaults; see
``core.risk.RiskConfig.limit``). Without a file, and for each field a
file's ``defaults`` leave out, the desk's built-in rails hold
(``core.risk.DESK_DEFAULT_LIMITS``: collar 5 %, stale data after 300 s); a
``null`` turns one off (``collar_pct: null``). A bad file is refused at
start with the path of the field and the value (exit 2), never half-used.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.risk import Limits, RiskConfig
from core.values import to_decimal

NS = 1_000_000_000
_MONEY = {"max_order_notional", "max_order_qty", "collar_pct", "max_position_notional", "max_gross_exposure",
          "daily_loss_limit"}
_SECONDS = {"stale_after_s": "stale_after_ns", "duplicate_window_s": "duplicate_window_ns",
            "fills_window_s": "fills_window_ns"}
_COUNTS = {"max_fills_per_window"}
_TOP_COUNTS = {"max_submits", "max_cancels", "max_modifies"}


def _positive(path: str, value: Any) -> Decimal:
    try:
        d = to_decimal(value, path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if d <= 0:
        raise ConfigError(f"{path}: must be positive, got {value!r}")
    return d


def _count(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: expected a whole number >= 1, got {value!r}")
    return value


def _limits(path: str, raw: Any, off: set[str] | None = None) -> Limits:
    """Limits from a mapping; a ``null`` value turns a limit off (recorded
    in ``off``, when given, so a built-in default does not fill it in)."""
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of limits, got {raw!r}")
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{path}.{key}"
        if value is None and off is not None and (key in _MONEY or key in _SECONDS or key in _COUNTS):
            off.add(_SECONDS.get(key, key))
            continue
        if key in _MONEY:
            kw[key] = _positive(where, value)
            if key == "collar_pct" and kw[key] >= 1:
                raise ConfigError(f"{where}: a fraction below 1 (0.05 = 5 %), got {value!r}")
        elif key in _SECONDS:
            kw[_SECONDS[key]] = int(_positive(where, value) * NS)
        elif key in _COUNTS:
            kw[key] = _count(where, value)
        else:
            known = sorted(_MONEY | set(_SECONDS) | _COUNTS)
            raise ConfigError(f"{where}: unknown limit; known: {', '.join(known)}")
    return Limits(**kw)


def _with_desk_defaults(limits: Limits, off: set[str]) -> Limits:
    """``limits`` with every field it leaves unset taken from
    :data:`core.risk.DESK_DEFAULT_LIMITS` (the collar and the stale-data
    check hold unless the file sets them, or turns them off with ``null``)."""
    import dataclasses

    from core.risk import DESK_DEFAULT_LIMITS

    return dataclasses.replace(DESK_DEFAULT_LIMITS, **{
        f.name: getattr(limits, f.name) for f in dataclasses.fields(Limits)
        if getattr(limits, f.name) is not None or f.name in off})


def load_risk_config(path: str | Path, *, allowed_symbols: frozenset[str] | None,
                     max_order_notional: Decimal | None) -> RiskConfig:
    """Read the rails' limits from ``path`` (YAML or JSON).

    ``allowed_symbols`` and the fallback ``max_order_notional`` (quote) come
    from the run (the configured instruments and the trading capital).

    Raises:
        ConfigError: an unreadable file, or a field with a bad value or an
            unknown name (the message names the field path and the value).
    """
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"--risk: cannot read {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--risk: {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--risk: {p}: expected a mapping at the top")
    known = _TOP_COUNTS | {"window_s", "defaults", "venues", "instruments", "models"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{p}: {key}: unknown key; known: {', '.join(sorted(known))}")
    kw: dict[str, Any] = {"allowed_symbols": allowed_symbols, "max_order_notional": max_order_notional}
    for key in _TOP_COUNTS:
        if key in raw:
            kw[key] = _count(f"{p}: {key}", raw[key])
    if "window_s" in raw:
        kw["window_ns"] = int(_positive(f"{p}: window_s", raw["window_s"]) * NS)
    off: set[str] = set()
    kw["defaults"] = _with_desk_defaults(_limits(f"{p}: defaults", raw.get("defaults"), off), off)
    for key, target in (("venues", "per_venue"), ("instruments", "per_instrument"), ("models", "per_model")):
        scopes = raw.get(key) or {}
        if not isinstance(scopes, dict):
            raise ConfigError(f"{p}: {key}: expected a mapping of name -> limits")
        kw[target] = {str(name): _limits(f"{p}: {key}.{name}", lim) for name, lim in scopes.items()}
    return RiskConfig(**kw)
