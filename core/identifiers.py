"""Identifiers, in NautilusTrader's names (DESIGN.md section 4).

``InstrumentId`` is written ``SYMBOL.VENUE`` (``BTCUSDT.BINANCE``,
``BTCUSDT.SIM``). A ``ClientOrderId`` is ours: ASCII, at most 36 characters
(fits Binance ``newClientOrderId`` and IB ``orderRef``), starts with the desk
prefix, and is derived deterministically from the bar, the model and a
sequence so that a re-processed bar regenerates the same ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: prefix of every ClientOrderId this desk creates; the kill switch and
#: reconciliation use it to tell the desk's own orders from others.
DESK_ORDER_PREFIX = "NHD"

_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9\-_/]*$")
_VENUE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_COID_RE = re.compile(r"^[A-Za-z0-9\-_.]{1,36}$")


@dataclass(frozen=True, slots=True, order=True)
class InstrumentId:
    """An instrument on a venue, written ``SYMBOL.VENUE``.

    Attributes:
        symbol: the venue-native symbol in upper case, e.g. ``BTCUSDT``.
        venue: the venue name, e.g. ``BINANCE`` or ``SIM``.
    """

    symbol: str
    venue: str
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.match(self.symbol):
            raise ValueError(f"instrument symbol: invalid {self.symbol!r}")
        if not _VENUE_RE.match(self.venue):
            raise ValueError(f"instrument venue: invalid {self.venue!r}")
        object.__setattr__(self, "_hash", hash((self.symbol, self.venue)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def parse(cls, text: str) -> "InstrumentId":
        """Parse ``"BTCUSDT.BINANCE"``.

        Raises:
            ValueError: naming the text when it has no ``.VENUE`` part or an
                invalid symbol or venue.
        """
        symbol, dot, venue = text.rpartition(".")
        if not dot or not symbol or not venue:
            raise ValueError(f"instrument id: expected SYMBOL.VENUE, got {text!r}")
        return cls(symbol, venue)

    def __str__(self) -> str:
        return f"{self.symbol}.{self.venue}"


#: the store meta key of a live state dir's ClientOrderId tag (:func:`new_coid_tag`)
COID_TAG_META_KEY = "coid_tag"
_TAG_RE = re.compile(r"^[a-z0-9]{1,6}$")


def new_coid_tag() -> str:
    """A new random tag (5 lowercase base-36 characters, about 6e7 values)
    for the ClientOrderIds of one live state dir: a venue account outlives a
    state dir, and a new state dir on an account the desk traded before
    would otherwise regenerate ``NHD-1a-0-0`` and be answered "duplicate
    order" (Binance ``-2010``) or mistaken for the old order. Chosen once, at
    the state dir's first start, and kept in its store."""
    import secrets

    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(5))


def make_client_order_id(step: int, model_index: int, seq: int, tag: str = "") -> str:
    """Derive the ClientOrderId for the ``seq``-th order of model number
    ``model_index`` at engine step ``step`` (the count of bars processed).

    Deterministic: the same bar, model and sequence give the same id, so a bar
    processed again after a crash regenerates the ids it produced before.
    Format ``NHD-<step hex>-<model>-<seq>``, or with a state dir's ``tag``
    (:func:`new_coid_tag`, live venues) ``NHD-<step hex>-<model>-<seq>-<tag>``;
    at most 36 ASCII characters.

    Raises:
        ValueError: if any part is negative, the tag is not 1-6 lowercase
            letters or digits, or the id would exceed 36 chars.
    """
    if step < 0 or model_index < 0 or seq < 0:
        raise ValueError(f"client order id parts must be >= 0: {step}, {model_index}, {seq}")
    if tag and not _TAG_RE.match(tag):
        raise ValueError(f"client order id tag: 1-6 lowercase letters or digits, got {tag!r}")
    coid = f"{DESK_ORDER_PREFIX}-{step:x}-{model_index}-{seq}" + (f"-{tag}" if tag else "")
    if not _COID_RE.match(coid):
        raise ValueError(f"client order id too long or not ASCII: {coid!r}")
    return coid


def coid_tag_of(client_order_id: str) -> str:
    """The state-dir tag of one of the desk's ClientOrderIds (``""`` for an
    id without one: paper venues, state dirs from before tags). Derived ids
    (``<parent>.TP``, ``<parent>.R1``) carry their parent's tag."""
    parts = client_order_id.split(".", 1)[0].split("-")
    return parts[4] if len(parts) == 5 and parts[0] == DESK_ORDER_PREFIX else ""


def is_own_order(client_order_id: str, tag: str) -> bool:
    """True when ``client_order_id`` is this state dir's: a desk order
    (:func:`is_desk_order`) with this dir's ``tag`` (:func:`new_coid_tag`).
    A dir without a tag (paper, or from before tags) owns every desk order,
    as before; a tagged dir leaves the orders of other state dirs on the
    same account alone (they are another desk's, not a difference)."""
    if not is_desk_order(client_order_id):
        return False
    return not tag or coid_tag_of(client_order_id) == tag


def is_desk_order(client_order_id: str) -> bool:
    """True when ``client_order_id`` was created by this desk (prefix check)."""
    return client_order_id.startswith(DESK_ORDER_PREFIX + "-")
