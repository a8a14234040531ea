"""ib_async for real, without TWS: a stand-in gateway at ib_async's socket.

:class:`FakeGateway` replaces the two methods of ib_async's ``Connection``
that touch the network (``connectAsync`` opens no socket, ``sendMsg`` keeps
what would be written) and answers ib_async's requests the way TWS does:

* the handshake (the server version and connection time, then
  ``nextValidId`` and ``managedAccounts``) goes through ib_async's own
  reader (``Client._onSocketHasData``), so ``IB.connectAsync`` runs
  unmodified;
* requests are answered through the wrapper callbacks with the argument
  shapes ib_async's ``Decoder`` passes (``contractDetails(reqId,
  ContractDetails)``, ``openOrder(orderId, Contract, Order, OrderState)``,
  ``orderStatus(orderId, status, filled, remaining, avgFillPrice, permId,
  parentId, lastFillPrice, clientId, whyHeld, mktCapPrice)``,
  ``execDetails(reqId, Contract, Execution)``,
  ``commissionReport(CommissionReport)``, ``error(reqId, code, text,
  advancedOrderRejectJson)``), scheduled with ``call_soon``: no sleeping;
* ``client.placeOrder``/``cancelOrder``/``reqContractDetails``/
  ``reqExecutions``/``reqOpenOrders`` are wrapped to record their arguments
  and then run for real (ib_async encodes every field).

No recorded IB sessions exist here: each test writes its event sequence from
IB's API documentation and is named after the case it shows.

The ``online`` marker (registered here) runs tests against an IB paper
account; they are skipped unless ``IBKR_PAPER_HOST`` is set.
"""

from __future__ import annotations

import asyncio
import copy
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from ib_async import IB
from ib_async.contract import Contract, ContractDetails
from ib_async.objects import CommissionReport, Execution
from ib_async.order import Order as IbOrder
from ib_async.order import OrderState
from ib_async.util import UNSET_DOUBLE

from core.clock import TestClock
from core.enums import OrderSide, OrderType, TimeInForce
from core.events import Event, OrderSubmitted
from core.identifiers import InstrumentId
from core.orders import Order
from venues.ibkr import ContractSpec, IbkrConfig, IbkrVenue

ACCOUNT = "DU0000000"
CLIENT_ID = 17
NANOS = 1_000_000_000
#: 2024-01-02 (a Tuesday) 15:00 UTC = 10:00 in New York: US stocks trade
T0 = int(datetime(2024, 1, 2, 15, 0, tzinfo=timezone.utc).timestamp()) * NANOS
AAPL_ID = InstrumentId("AAPL", "IBKR")
ES_ID = InstrumentId("ES-202612", "IBKR")
AAPL_SPEC = ContractSpec("AAPL", "STK", "SMART", "USD")
ES_SPEC = ContractSpec("ES", "FUT", "CME", "USD", last_trade_date="202612")
AAPL_CON_ID = 265598
ES_CON_ID = 495512563


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "online: runs against an IB paper account (needs IBKR_PAPER_HOST)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("IBKR_PAPER_HOST"):
        return
    skip = pytest.mark.skip(reason="IBKR_PAPER_HOST is not set: no IB paper account to run against")
    for item in items:
        if "online" in item.keywords:
            item.add_marker(skip)


def frame(*fields: object) -> bytes:
    """One IB API message as TWS writes it: length prefix, NUL-terminated fields."""
    body = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def stock_details(symbol: str = "AAPL", con_id: int = AAPL_CON_ID, min_tick: float = 0.01,
                  liquid: str = "20240102:0930-20240102:1600;20240103:0930-20240103:1600",
                  trading: str = "20240102:0400-20240102:2000;20240103:0400-20240103:2000",
                  stock_type: str = "COMMON") -> ContractDetails:
    """``ContractDetails`` as the decoder builds them for a SMART-routed US
    stock (IB answers with the listing exchange, NASDAQ for AAPL)."""
    c = Contract(secType="STK", conId=con_id, symbol=symbol, exchange="NASDAQ", primaryExchange="NASDAQ",
                 currency="USD", localSymbol=symbol, tradingClass="NMS")
    return ContractDetails(contract=c, marketName="NMS", minTick=min_tick, longName=f"{symbol} INC",
                           timeZoneId="US/Eastern", tradingHours=trading, liquidHours=liquid, stockType=stock_type,
                           minSize=1.0, sizeIncrement=1.0, suggestedSizeIncrement=100.0)


