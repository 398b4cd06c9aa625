"""The saga of an order: its states, the transitions between them, and the step each event drives.

Choreographed: each step reacts to the previous event. Products reserves and releases stock, and
notifications mails the invoice; the order itself lives here, in payments.

    (placed: routes.place_order) ──▶ pending, staging order_created and cart_checkout
    pending ──stock_reserved──▶ stock_reserved ──charge approved──▶ paid ──▶ invoiced, in one write
       │                              │       (+ payment_processed for products, invoice_processing)
       │                              ├──charge declined──▶ payment_failed (+ order_cancelled)
       │                              └──processor down, attempts spent──▶ payment_failed (same)
       └──stock_rejected──▶ rejected
    pending / stock_reserved ──deadline passed──▶ expired (+ order_cancelled)
    paid ──deadline passed──▶ invoiced (an order an earlier version left paid: the invoice step)

An approved charge is invoiced in the same step: its number is taken from the ledger (keyed by
the order, so a redelivery or a racing delivery finds the same one) before the one write that
moves the order through paid to invoiced and stages both events. The invoice is not a hop of its
own: payments does not consume the payment_processed it publishes (products does).

Each step is one conditional update from the status it expects: it changes the status, appends
the transition to the history and stages the step's events, all in one write. A redelivered,
duplicated or late event finds the order past that status and changes nothing.

Every order ends. An event can be lost to the saga for good: dead-lettered after the redelivery
window (a database outage longer than it, a bug), or never published by a function whose outbox
was lost; its order would wait forever, its stock held. Every `DEADLINE_SWEEP_SECONDS`, the
orders whose last change is older than `SHOP_ORDER_DEADLINE_SECONDS` in a waiting status are
settled: `pending` (no stock decision came) and `stock_reserved` (no charge decision came) have
their payment recorded as failed first (`give_up_charging`: a charge still in flight on another
replica then finds it and refunds) and expire, staging `order_cancelled`, on which products gives
back whatever it holds; if a charge was recorded first it stands and the order is paid instead.
`paid` (its `payment_processed` was lost) is invoiced now. Found by equality on `status` (an index
serves it); the age is checked on those few.
"""

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.clock import now
from functions.common.consumers import PermanentError
from functions.common.contracts import (
    IntegrationEvent,
    InvoiceProcessing,
    OrderCancelled,
    PaymentFailed,
    PaymentProcessed,
)
from functions.common.ids import is_id
from functions.common.outbox import PendingEvent
from functions.payments import APP_ID
from functions.payments.invoicing import allocate_invoice_number, build_invoice
from functions.payments.models import Order, OrderStatus, Payment, Transition
from functions.payments.processor import CardProcessor, TransientPaymentError, get_processor
from functions.payments.settings import get_settings

log = logging.getLogger(__name__)

DEADLINE_SWEEP_SECONDS = 60.0
WAITING: tuple[OrderStatus, ...] = ("pending", "stock_reserved", "paid")
BATCH = 200  # orders settled per status per round; the next round takes the rest


async def find_order(order_id: str) -> Order | None:
    return await Order.get(order_id) if is_id(order_id) else None


async def load_order(order_id: str) -> Order:
    """The order an event names; an event for no order can never succeed (dead letter)."""
    order = await find_order(order_id)
    if order is None:
        raise PermanentError(f"no order {order_id!r}")
    return order


def stage(*events: IntegrationEvent, order_id: str) -> list[PendingEvent]:
    return [PendingEvent.of(event, source=APP_ID, key=order_id) for event in events]


