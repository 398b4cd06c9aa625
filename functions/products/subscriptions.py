"""The products side of the order saga: reserve on order_created, release on order_cancelled,
and drop the holds of a paid order on payment_processed.

No inbox: the order's reservation and its holds, changed by conditional updates only, make each
step idempotent, also when deliveries race (functions/products/stock.py; its tests replay and race
them with the handlers alone, tests/replicas across replicas)."""

from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import OrderCancelled, OrderCreated, PaymentProcessed
from functions.products import APP_ID, stock

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(OrderCreated, inbox=False)
async def reserve_order_stock(event: OrderCreated, context: EventContext) -> None:
    await stock.reserve(event.orderId, event.lines)


@subscriptions.handler(OrderCancelled, inbox=False)
async def release_order_stock(event: OrderCancelled, context: EventContext) -> None:
    await stock.release(event.orderId)


@subscriptions.handler(PaymentProcessed, inbox=False)
async def keep_paid_order_stock(event: PaymentProcessed, context: EventContext) -> None:
    await stock.commit(event.orderId)
