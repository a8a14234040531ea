"""Funding payments of perpetual futures into the desk's book (issue 6,
USD-M futures).

A venue adapter (``venues.binance.usdm``) reports each payment as a
:class:`core.events.FundingPaid` through the engine's venue callback; the
engine journals and publishes every non-order event it receives
(``Engine._on_venue_event``). :func:`attach_funding` subscribes the booking
(:meth:`core.portfolio.Portfolio.apply_funding`: pro rata to the models'
signed positions, once per ``tran_id``) to the engine's bus. The journal
replay (``core.rebuild``) books the same events the same way, so ``desk
check-store`` rebuilds the same cash.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Callable

from core.events import Event, FundingPaid

log = logging.getLogger("desk.funding")


def attach_funding(engine: Any) -> Callable[[Event], None]:
    """Book every ``FundingPaid`` published on ``engine.bus`` into
    ``engine.portfolio`` (read at each event: a restore replaces the
    portfolio). Each booked part also enters the engine's realized PnL of
    the day (``engine._tally_realized``, when the engine has it), so the
    daily loss rail counts funding. A payment no model can take (no model
    holds the instrument, or the positions net to zero) raises a WARNING
    alert ``FUNDING_UNBOOKED`` naming it. Returns the handler (for
    ``engine.bus.unsubscribe``).

    The perpetuals' position changes are logged (``Portfolio.
    track_positions``; the log is checkpointed) so each payment is split by
    the positions held at its funding time (``FundingPaid.ts_event``).

    Call it once, after the engine is built and before it runs.
    """

    def on_funding(event: Event) -> None:
        if not isinstance(event, FundingPaid):
            return
        pf = engine.portfolio
        repeat = event.tran_id in pf.funding_seen
        pf.track_positions([event.instrument_id])  # a restore replaced the portfolio: idempotent
        parts = pf.apply_funding(event.instrument_id, event.amount, event.tran_id, at_ns=event.ts_event)
        if repeat:
            return
        if not parts:
            alert = getattr(engine, "alert", None)
            msg = (f"funding {event.tran_id} of {event.instrument_id}: {event.amount} {event.asset} not booked: "
                   f"no model holds a net position in it")
            if alert is not None:
                alert("WARNING", "FUNDING_UNBOOKED", msg)
            else:
                log.warning(msg)
            return
        tally = getattr(engine, "_tally_realized", None)
        if tally is not None:
            tally(event.ts_event, sum(parts.values(), Decimal(0)))

    engine.bus.subscribe("FundingPaid", on_funding)
    engine.portfolio.track_positions(perpetuals(engine))  # checkpointed: a restored portfolio keeps logging
    return on_funding


def perpetuals(engine: Any) -> list[Any]:
    """The instruments of ``engine`` that pay funding: those of a venue
    whose config says ``market: usdm`` (``engine.venues``)."""
    out = []
    for v in getattr(engine, "venues", {}).values():
        if getattr(getattr(v, "config", None), "market", "") == "usdm":
            out += [i for i in getattr(v, "instruments", {}) if i in engine.instruments]
    return sorted(out, key=str)
