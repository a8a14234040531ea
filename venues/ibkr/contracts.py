"""IB contracts: from the operator's :class:`~venues.ibkr.config.ContractSpec`
to an ib_async ``Contract``, and from IB's contract details to the desk's
:class:`~core.instruments.Instrument` plus what the core instrument does not
carry (the futures multiplier, the trading hours).

Instrument ids (``SYMBOL.VENUE``, DESIGN.md section 4):

* stocks and ETFs: the IB symbol (``AAPL.IBKR``; ``BRK B`` -> ``BRK-B.IBKR``);
* futures: symbol and the configured contract month or last trading day
  (``ES-202612.IBKR``), so two expiries never share an id;
* FX: the pair without separator (``EURUSD.IBKR``), base ``EUR``, quote ``USD``.

Filters (issue 6): the tick size is the details' ``minTick``; the step is 1
for stocks, ETFs and futures (whole shares and contracts) and the details'
``sizeIncrement`` for FX; the minimum quantity is the step (FX: the details'
``minSize`` when IB gives one). A future's notional is ``price x quantity x
multiplier`` (CME: one ES contract is 50 x the index), which
:meth:`IbkrContract.notional` computes; ``core.instruments.Instrument`` has
no multiplier yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Sequence

from ib_async.contract import Contract, ContractDetails
from ib_async.util import UNSET_DOUBLE

from core.identifiers import InstrumentId
from core.instruments import Instrument
from venues.ibkr.config import ContractSpec
from venues.ibkr.hours import TradingHours, parse_hours

ONE = Decimal(1)


class ContractError(ValueError):
    """A configured contract IB does not know, or knows ambiguously, or
    whose details cannot make an instrument. The message names the contract
    as the operator wrote it."""


def instrument_symbol(spec: ContractSpec) -> str:
    """The desk symbol of a contract (see the module docstring)."""
    sym = spec.symbol.replace(" ", "-").replace(".", "-")
    if spec.sec_type == "FUT":
        return f"{sym}-{spec.last_trade_date}"
    if spec.ib_sec_type == "CASH":
        return f"{sym}{spec.currency}"
    return sym


def instrument_id(spec: ContractSpec, venue: str) -> InstrumentId:
    """``SYMBOL.VENUE`` of a contract (``AAPL.IBKR``, ``ES-202612.IBKR``)."""
    return InstrumentId(instrument_symbol(spec), venue)


def to_ib_contract(spec: ContractSpec) -> Contract:
    """The ib_async ``Contract`` to qualify for ``spec`` (not yet carrying a
    ``conId``)."""
    c = Contract(secType=spec.ib_sec_type, symbol=spec.symbol, exchange=spec.exchange, currency=spec.currency)
    if spec.last_trade_date:
        c.lastTradeDateOrContractMonth = spec.last_trade_date
    if spec.primary_exchange:
        c.primaryExchange = spec.primary_exchange
    if spec.trading_class:
        c.tradingClass = spec.trading_class
    return c


def _dec(value: Any, what: str, spec: ContractSpec) -> Decimal | None:
    """A float from IB as its shortest repr (``0.25`` -> ``Decimal("0.25")``);
    None for IB's "unset" (``UNSET_DOUBLE``), zero, or nothing."""
    if value is None or value == "" or value == UNSET_DOUBLE:
        return None
    try:
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ContractError(f"contract {spec.describe()}: {what} {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ContractError(f"contract {spec.describe()}: {what} {value!r} is not a positive number")
    return d if d > 0 else None


@dataclass(frozen=True, slots=True)
class IbkrContract:
    """A qualified contract and its desk instrument.

    Attributes:
        spec: the contract as configured.
        instrument: the desk instrument (filters from the details).
        contract: the qualified ib_async ``Contract`` (with ``conId``) that
            orders are sent for.
        con_id: IB's contract id.
        multiplier: units of the underlying per contract (``50`` for ES, 1
            for stocks and FX).
        hours: the sessions orders may be sent in (``liquidHours`` for stocks
            and ETFs, ``tradingHours`` for futures and FX).
        hours_field: which of the two it is.
        long_name: IB's description (``APPLE INC``), for the operator.
    """

    spec: ContractSpec
    instrument: Instrument
    contract: Contract
    con_id: int
    multiplier: Decimal
    hours: TradingHours
    hours_field: str
    long_name: str = ""

    def notional(self, price: Decimal, quantity: Decimal) -> Decimal:
        """The value of ``quantity`` contracts at ``price`` in the quote
        currency: ``price x quantity x multiplier`` (CME: an ES contract is
        $50 x the index, so 2 ES at 5000.25 are $500,025)."""
        return price * quantity * self.multiplier


def qualify(spec: ContractSpec, details: Sequence[ContractDetails], venue: str,
            error: tuple[int, str] | None = None) -> IbkrContract:
    """Build the :class:`IbkrContract` of ``spec`` from IB's answer to
    ``reqContractDetails`` (``details``; ``error`` is the IB error that
    ended the request, if any).

    Raises:
        ContractError: naming the contract when IB has no definition for it
            (error 200, or no details), several (ambiguous: the candidates
            are listed), one of another security type or currency, or
            details that make no valid instrument (no ``minTick``, a future
            without a multiplier, unreadable trading hours).
    """
    where = f"contract {spec.describe()}"
    if not details:
        why = f"IB error {error[0]}: {error[1]}" if error else "IB returned no contract details"
        raise ContractError(f"{where}: unknown to IB ({why}); check symbol, sec_type, exchange, currency"
                            + (", last_trade_date" if spec.sec_type == "FUT" else ""))
    if len(details) > 1:
        cands = ", ".join(sorted(f"{d.contract.localSymbol or d.contract.symbol} "
                                 f"{d.contract.lastTradeDateOrContractMonth} conId {d.contract.conId}".replace("  ", " ")
                                 for d in details if d.contract is not None))
        raise ContractError(f"{where}: ambiguous, IB has {len(details)} matches ({cands}); "
                            "add primary_exchange, trading_class or a full last_trade_date")
    cd = details[0]
    c = cd.contract
    if c is None or not c.conId:
        raise ContractError(f"{where}: IB's details carry no contract id")
    if c.secType != spec.ib_sec_type:
        raise ContractError(f"{where}: IB says secType {c.secType!r}, not {spec.ib_sec_type!r}")
    if c.currency and c.currency != spec.currency:
        raise ContractError(f"{where}: IB says currency {c.currency!r}, not {spec.currency!r}")
    if spec.sec_type == "ETF" and cd.stockType and cd.stockType != "ETF":
        raise ContractError(f"{where}: IB says stockType {cd.stockType!r}, not an ETF")
    tick = _dec(cd.minTick, "minTick", spec)
    if tick is None:
        raise ContractError(f"{where}: IB's details give no minTick (got {cd.minTick!r})")
    multiplier = _dec(c.multiplier, "multiplier", spec)
    if spec.multiplier is not None:
        if multiplier is not None and multiplier != spec.multiplier:
            raise ContractError(f"{where}: configured multiplier {spec.multiplier} but IB says {multiplier}")
        multiplier = multiplier or spec.multiplier
    if spec.sec_type == "FUT" and multiplier is None:
        raise ContractError(f"{where}: IB's details give no multiplier for a future (got {c.multiplier!r})")
    if spec.ib_sec_type == "CASH":
        step = _dec(cd.sizeIncrement, "sizeIncrement", spec) or ONE
        min_qty = max(step, _dec(cd.minSize, "minSize", spec) or step)
        base = spec.symbol
    else:
        step = min_qty = ONE
        base = instrument_symbol(spec)
    field = "liquidHours" if spec.ib_sec_type == "STK" else "tradingHours"
    text = getattr(cd, field) or cd.tradingHours
    if not getattr(cd, field) and cd.tradingHours:
        field = "tradingHours"
    try:
        hours = parse_hours(text, cd.timeZoneId, field)
    except ValueError as exc:
        raise ContractError(f"{where}: {exc}") from None
    inst = Instrument(id=instrument_id(spec, venue), base=base, quote=spec.currency, tick_size=tick, step_size=step,
                      min_qty=min_qty, filters_source="ib-contract-details")
    contract = Contract(**{k: getattr(c, k) for k in (
        "secType", "conId", "symbol", "lastTradeDateOrContractMonth", "multiplier", "exchange", "primaryExchange",
        "currency", "localSymbol", "tradingClass")})
    contract.exchange = spec.exchange  # SMART stays SMART (IB answers with the listing exchange)
    return IbkrContract(spec=spec, instrument=inst, contract=contract, con_id=int(c.conId),
                        multiplier=multiplier or ONE, hours=hours, hours_field=field, long_name=cd.longName)
