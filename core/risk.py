"""Pre-trade risk rails (DESIGN.md section 5), checked on every order before
it leaves, in a fixed order; each denial has a :class:`DenialReason` code and
a message naming the limit and the value.

Rails in this version: trading state, model paused, symbol allow-list,
quantity (positive, >= min qty, <= max qty), min notional, an entry whose
position after the fee and step rounding could not be sold again above min
notional, max notional per order, and a per-venue submit throttle on the
engine clock. References: SEC Rule 15c3-5 (pre-trade credit and capital
thresholds), MiFID II RTS 6 article 15 (price collars, maximum order values
and volumes, message limits), NautilusTrader's RiskEngine.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from core.enums import DenialReason, OrderSide, TradingState
from core.instruments import Instrument
from core.values import ZERO, floor_to_step, quantize_money


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Limits of the rails.

    Attributes:
        allowed_symbols: instrument ids (``SYMBOL.VENUE``) that may trade;
            None allows every configured instrument.
        max_order_notional: largest price × quantity per order (quote), or None.
        max_submits: at most this many submits per venue per ``window_ns``
            of engine clock (message throttle).
        window_ns: the throttle window, nanoseconds of engine clock.
        entry_fee_rate: fee fraction assumed on an entry for the
            sellable-position check (0.001 = 0.1 %).
    """

    allowed_symbols: frozenset[str] | None = None
    max_order_notional: Decimal | None = None
    max_submits: int = 60
    window_ns: int = 60_000_000_000
    entry_fee_rate: Decimal = Decimal("0.001")


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


class RiskEngine:
    """Checks orders against :class:`RiskConfig`; keeps the throttle's
    per-venue window of submit times (engine clock, nanoseconds)."""

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self._submits: dict[str, deque[int]] = {}

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
    ) -> None:
        """Run every rail in order for an order of ``quantity`` base units
        at ``price`` (the limit price, or the reference price for a market
        order). Records the submit in the throttle window when all pass.

        Raises:
            Denied: the first rail that fails, with its code and a message
                naming the limit and the value.
        """
        cfg = self.config
        iid = str(instrument.id)
        if trading_state == TradingState.HALTED and not reduce_only:
            raise Denied(DenialReason.TRADING_HALTED, "trading state is HALTED")
        if trading_state == TradingState.REDUCING and side == OrderSide.BUY:
            raise Denied(DenialReason.REDUCE_ONLY, "trading state is REDUCING: only exposure-reducing orders")
        if model_paused and side == OrderSide.BUY:
            raise Denied(DenialReason.MODEL_PAUSED, "model is paused: no new exposure")
        if cfg.allowed_symbols is not None and iid not in cfg.allowed_symbols:
            raise Denied(DenialReason.SYMBOL_NOT_ALLOWED, f"{iid} is not in the allow-list")
        if quantity <= ZERO:
            raise Denied(DenialReason.INVALID_ORDER, f"quantity {quantity} must be positive")
        if quantity < instrument.min_qty:
            raise Denied(DenialReason.MIN_QUANTITY, f"quantity {quantity} < min qty {instrument.min_qty}")
        if instrument.max_qty is not None and quantity > instrument.max_qty:
            raise Denied(DenialReason.MAX_QUANTITY, f"quantity {quantity} > max qty {instrument.max_qty}")
        notional = quantity * price
        if notional < instrument.min_notional:
            raise Denied(
                DenialReason.MIN_NOTIONAL,
                f"notional {quantize_money(notional)} < min notional {instrument.min_notional}",
            )
        if side == OrderSide.BUY and instrument.min_notional > 0:
            sellable = sellable_after_fee(quantity, cfg.entry_fee_rate, instrument.step_size)
            worth = sellable * price
            if worth < instrument.min_notional:
                raise Denied(
                    DenialReason.UNSELLABLE_POSITION,
                    f"after the fee only {sellable} could be sold, worth {quantize_money(worth)} "
                    f"< min notional {instrument.min_notional}",
                )
        limit = cfg.max_order_notional
        if limit is not None and instrument.max_notional is not None:
            limit = min(limit, instrument.max_notional)
        elif limit is None:
            limit = instrument.max_notional
        if limit is not None and notional > limit:
            raise Denied(DenialReason.MAX_NOTIONAL, f"notional {quantize_money(notional)} > max notional {limit}")
        window = self._submits.setdefault(instrument.id.venue, deque())
        while window and window[0] <= now_ns - cfg.window_ns:
            window.popleft()
        if len(window) >= cfg.max_submits:
            raise Denied(
                DenialReason.THROTTLED,
                f"{len(window)} submits to {instrument.id.venue} in the last "
                f"{cfg.window_ns // 1_000_000_000} s >= limit {cfg.max_submits}",
            )
        window.append(now_ns)

    def state_dict(self) -> dict[str, list[int]]:
        """The throttle windows, for the checkpoint."""
        return {v: list(q) for v, q in self._submits.items()}

    def load_state_dict(self, d: dict[str, list[int]]) -> None:
        """Restore the throttle windows."""
        self._submits = {v: deque(int(x) for x in q) for v, q in d.items()}
