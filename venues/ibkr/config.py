"""Settings of the IBKR venue: where TWS / IB Gateway listens, the account,
the contracts to trade, and the adapter's timings.

The YAML form (``examples/ibkr-paper.yaml``)::

    venues:
      - kind: ibkr
        name: IBKR
        host: 127.0.0.1
        port: 4002            # IB Gateway paper; 4001 live, TWS 7497 paper / 7496 live
        client_id: 17
        account: DU0000000
        contracts:
          - {symbol: AAPL, sec_type: STK, exchange: SMART, currency: USD}
          - {symbol: ES, sec_type: FUT, exchange: CME, currency: USD, last_trade_date: "202612"}

:meth:`IbkrConfig.from_dict` reads one such venue entry; every bad field is
refused with its name and value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

NANOS = 1_000_000_000

#: the security types the adapter trades; ETF is traded as IB ``STK``, FX as ``CASH``
SEC_TYPES = ("STK", "ETF", "FUT", "CASH", "FX")
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9 .\-]*$")
_CCY_RE = re.compile(r"^[A-Z]{3}$")
_EXPIRY_RE = re.compile(r"^\d{6}(\d{2})?$")


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One contract to trade, as the operator writes it.

    Attributes:
        symbol: IB symbol (``AAPL``, ``ES``, ``EUR`` for EUR.USD).
        sec_type: ``STK``, ``ETF`` (an IB ``STK`` whose ``stockType`` is
            ETF), ``FUT``, ``CASH`` or ``FX`` (both IB ``CASH``).
        exchange: ``SMART``, ``CME``, ``IDEALPRO``...
        currency: the contract's currency (``USD``), the quote of its prices.
        last_trade_date: a future's contract month ``YYYYMM`` or last trading
            day ``YYYYMMDD``; required for ``FUT``, empty otherwise.
        primary_exchange: IB ``primaryExchange`` to disambiguate a SMART
            stock (``NASDAQ``), optional.
        trading_class: IB ``tradingClass``, optional.
        multiplier: the multiplier the operator expects (futures), optional:
            qualification refuses a contract whose IB multiplier differs.
    """

    symbol: str
    sec_type: str
    exchange: str
    currency: str
    last_trade_date: str = ""
    primary_exchange: str = ""
    trading_class: str = ""
    multiplier: Decimal | None = None

    def __post_init__(self) -> None:
        where = f"contract {self.symbol!r}"
        if not isinstance(self.symbol, str) or not _SYMBOL_RE.match(self.symbol):
            raise ValueError(f"{where}: symbol must be upper-case letters/digits, got {self.symbol!r}")
        if self.sec_type not in SEC_TYPES:
            raise ValueError(f"{where}: sec_type must be one of {', '.join(SEC_TYPES)}, got {self.sec_type!r}")
        if not isinstance(self.exchange, str) or not self.exchange.strip():
            raise ValueError(f"{where}: exchange must be given (SMART, CME, IDEALPRO...), got {self.exchange!r}")
        if not isinstance(self.currency, str) or not _CCY_RE.match(self.currency):
            raise ValueError(f"{where}: currency must be a 3-letter code, got {self.currency!r}")
        if self.sec_type == "FUT":
            if not isinstance(self.last_trade_date, str) or not _EXPIRY_RE.match(self.last_trade_date):
                raise ValueError(f"{where}: last_trade_date must be YYYYMM or YYYYMMDD for a future, "
                                 f"got {self.last_trade_date!r}")
        elif self.last_trade_date:
            raise ValueError(f"{where}: last_trade_date applies to futures only, got {self.last_trade_date!r}")
        if self.multiplier is not None and (not isinstance(self.multiplier, Decimal)
                                            or not self.multiplier.is_finite() or self.multiplier <= 0):
            raise ValueError(f"{where}: multiplier must be a positive number, got {self.multiplier!r}")

    @property
    def ib_sec_type(self) -> str:
        """IB's ``secType``: ``STK`` for stocks and ETFs, ``CASH`` for FX."""
        return {"ETF": "STK", "FX": "CASH"}.get(self.sec_type, self.sec_type)

    def describe(self) -> str:
        """The contract as the operator wrote it, for error messages
        (``ES FUT CME USD 202612``)."""
        parts = [self.symbol, self.sec_type, self.exchange, self.currency]
        if self.last_trade_date:
            parts.append(self.last_trade_date)
        return " ".join(parts)

    @classmethod
    def from_dict(cls, data: Any, index: int = 0) -> "ContractSpec":
        """Read one ``contracts:`` entry: a mapping, or an object with
        attributes of the same names (the desk's config model). ``None``
        means "not given"; a multiplier may be a number or its text.

        Raises:
            ValueError: naming the entry and the field for a missing or
                unknown field or a bad value.
        """
        known = {f.name for f in fields(cls)}
        data = _as_mapping(data, known, f"contracts[{index}]")
        extra = sorted(set(data) - known)
        if extra:
            raise ValueError(f"contracts[{index}]: unknown field(s) {', '.join(extra)} "
                             f"(known: {', '.join(sorted(known))})")
        missing = [k for k in ("symbol", "sec_type", "exchange", "currency") if data.get(k) is None]
        if missing:
            raise ValueError(f"contracts[{index}]: missing field(s) {', '.join(missing)}")
        kw = {k: v for k, v in data.items() if v is not None}
        if isinstance(kw.get("last_trade_date"), int):
            kw["last_trade_date"] = str(kw["last_trade_date"])
        if "multiplier" in kw and not isinstance(kw["multiplier"], Decimal):
            m = kw["multiplier"]
            try:
                kw["multiplier"] = Decimal(repr(m)) if isinstance(m, float) else Decimal(str(m))
            except InvalidOperation:
                raise ValueError(f"contracts[{index}]: multiplier must be a number, got {m!r}") from None
        return cls(**kw)


