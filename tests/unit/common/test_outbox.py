"""The outbox: an event staged in the same write as its change, relayed, audited, swept."""

import json
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
import respx

from functions.common import outbox, sidecar
from functions.common.contracts import ProductCreated, StockReserved
from functions.common.ids import new_id
from functions.common.outbox import AuditEvent, OutboxRelay, PendingEvent
from tests.unit.common.conftest import Parcel
from tests.unit.conftest import SIDECAR

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
CRASHED_ORDER = new_id()
PRODUCT_1 = new_id()
PRODUCT_2 = new_id()
PRODUCT_3 = new_id()
PRODUCT_9 = new_id()


def created(product_id: str) -> ProductCreated:
    return ProductCreated(productId=product_id, name="Café", priceCents=1250, category="Bebidas", stock=3)


async def test_a_staged_event_is_saved_with_its_document_and_published_only_on_flush(database, dapr):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    pending = parcel.stage(created(PRODUCT_1), source="products", key=PRODUCT_1)
    await parcel.insert()

    stored = await Parcel.get(parcel.id)
    assert [p.id for p in stored.outbox] == [pending.id]  # the change and its event: one write
    assert dapr.published == []

    await outbox.flush(Parcel, parcel.id)

    [event] = dapr.published
    # Stored to the millisecond, as MongoDB keeps dates.
    assert abs(datetime.fromisoformat(event.pop("time")) - pending.time) < timedelta(milliseconds=1)
    assert event == {
        "topic": "product_created",
        "specversion": "1.0",
        "id": pending.id,
        "source": "products",
        "type": "shop.product_created.v1",
        "datacontenttype": "application/json",
        "data": {"productId": PRODUCT_1, "name": "Café", "priceCents": 1250, "category": "Bebidas", "stock": 3},
    }
    request = dapr.router.calls.last.request
    assert request.url.params["metadata.partitionKey"] == PRODUCT_1
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert (await Parcel.get(parcel.id)).outbox == []
    audit = await AuditEvent.get(pending.id)
    assert (audit.topic, audit.source, audit.key, audit.data) == ("product_created", "products", PRODUCT_1, event["data"])


async def test_with_the_sidecar_down_the_change_stays_and_the_sweep_publishes_it_later(database):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    pending = parcel.stage(created(PRODUCT_2), source="products", key=PRODUCT_2)
    await parcel.insert()

    await sidecar.close()
    with respx.mock() as router:
        route = router.post(f"{SIDECAR}/v1.0/publish/pubsub/product_created").respond(500, text="no broker")
        await outbox.flush(Parcel, parcel.id)  # never fails the caller
        assert route.call_count == 1
        assert [p.id for p in (await Parcel.get(parcel.id)).outbox] == [pending.id]
        assert await AuditEvent.get(pending.id) is None

        route.respond(204)
        await sidecar.close()
        relay = OutboxRelay([Parcel], sweep_seconds=3600)
        assert await relay.sweep() >= 1
        assert await relay.sweep() == 0  # nothing left to publish
        published_ids = [json.loads(c.request.content)["id"] for c in route.calls]
    await sidecar.close()

    assert published_ids == [pending.id, pending.id]  # the failed try, then the sweep: one id
    assert (await Parcel.get(parcel.id)).outbox == []
    assert await AuditEvent.find(AuditEvent.id == pending.id).count() == 1


async def test_a_republish_after_a_crash_keeps_one_audit_record(database, dapr):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    pending = parcel.stage(created(PRODUCT_3), source="products", key=PRODUCT_3)
    await parcel.insert()
    raw = await Parcel.get_pymongo_collection().find_one({"_id": parcel.id}, {"outbox": 1})
    # Published and audited, then the process died before pulling the event off the document.
    await outbox.relay(Parcel, parcel.id)
    await Parcel.get_pymongo_collection().update_one(
        {"_id": parcel.id}, {"$set": {"outbox": raw["outbox"], "outboxPending": True}}
    )

    await OutboxRelay([Parcel], sweep_seconds=3600).sweep()

    assert [e["id"] for e in dapr.published] == [pending.id, pending.id]
    assert await AuditEvent.find(AuditEvent.id == pending.id).count() == 1
    assert (await Parcel.get(parcel.id)).outbox == []


async def test_events_from_several_documents_are_all_swept(database, dapr):
    parcels = [Parcel(label=f"p-{uuid.uuid4().hex}") for _ in range(3)]
    staged = [p.stage(created(new_id()), source="products") for p in parcels]
    for parcel in parcels:
        await parcel.insert()
    await OutboxRelay([Parcel], sweep_seconds=3600).sweep()
    assert {e["id"] for e in dapr.published} >= {p.id for p in staged}
    for parcel in parcels:
        assert (await Parcel.get(parcel.id)).outbox == []


async def test_the_sidecar_client_reports_failures_as_sidecar_errors():
    await sidecar.close()
    with respx.mock() as router:
        router.post(f"{SIDECAR}/v1.0/publish/pubsub/refused").mock(side_effect=httpx.ConnectError("refused"))
        router.post(f"{SIDECAR}/v1.0/publish/pubsub/forbidden").respond(403, text="not allowed")
        for topic in ("refused", "forbidden"):
            with pytest.raises(sidecar.SidecarError, match=topic):
                await sidecar.publish_cloud_event(topic, {"id": "evt_1"}, None)
    await sidecar.close()


async def test_the_sweep_query_has_an_index_on_every_document_with_an_outbox(database):
    """Without it the database would scan every document of the collection on every sweep."""
    parcels = await Parcel.get_pymongo_collection().index_information()
    assert parcels["outbox_pending"]["key"] == [("outboxPending", 1)]
    assert "outbox_pending" not in await AuditEvent.get_pymongo_collection().index_information()


async def test_a_staged_event_that_no_flush_relays_is_published_by_the_sweep(database, dapr):
    """A crash right after the write: nothing flushed, the flag alone leads the sweep to it."""
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    await parcel.insert()
    pending = PendingEvent.of(StockReserved(orderId=CRASHED_ORDER), source="products", key=CRASHED_ORDER)
    # What store.update writes, without its flush.
    await Parcel.get_pymongo_collection().update_one(
        {"_id": parcel.id}, {"$set": {"weight": 1, "outboxPending": True}, "$push": {"outbox": pending.model_dump()}}
    )
    assert (await Parcel.get(parcel.id)).outboxPending

    assert await OutboxRelay([Parcel], sweep_seconds=3600).sweep() >= 1

    assert pending.id in [e["id"] for e in dapr.published]
    stored = await Parcel.get(parcel.id)
    assert stored.outbox == [] and not stored.outboxPending


async def test_a_poisoned_outbox_is_skipped_and_every_other_document_is_still_relayed(database, dapr):
    poisoned = Parcel(label=f"p-{uuid.uuid4().hex}")
    await poisoned.insert()
    await Parcel.get_pymongo_collection().update_one(
        {"_id": poisoned.id}, {"$set": {"outbox": [{"not": "an event"}], "outboxPending": True}}
    )
    healthy = Parcel(label=f"p-{uuid.uuid4().hex}")
    staged = healthy.stage(created(PRODUCT_9), source="products")
    await healthy.insert()

    await OutboxRelay([Parcel], sweep_seconds=3600).sweep()  # does not raise

    assert staged.id in [e["id"] for e in dapr.published]
    assert (await Parcel.get(healthy.id)).outbox == []
    assert (await Parcel.get_pymongo_collection().find_one({"_id": poisoned.id}))["outboxPending"] is True
