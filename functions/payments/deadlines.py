"""Every order ends: a sweep moves on an order that stayed too long in a step that waits on an event.

An event can be lost to the saga for good: dead-lettered after the redelivery window (a database
outage longer than it, a bug), or never published by a function whose outbox was lost. Its order
would then wait forever, its stock held. Every `DEADLINE_SWEEP_SECONDS`, the orders whose last
change is older than `SHOP_ORDER_DEADLINE_SECONDS` in a waiting status are settled:

- `pending` (no stock decision came) and `stock_reserved` (no charge decision came): the payment is
  recorded as failed first (`saga.give_up_charging`: a charge still in flight on another replica
  then finds it and refunds), and the order expires, staging `order_cancelled`, on which products
  gives back whatever it holds for it (or cancels its reservation, if that is still being taken).
  If a charge was recorded first, it stands and the order is paid instead.
- `paid` (the invoice step's `payment_processed` was lost): the invoice is issued now, by the same
  step, so a paid order is never left without its invoice and e-mail.

Each move is a guarded transition, so a late event or another replica's sweep changes nothing
more. Found by equality on `status` (an index serves it); the age is checked on those few.
"""

import logging
from datetime import timedelta

from functions.common.clock import now
from functions.common.consumers import EventContext
from functions.common.contracts import OrderCancelled, PaymentProcessed
from functions.common.settings import get_settings
from functions.payments.models import Order
from functions.payments.saga import give_up_charging, transition
from functions.payments.subscriptions import invoice_paid_order

log = logging.getLogger(__name__)

DEADLINE_SWEEP_SECONDS = 60.0
WAITING = ("pending", "stock_reserved", "paid")
BATCH = 200  # orders settled per status per round; the next round takes the rest


async def settle_overdue_orders() -> int:
    """Settle every order overdue in a waiting status; returns how many moved."""
    deadline = timedelta(seconds=get_settings().order_deadline_seconds)
    cutoff = now() - deadline
    moved = 0
    for status in WAITING:
        overdue = Order.get_pymongo_collection().find({"status": status, "updatedAt": {"$lt": cutoff}}, {"_id": 1})
        async for raw in overdue.limit(BATCH):
            order = await Order.get(raw["_id"])
            if order is None or order.status != status:
                continue
            log.warning("order %s has been %s since %s (deadline %s): settling it", order.id, status, order.updatedAt, deadline)
            moved += await _settle(order, deadline)
    return moved


async def _settle(order: Order, deadline: timedelta) -> bool:
    context = EventContext(id=f"deadline:{order.id}:{order.status}", topic="order_deadline", source="payments")
    if order.status == "paid":
        await invoice_paid_order(
            PaymentProcessed(orderId=str(order.id), paymentId=order.paymentId or "", amountCents=order.totalCents), context
        )
        return True
    minutes = deadline.total_seconds() / 60
    reason = f"The order did not complete within {minutes:g} minutes (stopped at {order.status})"
    payment = await give_up_charging(order, reason)
    if payment.status == "approved":
        # The charge was recorded before the deadline: the order is paid after all.
        return await transition(
            order.id, expected=("pending", "stock_reserved"), to="paid", event_id=context.id,
            changes={"paymentId": payment.chargeId},
            events=[PaymentProcessed(orderId=str(order.id), paymentId=payment.chargeId, amountCents=payment.amountCents)],
        )
    return await transition(
        order.id, expected=("pending", "stock_reserved"), to="expired", event_id=context.id, reason=reason,
        changes={"failureReason": reason},
        events=[OrderCancelled(orderId=str(order.id), reason=reason)],
    )
