"""Every order ends: the deadline sweep settles an order whose next event was lost for good."""

from datetime import timedelta

from functions.common.clock import now
from functions.payments.models import Order, Payment, SimulatedCharge, Transition
from functions.payments.saga import settle_overdue_orders
from functions.payments.settings import get_settings
from tests.unit.payments.saga_steps import one, published, reserve
from tests.unit.payments.test_saga import order, placed, statuses


async def overdue(order_id: str, status: str | None = None) -> None:
    """Make the order's last change older than the deadline (and put it in `status`)."""
    late = now() - timedelta(seconds=get_settings().order_deadline_seconds + 60)
    await Order.get_pymongo_collection().update_one(
        {"_id": order_id}, {"$set": {"updatedAt": late, **({"status": status} if status else {})}}
    )


async def test_an_order_whose_stock_decision_never_came_expires_and_gives_its_stock_back(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_visa")
    await overdue(order_id)

    assert await settle_overdue_orders() >= 1

    expired = await order(order_id)
    assert statuses(expired) == ["pending", "expired"]
    assert "did not complete within 15 minutes (stopped at pending)" in expired.failureReason
    assert one(dapr, "order_cancelled", order_id)["data"]["reason"] == expired.failureReason
    assert (await Payment.get(order_id)).status == "declined"
    # The lost stock_reserved, arriving at last, charges nothing.
    assert await reserve(order_id) == "SUCCESS"
    assert await SimulatedCharge.get(order_id) is None
    assert (await order(order_id)).status == "expired"


async def test_an_order_within_its_deadline_is_left_alone(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_visa")
    await settle_overdue_orders()
    assert (await order(order_id)).status == "pending"
    assert published(dapr, "order_cancelled", order_id) == []


async def test_a_charge_recorded_before_the_deadline_makes_the_order_paid_not_expired(client, dapr, shop, customer):
    order_id = await placed(client, shop, customer, "tok_visa")
    # The charge was recorded, then the process died before moving the order.
    recorded = Payment(id=order_id, provider="simulated", chargeId="ch_1", status="approved", amountCents=2975, currency="USD")
    await recorded.insert()
    await overdue(order_id, "stock_reserved")

    await settle_overdue_orders()

    settled = await order(order_id)
    assert statuses(settled) == ["pending", "paid", "invoiced"]
    assert one(dapr, "payment_processed", order_id)["data"]["paymentId"] == "ch_1"
    assert one(dapr, "invoice_processing", order_id)["data"]["invoiceNumber"] == settled.invoiceNumber
    assert published(dapr, "order_cancelled", order_id) == []


async def test_an_order_an_earlier_version_left_paid_is_invoiced(client, dapr, shop, customer):
    # An earlier version moved an order to paid, then invoiced it on its own payment_processed;
    # an order left paid by it (or whose event was lost) is invoiced by the sweep.
    order_id = await placed(client, shop, customer, "tok_visa")
    steps = [Transition(status=status, at=now()).model_dump() for status in ("stock_reserved", "paid")]
    await Order.get_pymongo_collection().update_one(
        {"_id": order_id}, {"$set": {"status": "paid", "paymentId": "ch_1"}, "$push": {"history": {"$each": steps}}}
    )
    await overdue(order_id)

    await settle_overdue_orders()
    await settle_overdue_orders()  # a second round (or replica) changes nothing more

    invoiced = await order(order_id)
    assert statuses(invoiced) == ["pending", "stock_reserved", "paid", "invoiced"]
    assert invoiced.invoiceNumber
    assert one(dapr, "invoice_processing", order_id)["data"]["invoiceNumber"] == invoiced.invoiceNumber
