"""Drive the saga the way Dapr would: deliver the CloudEvents payments publishes (or products
would) to payments' own handlers through `deliver`."""

import uuid

from functions.common.consumers import deliver
from functions.common.contracts import StockRejected, StockReserved
from functions.payments.subscriptions import charge_reserved_order, reject_order


def from_products(event) -> dict:
    """A CloudEvent as products' outbox would publish it."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "topic": event.topic,
        "source": "products",
        "type": event.cloud_event_type(),
        "data": event.model_dump(mode="json"),
    }


def published(dapr, topic: str, order_id: str) -> list[dict]:
    return [e for e in dapr.events(topic) if e["data"].get("orderId") == order_id]


def one(dapr, topic: str, order_id: str) -> dict:
    """The one event of `topic` for the order (a re-publish keeps its id, so count ids)."""
    events = {e["id"]: e for e in published(dapr, topic, order_id)}
    assert len(events) == 1, f"{len(events)} {topic} events for {order_id}"
    return next(iter(events.values()))


# Built unchecked, so a test can deliver an id of another form and see the contract refuse it.
async def reserve(order_id: str) -> str:
    return await deliver("payments", StockReserved, charge_reserved_order, from_products(StockReserved.model_construct(orderId=order_id)))


async def reject(order_id: str, reason: str = "Not enough stock for: Café") -> str:
    return await deliver("payments", StockRejected, reject_order, from_products(StockRejected.model_construct(orderId=order_id, reason=reason)))
