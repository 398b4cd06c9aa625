"""Topic handlers: inbox idempotency, SUCCESS / RETRY / DROP, and the Dapr subscription."""

import asyncio
import uuid
from datetime import timedelta

import httpx
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI

from functions.common.clock import now
from functions.common.consumers import (
    INBOX_CLAIM_SECONDS,
    EventContext,
    InboxPruning,
    PermanentError,
    ProcessedEvent,
    Subscriptions,
    deliver,
    forget_old_events,
    inbox_key,
)
from functions.common.contracts import OrderCancelled, StockReserved
from functions.common.dead_letters import DeadLetter, dead_letter_topic
from functions.common.ids import new_id
from functions.common.settings import get_settings

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
ORDER_1 = new_id()


def cloud_event(order_id: str = ORDER_1, event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "topic": "stock_reserved",
        "type": "shop.stock_reserved.v1",
        "source": "products",
        "data": {"orderId": order_id, "somethingNewer": "ignored"},
    }


class Recorder:
    """A handler that records its calls and fails as told."""

    def __init__(self, *failures: Exception) -> None:
        self.calls: list[tuple[StockReserved, EventContext]] = []
        self.failures = list(failures)

    async def handle_stock_reserved(self, event: StockReserved, context: EventContext) -> None:
        self.calls.append((event, context))
        if self.failures:
            raise self.failures.pop(0)


async def test_a_handled_event_is_recorded_and_a_redelivery_skipped(database):
    recorder = Recorder()
    delivered = cloud_event()
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "SUCCESS"
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "SUCCESS"

    [(event, context)] = recorder.calls
    assert event == StockReserved(orderId=ORDER_1)
    assert (context.id, context.topic, context.source) == (delivered["id"], "stock_reserved", "products")
    inbox = await ProcessedEvent.get(inbox_key("payments", "stock_reserved", delivered["id"]))
    assert inbox is not None and inbox.topic == "stock_reserved"


async def test_a_new_event_id_is_handled_again(database):
    recorder = Recorder()
    for _ in range(2):
        assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, cloud_event()) == "SUCCESS"
    assert len(recorder.calls) == 2


async def test_a_transient_failure_asks_for_a_retry_and_the_retry_is_handled(database):
    recorder = Recorder(RuntimeError("database hiccup"))
    delivered = cloud_event()
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "RETRY"
    assert await ProcessedEvent.get(inbox_key("payments", "stock_reserved", delivered["id"])) is None
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "SUCCESS"
    assert len(recorder.calls) == 2


async def test_a_permanent_failure_is_dropped_to_the_dead_letter(database):
    recorder = Recorder(PermanentError("unknown order"))
    delivered = cloud_event()
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "DROP"
    assert await ProcessedEvent.get(inbox_key("payments", "stock_reserved", delivered["id"])) is None


async def test_a_handler_without_inbox_runs_every_delivery_and_leaves_no_record(database):
    subscriptions = Subscriptions("payments")
    recorder = Recorder(RuntimeError("database hiccup"), PermanentError("unknown order"))

    @subscriptions.handler(StockReserved, inbox=False)
    async def handler(event: StockReserved, context: EventContext) -> None:
        await recorder.handle_stock_reserved(event, context)

    delivered = cloud_event()

    outcomes = [await deliver("payments", StockReserved, handler, delivered) for _ in range(4)]

    assert outcomes == ["RETRY", "DROP", "SUCCESS", "SUCCESS"]  # its own records must decide a repeat
    assert len(recorder.calls) == 4
    assert await ProcessedEvent.get(inbox_key("payments", "stock_reserved", delivered["id"])) is None


async def test_two_deliveries_of_one_event_at_once_run_the_handler_once(database):
    # One unique insert decides which delivery handles it (on one replica or several); the other
    # answers RETRY while the first is at work, and SUCCESS once it is done.
    started, release = asyncio.Event(), asyncio.Event()
    calls = []

    async def handle_stock_reserved(event: StockReserved, context: EventContext) -> None:
        calls.append(context.id)
        started.set()
        await release.wait()

    delivered = cloud_event()
    first = asyncio.create_task(deliver("payments", StockReserved, handle_stock_reserved, delivered))
    await started.wait()
    assert await deliver("payments", StockReserved, handle_stock_reserved, delivered) == "RETRY"
    release.set()
    assert await first == "SUCCESS"
    assert await deliver("payments", StockReserved, handle_stock_reserved, delivered) == "SUCCESS"
    assert calls == [delivered["id"]]
    assert (await ProcessedEvent.get(inbox_key("payments", "stock_reserved", delivered["id"]))).state == "done"


async def test_a_claim_left_by_a_dead_delivery_is_taken_over_once_it_expires(database):
    # What a process killed mid-handler leaves: a claim that no one will finish.
    recorder = Recorder()
    delivered = cloud_event()
    key = inbox_key("payments", "stock_reserved", delivered["id"])
    at = now()
    await ProcessedEvent(id=key, topic="stock_reserved", processedAt=at, state="handling", claim="dead",
                         claimedUntil=at + timedelta(seconds=INBOX_CLAIM_SECONDS)).insert()
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "RETRY"
    await ProcessedEvent.get_pymongo_collection().update_one({"_id": key}, {"$set": {"claimedUntil": at - timedelta(seconds=1)}})
    assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, delivered) == "SUCCESS"
    assert len(recorder.calls) == 1
    assert (await ProcessedEvent.get(key)).state == "done"


