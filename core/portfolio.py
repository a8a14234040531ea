"""The portfolio: positions and PnL per model and per instrument.

Accounting rules (DESIGN.md section 4):

* Fees are charged in the asset received, as Binance does without BNB: on a
  buy the fee is taken from the bought coin (the position grows by
  ``qty - fee``, the cost is the full ``qty * px``); on a sell it is taken
  from the quote proceeds.
* A position keeps its *total* cost, not a unit cost. A sell removes the
  sold share of the cost (``cost * sold / held``, the whole cost when the
  position closes), and ``realized_pnl = net proceeds - cost removed``, so
  realized PnL is net of every fee.
* Money is quantized at each fill to the quote precision (8 decimals) with
  ROUND_HALF_EVEN.
* ``fees`` values every fee in the quote at the fill price; informational.

Worked example (the issue's): buy 1.0000 ETH at 2000.00, fee 0.1 % = 0.0010
ETH → position 0.9990 ETH, cost 2000.00. Sell 0.9990 at 2100.00: proceeds
2097.90, fee 2.0979 USDT, net 2095.8021 → realized +95.8021 USDT.

Signed positions (issue 4, IBKR average cost on a margin account):

* ``quantity`` is signed (negative = short) and ``cost`` is the signed total
  cost: what was paid for a long, minus the net proceeds received for a
  short (short 2 at 100 → quantity -2, cost -200). ``unrealized =
  quantity * mark - cost`` holds for both sides.
* Every fill is reduced to a signed base change ``delta`` (``+qty`` on a
  buy, ``-qty`` on a sell, minus a fee charged in the base asset) and a
  quote cash flow ``cash`` (``-qty*px`` on a buy, ``+qty*px`` on a sell,
  minus a fee charged in the quote or in a third asset, valued in the quote).
  Then: an *opening* fill (flat, or same side) adds ``-cash`` to the cost,
  realized 0; a *reducing* fill removes the pro-rata share of the cost
  (``cost * |delta| / |quantity|``, quantized; the whole cost on a close)
  and realizes ``cash - removed``; a *flip* through zero closes the old side
  at its average cost with the share ``|quantity| / |delta|`` of the fill's
  cash (quantized) and opens the rest at the fill price (new cost = minus the
  remaining cash). In every case ``Δrealized - Δcost = cash`` exactly, so
  ``equity_start + realized + unrealized`` equals an independent cash ledger
  (quote cash + holdings at the marks) to the last unit.
* Spot instruments (the default, ``allow_short=False``) raise
  :class:`AccountingError` when a fill would take the position below zero.
  Short 2 at 100, buy 10 at 90, no fees → realized +20, long 8 with cost
  720, unrealized +40 at a mark of 95.

Fee assets (``OrderFilled.commission_currency``):

* base asset: the position gets ``qty - fee`` on a buy (Binance: fee in the
  asset received) and gives ``qty + fee`` on a sell (an extra reduction);
  valued in ``fees`` at the fill price.
* quote asset: paid from the quote cash (added to cost when opening,
  deducted from realized when reducing).
* a third asset (BNB): converted to the quote at its price at fill time,
  then booked as a quote fee. The price is ``apply_fill(fill, fee_price=)``
  if given, else the registry :meth:`Portfolio.set_price`; with neither,
  :class:`MissingPriceError` names the asset. (The BNB balance itself is
  outside this book: the fee is treated as quote spent at fill time.)

Futures (a contract multiplier, ``Instrument.multiplier``, registered with
:meth:`Portfolio.register_instrument`): a fill's cash flow is ``qty * px *
multiplier`` and a position's mark value ``quantity * mark * multiplier``, so
cost, realized and unrealized PnL are in quote money (CME ES, multiplier 50:
buy 1 at 5000.00, sell 1 at 5001.25, no fees -> realized +62.50 USD).
Instruments with a multiplier of 1 (spot, stocks) are unchanged.

Which asset is the base or the quote comes from
:meth:`Portfolio.register_instrument`; for an unregistered instrument it is
read from the symbol (``BASE/QUOTE``, or Binance's concatenated
``BASEQUOTE``: a currency the symbol ends with is the quote, one it starts
with is the base; anything else is a third asset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterator, Literal

from core.enums import OrderSide
from core.events import OrderFilled
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.values import ZERO, quantize_money

#: how a fee's currency relates to the instrument (see ``fee_asset_kind``)
FeeAssetKind = Literal["base", "quote", "other"]


@dataclass(slots=True)
class Position:
    """One model's position in one instrument.

    ``quantity`` base units held, signed (negative = short); ``cost`` signed
    total cost in quote of what is held, fees included (a long's cost is what
    was paid; a short's is minus the net proceeds received); ``realized``
    quote, net of every fee; ``fees`` quote value of all fees at fill time;
    ``fills`` count of fills. Rules: module docstring (IBKR average cost).
    """

    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    #: funding payments booked into ``realized`` (quote, signed; informational, USD-M perpetuals)
    funding: Decimal = ZERO

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """``quantity * mark - cost`` in quote, exact (not quantized, so sums
        over positions stay exact; quantize for display); 0 when flat."""
        if self.quantity == 0:
            return -self.cost
        if mark is None:
            return -self.cost
        return self.quantity * mark - self.cost

    def avg_px(self, quantum: Decimal | None = None) -> Decimal | None:
        """Average cost per unit, ``cost / quantity`` (quote per base unit,
        fees included, positive for longs and shorts); ``None`` when flat.

        ``quantum`` (e.g. ``Decimal("0.0001")``) rounds the result with
        ROUND_HALF_EVEN for display; ``None`` returns the exact quotient (28
        significant digits). Example: cost 600.00 over 59.94 → ``10.0100`` at
        quantum 0.0001 (600 / 59.94 = 10.01001…). Derived, never stored: the
        position keeps total cost (DESIGN.md section 4).
        """
        if self.quantity == 0:
            return None
        px = self.cost / self.quantity
        return px if quantum is None else px.quantize(quantum, rounding=ROUND_HALF_EVEN)

    def to_dict(self) -> dict[str, str | int]:
        """JSON-ready state (``funding`` only when a payment was booked)."""
        out: dict[str, str | int] = {
            "quantity": format(self.quantity, "f"), "cost": format(self.cost, "f"),
            "realized": format(self.realized, "f"), "fees": format(self.fees, "f"), "fills": self.fills,
        }
        if self.funding:
            out["funding"] = format(self.funding, "f")
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Position":
        """Inverse of ``to_dict``."""
        return cls(Decimal(d["quantity"]), Decimal(d["cost"]), Decimal(d["realized"]), Decimal(d["fees"]),
                   int(d["fills"]), Decimal(d.get("funding", "0")))


class AccountingError(Exception):
    """A fill the book cannot take: one that would make a spot position
    negative (spot is long-only), or a malformed fill (non-positive quantity,
    negative price or fee, unknown side)."""


class MissingPriceError(AccountingError):
    """A fee charged in a third asset (e.g. BNB) with no conversion price to
    the quote: pass ``fee_price`` to ``apply_fill`` or call
    ``Portfolio.set_price(asset, price)`` first. ``asset`` names the asset."""

    def __init__(self, asset: str, message: str) -> None:
        self.asset = asset
        super().__init__(message)


#: how far back the position changes of a perpetual are kept (``Portfolio.track_positions``): a funding
#: payment read up to a day after its funding time (a desk down for hours) is split by the positions then
POSITION_LOG_NS = 24 * 3600 * 1_000_000_000

#: most points kept in the equity curve (see ``Portfolio.sample_equity``)
EQUITY_CURVE_MAX = 240


@dataclass(slots=True)
class Portfolio:
    """Positions per (model, instrument), marks per instrument, equity curve.

    ``equity_start`` is the quote cash at the start (no positions). Equity is
    computed from this book alone (``equity_start + realized + unrealized``)
    so that it can be checked against the venue's cash ledger.

    ``allow_short`` (default False: spot, long-only) lets every instrument go
    short (an IBKR-style margin account); ``register_instrument`` can set it
    per instrument. ``asset_prices`` is the registry of asset prices in the
    quote used to convert third-asset fees (``set_price``).
    """

    equity_start: Decimal
    positions: dict[tuple[str, InstrumentId], Position] = field(default_factory=dict)
    marks: dict[InstrumentId, Decimal] = field(default_factory=dict)
    equity_curve: list[tuple[int, str]] = field(default_factory=list)
    curve_every_ns: int = 60_000_000_000  # one point per minute of engine time (doubles as it fills)
    _last_curve_ts: int = -1
    allow_short: bool = False
    asset_prices: dict[str, Decimal] = field(default_factory=dict)
    instrument_assets: dict[InstrumentId, tuple[str, str]] = field(default_factory=dict)
    short_by_instrument: dict[InstrumentId, bool] = field(default_factory=dict)
    #: contract multipliers other than 1 (futures), by instrument
    multipliers: dict[InstrumentId, Decimal] = field(default_factory=dict)
    #: venue transaction ids of the funding payments already booked (``apply_funding``; checkpointed)
    funding_seen: set[str] = field(default_factory=set)
    #: perpetuals whose position changes are logged (``track_positions``), so a funding payment is
    #: split by the positions held at its funding time
    tracked: set[InstrumentId] = field(default_factory=set)
    #: per tracked instrument, its position changes of the last ``POSITION_LOG_NS``:
    #: ``(fill time ns, model id, signed quantity change)``, oldest first (checkpointed)
    position_log: dict[InstrumentId, list[tuple[int, str, Decimal]]] = field(default_factory=dict)
    #: log every instrument's changes (a journal replay: ``core.rebuild``), not only ``tracked``
    track_all: bool = False

    # ---------------------------------------------------------- setup
    def register_instrument(self, instrument: Instrument, allow_short: bool | None = None) -> None:
        """Declare an instrument's base and quote assets (so a fill's
        ``commission_currency`` is classified without guessing from the
        symbol), its contract multiplier (``Instrument.multiplier``, 1 when it
        has none) and, optionally, whether it may go short (``None`` keeps the
        portfolio-wide ``allow_short``). Idempotent; registering again
        replaces the earlier values."""
        self.instrument_assets[instrument.id] = (instrument.base, instrument.quote)
        mult = getattr(instrument, "multiplier", None)
        if isinstance(mult, Decimal) and mult != 1:
            self.multipliers[instrument.id] = mult
        else:
            self.multipliers.pop(instrument.id, None)
        if allow_short is None:
            self.short_by_instrument.pop(instrument.id, None)
        else:
            self.short_by_instrument[instrument.id] = bool(allow_short)

    def track_positions(self, instrument_ids: Any) -> None:
        """Log the position changes of ``instrument_ids`` (perpetuals) for
        ``POSITION_LOG_NS``, so :meth:`apply_funding` splits a payment by
        the positions held at its funding time. Idempotent."""
        for iid in instrument_ids:
            self.tracked.add(iid)
            self.position_log.setdefault(iid, [])

    def positions_at(self, instrument_id: InstrumentId, ts_ns: int) -> dict[str, Decimal] | None:
        """Each model's position in ``instrument_id`` at ``ts_ns`` (UTC ns):
        the current one less every logged change after ``ts_ns``. None when
        the instrument is not tracked or ``ts_ns`` is older than the log
        covers (``POSITION_LOG_NS`` before its newest change)."""
        log = self.position_log.get(instrument_id)
        if log is None:
            return None
        if log and ts_ns < log[-1][0] - POSITION_LOG_NS:
            return None
        out = {m: p.quantity for (m, i), p in self.positions.items() if i == instrument_id}
        for t, m, d in log:
            if t > ts_ns:
                out[m] = out.get(m, ZERO) - d
        return out

    def shorts_allowed(self, instrument_id: InstrumentId) -> bool:
        """Whether positions in ``instrument_id`` may go below zero (the
        per-instrument setting, else the portfolio's ``allow_short``)."""
        return self.short_by_instrument.get(instrument_id, self.allow_short)

    def set_price(self, asset: str, price: Decimal) -> None:
        """Record the price of ``asset`` in the quote (quote per unit of
        ``asset``, e.g. ``set_price("BNB", Decimal("600"))`` for BNB/USDT),
        used to convert fees charged in a third asset at fill time (Binance's
        "pay fees with BNB"). The caller updates it from the asset's own
        market (e.g. each BNBUSDT bar) before the fills it should value.

        Raises:
            TypeError: if ``price`` is not a Decimal (no float in accounting).
            ValueError: if ``price`` is not finite and positive.
        """
        if not isinstance(price, Decimal):
            raise TypeError(f"price of {asset}: expected Decimal, got {type(price).__name__} {price!r}")
        if not price.is_finite() or price <= 0:
            raise ValueError(f"price of {asset}: must be finite and positive, got {price}")
        self.asset_prices[asset] = price

    def fee_asset_kind(self, instrument_id: InstrumentId, currency: str) -> FeeAssetKind:
        """``"base"``, ``"quote"`` or ``"other"`` (a third asset) for a fee
        charged in ``currency`` on ``instrument_id``.

        Registered instruments (``register_instrument``) decide exactly.
        Otherwise the symbol is read: ``BASE/QUOTE[:SETTLE]`` splits at the
        slash; a concatenated Binance symbol (``ETHUSDT``, ``BTCUSDT-PERP``:
        the part before ``-``) is the quote when it ends with ``currency``
        and the base when it starts with it.
        """
        assets = self.instrument_assets.get(instrument_id)
        if assets is None:
            sym = instrument_id.symbol
            if "/" in sym:
                base, _, quote = sym.partition("/")
                assets = (base, quote.partition(":")[0])
            else:
                core = sym.partition("-")[0]
                if core != currency and core.endswith(currency):
                    return "quote"
                if core != currency and core.startswith(currency):
                    return "base"
                return "other"
        if currency == assets[0]:
            return "base"
        if currency == assets[1]:
            return "quote"
        return "other"

    def position(self, model_id: str, instrument_id: InstrumentId) -> Position:
        """The (possibly new, flat) position of a model in an instrument."""
        key = (model_id, instrument_id)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position()
        return pos

    def apply_fill(self, fill: OrderFilled, fee_price: Decimal | None = None) -> Decimal:
        """Book a fill; returns the realized PnL of this fill (quote, net of
        every fee, quantized to 8 decimals ROUND_HALF_EVEN).

        ``fill.last_qty`` base units at ``fill.last_px`` quote per base;
        ``fill.commission`` in ``fill.commission_currency`` (base, quote or a
        third asset, see the module docstring). ``fee_price`` (quote per unit
        of the fee asset) converts a third-asset fee and takes precedence over
        ``set_price``; it is ignored for base and quote fees. Rules: IBKR
        average cost (reductions realize against the average cost, a flip
        closes the old side and opens the rest at the fill price), Binance
        fee in the asset received. Nothing is changed when it raises.

        Raises:
            AccountingError: when a fill would take a spot (non-short)
                position below zero, or the fill is malformed (side not
                BUY/SELL, quantity <= 0, negative price or commission).
            MissingPriceError: a third-asset fee with no ``fee_price`` and no
                price from ``set_price``; names the asset.
        """
        iid = fill.instrument_id
        qty, px, fee = fill.last_qty, fill.last_px, fill.commission
        if fill.side not in (OrderSide.BUY.value, OrderSide.SELL.value):
            raise AccountingError(f"{fill.model_id} {iid} {fill.trade_id}: unknown side {fill.side!r}")
        if qty <= 0 or px < 0 or fee < 0:
            raise AccountingError(
                f"{fill.model_id} {iid} {fill.trade_id}: need qty > 0, px >= 0, fee >= 0; got {qty}, {px}, {fee}"
            )
        buy = fill.side == OrderSide.BUY.value
        mult = self.multipliers.get(iid)
        notional = quantize_money(qty * px if mult is None else qty * px * mult)
        delta = qty if buy else -qty  # signed base change
        cash = -notional if buy else notional  # signed quote cash flow
        fee_value = ZERO  # the fee in quote (informational ``fees``)
        if fee:
            kind = self.fee_asset_kind(iid, fill.commission_currency)
            if kind == "base":
                delta -= fee
                fee_value = quantize_money(fee * px)
            elif kind == "quote":
                fee_value = quantize_money(fee)
                cash -= fee_value
            else:
                rate = fee_price if fee_price is not None else self.asset_prices.get(fill.commission_currency)
                if rate is None:
                    raise MissingPriceError(
                        fill.commission_currency,
                        f"{fill.model_id} {iid} {fill.trade_id}: fee {fee} {fill.commission_currency} has no "
                        f"price in the quote; pass fee_price= or call set_price({fill.commission_currency!r}, price)",
                    )
                fee_value = quantize_money(fee * rate)
                cash -= fee_value
        pos = self.positions.get((fill.model_id, iid))
        if pos is None:
            pos = Position()
        held = pos.quantity
        if held + delta < 0 and not self.shorts_allowed(iid):
            side = "buy" if buy else "sell"
            raise AccountingError(
                f"{fill.model_id} {iid}: {side} {qty} (fee {fee} {fill.commission_currency}) "
                f"exceeds position {held} (spot, no shorts)"
            )
        if held == 0 or (held > 0) == (delta > 0):
            # opening or adding to the same side
            realized = ZERO
            pos.cost -= cash
        elif abs(delta) <= abs(held):
            # reducing or closing: remove the pro-rata share of the cost
            removed = pos.cost if abs(delta) == abs(held) else quantize_money(pos.cost * abs(delta) / abs(held))
            realized = cash - removed
            pos.cost -= removed
        else:
            # flip through zero: close the old side at its average cost with
            # the share |held|/|delta| of the cash, open the rest at the fill
            close_cash = quantize_money(cash * abs(held) / abs(delta))
            realized = close_cash - pos.cost
            pos.cost = -(cash - close_cash)
        pos.quantity = held + delta
        if self.track_all or iid in self.tracked:
            log = self.position_log.setdefault(iid, [])
            log.append((fill.ts_event, fill.model_id, delta))
            while log and log[0][0] < fill.ts_event - POSITION_LOG_NS:
                log.pop(0)
        pos.realized += realized
        pos.fees += fee_value
        pos.fills += 1
        self.positions[(fill.model_id, iid)] = pos
        self.marks.setdefault(iid, px)
        return realized

    def apply_funding(self, instrument_id: InstrumentId, amount: Decimal, tran_id: str,
                      at_ns: int | None = None) -> dict[str, Decimal]:
        """Book a funding payment of a perpetual (``core.events.FundingPaid``)
        into the models holding ``instrument_id``, pro rata to their signed
        positions, into their realized PnL (so into the book's quote cash
        ``equity_start + realized - cost``) and their ``funding`` figure.

        ``amount`` is quote, signed (negative = paid). The venue charges
        funding on the account's net position ``N = sum(q_i)``, so a model
        holding ``q_i`` takes ``amount * q_i / N``: with opposite positions
        a model can receive while the account pays. Each part but the last
        is quantized to 8 decimals (the quote precision) with
        ROUND_HALF_EVEN; the last (models sorted by id) takes the remainder,
        so the parts sum exactly to ``amount``. Worked example: -1 USDT over
        three models holding 0.001 each -> -0.33333333, -0.33333333,
        -0.33333334.

        Idempotent by ``tran_id``: an id already booked (``funding_seen``,
        saved with the checkpoint) books nothing and returns ``{}``. When no
        model holds the instrument, or the models' positions net to zero,
        nothing can be split: the id is recorded and ``{}`` returned (the
        caller alerts; the payment is then the venue's, not the book's).
        With ``at_ns`` (the funding time, ``FundingPaid.ts_event``) on a
        tracked instrument (:meth:`track_positions`) the split uses the
        positions held at that time (:meth:`positions_at`: the venue charges
        the position at its funding time, and reports it later, after fills
        may have moved it); otherwise, or when the log does not reach back
        that far, the positions now.

        Returns:
            model id -> the part booked (quote, signed).

        Raises:
            TypeError: ``amount`` not a Decimal.
            ValueError: ``amount`` not finite, or an empty ``tran_id``.
        """
        if not isinstance(amount, Decimal):
            raise TypeError(f"amount: expected Decimal, got {type(amount).__name__} {amount!r}")
        if not amount.is_finite():
            raise ValueError(f"amount: must be finite, got {amount}")
        if not tran_id:
            raise ValueError(f"tran_id: must be a non-empty id, got {tran_id!r}")
        if tran_id in self.funding_seen:
            return {}
        self.funding_seen.add(tran_id)
        then = self.positions_at(instrument_id, at_ns) if at_ns is not None else None
        if then is None:
            then = {m: p.quantity for (m, i), p in self.positions.items() if i == instrument_id}
        holders = sorted((m, q) for m, q in then.items() if q != 0)
        net = sum((q for _, q in holders), ZERO)
        if not holders or net == 0:
            return {}
        parts: dict[str, Decimal] = {}
        booked = ZERO
        for n, (model_id, qty) in enumerate(holders):
            part = amount - booked if n == len(holders) - 1 else quantize_money(amount * qty / net)
            booked += part
            pos = self.positions.setdefault((model_id, instrument_id), Position())
            pos.realized += part
            pos.funding += part
            parts[model_id] = part
        return parts

    def mark(self, instrument_id: InstrumentId, price: Decimal) -> None:
        """Set the mark (last close) of an instrument."""
        self.marks[instrument_id] = price

    # ---------------------------------------------------------- figures
    def select(
        self, model_id: str | None = None, venue: str | None = None
    ) -> Iterator[tuple[str, InstrumentId, Position]]:
        """The ``(model_id, instrument_id, position)`` triples of one model
        and/or one venue (``instrument_id.venue``, e.g. ``"BINANCE"``);
        ``None`` matches all. Every figure below sums over this selection, so
        the parts (per model, per venue, per both) sum exactly to the totals
        (Decimal addition of unquantized terms is exact)."""
        for (m, i), p in self.positions.items():
            if (model_id is None or m == model_id) and (venue is None or i.venue == venue):
                yield m, i, p

    def realized(self, model_id: str | None = None, venue: str | None = None) -> Decimal:
        """Sum of realized PnL (quote, net of fees), for one model and/or
        venue, or all."""
        return sum((p.realized for _, _, p in self.select(model_id, venue)), ZERO)

    def unrealized(self, model_id: str | None = None, venue: str | None = None) -> Decimal:
        """Sum of unrealized PnL at the marks (quote, exact, not quantized),
        for one model and/or venue, or all."""
        return sum((p.unrealized(self.mark_value(i)) for _, i, p in self.select(model_id, venue)), ZERO)

    def mark_value(self, instrument_id: InstrumentId) -> Decimal | None:
        """The value of one unit of quantity at the mark (quote): the mark
        times the instrument's multiplier (the mark itself for spot); None
        without a mark. ``Position.unrealized`` takes this."""
        mark = self.marks.get(instrument_id)
        mult = self.multipliers.get(instrument_id)
        return mark if mark is None or mult is None else mark * mult

    def fees(self, model_id: str | None = None, venue: str | None = None) -> Decimal:
        """Sum of fees valued in the quote at fill time, for one model and/or
        venue, or all (informational: already inside realized and cost)."""
        return sum((p.fees for _, _, p in self.select(model_id, venue)), ZERO)

    def fills(self, model_id: str | None = None, venue: str | None = None) -> int:
        """Number of fills, for one model and/or venue, or all."""
        return sum(p.fills for _, _, p in self.select(model_id, venue))

    def quantity(self, instrument_id: InstrumentId) -> Decimal:
        """Total signed quantity of an instrument over all models (base
        units; negative when the models are net short)."""
        return sum((p.quantity for (_, i), p in self.positions.items() if i == instrument_id), ZERO)

    def equity(self) -> Decimal:
        """``equity_start + realized + unrealized`` (quote)."""
        return self.equity_start + self.realized() + self.unrealized()

    def sample_equity(self, ts_ns: int) -> None:
        """Append an equity point at most once per ``curve_every_ns``; when
        the curve holds more than ``EQUITY_CURVE_MAX`` points, every other
        point is dropped and the interval doubles (a bounded curve for the
        sparkline, cheap to save with each checkpoint)."""
        if self._last_curve_ts < 0 or ts_ns - self._last_curve_ts >= self.curve_every_ns:
            self.equity_curve.append((ts_ns, format(self.equity(), "f")))
            self._last_curve_ts = ts_ns
            if len(self.equity_curve) > EQUITY_CURVE_MAX:
                self.equity_curve = self.equity_curve[::2]
                self.curve_every_ns *= 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot for the checkpoint."""
        return {
            "equity_start": format(self.equity_start, "f"),
            "positions": [[m, str(i), p.to_dict()] for (m, i), p in self.positions.items()],
            "marks": {str(i): format(px, "f") for i, px in self.marks.items()},
            "equity_curve": self.equity_curve,
            "last_curve_ts": self._last_curve_ts,
            "curve_every_ns": self.curve_every_ns,
            "allow_short": self.allow_short,
            "asset_prices": {a: format(px, "f") for a, px in self.asset_prices.items()},
            "funding_seen": sorted(self.funding_seen),
            **({"position_log": {str(i): [[t, m, format(d, "f")] for t, m, d in log]
                                 for i, log in sorted(self.position_log.items(), key=lambda kv: str(kv[0]))}}
               if self.tracked else {}),
            "instruments": {
                str(i): [b, q, self.short_by_instrument.get(i)]
                + ([format(self.multipliers[i], "f")] if i in self.multipliers else [])
                for i, (b, q) in self.instrument_assets.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Portfolio":
        """Inverse of ``to_dict`` (checkpoints written before issue 4 have no
        ``allow_short``, ``asset_prices`` or ``instruments`` and load as spot
        with empty registries)."""
        pf = cls(Decimal(d["equity_start"]), allow_short=bool(d.get("allow_short", False)))
        pf.asset_prices = {a: Decimal(px) for a, px in d.get("asset_prices", {}).items()}
        pf.funding_seen = set(d.get("funding_seen", ()))
        for i, log in d.get("position_log", {}).items():
            iid = InstrumentId.parse(i)
            pf.tracked.add(iid)
            pf.position_log[iid] = [(int(t), str(m), Decimal(q)) for t, m, q in log]
        for i, row in d.get("instruments", {}).items():
            b, q, short = row[0], row[1], row[2]
            iid = InstrumentId.parse(i)
            pf.instrument_assets[iid] = (b, q)
            if short is not None:
                pf.short_by_instrument[iid] = bool(short)
            if len(row) > 3:
                pf.multipliers[iid] = Decimal(row[3])
        for m, i, p in d["positions"]:
            pf.positions[(m, InstrumentId.parse(i))] = Position.from_dict(p)
        pf.marks = {InstrumentId.parse(i): Decimal(px) for i, px in d["marks"].items()}
        pf.equity_curve = [tuple(x) for x in d["equity_curve"]]  # type: ignore[misc]
        pf._last_curve_ts = int(d["last_curve_ts"])
        pf.curve_every_ns = int(d.get("curve_every_ns", pf.curve_every_ns))
        return pf
