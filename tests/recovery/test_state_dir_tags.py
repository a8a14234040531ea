"""ClientOrderIds of a live state dir carry its tag (``core.identifiers``):
a new state dir on an account another state dir traded leaves that dir's
orders alone at reconciliation (a break test: a new dir halted at its first
restart on 13 "desk orders the store does not know" of the old dir), while
an unknown order with its own tag is still a difference."""

import asyncio
from decimal import Decimal

from core.enums import OrderSide, OrderType, TimeInForce
from core.identifiers import coid_tag_of, is_own_order, make_client_order_id
from core.orders import Order
from tests.unit.test_engine import IID, build

D = Decimal


def test_tags_of_ids():
    assert make_client_order_id(26, 0, 1, "k3x9q") == "NHD-1a-0-1-k3x9q"
    assert coid_tag_of("NHD-1a-0-1-k3x9q") == "k3x9q" and coid_tag_of("NHD-1a-0-1-k3x9q.TP") == "k3x9q"
    assert coid_tag_of("NHD-1a-0-1") == "" and coid_tag_of("NHD-1a-0-1.R2") == "" and coid_tag_of("web-1") == ""
    assert is_own_order("NHD-1a-0-1-k3x9q", "k3x9q") and not is_own_order("NHD-1a-0-1-zzzzz", "k3x9q")
    assert not is_own_order("NHD-1a-0-1", "k3x9q")  # an untagged dir's order on the account: not this dir's
    assert is_own_order("NHD-1a-0-1-zzzzz", "") and is_own_order("NHD-1a-0-1", "")  # an untagged dir: as before
    assert not is_own_order("web-1", "")


def _resting(eng, coid):
    """An order placed on the venue account directly (not through this engine): rests far below."""
    o = Order(coid, "m0", IID, OrderSide.BUY, OrderType.LIMIT, D("0.01"), D("1000.00"), TimeInForce.GTC,
              eng.clock.timestamp_ns(), 0)
    asyncio.run(eng.venue.submit_order(o))


def test_another_state_dirs_order_is_left_alone_and_an_own_unknown_is_a_difference(tmp_path):
    (tmp_path / "a").mkdir()
    eng = build(tmp_path / "a", ["2000"] * 4, ["0"])
    eng.coid_tag = "k3x9q"
    asyncio.run(eng.warm_up())
    _resting(eng, "NHD-5-0-0-zzzzz")  # the old state dir's order, still open at the venue
    assert asyncio.run(eng.recover()) == []
    assert eng.unreconciled == []
    _resting(eng, "NHD-6-0-0-k3x9q")  # one with this dir's tag that the store does not know
    asyncio.run(eng.recover())
    assert eng.unreconciled == ["the venue has desk order NHD-6-0-0-k3x9q that the store does not know"]