def es_details(con_id: int = ES_CON_ID, min_tick: float = 0.25, multiplier: str = "50") -> ContractDetails:
    """``ContractDetails`` of the CME E-mini S&P 500 future (Chicago hours:
    17:00 to 16:00 the next day)."""
    c = Contract(secType="FUT", conId=con_id, symbol="ES", lastTradeDateOrContractMonth="20261218",
                 multiplier=multiplier, exchange="CME", currency="USD", localSymbol="ESZ6", tradingClass="ES")
    return ContractDetails(contract=c, marketName="ES", minTick=min_tick, longName="E-mini S&P 500",
                           timeZoneId="US/Central", contractMonth="202612",
                           tradingHours="20240101:1700-20240102:1600;20240102:1700-20240103:1600",
                           liquidHours="20240102:0830-20240102:1500;20240103:0830-20240103:1500",
                           minSize=1.0, sizeIncrement=1.0)


def execution(exec_id: str, order_id: int, perm_id: int, side: str, shares: float, price: float, order_ref: str,
              cum_qty: float, avg_price: float, liquidity: int = 1, at_ns: int = T0,
              client_id: int = CLIENT_ID) -> Execution:
    """An ``Execution`` with the fields the decoder fills (``side`` is IB's
    ``BOT``/``SLD``; ``lastLiquidity`` 1 added, 2 removed liquidity)."""
    return Execution(execId=exec_id, time=datetime.fromtimestamp(at_ns / NANOS, tz=timezone.utc),
                     acctNumber=ACCOUNT, exchange="ISLAND", side=side, shares=shares, price=price, permId=perm_id,
                     clientId=client_id, orderId=order_id, liquidation=0, cumQty=cum_qty, avgPrice=avg_price,
                     orderRef=order_ref, lastLiquidity=liquidity)


def commission(exec_id: str, amount: float, currency: str = "USD", realized: float = UNSET_DOUBLE) -> CommissionReport:
    """A ``CommissionReport`` as the decoder builds it; IB sends
    ``realizedPNL`` = 1.7976931348623157e308 (its unset double) for a fill
    that opens a position."""
    return CommissionReport(execId=exec_id, commission=amount, currency=currency, realizedPNL=realized,
                            yield_=UNSET_DOUBLE, yieldRedemptionDate=0)


