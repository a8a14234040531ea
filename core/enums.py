"""Enumerations in NautilusTrader's spelling (DESIGN.md section 4)."""

from __future__ import annotations

from enum import Enum


class OrderSide(str, Enum):
    """Side of an order."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(str, Enum):
    """Order types. Issue 2 trades MARKET and LIMIT; the rest arrive with
    the order-management issue."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    STOP_LIMIT = "STOP_LIMIT"
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"


class TimeInForce(str, Enum):
    """Time in force."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"
    DAY = "DAY"


class OrderStatus(str, Enum):
    """Order status, NautilusTrader's names."""

    INITIALIZED = "INITIALIZED"
    DENIED = "DENIED"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    TRIGGERED = "TRIGGERED"
    PENDING_UPDATE = "PENDING_UPDATE"
    PENDING_CANCEL = "PENDING_CANCEL"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


#: statuses in which an order may still trade at the venue
WORKING_STATUSES = frozenset(
    {
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.TRIGGERED,
        OrderStatus.PENDING_UPDATE,
        OrderStatus.PENDING_CANCEL,
        OrderStatus.PARTIALLY_FILLED,
    }
)

#: statuses from which no transition is possible
CLOSED_STATUSES = frozenset(
    {OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
)


class TradingState(str, Enum):
    """The desk's trading state (DESIGN.md section 4)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class LiquiditySide(str, Enum):
    """Whether a fill added (MAKER) or took (TAKER) liquidity."""

    MAKER = "MAKER"
    TAKER = "TAKER"


class DenialReason(str, Enum):
    """Why a pre-trade rail denied an order (DESIGN.md section 5)."""

    TRADING_HALTED = "TRADING_HALTED"
    REDUCE_ONLY = "REDUCE_ONLY"
    MODEL_PAUSED = "MODEL_PAUSED"
    SYMBOL_NOT_ALLOWED = "SYMBOL_NOT_ALLOWED"
    MIN_QUANTITY = "MIN_QUANTITY"
    MAX_QUANTITY = "MAX_QUANTITY"
    MIN_NOTIONAL = "MIN_NOTIONAL"
    UNSELLABLE_POSITION = "UNSELLABLE_POSITION"
    MAX_NOTIONAL = "MAX_NOTIONAL"
    THROTTLED = "THROTTLED"
    INVALID_ORDER = "INVALID_ORDER"
    PRICE_COLLAR = "PRICE_COLLAR"
    STALE_DATA = "STALE_DATA"
    MAX_POSITION = "MAX_POSITION"
    MAX_EXPOSURE = "MAX_EXPOSURE"
    DAILY_LOSS = "DAILY_LOSS"
    DUPLICATE_ORDER = "DUPLICATE_ORDER"
    SELF_MATCH = "SELF_MATCH"
