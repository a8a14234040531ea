"""Market data records."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.identifiers import InstrumentId


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar of an instrument.

    Attributes:
        instrument_id: the instrument.
        open, high, low, close: prices in the quote currency, as Decimal from
            the source's exact strings.
        volume: traded volume in base units.
        ts_open: bar open time, UTC nanoseconds.
        ts_event: bar close time (open + interval), UTC nanoseconds; the bar
            is known from this instant on, and the engine clock is set to it.
        line: physical 1-based source line (0 for generated bars).
    """

    instrument_id: InstrumentId
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    ts_open: int
    ts_event: int
    line: int = 0
