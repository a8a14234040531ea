"""IB order statuses and error codes, mapped to the desk's order statuses.

IB's status strings (TWS API reference, "Order Management / Possible Order
States"; ib_async ``OrderStatus``) and what they mean for a desk order:

============================  ==============================================
IB status                     desk status
============================  ==============================================
``PendingSubmit``             ``SUBMITTED`` (sent, not yet acknowledged)
``ApiPending``                ``SUBMITTED`` (not yet sent to IB's server)
``PreSubmitted``              ``ACCEPTED`` (held: a stop not triggered, or
                              outside the exchange's hours), or
                              ``PARTIALLY_FILLED`` once filled > 0
``Submitted``                 ``ACCEPTED``, or ``PARTIALLY_FILLED`` once
                              filled > 0
``PendingCancel``             ``PENDING_CANCEL``
``Cancelled``/``ApiCancelled``  ``CANCELED``
``Filled``                    ``FILLED``
``Inactive``                  ``REJECTED`` or ``CANCELED``, by the error code
                              that comes with it (IB uses ``Inactive`` for
                              both): see :func:`inactive_outcome`
``ValidationError``           unchanged (ib_async's status for an order that
                              got a warning and is still live), plus an alert
``ApiUpdate``                 unchanged: resolved by the next status
============================  ==============================================

``FILLED`` and ``PARTIALLY_FILLED`` reach the desk through fills
(``OrderFilled`` events built from ``execDetails``), never from a status
alone: the status's ``filled`` may run ahead of the executions.

Error codes (TWS API reference, "Message Codes"): the codes the adapter acts
on are named below; ``2100``-``2199`` are informational warnings.
"""

from __future__ import annotations

from decimal import Decimal

from core.enums import OrderStatus

# ---------------------------------------------------------------- IB status strings
PENDING_SUBMIT = "PendingSubmit"
API_PENDING = "ApiPending"
PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
PENDING_CANCEL = "PendingCancel"
CANCELLED = "Cancelled"
API_CANCELLED = "ApiCancelled"
FILLED = "Filled"
INACTIVE = "Inactive"
VALIDATION_ERROR = "ValidationError"
API_UPDATE = "ApiUpdate"

#: statuses in which the order may still trade at IB
LIVE_STATUSES = frozenset({PENDING_SUBMIT, API_PENDING, PRE_SUBMITTED, SUBMITTED, PENDING_CANCEL,
                           VALIDATION_ERROR, API_UPDATE})

# ---------------------------------------------------------------- IB error codes
#: "Max rate of messages per second has been exceeded": the request was not
#: processed; IB's limit is 50 messages per second per client
ERR_PACING = 100
#: "Order rejected - reason: ..."
ERR_ORDER_REJECTED = 201
#: "Order cancelled - reason: ..."
ERR_ORDER_CANCELLED = 202
#: "The price does not conform to the minimum price variation for this contract"
ERR_PRICE_TICK = 110
#: "No security definition has been found for the request"
ERR_NO_SECURITY = 200
#: "Cancel attempted when order is not in a cancellable state" / "OrderId that
#: needs to be cancelled cannot be cancelled": the order already traded or
#: ended; the cancel changes nothing (a fill racing the cancel wins)
CANCEL_FAILED_CODES = frozenset({161, 10148})
#: "OrderId that needs to be cancelled is not found"
ERR_CANCEL_NOT_FOUND = 10147
#: "Connectivity between IB and Trader Workstation has been lost"
ERR_CONNECTIVITY_LOST = 1100
#: "Connectivity ... restored - data lost" (1101) / "- data maintained" (1102)
CONNECTIVITY_RESTORED = frozenset({1101, 1102})
#: codes ib_async treats as warnings (the order stays live): 105 (modify does
#: not match), 110 (price not a tick multiple, on a live order), 165, 321,
#: 329, 399 (order message warning), 404 (shares not available for short
#: sale: held while located), 434, 492, 10167 (``ib_async.wrapper.Wrapper.error``)
WARNING_CODES = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})


def is_warning(code: int) -> bool:
    """True for an IB message that is a warning or information, not an
    error: the order it names stays live (ib_async's set plus the
    2100-2199 informational range)."""
    return code in WARNING_CODES or 2100 <= code < 2200


def ends_order(code: int, accepted: bool) -> bool:
    """Whether IB error ``code`` about an order ends it. Before IB accepted
    the order, every error but a warning and the cancel-request codes does
    (the order was refused: 201, 103 duplicate id, 110 price off the tick
    (IB's market rules can ask a finer or coarser increment than ``minTick``),
    200 unknown contract, 100 message dropped...). Once accepted, only 201
    (rejected, e.g. at its trigger) and 202 (canceled) do: other codes are
    about a request (a cancel IB could not apply, a message over the rate)
    and the order stays working."""
    if code == ERR_PRICE_TICK and not accepted:
        return True  # a new order off the price increment is refused (a warning on a live order)
    if is_warning(code) or code in CANCEL_FAILED_CODES or code == ERR_CANCEL_NOT_FOUND:
        return False
    if accepted:
        return code in (ERR_ORDER_REJECTED, ERR_ORDER_CANCELLED)
    return True


def map_status(ib_status: str, filled: Decimal) -> OrderStatus | None:
    """The desk status an IB status means, given the quantity IB reports
    filled (base units). ``None`` means "no change": ``ValidationError``,
    ``ApiUpdate``, and ``Inactive`` (decided by its error code with
    :func:`inactive_outcome`).

    Raises:
        ValueError: naming the status for a string IB does not define.
    """
    if ib_status in (PENDING_SUBMIT, API_PENDING):
        return OrderStatus.SUBMITTED
    if ib_status in (PRE_SUBMITTED, SUBMITTED):
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
    if ib_status == PENDING_CANCEL:
        return OrderStatus.PENDING_CANCEL
    if ib_status in (CANCELLED, API_CANCELLED):
        return OrderStatus.CANCELED
    if ib_status == FILLED:
        return OrderStatus.FILLED
    if ib_status in (INACTIVE, VALIDATION_ERROR, API_UPDATE):
        return None
    raise ValueError(f"IB order status: unknown {ib_status!r}")


def inactive_outcome(error_code: int | None, accepted: bool) -> OrderStatus:
    """What an ``Inactive`` order (or one ended by an error) became, by the
    error code that came with it: ``202`` (order cancelled) -> ``CANCELED``;
    any other error -> ``REJECTED`` if IB never accepted the order, else
    ``CANCELED`` (IB ended a working order: margin, a risk check, the end of
    its session). No code at all: the same rule as an error (``REJECTED``
    before acceptance, ``CANCELED`` after)."""
    if error_code == ERR_ORDER_CANCELLED:
        return OrderStatus.CANCELED
    return OrderStatus.CANCELED if accepted else OrderStatus.REJECTED
