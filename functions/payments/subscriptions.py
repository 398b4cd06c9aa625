"""Payments' topic handlers: the steps of the order saga that are payments' to take."""

import logging

from functions.common.clock import now
from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import (
    InvoiceProcessing,
    OrderCancelled,
    PaymentFailed,
    PaymentProcessed,
    StockRejected,
    StockReserved,
)
from functions.common.settings import get_settings
from functions.payments import APP_ID
from functions.payments.invoicing import allocate_invoice_number, build_invoice
from functions.payments.models import Order, OrderStatus
from functions.payments.processor import TransientPaymentError
from functions.payments.saga import charge_once, count_failed_charge, give_up_charging, load_order, transition

log = logging.getLogger(__name__)
subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(StockReserved)
async def charge_reserved_order(event: StockReserved, context: EventContext) -> None:
    """Stock is held: charge the card. Approved → paid + payment_processed; declined →
    payment_failed, staging payment_failed and order_cancelled (products gives the stock back). A
    transient processor failure raises, so Dapr redelivers while the order waits in
    stock_reserved; after `SHOP_PAYMENT_MAX_ATTEMPTS` of them the payment fails like a decline,
    so an outage never leaves the order holding stock."""
    order = await load_order(event.orderId)
    if order.status not in ("pending", "stock_reserved"):
        log.info("order %s is %s; stock_reserved %s changes nothing", order.id, order.status, context.id)
        return

    try:
        payment = await charge_once(order)
    except TransientPaymentError:
        if order.status == "pending":  # the order waits in stock_reserved while Dapr redelivers
            await transition(order.id, expected="pending", to="stock_reserved", event_id=context.id)
        attempts = await count_failed_charge(order.id)
        if attempts < get_settings().payment_max_attempts:
            raise
        # Recorded as failed first: a delivery still charging (another replica) then finds the
        # failure recorded and refunds its charge. A real provider's timeout may hide a charge
        # made under the order id (the idempotency key): reconciliation with the provider
        # settles that one.
        log.error("order %s: the processor failed %d times; failing its payment", order.id, attempts)
        payment = await give_up_charging(order, f"Payment processor unavailable after {attempts} attempts")
        order = await load_order(event.orderId)  # now stock_reserved (this handler moved it)
    # One write from pending or stock_reserved; the history shows stock_reserved either way.
    passing = ("stock_reserved",) if order.status == "pending" else ()
    if payment.status == "approved":
        await transition(
            order.id,
            expected=("pending", "stock_reserved"),
            to="paid",
            passing=passing,
            event_id=context.id,
            changes={"paymentId": payment.chargeId},
            events=[PaymentProcessed(orderId=str(order.id), paymentId=payment.chargeId, amountCents=payment.amountCents)],
        )
    else:
        await fail_payment(order, context, payment.reason or "Payment declined", payment_id=payment.chargeId or None, passing=passing)


async def fail_payment(
    order: Order, context: EventContext, reason: str, payment_id: str | None = None, passing: tuple[OrderStatus, ...] = ()
) -> None:
    """(pending →) stock_reserved → payment_failed, staging payment_failed and order_cancelled."""
    await transition(
        order.id,
        expected=("pending", "stock_reserved"),
        to="payment_failed",
        passing=passing,
        event_id=context.id,
        reason=reason,
        changes={"paymentId": payment_id, "failureReason": reason},
        events=[
            PaymentFailed(orderId=str(order.id), reason=reason),
            OrderCancelled(orderId=str(order.id), reason=f"Payment failed: {reason}"),
        ],
    )


@subscriptions.handler(StockRejected)
async def reject_order(event: StockRejected, context: EventContext) -> None:
    """Not enough stock: the order is rejected. No order_cancelled: products reserves all of an
    order's lines or none, so a rejected order holds no stock to give back."""
    order = await load_order(event.orderId)
    if order.status != "pending":
        log.info("order %s is %s; stock_rejected %s changes nothing", order.id, order.status, context.id)
        return
    await transition(
        order.id,
        expected="pending",
        to="rejected",
        event_id=context.id,
        reason=event.reason,
        changes={"failureReason": event.reason},
    )


@subscriptions.handler(PaymentProcessed)
async def invoice_paid_order(event: PaymentProcessed, context: EventContext) -> None:
    """Paid: issue the invoice (its sequential number, lines, tax, total), move the order to
    invoiced and stage invoice_processing."""
    order = await load_order(event.orderId)
    if order.status != "paid":
        log.info("order %s is %s; payment_processed %s changes nothing", order.id, order.status, context.id)
        return
    issued_at = now()
    number = await allocate_invoice_number(str(order.id), issued_at.year)
    invoice = build_invoice(order, number, issued_at)
    await transition(
        order.id,
        expected="paid",
        to="invoiced",
        event_id=context.id,
        changes={"invoiceNumber": number, "invoice": invoice.model_dump()},
        events=[
            InvoiceProcessing(
                orderId=str(order.id),
                invoiceNumber=number,
                userId=order.userId,
                email=order.email,
                lines=invoice.lines,
                **invoice.amounts(),
            )
        ],
    )