async def transition(
    order_id: str,
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
    status = {"$in": list(expected)} if isinstance(expected, tuple) else expected
    moved = await store.update(
        Order,
        order_id,
        {"$set": {"status": to, "updatedAt": at, **(changes or {})}, "$push": {"history": {"$each": steps}}},
        where={"status": status},
        events=stage(*events, order_id=order_id),
    )
    if not moved:
        log.info("order %s is no longer %s; %s not applied", order_id, expected, to)
    return moved


async def count_failed_charge(order_id: str) -> int:
    """Count one transient failure to charge the order (it is still stock_reserved); returns the
    count so far. Kept on the order, so every replica and restart sees the same count."""
    counted = await store.update_and_read(
        Order,
        order_id,
        {"$inc": {"transientChargeFailures": 1}, "$set": {"updatedAt": now()}},
        where={"status": "stock_reserved"},
    )
    return counted["transientChargeFailures"] if counted else 0


async def charge_once(order: Order) -> Payment:
    """The order's payment: charged at most once, with the order id as the idempotency key.

    A Payment already recorded is the answer. The processor is asked (it answers a key
    it has seen with its first result, covering a crash between its charge and our record) and
    its result is recorded. The record's unique id decides between racing deliveries: the first
    recorded result stands, and a charge that lost to a recorded failure (`give_up_charging` by
    another delivery) is refunded. TransientPaymentError propagates: the handler answers RETRY.
    """
    order_id = order.id
    # A pending order was charged before only by a delivery that stopped before moving it (the
    # processor answers that charge again) or given up on by the deadline sweep meanwhile (the
    # charge below is refunded, as when the two race): no look-up first. Past pending (a
    # transient failure moved it), a failure may be recorded: found first, nothing charged.
    if order.status != "pending" and (recorded := await Payment.get(order_id)) is not None:
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
    payment = Payment(id=order.id, provider=processor.name, chargeId="", status="declined", reason=reason,
                      amountCents=order.totalCents, currency=order.currency)
    return await _record(payment, processor)


async def _record(payment: Payment, processor: CardProcessor) -> Payment:
    try:
        await store.insert(payment)
        return payment
    except DuplicateKeyError:
        recorded = await Payment.get(payment.id)
    if payment.status == "approved" and recorded.status != "approved":
        log.warning("order %s: charged after its payment was recorded as failed; refunding", payment.id)
        await processor.refund(idempotency_key=payment.id)
    return recorded


# The steps, one per event that moves an order (subscriptions.py maps each topic to its step).


async def charge(order_id: str, event_id: str) -> None:
    """Stock is held: charge the card. Approved → paid + payment_processed; declined →
    payment_failed, staging payment_failed and order_cancelled (products gives the stock back). A
    transient processor failure raises, so Dapr redelivers while the order waits in
    stock_reserved; after `SHOP_PAYMENT_MAX_ATTEMPTS` of them the payment fails like a decline,
    so an outage never leaves the order holding stock."""
    order = await load_order(order_id)
    if order.status not in ("pending", "stock_reserved"):
        log.info("order %s is %s; stock_reserved %s changes nothing", order.id, order.status, event_id)
        return

    try:
        payment = await charge_once(order)
    except TransientPaymentError:
        if order.status == "pending":  # the order waits in stock_reserved while Dapr redelivers
            await transition(order.id, expected="pending", to="stock_reserved", event_id=event_id)
        attempts = await count_failed_charge(order.id)
        if attempts < get_settings().payment_max_attempts:
            raise
        # Recorded as failed first: a delivery still charging (another replica) then finds the
        # failure recorded and refunds its charge. A real provider's timeout may hide a charge
        # made under the order id (the idempotency key): reconciliation with the provider
        # settles that one.
        log.error("order %s: the processor failed %d times; failing its payment", order.id, attempts)
        payment = await give_up_charging(order, f"Payment processor unavailable after {attempts} attempts")
        order = await load_order(order_id)  # now stock_reserved (this step moved it)
    # One write from pending or stock_reserved; the history shows stock_reserved either way.
    await settle_payment(order, payment, event_id, passing=("stock_reserved",) if order.status == "pending" else ())


async def settle_payment(order: Order, payment: Payment, event_id: str, passing: tuple[OrderStatus, ...] = ()) -> bool:
    """Approved: (pending →) stock_reserved → paid → invoiced in one write, the invoice numbered
    first, staging payment_processed and invoice_processing. Declined: → payment_failed, staging
    payment_failed and order_cancelled (products gives the stock back)."""
    order_id = order.id
    if payment.status == "approved":
        paid = PaymentProcessed(orderId=order_id, paymentId=payment.chargeId, amountCents=payment.amountCents)
        invoice_changes, invoiced = await _issue_invoice(order)
        return await transition(order.id, expected=("pending", "stock_reserved"), to="invoiced",
                                passing=(*passing, "paid"), event_id=event_id,
                                changes={"paymentId": payment.chargeId, **invoice_changes}, events=[paid, invoiced])
    reason = payment.reason or "Payment declined"
    changes = {"paymentId": payment.chargeId or None, "failureReason": reason}
    events = [PaymentFailed(orderId=order_id, reason=reason),
              OrderCancelled(orderId=order_id, reason=f"Payment failed: {reason}")]
    return await transition(order.id, expected=("pending", "stock_reserved"), to="payment_failed", passing=passing,
                            event_id=event_id, reason=reason, changes=changes, events=events)


async def _issue_invoice(order: Order) -> tuple[dict[str, Any], InvoiceProcessing]:
    """The order's invoice, numbered (the ledger's number, once per order): what the write that
    invoices the order sets, and the invoice_processing event it stages."""
    issued_at = now()
    number = await allocate_invoice_number(order.id, issued_at.year)
    issued = build_invoice(order, number, issued_at)
    event = InvoiceProcessing(
        orderId=order.id,
        invoiceNumber=number,
        userId=order.userId,
        email=order.email,
        lines=[line.contract() for line in issued.lines],
        **issued.amounts(),
    )
    return {"invoiceNumber": number, "invoice": issued.model_dump()}, event


async def reject(order_id: str, reason: str, event_id: str) -> None:
    """Not enough stock: the order is rejected. No order_cancelled: products reserves all of an
    order's lines or none, so a rejected order holds no stock to give back."""
    order = await load_order(order_id)
    if order.status != "pending":
        log.info("order %s is %s; stock_rejected %s changes nothing", order.id, order.status, event_id)
        return
    await transition(
        order.id, expected="pending", to="rejected", event_id=event_id, reason=reason, changes={"failureReason": reason}
    )


async def invoice(order_id: str, event_id: str) -> None:
    """An order left paid (by an earlier version, which invoiced on its own payment_processed):
    issue the invoice, move it to invoiced and stage invoice_processing. Run by the deadline sweep."""
    order = await load_order(order_id)
    if order.status != "paid":
        log.info("order %s is %s; %s changes nothing", order.id, order.status, event_id)
        return
    changes, invoiced = await _issue_invoice(order)
    await transition(order.id, expected="paid", to="invoiced", event_id=event_id, changes=changes, events=[invoiced])


async def settle_overdue_orders() -> int:
    """The deadline step: settle every order overdue in a waiting status; returns how many moved."""
    deadline = timedelta(seconds=get_settings().order_deadline_seconds)
    cutoff = now() - deadline
    moved = 0
    for status in WAITING:
        for order in await Order.find({"status": status, "updatedAt": {"$lt": cutoff}}).limit(BATCH).to_list():
            log.warning("order %s has been %s since %s (deadline %s): settling it", order.id, status, order.updatedAt, deadline)
            moved += await _settle(order, deadline)
    return moved


async def _settle(order: Order, deadline: timedelta) -> bool:
    event_id = f"deadline:{order.id}:{order.status}"
    if order.status == "paid":
        await invoice(order.id, event_id)
        return True
    minutes = deadline.total_seconds() / 60
    reason = f"The order did not complete within {minutes:g} minutes (stopped at {order.status})"
    payment = await give_up_charging(order, reason)
    if payment.status == "approved":
        # The charge was recorded before the deadline: the order is paid after all.
        return await settle_payment(order, payment, event_id)
    return await transition(
        order.id, expected=("pending", "stock_reserved"), to="expired", event_id=event_id, reason=reason,
        changes={"failureReason": reason},
        events=[OrderCancelled(orderId=order.id, reason=reason)],
    )