@dataclass
class FakeGateway:
    """TWS / IB Gateway as seen from ib_async's socket (see the module docstring)."""

    ib: IB
    account: str = ACCOUNT
    server_version: int = 178
    up: bool = True
    catalog: dict[tuple[str, str, str], list[ContractDetails]] = field(default_factory=dict)
    sent: list[list[str]] = field(default_factory=list)
    placed: list[tuple[int, Contract, IbOrder]] = field(default_factory=list)
    canceled: list[int] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    #: what the next synchronisation returns: (orderId, Contract, Order, OrderState, orderStatus args)
    open_orders: list[tuple[int, Contract, IbOrder, OrderState, tuple[Any, ...]]] = field(default_factory=list)
    completed: list[tuple[Contract, IbOrder, OrderState]] = field(default_factory=list)
    executions: list[tuple[Contract, Execution, CommissionReport]] = field(default_factory=list)
    positions: list[tuple[Contract, float, float]] = field(default_factory=list)
    cash: dict[str, str] = field(default_factory=dict)
    connects: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        client = self.ib.client
        conn = client.conn

        async def connect(host: str, port: int) -> None:
            if not self.up:
                self.refused += 1
                raise ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")
            self.connects += 1
            conn.transport = object()  # type: ignore[assignment]

        def disconnect() -> None:
            conn.transport = None

        conn.connectAsync = connect  # type: ignore[method-assign]
        conn.sendMsg = self._on_message  # type: ignore[method-assign]
        conn.disconnect = disconnect  # type: ignore[method-assign]
        for name in ("placeOrder", "cancelOrder", "reqContractDetails"):
            setattr(client, name, self._spy(name, getattr(client, name)))

    def _spy(self, name: str, real: Any) -> Any:
        def spy(*args: Any) -> Any:
            if name == "placeOrder":
                self.placed.append((args[0], args[1], copy.copy(args[2])))
            elif name == "cancelOrder":
                self.canceled.append(args[0])
            elif name == "reqContractDetails":
                self._later(self._answer_details, args[0], args[1])
            return real(*args)

        return spy

    def _later(self, fn: Any, *args: Any) -> None:
        asyncio.get_running_loop().call_soon(fn, *args)

    # ------------------------------------------------------------ the wire
    def _on_message(self, msg: bytes) -> None:
        client, w = self.ib.client, self.ib.wrapper
        if msg.startswith(b"API\0"):
            self._later(client._onSocketHasData, frame(self.server_version, "20240102 10:00:00 US/Eastern"))
            return
        fields = msg[4:].decode().split("\0")[:-1]
        self.sent.append(fields)
        mid = int(fields[0])
        names = {71: "startApi", 61: "reqPositions", 5: "reqOpenOrders", 99: "reqCompletedOrders",
                 6: "reqAccountUpdates", 76: "reqAccountUpdatesMulti", 7: "reqExecutions", 3: "placeOrder",
                 4: "cancelOrder", 9: "reqContractDetails"}
        self.requests.append(names.get(mid, str(mid)))
        if mid == 71:
            self._later(client._onSocketHasData, frame(9, 1, 1) + frame(15, 1, self.account))
        elif mid == 61:
            self._later(self._answer_positions)
        elif mid == 5:
            self._later(self._answer_open_orders)
        elif mid == 99:
            self._later(self._answer_completed)
        elif mid == 6:
            self._later(self._answer_account, fields[3])
        elif mid == 76:
            self._later(w.accountUpdateMultiEnd, int(fields[2]))
        elif mid == 7:
            self._later(self._answer_executions, int(fields[2]))

    def _answer_positions(self) -> None:
        w = self.ib.wrapper
        for contract, pos, avg in self.positions:
            w.position(self.account, copy.deepcopy(contract), pos, avg)
        w.positionEnd()

    def _answer_account(self, account: str) -> None:
        w = self.ib.wrapper
        for ccy, value in self.cash.items():
            w.updateAccountValue("CashBalance", value, ccy, account)
        w.accountDownloadEnd(account)

    def _answer_open_orders(self) -> None:
        w = self.ib.wrapper
        for order_id, contract, order, state, status in self.open_orders:
            w.openOrder(order_id, copy.deepcopy(contract), copy.deepcopy(order), copy.deepcopy(state))
            w.orderStatus(*status)
        w.openOrderEnd()

    def _answer_completed(self) -> None:
        w = self.ib.wrapper
        for contract, order, state in self.completed:
            w.completedOrder(copy.deepcopy(contract), copy.deepcopy(order), copy.deepcopy(state))
        w.completedOrdersEnd()

    def _answer_executions(self, req_id: int) -> None:
        w = self.ib.wrapper
        for contract, ex, report in self.executions:
            w.execDetails(req_id, copy.deepcopy(contract), copy.deepcopy(ex))
            w.commissionReport(copy.deepcopy(report))
        w.execDetailsEnd(req_id)

    def _answer_details(self, req_id: int, contract: Contract) -> None:
        w = self.ib.wrapper
        key = (contract.symbol, contract.secType, contract.lastTradeDateOrContractMonth)
        found = self.catalog.get(key, [])
        if not found:
            w.error(req_id, 200, "No security definition has been found for the request", "")
            return
        for cd in found:
            w.contractDetails(req_id, copy.deepcopy(cd))
        w.contractDetailsEnd(req_id)

    # ------------------------------------------------------------ what a test drives
    def add(self, cd: ContractDetails, last_trade: str = "") -> None:
        """List contract details under the symbol, type and expiry a request names."""
        c = cd.contract
        assert c is not None
        self.catalog.setdefault((c.symbol, c.secType, last_trade), []).append(cd)

    def status(self, order_id: int, status: str, filled: float, remaining: float, perm_id: int,
               avg_fill: float = 0.0, last_fill: float = 0.0, parent_id: int = 0) -> None:
        """``orderStatus`` exactly as the decoder passes it (11 arguments)."""
        self.ib.wrapper.orderStatus(order_id, status, filled, remaining, avg_fill, perm_id, parent_id, last_fill,
                                    CLIENT_ID, "", 0.0)

    def exec(self, contract: Contract, ex: Execution) -> None:
        """A live ``execDetails`` (IB sends live executions with reqId -1)."""
        self.ib.wrapper.execDetails(-1, copy.deepcopy(contract), copy.deepcopy(ex))

    def commission(self, report: CommissionReport) -> None:
        """A ``commissionReport``."""
        self.ib.wrapper.commissionReport(copy.deepcopy(report))

    def error(self, req_id: int, code: int, text: str) -> None:
        """An ``error`` message (``reqId`` is the order id for order errors, -1 otherwise)."""
        self.ib.wrapper.error(req_id, code, text, "")

    def drop(self) -> None:
        """The socket closes under ib_async (the gateway went away)."""
        self.ib.client.conn.connection_lost(None)