async def test_malformed_events_are_dropped_without_calling_the_handler(database):
    recorder = Recorder()
    for malformed in (
        {"data": {"orderId": ORDER_1}},  # no id
        {"id": "evt_1", "data": {}},  # missing field
        {"id": "evt_2", "data": {"orderId": ["not", "a", "string"]}},
        {"id": "evt_3", "data": "not an object"},
    ):
        assert await deliver("payments", StockReserved, recorder.handle_stock_reserved, malformed) == "DROP", malformed
    assert recorder.calls == []


async def test_mounted_handlers_subscribe_with_a_dead_letter_topic_and_answer_dapr(database):
    recorder = Recorder(RuntimeError("later"))
    subscriptions = Subscriptions("unit")
    subscriptions.handler(StockReserved)(recorder.handle_stock_reserved)

    async def handle_order_cancelled(event: OrderCancelled, context: EventContext) -> None:
        raise PermanentError("never")

    subscriptions.handler(OrderCancelled)(handle_order_cancelled)
    app = FastAPI()
    subscriptions.mount(DaprApp(app), "pubsub")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        listed = (await client.get("/dapr/subscribe")).json()
        assert [(s["topic"], s["route"], s.get("deadLetterTopic"), s["pubsubname"]) for s in listed] == [
            ("stock_reserved", "/events/stock_reserved", dead_letter_topic("unit", "stock_reserved"), "pubsub"),
            ("dlq_unit_stock_reserved", "/dead-letters/stock_reserved", None, "pubsub"),
            ("order_cancelled", "/events/order_cancelled", "dlq_unit_order_cancelled", "pubsub"),
            ("dlq_unit_order_cancelled", "/dead-letters/order_cancelled", None, "pubsub"),
        ]
        # Dapr posts CloudEvents as application/cloudevents+json.
        headers = {"Content-Type": "application/cloudevents+json"}
        delivered = cloud_event()
        retry = await client.post("/events/stock_reserved", json=delivered, headers=headers)
        success = await client.post("/events/stock_reserved", json=delivered, headers=headers)
        drop = await client.post(
            "/events/order_cancelled", json={"id": "evt_c", "data": {"orderId": ORDER_1, "reason": "x"}}, headers=headers
        )
    assert (retry.status_code, retry.json()) == (200, {"status": "RETRY"})
    assert success.json() == {"status": "SUCCESS"}
    assert drop.json() == {"status": "DROP"}


async def test_a_dead_letter_is_parked_once_and_counted_each_time_it_comes_back(database):
    subscriptions = Subscriptions("unit")
    subscriptions.handler(StockReserved)(Recorder().handle_stock_reserved)
    app = FastAPI()
    subscriptions.mount(DaprApp(app), "pubsub")
    dead = cloud_event(order_id="o-dead")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        for _ in range(2):  # parked, then replayed and dead-lettered again
            answer = await client.post("/dead-letters/stock_reserved", json=dead,
                                       headers={"Content-Type": "application/cloudevents+json"})
            assert answer.json() == {"status": "SUCCESS"}

    parked = await DeadLetter.get(f"stock_reserved:{dead['id']}")
    assert (parked.topic, parked.eventId, parked.status, parked.receipts) == ("stock_reserved", dead["id"], "parked", 2)
    assert parked.cloudEvent == dead  # what a replay publishes again, same id


async def test_the_inbox_forgets_events_older_than_its_retention(database):
    retention = timedelta(hours=get_settings().inbox_retention_hours)
    tag = uuid.uuid4().hex
    # Pruned by whole hours: older than the retention and its hour, gone; within it, kept.
    old = ProcessedEvent(id=f"h:old-{tag}", topic="stock_reserved", processedAt=now() - retention - timedelta(hours=1))
    older = ProcessedEvent(id=f"h:older-{tag}", topic="stock_reserved", processedAt=now() - retention - timedelta(days=1))
    recent = ProcessedEvent(id=f"h:recent-{tag}", topic="stock_reserved", processedAt=now() - retention + timedelta(minutes=1))
    for record in (old, older, recent):
        await record.insert()
    await InboxPruning.get_pymongo_collection().delete_many({})  # a first run: it looks back two days

    assert await forget_old_events() >= 2
    assert await ProcessedEvent.get(old.id) is None
    assert await ProcessedEvent.get(older.id) is None
    assert await ProcessedEvent.get(recent.id) is not None

    # The next run starts where this one stopped: nothing of the last run's hours again.
    again = ProcessedEvent(id=f"h:again-{tag}", topic="stock_reserved", processedAt=now() - retention - timedelta(hours=1))
    await again.insert()
    assert await forget_old_events() == 0  # its hour was pruned already; the index was not asked twice
    assert await ProcessedEvent.get(recent.id) is not None


def test_the_saga_checkout_and_email_handlers_keep_no_inbox_and_the_rest_do():
    """The inbox is the default; a handler leaves it only where its own records make it
    idempotent (tested with the handler alone). Changing this list needs those tests first."""
    from functions.cart.subscriptions import subscriptions as cart
    from functions.notifications.subscriptions import subscriptions as notifications
    from functions.payments.subscriptions import subscriptions as payments
    from functions.products.subscriptions import subscriptions as products

    without = {(s.app_id, event.topic) for s in (cart, notifications, payments, products)
               for event, func in s.handlers if not getattr(func, "uses_inbox", True)}
    assert without == {
        ("payments", "stock_reserved"), ("payments", "stock_rejected"), ("cart", "cart_checkout"),
        ("products", "order_created"), ("products", "order_cancelled"), ("products", "payment_processed"),
        ("notifications", "welcome_flow"), ("notifications", "cart_removals"),
        ("notifications", "invoice_processing"), ("notifications", "email_notification"),
    }
