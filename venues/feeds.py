"""Feeds: where bars come from. ``ReplayFeed`` plays recorded kline files
merged in time order; ``SimFeed`` plays the embedded SIM market.

Both implement ``core.engine.Feed``: ``warmup()`` (bars the models observe
before trading), ``next_step()`` (the bars of the next timestamp, ``[]`` at
the end of a finite feed) and a JSON-ready ``state_dict`` for continuing a
run.
"""

from __future__ import annotations

import heapq
from typing import Any

from core.data import Bar
from venues.klines import KlineFile
from venues.sim import SimMarket


class ReplayFeed:
    """Replays one or more kline files; bars of equal close time form one
    step, ordered by instrument id. The cursor is the index of the next bar
    in the merged sequence."""

    finite = True

    def __init__(self, files: list[KlineFile]) -> None:
        streams = [[(b.ts_event, str(b.instrument_id), b) for b in f.bars] for f in files]
        self.bars: list[Bar] = [t[2] for t in heapq.merge(*streams, key=lambda t: (t[0], t[1]))]
        self.cursor = 0

    def warmup(self) -> list[Bar]:
        """A replay warms its models up on its own first bars: nothing extra."""
        return []

    def next_step(self) -> list[Bar]:
        """The bars sharing the next close time (``[]`` at the end)."""
        bars = self.bars
        i = self.cursor
        if i >= len(bars):
            return []
        ts = bars[i].ts_event
        j = i + 1
        while j < len(bars) and bars[j].ts_event == ts:
            j += 1
        self.cursor = j
        return bars[i:j]

    def state_dict(self) -> dict[str, Any]:
        """``{"cursor": n}``."""
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved cursor.

        Raises:
            ValueError: when the cursor is beyond the data (another data set).
        """
        c = int(state["cursor"])
        if not 0 <= c <= len(self.bars):
            raise ValueError(f"replay cursor {c} outside the data (0..{len(self.bars)})")
        self.cursor = c


class SimFeed:
    """The embedded SIM market: ``warmup_bars`` of generated history per
    symbol, then one bar per symbol per step, for ever (not finite)."""

    finite = False

    def __init__(self, market: SimMarket, warmup_bars: int) -> None:
        self.market = market
        self.warmup_bars = warmup_bars

    def warmup(self) -> list[Bar]:
        """Generated history before the market's start, in time order."""
        bars = self.market.history(self.warmup_bars)
        return sorted(bars, key=lambda b: (b.ts_event, str(b.instrument_id)))

    def next_step(self) -> list[Bar]:
        """The next minute's bars, one per symbol."""
        return self.market.next_step()

    def state_dict(self) -> dict[str, Any]:
        """The generator's full state."""
        return self.market.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator's state."""
        self.market.load_state_dict(state)
