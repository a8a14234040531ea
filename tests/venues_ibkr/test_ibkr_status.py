"""IB's order statuses and error codes mapped to the desk's statuses
(TWS API "Possible Order States", "Message Codes"), and the pacing bucket
(IB's 50 messages per second) on a test clock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.clock import TestClock
from core.enums import OrderStatus as S
from venues.ibkr.pacing import TokenBucket
from venues.ibkr.status import ends_order, inactive_outcome, is_warning, map_status

NANOS = 1_000_000_000
D = Decimal


@pytest.mark.parametrize("ib, filled, ours", [
    ("PendingSubmit", "0", S.SUBMITTED),
    ("ApiPending", "0", S.SUBMITTED),
    ("PreSubmitted", "0", S.ACCEPTED),
    ("Submitted", "0", S.ACCEPTED),
    ("PreSubmitted", "10", S.PARTIALLY_FILLED),
    ("Submitted", "0.5", S.PARTIALLY_FILLED),
    ("PendingCancel", "0", S.PENDING_CANCEL),
    ("Cancelled", "0", S.CANCELED),
    ("ApiCancelled", "0", S.CANCELED),
    ("Filled", "100", S.FILLED),
    ("Inactive", "0", None),
    ("ValidationError", "0", None),
    ("ApiUpdate", "0", None),
])
def test_ib_status_maps_to_desk_status(ib, filled, ours):
    assert map_status(ib, D(filled)) == ours


def test_unknown_status_is_named():
    with pytest.raises(ValueError, match="IB order status: unknown 'Canceled'"):  # one L: not IB's spelling
        map_status("Canceled", D(0))


@pytest.mark.parametrize("code, accepted, ours", [
    (202, False, S.CANCELED), (202, True, S.CANCELED),
    (201, False, S.REJECTED), (201, True, S.CANCELED),
    (103, False, S.REJECTED), (None, False, S.REJECTED), (None, True, S.CANCELED),
])
def test_inactive_decided_by_its_error_code(code, accepted, ours):
    assert inactive_outcome(code, accepted) == ours


@pytest.mark.parametrize("code, accepted, ends", [
    (201, False, True), (201, True, True), (202, True, True), (103, False, True), (110, False, True), (110, True, False),
    (100, False, True), (100, True, False),  # a dropped message: the order if unacknowledged, else a request
    (10148, True, False), (161, False, False), (10147, True, False),  # a refused cancel ends nothing
    (399, False, False), (404, True, False), (2109, True, False), (321, True, False),
])
def test_which_errors_end_an_order(code, accepted, ends):
    assert ends_order(code, accepted) is ends


def test_warnings_are_not_errors():
    assert is_warning(399) and is_warning(404) and is_warning(2104) and is_warning(2199)
    assert not is_warning(201) and not is_warning(202) and not is_warning(100) and not is_warning(2200)


def test_bucket_allows_50_per_second_then_one_every_20_ms():
    clock = TestClock(0)
    b = TokenBucket(clock, 50)
    assert all(b.try_take() for _ in range(50)) and not b.try_take()
    assert b.wait_ns() == 20_000_000  # 1 s / 50
    clock.advance(20_000_000 - 1)
    assert not b.try_take()
    clock.advance(1)
    assert b.try_take() and not b.try_take()
    clock.advance(10 * NANOS)
    assert b.tokens == 50  # the burst is capped at one second's worth


def test_bucket_slows_down_on_error_100_and_recovers_after_the_hold():
    clock = TestClock(0)
    b = TokenBucket(clock, 50, hold_ns=60 * NANOS)
    assert b.slow_down() == 25 and b.tokens == 0 and b.slow_until_ns == 60 * NANOS
    assert b.wait_ns() == 40_000_000  # 1 s / 25
    clock.advance(NANOS)
    assert b.tokens == 25
    assert [b.slow_down() for _ in range(5)] == [12, 6, 3, 1, 1]  # never below one message a second
    assert b.slow_until_ns == NANOS + 60 * NANOS
    clock.set_time(61 * NANOS)
    assert b.tokens == 50 and b.rate == 50 and b.slow_until_ns is None


def test_bucket_refuses_bad_settings():
    with pytest.raises(ValueError, match="pacing rate: must be >= 1 message per second, got 0"):
        TokenBucket(TestClock(0), 0)
