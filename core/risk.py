"""Pre-trade risk rails (DESIGN.md section 5), checked on every order before
it leaves, in a fixed order; each denial has a :class:`DenialReason` code and
a message naming the limit and the value.

Order of the rails: trading state; model paused; symbol allow-list;
instrument filters (quantity > 0, min/max quantity, min notional, an entry
whose position after the fee and step rounding could not be sold again above
min notional); max notional per order; max order quantity; stale data (no
bar for ``stale_after_ns`` of engine clock: entries denied, the collar fails
closed); price collar (a limit price more than ``collar_pct`` away from the
last price); max position per model and instrument and max gross exposure
per instrument, venue and model, counting working orders; daily loss limit;
message throttle per venue (a token bucket on the engine clock, submits and
cancels counted separately); duplicate-order check (same model, instrument,
side, quantity and price within a window).

Limits come from :class:`RiskConfig`: a default :class:`Limits` and
overrides per venue, per instrument and per model; the most specific value
that is set wins (model, then instrument, then venue, then default).

References: SEC Rule 15c3-5 (pre-trade credit and capital thresholds,
erroneous-order controls), MiFID II RTS 6 article 15 (price collars, maximum
order values and volumes, maximum messages), FIA "Best Practices for
Automated Trading Risk Controls" (2024), NautilusTrader's RiskEngine.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Iterable, Mapping, Protocol

from core.enums import DenialReason, OrderSide, TradingState
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.values import ZERO, floor_to_step, quantize_money


@dataclass(frozen=True, slots=True)
class Limits:
    """One scope's limits; ``None`` means "not set here" (a less specific
    scope, or no limit).

    Attributes:
        max_order_notional: largest price × quantity (× the multiplier of a
            future, ``Instrument.notional``) per order (quote).
        max_order_qty: largest quantity per order (base units).
        collar_pct: a limit price more than this fraction away from the last
            price is denied (0.05 = 5 %).
        max_position_notional: largest position of one model in one
            instrument, at the last price, plus its working buys (quote).
        max_gross_exposure: largest gross exposure (|positions| at the last
            price plus working orders, quote) of the scope: the instrument,
            the venue or the model the limit is configured for.
        daily_loss_limit: the largest loss (positive quote amount) of the
            desk since the venue day's start (realized + unrealized) before
            entries are denied.
        stale_after_ns: data older than this (engine clock) is stale.
        duplicate_window_ns: the duplicate-order window (engine clock).
        max_fills_per_window / fills_window_ns: more fills than this of one
            model and instrument within the window pauses the model (the
            repeated-execution throttle, enforced by the engine).
    """

    max_order_notional: Decimal | None = None
    max_order_qty: Decimal | None = None
    collar_pct: Decimal | None = None
    max_position_notional: Decimal | None = None
    max_gross_exposure: Decimal | None = None
    daily_loss_limit: Decimal | None = None
    stale_after_ns: int | None = None
    duplicate_window_ns: int | None = None
    max_fills_per_window: int | None = None
    fills_window_ns: int | None = None


#: the rails that hold without a risk file, and for each field a risk
#: file's ``defaults`` leave out: a limit price more than 5 % from the last
#: price is denied (PRICE_COLLAR; a fat-finger guard, SEC Rule 15c3-5's
#: "price or size" controls, FIA's price banding), and so is any order
#: whose reference price is older than 300 s of engine clock (STALE_DATA,
#: failing closed). Other limits are off unless set.
DESK_DEFAULT_LIMITS = Limits(collar_pct=Decimal("0.05"), stale_after_ns=300 * 1_000_000_000)


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Limits of the rails.

    Attributes:
        allowed_symbols: instrument ids (``SYMBOL.VENUE``) that may trade;
            None allows every configured instrument.
        max_order_notional: default max notional per order (quote), kept for
            the simple case; ``defaults.max_order_notional`` wins when set.
        max_submits: token-bucket capacity of submits per venue; it refills
            at ``max_submits`` per ``window_ns`` of engine clock.
        max_cancels: the same for cancels (kill-switch cancels are exempt).
        max_modifies: the same for amends (modify / cancel-replace).
        window_ns: the throttle's refill period, nanoseconds of engine clock.
        entry_fee_rate: fee fraction assumed on an entry for the
            sellable-position check (0.001 = 0.1 %).
        defaults, per_venue, per_instrument, per_model: :class:`Limits` by
            scope (keys: venue name, ``SYMBOL.VENUE``, model id).
    """

    allowed_symbols: frozenset[str] | None = None
    max_order_notional: Decimal | None = None
    max_submits: int = 60
    max_cancels: int = 120
    max_modifies: int = 60
    window_ns: int = 60_000_000_000
    entry_fee_rate: Decimal = Decimal("0.001")
    defaults: Limits = field(default_factory=Limits)
    per_venue: dict[str, Limits] = field(default_factory=dict)
    per_instrument: dict[str, Limits] = field(default_factory=dict)
    per_model: dict[str, Limits] = field(default_factory=dict)

    def limit(self, name: str, *, model_id: str | None = None, instrument_id: InstrumentId | None = None) -> Any:
        """The most specific value of limit ``name`` for a model and an
        instrument: per model, then per instrument, then per venue, then the
        default (None when no scope sets it)."""
        scopes: list[Limits | None] = [
            self.per_model.get(model_id) if model_id else None,
            self.per_instrument.get(str(instrument_id)) if instrument_id else None,
            self.per_venue.get(instrument_id.venue) if instrument_id else None,
            self.defaults,
        ]
        for s in scopes:
            if s is not None:
                v = getattr(s, name)
                if v is not None:
                    return v
        if name == "max_order_notional":
            return self.max_order_notional
        return None


LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


def unreachable_minimums(config: RiskConfig, instruments: Mapping[InstrumentId, Any],
                         model_ids: Iterable[str]) -> list[str]:
    """Limits under which a model can never trade an instrument: a
    ``max_order_notional`` (quote) below the instrument's ``min_notional``
    (every order would be skipped by the router, silently: the desk would
    look ACTIVE and never trade). One line per (model, instrument), naming
    the limit, its scope's value and the minimum; empty when none."""
    out = []
    for iid, inst in sorted(instruments.items(), key=lambda kv: str(kv[0])):
        floor = getattr(inst, "min_notional", None)
        if not floor:
            continue
        for mid in model_ids:
            cap = config.limit("max_order_notional", model_id=mid, instrument_id=iid)
            if cap is not None and Decimal(cap) < floor:
                out.append(f"max_order_notional {cap} for model {mid} is below the min notional {floor} of {iid}: "
                           f"it could never trade there")
    return out


class RiskContext(Protocol):
    """What the rails need to know about the desk (the engine provides it)."""

    def reference_price(self, instrument_id: InstrumentId) -> tuple[Decimal, int] | None:
        """Last price (quote) and its engine time (ns), or None."""
        ...

    def exposure(self, *, model_id: str | None = None, instrument_id: InstrumentId | None = None,
                 venue: str | None = None) -> Decimal:
        """Gross exposure (quote) of the scope: |positions| at the last price
        plus the notional of working orders; None in a field means "any"."""
        ...

    def day_pnl(self) -> Decimal:
        """The desk's PnL since the venue day's start (quote; realized +
        unrealized)."""
        ...


def _notional(instrument: Instrument, price: Decimal, quantity: Decimal) -> Decimal:
    """``price x quantity x multiplier`` (quote) of ``instrument``
    (``Instrument.notional``; an instrument-like object without a
    multiplier counts 1)."""
    value = price * quantity
    mult = getattr(instrument, "multiplier", 1)
    return value if mult == 1 else value * mult


