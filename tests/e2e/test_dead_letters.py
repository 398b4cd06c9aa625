"""A dead-lettered event is parked by the function that could not handle it, and `task dlq`
lists it and replays it (same CloudEvent, same id) through the real broker and sidecars."""

import subprocess
import sys
import uuid

from tests.e2e.shop import eventually, sidecar
from tests.stack import stack


def parked(letter_id: str) -> dict | None:
    return next((letter for letter in stack.parked_dead_letters() if letter["_id"] == letter_id), None)


def test_an_event_no_handler_can_take_is_parked_listed_and_replayed() -> None:
    # stock_reserved for an order payments never had: its handler answers DROP, Dapr sends the
    # event to dlq_payments_stock_reserved, and payments parks it.
    event_id = f"evt_{uuid.uuid4().hex}"
    order_id = uuid.uuid4().hex[:24]
    poisoned = {"specversion": "1.0", "id": event_id, "source": "products", "type": "shop.stock_reserved.v1",
                "datacontenttype": "application/json", "data": {"orderId": order_id}}
    with sidecar("products") as dapr:
        published = dapr.post("/v1.0/publish/pubsub/stock_reserved", json=poisoned,
                              headers={"Content-Type": "application/cloudevents+json"})
    assert published.status_code == 204, published.text

    letter_id = f"stock_reserved:{event_id}"
    letter = eventually(lambda: parked(letter_id), "payments to park the dead letter")
    assert (letter["function"], letter["receipts"], letter["replays"]) == ("payments", 1, 0)
    assert letter["cloudEvent"]["data"] == {"orderId": order_id}

    listing = subprocess.run([sys.executable, str(stack.ROOT / "dapr" / "local" / "stack.py"), "dlq"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and letter_id in listing.stdout + listing.stderr, listing

    assert stack.replay_dead_letters([letter_id]) == 1
    # Replayed to stock_reserved: still no such order, so it comes back to the dead letter. The
    # replay crosses two topics and two consumers again; on a loaded machine (a CI run beside a
    # Go build) that once took over 45 s.
    again = eventually(lambda: (p := parked(letter_id)) and p["receipts"] == 2 and p,
                       "the replay to be dead-lettered again", 120)
    assert (again["replays"], again["cloudEvent"]["id"]) == (1, event_id)
