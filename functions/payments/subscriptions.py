"""Payments' topics, each mapped to the saga step it drives (functions/payments/saga.py)."""

from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import PaymentProcessed, StockRejected, StockReserved
from functions.payments import APP_ID, saga

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(StockReserved)
async def charge_reserved_order(event: StockReserved, context: EventContext) -> None:
    await saga.charge(event.orderId, context.id)


@subscriptions.handler(StockRejected)
async def reject_order(event: StockRejected, context: EventContext) -> None:
    await saga.reject(event.orderId, event.reason, context.id)


@subscriptions.handler(PaymentProcessed)
async def invoice_paid_order(event: PaymentProcessed, context: EventContext) -> None:
    await saga.invoice(event.orderId, context.id)
