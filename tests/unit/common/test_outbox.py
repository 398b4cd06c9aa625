"""The outbox: an event staged in the same write as its change, relayed, audited, swept."""

import asyncio
import socket
import time
import uuid
from datetime import datetime, timedelta

import grpc
import pytest

from functions.common import outbox, sidecar
from functions.common.settings import settings_of
from functions.common.contracts import ProductCreated, StockReserved
from functions.common.ids import new_id
from functions.common.outbox import AuditEvent, OutboxRelay, PendingEvent
from tests.unit.common.conftest import Parcel
from tests.unit.conftest import FakeSidecarGrpc, serve_grpc_sidecar

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
    [asked] = dapr.publish_requests
    assert (asked["pubsub"], asked["metadata"]) == ("pubsub", {"partitionKey": PRODUCT_1})
    assert asked["contentType"] == "application/cloudevents+json"
    assert (await Parcel.get(parcel.id)).outbox == []
    audit = await AuditEvent.get(pending.id)
    assert (audit.topic, audit.source, audit.key, audit.data) == ("product_created", "products", PRODUCT_1, event["data"])


async def test_with_the_sidecar_down_the_change_stays_and_the_sweep_publishes_it_later(database, dapr):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    pending = parcel.stage(created(PRODUCT_2), source="products", key=PRODUCT_2)
    await parcel.insert()

    dapr.publish_failure = (grpc.StatusCode.INTERNAL, "error when publish to topic product_created: no broker")
    await outbox.flush(Parcel, parcel.id)  # never fails the caller
    assert len(dapr.publish_requests) == 1
    assert [p.id for p in (await Parcel.get(parcel.id)).outbox] == [pending.id]
    assert await AuditEvent.get(pending.id) is None

    dapr.publish_failure = None  # the broker is back
    relay = OutboxRelay([Parcel], sweep_seconds=3600)
    assert await relay.sweep() >= 1
    assert await relay.sweep() == 0  # nothing left to publish

    published_ids = [asked["event"]["id"] for asked in dapr.publish_requests if asked["event"]["id"] == pending.id]
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


async def test_the_sidecar_client_reports_failures_as_sidecar_errors(dapr, monkeypatch):
    dapr.publish_failure = (grpc.StatusCode.PERMISSION_DENIED, "topic forbidden is not allowed for app id")
    with pytest.raises(sidecar.SidecarError, match="forbidden: PERMISSION_DENIED"):
        await sidecar.publish_cloud_event("forbidden", {"id": "evt_1"}, None)

    # No sidecar listening at all: refused at once, not after the timeout.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("DAPR_GRPC_PORT", str(probe.getsockname()[1]))
    settings_of.cache_clear()
    await sidecar.close()
    try:
        started = time.monotonic()
        with pytest.raises(sidecar.SidecarError, match="refused: UNAVAILABLE"):
            await sidecar.publish_cloud_event("refused", {"id": "evt_2"}, None)
        assert time.monotonic() - started < 5
    finally:
        monkeypatch.undo()
        settings_of.cache_clear()
        await sidecar.close()


async def test_publishing_carries_the_dapr_api_token(dapr, monkeypatch):
    monkeypatch.setenv("DAPR_API_TOKEN", "the-sidecars-token")
    settings_of.cache_clear()
    try:
        await sidecar.publish_cloud_event("product_created", {"id": "evt_3"}, "k")
    finally:
        monkeypatch.undo()
        settings_of.cache_clear()
    [asked] = dapr.publish_requests
    assert asked["token"] == "the-sidecars-token"


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


async def test_a_sidecar_back_after_an_outage_is_redialled_within_seconds(dapr, monkeypatch):
    """gRPC's default backoff redials a lost server after up to 120 s (measured: 0.1-6.4 s after a
    10 s outage); every publish meanwhile fails and its event waits in the outbox."""
    answering = FakeSidecarGrpc()
    answering.answering = dapr
    server, port = await serve_grpc_sidecar(answering)
    monkeypatch.setenv("DAPR_GRPC_PORT", str(port))
    settings_of.cache_clear()
    await sidecar.close()
    try:
        await sidecar.publish_cloud_event("product_created", {"id": "evt_4"}, None)
        await server.stop(None)
        down_since = time.monotonic()
        while time.monotonic() - down_since < 10:  # the sweep keeps trying
            with pytest.raises(sidecar.SidecarError):
                await sidecar.publish_cloud_event("product_created", {"id": "evt_4"}, None)
            await asyncio.sleep(0.5)
        server, _ = await serve_grpc_sidecar(answering, port)
        back = time.monotonic()
        while True:
            try:
                await sidecar.publish_cloud_event("product_created", {"id": "evt_4"}, None)
                break
            except sidecar.SidecarError:
                assert time.monotonic() - back < 3.5, "the sidecar is back but is not redialled"
                await asyncio.sleep(0.1)
    finally:
        await server.stop(None)
        monkeypatch.undo()
        settings_of.cache_clear()
        await sidecar.close()


async def test_relays_finishing_together_share_one_audit_insert_and_each_empties_its_outbox(database, dapr, monkeypatch):
    collection = AuditEvent.get_pymongo_collection()
    inserts: list[int] = []
    real_insert_many = collection.insert_many

    async def counting_insert_many(records, **kwargs):
        inserts.append(len(records))
        return await real_insert_many(records, **kwargs)

    monkeypatch.setattr(type(collection), "insert_many", lambda self, records, **kw: counting_insert_many(records, **kw))
    parcels = [Parcel(label=f"p-{uuid.uuid4().hex}") for _ in range(12)]
    staged = [p.stage(created(new_id()), source="products") for p in parcels]
    for parcel in parcels:
        await parcel.insert()

    await asyncio.gather(*(outbox.flush(Parcel, p.id, [s]) for p, s in zip(parcels, staged, strict=True)))

    assert sum(inserts) == 12 and len(inserts) < 12  # rounds shared by several relays
    assert await AuditEvent.find({"_id": {"$in": [s.id for s in staged]}}).count() == 12
    for parcel in parcels:
        stored = await Parcel.get(parcel.id)
        assert stored.outbox == [] and not stored.outboxPending


async def test_a_round_whose_audit_fails_leaves_every_event_of_it_to_the_sweep(database, dapr, monkeypatch):
    parcels = [Parcel(label=f"p-{uuid.uuid4().hex}") for _ in range(3)]
    staged = [p.stage(created(new_id()), source="products") for p in parcels]
    for parcel in parcels:
        await parcel.insert()
    collection = AuditEvent.get_pymongo_collection()

    async def database_down(records, **kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(type(collection), "insert_many", lambda self, records, **kw: database_down(records, **kw))
    await asyncio.gather(*(outbox.flush(Parcel, p.id, [s]) for p, s in zip(parcels, staged, strict=True)))  # no raise
    for parcel in parcels:
        assert (await Parcel.get(parcel.id)).outboxPending  # published, not yet recorded: kept

    monkeypatch.undo()
    await OutboxRelay([Parcel], sweep_seconds=3600).sweep()
    assert await AuditEvent.find({"_id": {"$in": [s.id for s in staged]}}).count() == 3
    for parcel in parcels:
        assert (await Parcel.get(parcel.id)).outbox == []
