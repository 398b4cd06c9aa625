"""The order saga, payments' side: each path, redeliveries, and one charge per order."""

import asyncio
import uuid
from pathlib import Path

import yaml

from functions.common.consumers import EventContext, deliver
from functions.common.contracts import StockRejected, StockReserved
from functions.payments.models import InvoiceNumber, Order, Payment, SimulatedCharge
from functions.payments.processor import get_processor
from functions.payments.saga import give_up_charging
from functions.payments.settings import get_settings
from functions.payments.subscriptions import charge_reserved_order, reject_order, subscriptions
from tests.unit.payments.saga_steps import from_products, one, published, reject, reserve

ROOT = Path(__file__).resolve().parents[3]


async def placed(client, shop, customer, card: str, *lines) -> str:
    shop.cart(*(lines or [(shop.product("Café Orgánico de Altura", 1250), 2)]))
    response = await client.post("/api/orders", headers=customer.headers, json={"paymentMethod": {"token": card}})
    assert response.status_code == 202, response.text
    return response.json()["data"]["orderId"]


async def order(order_id: str) -> Order:
    return await Order.get(order_id)


def statuses(o: Order) -> list[str]:
    return [step.status for step in o.history]


async def test_a_visa_order_is_paid_invoiced_and_its_invoice_mailed(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_visa")

    # One step: the charge approved, the order is paid and invoiced by one write.
    assert await reserve(order_id) == "SUCCESS"
    invoiced = await order(order_id)
    assert invoiced.status == "invoiced"
    assert statuses(invoiced) == ["pending", "stock_reserved", "paid", "invoiced"]
    payment = await Payment.get(order_id)
    assert (payment.status, payment.amountCents, payment.provider) == ("approved", 2975, "simulated")
    assert invoiced.paymentId == payment.chargeId
    assert one(dapr, "payment_processed", order_id)["data"] == {
        "orderId": order_id, "paymentId": payment.chargeId, "amountCents": 2975,
    }
    number = invoiced.invoiceNumber
    assert number.startswith(f"INV-{invoiced.invoice.issuedAt.year}-") and len(number) == len("INV-2026-000001")
    assert (await InvoiceNumber.get(number)).orderId == order_id
    assert (invoiced.invoice.subtotalCents, invoiced.invoice.taxRate, invoiced.invoice.taxCents, invoiced.invoice.totalCents) == (2500, 0.19, 475, 2975)
    processing = one(dapr, "invoice_processing", order_id)["data"]
    assert (processing["invoiceNumber"], processing["email"], processing["totalCents"]) == (number, customer.email, 2975)

    # The facts notifications renders the invoice e-mail from; payments writes no prose.
    assert [(line["name"], line["unitPriceCents"], line["quantity"]) for line in processing["lines"]] == [
        ("Café Orgánico de Altura", 1250, 2)
    ]
    assert (processing["subtotalCents"], processing["taxCents"], processing["currency"]) == (2500, 475, "USD")
    assert published(dapr, "email_notification", order_id) == []

    # Each step's cause is in the history: the order placed, then the one stock_reserved.
    events = [step.eventId for step in (await order(order_id)).history]
    assert events[0] == one(dapr, "order_created", order_id)["id"]
    assert events[1] == events[2] == events[3] and events[1].startswith("evt_")
    assert published(dapr, "payment_failed", order_id) == published(dapr, "order_cancelled", order_id) == []

    listed = (await client.get(f"/api/orders/{order_id}", headers=customer.headers)).json()["data"]
    assert (listed["status"], listed["invoiceNumber"], listed["invoice"]["total"]) == ("invoiced", number, 29.75)
    assert [h["status"] for h in listed["history"]] == ["pending", "stock_reserved", "paid", "invoiced"]


async def test_a_declined_card_fails_the_payment_and_cancels_the_order(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_declined")
    assert await reserve(order_id) == "SUCCESS"

    failed = await order(order_id)
    assert statuses(failed) == ["pending", "stock_reserved", "payment_failed"]
    assert failed.history[-1].reason == "Card declined" == failed.failureReason
    assert failed.invoiceNumber is None and failed.invoice is None
    assert (await Payment.get(order_id)).status == "declined"
    assert one(dapr, "payment_failed", order_id)["data"] == {"orderId": order_id, "reason": "Card declined"}
    assert one(dapr, "order_cancelled", order_id)["data"] == {"orderId": order_id, "reason": "Payment failed: Card declined"}
    assert published(dapr, "payment_processed", order_id) == []
    assert await InvoiceNumber.find_one(InvoiceNumber.orderId == order_id) is None

    # Payments does not consume payment_processed (it invoices in the charge step): a forged or
    # misrouted one has no way to invoice the order.
    assert "payment_processed" not in {event.topic for event, _ in subscriptions.handlers}


async def test_a_transient_processor_failure_is_retried_until_it_pays(client, dapr, shop, customer, processor):
    order_id = await placed(client, shop, customer, "tok_error")
    reserved = from_products(StockReserved(orderId=order_id))

    # The simulated outage lasts two attempts; Dapr redelivers the same event each time.
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "RETRY"
    waiting = await order(order_id)
    assert statuses(waiting) == ["pending", "stock_reserved"]
    assert await Payment.get(order_id) is None and await SimulatedCharge.get(order_id) is None
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "RETRY"
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "SUCCESS"

    paid = await order(order_id)
    assert statuses(paid) == ["pending", "stock_reserved", "paid", "invoiced"]  # no step repeated by the retries
    assert paid.transientChargeFailures == 2
    assert (await Payment.get(order_id)).status == "approved"
    one(dapr, "payment_processed", order_id)
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "SUCCESS"  # handled: skipped
    assert statuses(await order(order_id)) == ["pending", "stock_reserved", "paid", "invoiced"]


async def test_a_processor_that_stays_down_fails_the_payment_after_the_allowed_attempts(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_unavailable")
    reserved = from_products(StockReserved(orderId=order_id))
    allowed = get_settings().payment_max_attempts

    for attempt in range(1, allowed):
        assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "RETRY"
        waiting = await order(order_id)
        assert (waiting.status, waiting.transientChargeFailures) == ("stock_reserved", attempt)
        assert published(dapr, "payment_failed", order_id) == []
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "SUCCESS"

    failed = await order(order_id)
    reason = f"Payment processor unavailable after {allowed} attempts"
    assert statuses(failed) == ["pending", "stock_reserved", "payment_failed"]
    assert (failed.failureReason, failed.history[-1].reason, failed.transientChargeFailures) == (reason, reason, allowed)
    recorded = await Payment.get(order_id)  # the failure is recorded: no later delivery charges
    assert (recorded.status, recorded.reason, recorded.chargeId) == ("declined", reason, "")
    assert failed.paymentId is None
    assert one(dapr, "payment_failed", order_id)["data"] == {"orderId": order_id, "reason": reason}
    # order_cancelled is what makes products give the held stock back.
    assert one(dapr, "order_cancelled", order_id)["data"] == {"orderId": order_id, "reason": f"Payment failed: {reason}"}

    # A redelivery after the end (a new event id, as a replay would have) charges nothing.
    again = from_products(StockReserved(orderId=order_id))
    assert await deliver("payments", StockReserved, charge_reserved_order, again) == "SUCCESS"
    after = await order(order_id)
    assert (after.status, after.transientChargeFailures, len(after.history)) == ("payment_failed", allowed, 3)


async def test_a_charge_that_loses_to_a_recorded_failure_is_refunded_and_the_order_fails(client, dapr, shop, customer):
    # Two replicas: one gave up on the processor (its attempts spent) and recorded the failure
    # while the other's charge was in flight and then approved.
    order_id = await placed(client, shop, customer, "tok_visa")
    real_charge = get_processor().charge

    async def failure_recorded_meanwhile(**kwargs):
        result = await real_charge(**kwargs)
        await give_up_charging(await order(order_id), "Payment processor unavailable after 4 attempts")
        return result

    get_processor().charge = failure_recorded_meanwhile
    try:
        assert await reserve(order_id) == "SUCCESS"
    finally:
        del get_processor().charge

    assert (await order(order_id)).status == "payment_failed"
    charge = await SimulatedCharge.get(order_id)
    assert (charge.approved, charge.refunded) == (True, True)
    assert published(dapr, "payment_processed", order_id) == []
    assert one(dapr, "order_cancelled", order_id)


def test_the_saga_ends_an_outage_before_dapr_dead_letters_the_event():
    """Dapr delivers an event 1 + maxRetries times before the dead letter: the allowed charge
    attempts must fit, or an outage would leave the order in stock_reserved holding stock."""
    resiliency = yaml.safe_load((ROOT / "dapr" / "resiliency.yaml").read_text())["spec"]
    inbound = resiliency["targets"]["components"]["pubsub"]["inbound"]["retry"]
    deliveries = 1 + resiliency["policies"]["retries"][inbound]["maxRetries"]
    assert 1 <= get_settings().payment_max_attempts <= deliveries
    # And the order deadline lies far beyond that window: only an event lost for good meets it.
    policy = resiliency["policies"]["retries"][inbound]
    window = deliveries * float(str(policy.get("maxInterval", "60s")).rstrip("s"))
    assert get_settings().order_deadline_seconds > 10 * window


async def test_out_of_stock_rejects_the_order(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_visa")
    published_before = len(dapr.published)
    assert await reject(order_id, "Not enough stock for: Café Orgánico de Altura") == "SUCCESS"

    rejected = await order(order_id)
    assert statuses(rejected) == ["pending", "rejected"]
    assert rejected.history[-1].reason == "Not enough stock for: Café Orgánico de Altura" == rejected.failureReason
    # Nothing to release (products reserves all lines or none) and nothing to charge.
    assert len(dapr.published) == published_before
    assert await Payment.get(order_id) is None

    # A late or reordered stock_reserved cannot revive it, nor charge it.
    assert await reserve(order_id) == "SUCCESS"
    assert statuses(await order(order_id)) == ["pending", "rejected"]
    assert await SimulatedCharge.get(order_id) is None


async def test_redelivered_events_change_nothing(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_visa")
    reserved = from_products(StockReserved(orderId=order_id))
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "SUCCESS"
    settled = await order(order_id)
    assert settled.status == "invoiced"
    published_before = len(dapr.published)

    # The same CloudEvent again (no inbox: the order's status decides).
    assert await deliver("payments", StockReserved, charge_reserved_order, reserved) == "SUCCESS"
    # And duplicates under new ids: the status guards make each a no-op.
    context = EventContext(id=f"evt_{uuid.uuid4().hex}", topic="any")
    await charge_reserved_order(StockReserved(orderId=order_id), context)
    await reject_order(StockRejected(orderId=order_id, reason="late"), context)

    again = await order(order_id)
    assert again.history == settled.history and again.status == "invoiced"
    assert again.invoiceNumber == settled.invoiceNumber and again.invoice == settled.invoice
    assert len(dapr.published) == published_before
    assert await InvoiceNumber.find(InvoiceNumber.orderId == order_id).count() == 1
    assert await SimulatedCharge.find({"_id": order_id}).count() == 1


async def test_a_payment_is_never_charged_twice(client, dapr, shop, customer, processor):
    order_id = await placed(client, shop, customer, "tok_visa")
    calls: list[str] = []
    real_charge = processor.charge

    async def counting_charge(**kwargs):
        calls.append(kwargs["idempotency_key"])
        return await real_charge(**kwargs)

    processor.charge = counting_charge
    # Three deliveries at the same moment: one event twice (a rebalance) and a duplicate under
    # another id. No inbox stands between them: the payment's record and the order's status do.
    reserved = from_products(StockReserved(orderId=order_id))
    outcomes = await asyncio.gather(
        deliver("payments", StockReserved, charge_reserved_order, reserved),
        deliver("payments", StockReserved, charge_reserved_order, reserved),
        deliver("payments", StockReserved, charge_reserved_order, from_products(StockReserved(orderId=order_id))),
    )
    assert outcomes == ["SUCCESS", "SUCCESS", "SUCCESS"]
    assert set(calls) == {order_id}  # always with the order id as the idempotency key
    assert await SimulatedCharge.find({"_id": order_id}).count() == 1
    assert await Payment.find({"_id": order_id}).count() == 1
    assert statuses(await order(order_id)) == ["pending", "stock_reserved", "paid", "invoiced"]
    assert len({e["id"] for e in published(dapr, "payment_processed", order_id)}) == 1
    assert len({e["id"] for e in published(dapr, "invoice_processing", order_id)}) == 1
    assert await InvoiceNumber.find(InvoiceNumber.orderId == order_id).count() == 1

    # A Payment on record is the answer: the processor is not even asked again.
    calls.clear()
    await Order.get_pymongo_collection().update_one({"_id": order_id}, {"$set": {"status": "stock_reserved"}})
    await charge_reserved_order(StockReserved(orderId=order_id), EventContext(id="evt_again", topic="stock_reserved"))
    assert calls == []


async def test_a_delivery_that_stopped_after_charging_is_finished_by_the_next_with_the_same_charge(
    client, dapr, shop, customer, processor
):
    # The first delivery charged the card and recorded the payment, then stopped before moving
    # the order: it is still pending, and its next delivery does not look the payment up first.
    order_id = await placed(client, shop, customer, "tok_visa")
    placed_order = await order(order_id)
    first = await processor.charge(idempotency_key=order_id, token="tok_visa", amount_cents=placed_order.totalCents,
                                   currency=placed_order.currency)
    await Payment(id=order_id, provider=processor.name, chargeId=first.chargeId, status="approved",
                  amountCents=placed_order.totalCents, currency=placed_order.currency).insert()

    assert await reserve(order_id) == "SUCCESS"

    paid = await order(order_id)
    assert statuses(paid) == ["pending", "stock_reserved", "paid", "invoiced"]
    assert paid.paymentId == first.chargeId  # the processor answered the same charge again
    charge = await SimulatedCharge.get(order_id)
    assert (charge.chargeId, charge.refunded) == (first.chargeId, False)
    assert await Payment.find({"_id": order_id}).count() == 1
    assert len({e["id"] for e in published(dapr, "payment_processed", order_id)}) == 1


async def test_events_for_unknown_orders_are_dropped(client, dapr):
    for order_id in ("0" * 24, "not-an-order"):
        assert await reserve(order_id) == "DROP"
        assert await reject(order_id) == "DROP"
    assert await deliver("payments", StockReserved, charge_reserved_order, {"id": "evt_x", "data": {}}) == "DROP"
    assert dapr.published == []