class Denied(Exception):
    """Raised by :meth:`RiskEngine.check` with a code and a message."""

    def __init__(self, code: DenialReason, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sellable_after_fee(qty: Decimal, fee_rate: Decimal, step: Decimal) -> Decimal:
    """What can be sold again after buying ``qty`` with the fee taken from
    the bought coin: ``floor_step(qty - qty * fee_rate)``.

    Example (issue 2): 0.00036 at fee 0.1 % leaves 0.00035964, of which
    0.00035 can be sold at step 0.00001.
    """
    held = qty - qty * fee_rate
    return floor_to_step(held, step)


class TokenBucket:
    """A token bucket on the engine clock: ``capacity`` tokens, refilled at
    ``capacity`` per ``period_ns``; ``take(now)`` spends one or returns
    False. Exact integer arithmetic (tokens are kept in units of
    1/period_ns)."""

    def __init__(self, capacity: int, period_ns: int) -> None:
        if capacity < 1 or period_ns < 1:
            raise ValueError(f"token bucket: capacity {capacity} and period {period_ns} must be >= 1")
        self.capacity = capacity
        self.period_ns = period_ns
        self._units = capacity * period_ns  # full
        self._last: int | None = None

    def _refill(self, now_ns: int) -> None:
        if self._last is not None and now_ns > self._last:
            self._units = min(self.capacity * self.period_ns, self._units + (now_ns - self._last) * self.capacity)
        if self._last is None or now_ns > self._last:
            self._last = now_ns

    def tokens(self, now_ns: int) -> Decimal:
        """Tokens available at ``now_ns`` (may be fractional)."""
        self._refill(now_ns)
        return Decimal(self._units) / Decimal(self.period_ns)

    def take(self, now_ns: int) -> bool:
        """Spend one token if one is available."""
        self._refill(now_ns)
        if self._units >= self.period_ns:
            self._units -= self.period_ns
            return True
        return False

    def state(self) -> list[int | None]:
        """``[units, last]`` for the checkpoint."""
        return [self._units, self._last]

    def load(self, st: list[int | None]) -> None:
        """Restore ``state()``."""
        self._units = int(st[0] or 0)
        self._last = None if st[1] is None else int(st[1])


class RiskEngine:
    """Checks orders against :class:`RiskConfig`; keeps the throttles'
    buckets and the recent orders for the duplicate check."""

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self._submits: dict[str, TokenBucket] = {}
        self._cancels: dict[str, TokenBucket] = {}
        self._modifies: dict[str, TokenBucket] = {}
        self._recent: deque[tuple[int, str, str, str, Decimal, Decimal | None]] = deque()

    def _bucket(self, book: dict[str, TokenBucket], venue: str, capacity: int) -> TokenBucket:
        b = book.get(venue)
        if b is None:
            b = book[venue] = TokenBucket(capacity, self.config.window_ns)
        return b

    def check(
        self,
        *,
        instrument: Instrument,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        trading_state: TradingState,
        model_paused: bool,
        now_ns: int,
        reduce_only: bool = False,
        model_id: str = "",
        limit_price: Decimal | None = None,
        ctx: RiskContext | None = None,
        exempt: bool = False,
    ) -> None:
        """Run every rail in order for an order of ``quantity`` base units
        at ``price`` (the limit price, or the reference price for a market
        order; ``limit_price`` is None for a market order). ``reduce_only``
        marks an exposure-reducing order (spot: a sell of what the model
        holds); ``exempt`` marks a kill-switch FLATTEN order, which skips the
        trading-state gate, the throttle and the stale/collar/exposure rails
        but not the instrument filters. Records the submit in the throttle
        and the duplicate window when all pass.

        Raises:
            Denied: the first rail that fails, with its code and a message
                naming the limit and the value.
        """
        cfg = self.config
        iid = instrument.id
        entry = side == OrderSide.BUY and not reduce_only
        lim = lambda name: cfg.limit(name, model_id=model_id or None, instrument_id=iid)  # noqa: E731
        if not exempt:
            if trading_state == TradingState.HALTED:
                raise Denied(DenialReason.TRADING_HALTED, "trading state is HALTED")
            if trading_state == TradingState.REDUCING and entry:
                raise Denied(DenialReason.REDUCE_ONLY, "trading state is REDUCING: only exposure-reducing orders")
            if model_paused and entry:
                raise Denied(DenialReason.MODEL_PAUSED, f"model {model_id or ''} is paused: no new exposure".replace("  ", " "))
        if cfg.allowed_symbols is not None and str(iid) not in cfg.allowed_symbols:
            raise Denied(DenialReason.SYMBOL_NOT_ALLOWED, f"{iid} is not in the allow-list")
        # instrument filters
        if quantity <= ZERO:
            raise Denied(DenialReason.INVALID_ORDER, f"quantity {quantity} must be positive")
        if floor_to_step(quantity, instrument.step_size) != quantity:
            raise Denied(DenialReason.INVALID_ORDER, f"quantity {quantity} is not a multiple of the step {instrument.step_size}")
        if limit_price is not None and (limit_price <= 0 or instrument.round_price(limit_price) != limit_price):
            raise Denied(DenialReason.INVALID_ORDER, f"price {limit_price} is not a positive multiple of the tick {instrument.tick_size}")
        if quantity < instrument.min_qty:
            raise Denied(DenialReason.MIN_QUANTITY, f"quantity {quantity} < min qty {instrument.min_qty}")
        if instrument.max_qty is not None and quantity > instrument.max_qty:
            raise Denied(DenialReason.MAX_QUANTITY, f"quantity {quantity} > max qty {instrument.max_qty}")
        notional = _notional(instrument, price, quantity)
        if notional < instrument.min_notional:
            raise Denied(
                DenialReason.MIN_NOTIONAL,
                f"notional {quantize_money(notional)} < min notional {instrument.min_notional}",
            )
        if entry and instrument.min_notional > 0:
            sellable = sellable_after_fee(quantity, cfg.entry_fee_rate, instrument.step_size)
            worth = _notional(instrument, price, sellable)
            if worth < instrument.min_notional:
                raise Denied(
                    DenialReason.UNSELLABLE_POSITION,
                    f"after the fee only {sellable} could be sold, worth {quantize_money(worth)} "
                    f"< min notional {instrument.min_notional}",
                )
        # per-order size
        limit = lim("max_order_notional")
        if instrument.max_notional is not None:
            limit = instrument.max_notional if limit is None else min(limit, instrument.max_notional)
        if limit is not None and notional > limit:
            raise Denied(DenialReason.MAX_NOTIONAL, f"notional {quantize_money(notional)} > max notional {limit}")
        max_qty = lim("max_order_qty")
        if max_qty is not None and quantity > max_qty:
            raise Denied(DenialReason.MAX_QUANTITY, f"quantity {quantity} > max order quantity {max_qty}")
        if ctx is not None and not exempt:
            self._check_market(ctx, iid, entry, notional, limit_price, now_ns, model_id, lim)
        if not exempt:
            bucket = self._bucket(self._submits, iid.venue, cfg.max_submits)
            dup_window = lim("duplicate_window_ns")
            if dup_window:
                while self._recent and self._recent[0][0] < now_ns - dup_window:
                    self._recent.popleft()
                for ts, m, i, s, q, p in self._recent:
                    if (m, i, s, q, p) == (model_id, str(iid), side.value, quantity, limit_price):
                        raise Denied(
                            DenialReason.DUPLICATE_ORDER,
                            f"same {side.value} {quantity} {iid} at {limit_price or 'MARKET'} by {model_id} "
                            f"{(now_ns - ts) // 1_000_000_000} s ago (window {dup_window // 1_000_000_000} s)",
                        )
            if not bucket.take(now_ns):
                raise Denied(
                    DenialReason.THROTTLED,
                    f"submit throttle of {iid.venue}: {cfg.max_submits} per "
                    f"{cfg.window_ns // 1_000_000_000} s exhausted",
                )
            if dup_window:
                self._recent.append((now_ns, model_id, str(iid), side.value, quantity, limit_price))

    def _check_market(self, ctx: RiskContext, iid: InstrumentId, entry: bool, notional: Decimal,
                      limit_price: Decimal | None, now_ns: int, model_id: str, lim: Any) -> None:
        ref = ctx.reference_price(iid)
        stale_after = lim("stale_after_ns")
        stale = ref is None or (stale_after is not None and now_ns - ref[1] > stale_after)
        if stale and entry and stale_after is not None:
            age = "no data" if ref is None else f"last data {(now_ns - ref[1]) // 1_000_000_000} s old"
            raise Denied(DenialReason.STALE_DATA, f"{iid}: {age} > {stale_after // 1_000_000_000} s: entries denied")
        collar = lim("collar_pct")
        if collar is not None and limit_price is not None:
            if stale:
                raise Denied(DenialReason.PRICE_COLLAR, f"{iid}: price collar fails closed: reference price is stale")
            assert ref is not None
            off = abs(limit_price - ref[0]) / ref[0]
            if off > collar:
                raise Denied(
                    DenialReason.PRICE_COLLAR,
                    f"price {limit_price} is {(off * 100).quantize(Decimal('0.01'))} % from the last price {ref[0]} "
                    f"> collar {(collar * 100).normalize()} %",
                )
        if not entry:
            return
        max_pos = lim("max_position_notional")
        if max_pos is not None:
            now = ctx.exposure(model_id=model_id, instrument_id=iid)
            if now + notional > max_pos:
                raise Denied(
                    DenialReason.MAX_POSITION,
                    f"{model_id} {iid}: position and working orders {quantize_money(now)} + {quantize_money(notional)} "
                    f"> max position {max_pos}",
                )
        cfg = self.config
        for scope, limits, kwargs in (
            ("instrument", cfg.per_instrument.get(str(iid)), {"instrument_id": iid}),
            ("venue", cfg.per_venue.get(iid.venue), {"venue": iid.venue}),
            ("model", cfg.per_model.get(model_id), {"model_id": model_id}),
        ):
            cap = (limits.max_gross_exposure if limits else None)
            if cap is None and scope == "instrument":
                cap = cfg.defaults.max_gross_exposure
            if cap is None:
                continue
            now = ctx.exposure(**kwargs)
            if now + notional > cap:
                raise Denied(
                    DenialReason.MAX_EXPOSURE,
                    f"gross exposure of {scope} {next(iter(kwargs.values()))}: {quantize_money(now)} + "
                    f"{quantize_money(notional)} > max {cap}",
                )
        loss_limit = lim("daily_loss_limit")
        if loss_limit is not None:
            pnl = ctx.day_pnl()
            if pnl <= -loss_limit:
                raise Denied(
                    DenialReason.DAILY_LOSS,
                    f"day PnL {quantize_money(pnl)} reached the daily loss limit -{loss_limit}: entries denied",
                )

    def allow_cancel(self, venue: str, now_ns: int, exempt: bool = False) -> bool:
        """Spend a cancel token of ``venue`` (kill-switch cancels are
        ``exempt`` and always pass)."""
        if exempt:
            return True
        return self._bucket(self._cancels, venue, self.config.max_cancels).take(now_ns)

    def allow_modify(self, venue: str, now_ns: int) -> bool:
        """Spend a modify token of ``venue`` (submits, cancels and modifies
        are throttled separately, MiFID II RTS 6 art. 15 message limits)."""
        return self._bucket(self._modifies, venue, self.config.max_modifies).take(now_ns)

    def state_dict(self) -> dict[str, Any]:
        """Throttle buckets and the duplicate window, for the checkpoint."""
        return {
            "submits": {v: b.state() for v, b in self._submits.items()},
            "cancels": {v: b.state() for v, b in self._cancels.items()},
            "modifies": {v: b.state() for v, b in self._modifies.items()},
            "recent": [[t, m, i, s, format(q, "f"), None if p is None else format(p, "f")]
                       for t, m, i, s, q, p in self._recent],
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore ``state_dict`` output."""
        for book, cap, key in ((self._submits, self.config.max_submits, "submits"),
                               (self._cancels, self.config.max_cancels, "cancels"),
                               (self._modifies, self.config.max_modifies, "modifies")):
            for v, st in d.get(key, {}).items():
                self._bucket(book, v, cap).load(st)
        self._recent = deque(
            (int(t), m, i, s, Decimal(q), None if p is None else Decimal(p)) for t, m, i, s, q, p in d.get("recent", [])
        )