def _as_mapping(data: Any, names: set[str], where: str) -> dict[str, Any]:
    """A mapping as a dict, or the named attributes of a config object."""
    if isinstance(data, Mapping):
        return dict(data)
    if data is None or isinstance(data, (str, bytes, int, float, list, tuple)):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    return {n: getattr(data, n) for n in names | {"kind"} if hasattr(data, n)}


@dataclass(frozen=True, slots=True)
class IbkrConfig:
    """Settings of one IBKR venue.

    Attributes:
        name: the venue name in instrument ids (``AAPL.IBKR``).
        host, port: where TWS or IB Gateway listens (Gateway: 4002 paper,
            4001 live; TWS: 7497 paper, 7496 live).
        client_id: the API client id (unique per connection to the gateway).
        account: the IB account (``DU...`` paper, ``U...`` live); empty when
            the login manages a single account.
        contracts: the contracts to trade (qualified at start).
        margin_account: IB accounts are margin accounts (shorts allowed,
            commissions in the quote currency); read by the engine.
        connect_timeout_s: how long one connection attempt may take (wall
            seconds: a network timeout, not engine time).
        request_timeout_s: how long a contract-details request may take.
        reconnect_base_ns, reconnect_max_ns: reconnect back-off on the
            engine clock: ``min(base * 2**(n-1), max)`` after the n-th failed
            attempt (1 s, 2 s, 4 s ... 60 s).
        max_msg_rate: IB's message limit per second (50).
        pacing_hold_ns: how long the halved rate holds after an error 100.
        cancel_settle_ns: how long a cancel IB reported is held before it is
            reported to the desk, so a fill racing the cancel still wins.
        commission_wait_ns: how long a fill waits for its commission report
            before it is reported with a zero commission (and an alert).
        inactive_grace_ns: how long an ``Inactive`` status waits for the
            error code that decides between rejected and canceled.
        oca_type: IB ``ocaType`` of OCO groups: 1 cancels the other orders
            (with block), 2 reduces them proportionally with block, 3
            without block.
        ledger_path: the adapter's own SQLite ledger (order -> model id,
            executions with commission and realized PnL), or None for memory.
    """

    name: str = "IBKR"
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    account: str = ""
    contracts: tuple[ContractSpec, ...] = ()
    margin_account: bool = True
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 10.0
    reconnect_base_ns: int = NANOS
    reconnect_max_ns: int = 60 * NANOS
    max_msg_rate: int = 50
    pacing_hold_ns: int = 60 * NANOS
    cancel_settle_ns: int = NANOS
    commission_wait_ns: int = 10 * NANOS
    inactive_grace_ns: int = NANOS
    oca_type: int = 1
    ledger_path: str | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Z][A-Z0-9_]*$", str(self.name)):
            raise ValueError(f"ibkr name: must be an upper-case venue name, got {self.name!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"ibkr host: must be a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"ibkr port: must be an integer in 1..65535, got {self.port!r}")
        if isinstance(self.client_id, bool) or not isinstance(self.client_id, int) or self.client_id < 0:
            raise ValueError(f"ibkr client_id: must be an integer >= 0, got {self.client_id!r}")
        if not isinstance(self.account, str):
            raise ValueError(f"ibkr account: must be a string, got {self.account!r}")
        if not self.contracts:
            raise ValueError("ibkr contracts: at least one contract is needed")
        for name in ("reconnect_base_ns", "reconnect_max_ns", "pacing_hold_ns", "cancel_settle_ns",
                     "commission_wait_ns", "inactive_grace_ns"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"ibkr {name}: must be an integer >= 0 (ns), got {v!r}")
        if self.reconnect_base_ns <= 0 or self.reconnect_max_ns < self.reconnect_base_ns:
            raise ValueError(f"ibkr reconnect back-off: need 0 < base <= max, got {self.reconnect_base_ns}, "
                             f"{self.reconnect_max_ns}")
        if isinstance(self.max_msg_rate, bool) or not isinstance(self.max_msg_rate, int) or self.max_msg_rate < 1:
            raise ValueError(f"ibkr max_msg_rate: must be an integer >= 1, got {self.max_msg_rate!r}")
        if self.oca_type not in (1, 2, 3):
            raise ValueError(f"ibkr oca_type: must be 1, 2 or 3, got {self.oca_type!r}")
        for name in ("connect_timeout_s", "request_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"ibkr {name}: must be a positive number of seconds, got {v!r}")
        currencies = {c.currency for c in self.contracts}
        if len(currencies) > 1:
            raise ValueError(f"ibkr contracts: all must share one currency (the venue's cash), got "
                             f"{', '.join(sorted(currencies))}")

    @property
    def quote(self) -> str:
        """The venue's cash currency: the contracts' common currency."""
        return self.contracts[0].currency

    def backoff_ns(self, failures: int) -> int:
        """Reconnect delay after ``failures`` (>= 1) failed attempts (ns)."""
        return min(self.reconnect_base_ns * (2 ** max(0, failures - 1)), self.reconnect_max_ns)

    @classmethod
    def from_dict(cls, data: Any) -> "IbkrConfig":
        """Read one ``venues:`` entry of ``kind: ibkr``: a mapping, or the
        desk's config model (attributes of the same names; ``None`` means
        not given). ``kind`` is accepted and ignored.

        Raises:
            ValueError: naming the field and the value for an unknown field,
                a missing ``contracts`` list or any bad value.
        """
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in _as_mapping(data, known, "ibkr venue").items() if v is not None}
        extra = sorted(set(data) - known - {"kind"})
        if extra:
            raise ValueError(f"ibkr venue: unknown field(s) {', '.join(extra)} (known: {', '.join(sorted(known))})")
        if data.get("kind", "ibkr") != "ibkr":
            raise ValueError(f"ibkr venue: kind must be 'ibkr', got {data.get('kind')!r}")
        raw = data.get("contracts")
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ValueError(f"ibkr contracts: expected a non-empty list, got {raw!r}")
        kw = {k: v for k, v in data.items() if k not in ("kind", "contracts")}
        specs = tuple(c if isinstance(c, ContractSpec) else ContractSpec.from_dict(c, i) for i, c in enumerate(raw))
        return cls(contracts=specs, **kw)

    from_mapping = from_dict