async def settle() -> None:
    """Let ``call_soon`` callbacks and the tasks they wake run (zero-delay yields)."""
    for _ in range(30):
        await asyncio.sleep(0)


@dataclass
class Harness:
    """A started venue, its gateway, the clock and the reports it made."""

    venue: IbkrVenue
    gw: FakeGateway
    clock: TestClock
    events: list[Event]

    def of(self, cls: type, coid: str | None = None) -> list[Any]:
        """Reports of one type (of one order)."""
        return [e for e in self.events if isinstance(e, cls)
                and (coid is None or getattr(e, "client_order_id", None) == coid)]

    def order(self, coid: str, side: OrderSide = OrderSide.BUY, qty: str = "100", price: str | None = "187.25",
              order_type: OrderType = OrderType.LIMIT, tif: TimeInForce = TimeInForce.GTC,
              instrument: InstrumentId = AAPL_ID, **kw: Any) -> Order:
        """A desk order already ``SUBMITTED`` (as the engine hands it to the venue)."""
        now = self.clock.timestamp_ns()
        o = Order(client_order_id=coid, model_id="hmm_v1", instrument_id=instrument, side=side,
                  order_type=order_type, quantity=Decimal(qty), price=None if price is None else Decimal(price),
                  time_in_force=tif, ts_init=now, step=1, ts_last=now, **kw)
        o.apply(OrderSubmitted(ts_event=now, ts_init=now, client_order_id=coid, instrument_id=instrument,
                               model_id="hmm_v1"))
        return o

    def book(self, order: Order) -> Order:
        """Apply this order's reports to it, in order, with the desk's state machine."""
        for e in self.events:
            if getattr(e, "client_order_id", None) == order.client_order_id:
                order.apply(e)  # type: ignore[arg-type]
        return order


def make_config(**kw: Any) -> IbkrConfig:
    """The venue of ``examples/ibkr-paper.yaml`` (AAPL and ES), with overrides."""
    base: dict[str, Any] = dict(name="IBKR", host="127.0.0.1", port=4002, client_id=CLIENT_ID, account=ACCOUNT,
                                contracts=(AAPL_SPEC, ES_SPEC))
    base.update(kw)
    return IbkrConfig(**base)


@pytest.fixture
async def harness() -> Harness:
    """A venue started against the fake gateway at ``T0`` (New York open)."""
    ib = IB()
    gw = FakeGateway(ib)
    gw.add(stock_details())
    gw.add(es_details(), last_trade="202612")
    gw.cash = {"USD": "100000.00"}
    clock = TestClock(T0)
    events: list[Event] = []
    venue = IbkrVenue(make_config(), clock, events.append, ib=ib, schedule=lambda delay, cb: None)
    await venue.start()
    h = Harness(venue, gw, clock, events)
    yield h
    venue.close()
