"""The order saga, payments' side (choreographed: each step reacts to the previous event).

    pending ──stock_reserved──▶ stock_reserved ──charge approved──▶ paid ──▶ invoiced
       │                              ├──charge declined──▶ payment_failed (+ order_cancelled)
       │                              └──processor down, attempts spent──▶ payment_failed (same)
       └──stock_rejected──▶ rejected
    pending / stock_reserved ──deadline passed (deadlines.py)──▶ expired (+ order_cancelled)

Each step is one conditional update from the status it expects: it changes the status, appends
the transition to the history and stages the step's events, all in one write. A redelivered,
duplicated or late event finds the order past that status and changes nothing.
"""

import logging
from collections.abc import Iterable
from typing import Any

from beanie import PydanticObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from functions.common import outbox
from functions.common.clock import now
from functions.common.consumers import PermanentError
from functions.common.contracts import IntegrationEvent
from functions.common.ids import parse_object_id
from functions.common.outbox import PendingEvent, write_lock
from functions.payments import APP_ID
from functions.payments.models import Order, OrderStatus, Payment, Transition
from functions.payments.processor import CardProcessor, get_processor

log = logging.getLogger(__name__)


async def find_order(order_id: str) -> Order | None:
    parsed = parse_object_id(order_id)
    return await Order.get(parsed) if parsed is not None else None


async def load_order(order_id: str) -> Order:
    """The order an event names; an event for no order can never succeed (dead letter)."""
    order = await find_order(order_id)
    if order is None:
        raise PermanentError(f"no order {order_id!r}")
    return order


def stage(*events: IntegrationEvent, order_id: Any) -> list[PendingEvent]:
    return [PendingEvent.of(event, source=APP_ID, key=str(order_id)) for event in events]


async def transition(
    order_id: PydanticObjectId,
    *,
    expected: OrderStatus | tuple[OrderStatus, ...],
    to: OrderStatus,
    event_id: str | None,
    reason: str | None = None,
    changes: dict[str, Any] | None = None,
    events: Iterable[IntegrationEvent] = (),
    passing: tuple[OrderStatus, ...] = (),
) -> bool:
    """Move the order from `expected` (a status, or any of several) to `to` and stage `events`,
    in one write; False (and nothing written) when the order is no longer in `expected`.
    `passing`: statuses the order goes through on the way, recorded in its history by the same
    write (a charge approved at once takes pending through stock_reserved to paid)."""
    at = now()
    steps = [Transition(status=s, at=at, eventId=event_id).model_dump() for s in passing]
    steps.append(Transition(status=to, at=at, reason=reason, eventId=event_id).model_dump())
    pushes: dict[str, Any] = {"history": {"$each": steps}}
    sets: dict[str, Any] = {"status": to, "updatedAt": at, **(changes or {})}
    pending = stage(*events, order_id=order_id)
    if pending:
        pushes["outbox"] = {"$each": [p.model_dump() for p in pending]}
        sets["outboxPending"] = True
    status = {"$in": list(expected)} if isinstance(expected, tuple) else expected
    async with write_lock(Order, order_id):
        result = await Order.get_pymongo_collection().update_one(
            {"_id": order_id, "status": status}, {"$set": sets, "$push": pushes}
        )
    if not result.matched_count:
        log.info("order %s is no longer %s; %s not applied", order_id, expected, to)
        return False
    if pending:
        await outbox.flush(Order, order_id, pending)
    return True


async def count_failed_charge(order_id: PydanticObjectId) -> int:
    """Count one transient failure to charge the order (it is still stock_reserved); returns the
    count so far. Kept on the order, so every replica and restart sees the same count."""
    async with write_lock(Order, order_id):
        counted = await Order.get_pymongo_collection().find_one_and_update(
            {"_id": order_id, "status": "stock_reserved"},
            {"$inc": {"transientChargeFailures": 1}, "$set": {"updatedAt": now()}},
            return_document=ReturnDocument.AFTER,
        )
    return counted["transientChargeFailures"] if counted else 0


async def charge_once(order: Order) -> Payment:
    """The order's payment: charged at most once, with the order id as the idempotency key.

    A Payment already recorded is the answer. Otherwise the processor is asked (it answers a key
    it has seen with its first result, covering a crash between its charge and our record) and
    its result is recorded. The record's unique id decides between racing deliveries: the first
    recorded result stands, and a charge that lost to a recorded failure (`give_up_charging` by
    another delivery) is refunded. TransientPaymentError propagates: the handler answers RETRY.
    """
    order_id = str(order.id)
    recorded = await Payment.get(order_id)
    if recorded is not None:
        return recorded
    processor = get_processor()
    result = await processor.charge(
        idempotency_key=order_id, token=order.paymentToken, amount_cents=order.totalCents, currency=order.currency
    )
    payment = Payment(
        id=order_id,
        provider=processor.name,
        chargeId=result.chargeId,
        status="approved" if result.approved else "declined",
        reason=result.reason,
        amountCents=order.totalCents,
        currency=order.currency,
    )
    return await _record(payment, processor)


async def give_up_charging(order: Order, reason: str) -> Payment:
    """Record that the order's payment failed without an answer from the processor (its attempts
    spent), unless a result was recorded first: then that one stands."""
    processor = get_processor()
    payment = Payment(id=str(order.id), provider=processor.name, chargeId="", status="declined", reason=reason,
                      amountCents=order.totalCents, currency=order.currency)
    return await _record(payment, processor)


async def _record(payment: Payment, processor: CardProcessor) -> Payment:
    try:
        await payment.insert()
        return payment
    except DuplicateKeyError:
        recorded = await Payment.get(payment.id)
    if payment.status == "approved" and recorded.status != "approved":
        log.warning("order %s: charged after its payment was recorded as failed; refunding", payment.id)
        await processor.refund(idempotency_key=payment.id)
    return recorded
