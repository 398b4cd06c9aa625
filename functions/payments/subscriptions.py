"""Payments' topics, each mapped to the saga step it drives (functions/payments/saga.py).

No inbox: each step is a conditional move from the status it expects, and the charge is recorded
once per order, so a redelivered or racing event changes nothing (tests/unit/payments/test_saga.py
replays and races them with the handlers alone; tests/replicas across replicas)."""

from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import StockRejected, StockReserved
from functions.payments import APP_ID, saga

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(StockReserved, inbox=False)
async def charge_reserved_order(event: StockReserved, context: EventContext) -> None:
    await saga.charge(event.orderId, context.id)


@subscriptions.handler(StockRejected, inbox=False)
async def reject_order(event: StockRejected, context: EventContext) -> None:
    await saga.reject(event.orderId, event.reason, context.id)
