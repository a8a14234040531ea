"""Interactive Brokers through ib_async (issue 6): the venue adapter
(:class:`IbkrVenue`), its settings (:class:`IbkrConfig`,
:class:`ContractSpec`), contract qualification, IB status mapping, trading
hours and message pacing. Imports ``core`` and ``ib_async`` only."""

from venues.ibkr.adapter import IbExecution, IbkrVenue, oca_group
from venues.ibkr.config import ContractSpec, IbkrConfig
from venues.ibkr.contracts import ContractError, IbkrContract, instrument_id, qualify
from venues.ibkr.hours import TradingHours, parse_hours

__all__ = ["ContractError", "ContractSpec", "IbExecution", "IbkrConfig", "IbkrContract", "IbkrVenue",
           "TradingHours", "instrument_id", "oca_group", "parse_hours", "qualify"]
