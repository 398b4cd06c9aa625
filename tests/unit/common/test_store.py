"""The write path: one conditional write of one document with the events it stages, published
after; a write whose conditions no longer hold changes, stages and publishes nothing."""

import ast
import asyncio
import uuid
from pathlib import Path

import pytest
from pymongo.errors import DuplicateKeyError

from functions.common import outbox, store
from functions.common.contracts import ProductCreated, StockReserved
from functions.common.ids import new_id
from functions.common.outbox import AuditEvent, PendingEvent
from tests.unit.common.conftest import Parcel

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
ORDER_1 = new_id()
ORDER_2 = new_id()
ORDER_3 = new_id()
ORDER_4 = new_id()
PRODUCT_1 = new_id()

FUNCTIONS = Path(__file__).resolve().parents[3] / "functions"


def reserved(order_id: str) -> PendingEvent:
    return PendingEvent.of(StockReserved(orderId=order_id), source="products", key=order_id)


async def new_parcel(**fields) -> Parcel:
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}", **fields)
    await store.insert(parcel)
    return parcel


async def test_an_update_saves_its_change_and_events_in_one_write_and_publishes_them(database, dapr):
    parcel = await new_parcel()
    pending = reserved(ORDER_1)

    assert await store.update(Parcel, parcel.id, {"$inc": {"weight": 5}}, where={"weight": 0}, events=[pending])

    # Published (a write that staged an event and did not relay it fails here), audited, and
    # taken off the document.
    assert [(e["topic"], e["id"], e["data"]) for e in dapr.published] == [("stock_reserved", pending.id, {"orderId": ORDER_1})]
    assert await AuditEvent.get(pending.id) is not None
    stored = await Parcel.get(parcel.id)
    assert stored.weight == 5 and stored.outbox == [] and not stored.outboxPending


async def test_an_update_whose_condition_no_longer_holds_writes_and_publishes_nothing(database, dapr):
    parcel = await new_parcel(weight=3)

    assert not await store.update(Parcel, parcel.id, {"$inc": {"weight": 5}}, where={"weight": 0}, events=[reserved(ORDER_2)])
    assert not await store.update(Parcel, "no-such-parcel", {"$set": {"weight": 1}}, events=[reserved(ORDER_3)])

    assert dapr.published == []
    stored = await Parcel.get(parcel.id)
    assert stored.weight == 3 and stored.outbox == [] and not stored.outboxPending


async def test_an_insert_publishes_what_was_staged_on_the_document(database, dapr):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    staged = parcel.stage(ProductCreated(productId=PRODUCT_1, name="Café", priceCents=1250, category="Bebidas", stock=3),
                          source="products", key=PRODUCT_1)
    await store.insert(parcel)

    assert [e["id"] for e in dapr.published] == [staged.id]
    assert (await Parcel.get(parcel.id)).outbox == []

    with pytest.raises(DuplicateKeyError):  # nothing written, nothing published a second time
        await store.insert(Parcel(id=parcel.id, label="again"))
    assert [e["id"] for e in dapr.published] == [staged.id]


async def test_update_and_read_answers_the_document_as_written(database, dapr):
    parcel = await new_parcel()
    pending = reserved(ORDER_4)

    after = await store.update_and_read(Parcel, parcel.id, {"$inc": {"weight": 2}}, events=[pending])
    before = await store.update_and_read(Parcel, parcel.id, {"$inc": {"weight": 2}}, before=True)
    missed = await store.update_and_read(Parcel, parcel.id, {"$inc": {"weight": 2}}, where={"weight": 0})

    assert (after["weight"], before["weight"], missed) == (2, 2, None)
    assert [e["id"] for e in dapr.published] == [pending.id]


async def test_an_upsert_creates_the_document_once(database, dapr):
    key = new_id()
    assert await store.update(Parcel, key, {"$setOnInsert": {"label": "first"}, "$inc": {"weight": 1}}, upsert=True)
    assert await store.update(Parcel, key, {"$setOnInsert": {"label": "other"}, "$inc": {"weight": 1}}, upsert=True)
    stored = await Parcel.get(key)
    assert (stored.label, stored.weight) == ("first", 2)


async def test_delete_is_conditional(database, dapr):
    parcel = await new_parcel(weight=1)
    assert not await store.delete(Parcel, parcel.id, where={"weight": 0})
    assert await store.delete(Parcel, parcel.id, where={"weight": 1})
    assert not await store.delete(Parcel, parcel.id)
    assert await Parcel.get(parcel.id) is None


async def test_concurrent_changes_and_relays_of_one_document_lose_nothing(database, dapr):
    # FerretDB applies each update as an unisolated read-modify-write; the document lock is what
    # keeps the relay's pull from overwriting a change staged at the same moment.
    parcel = await new_parcel()

    async def change(weight: int) -> str:
        pending = PendingEvent.of(StockReserved(orderId=new_id()), source="products", key=parcel.id)
        assert await store.update(Parcel, parcel.id, {"$inc": {"weight": weight}}, events=[pending])
        return pending.id

    staged = await asyncio.gather(*(change(w) for w in range(1, 11)))

    stored = await Parcel.get(parcel.id)
    assert stored.weight == sum(range(1, 11)) and stored.outbox == [] and not stored.outboxPending
    assert sorted({e["id"] for e in dapr.published}) == sorted(staged)


def test_no_function_writes_around_the_store():
    """Every write of a function goes through functions.common.store: no raw collection, no
    document lock taken by hand, no flush after a write of its own."""
    raw = {"get_pymongo_collection", "document_lock", "update_one", "update_many", "insert_one", "insert_many",
           "find_one_and_update", "delete_one", "delete_many", "replace_one"}
    beanie_writes = {"insert", "save", "replace", "delete", "update", "set", "inc"}  # a document's own, no arguments
    offences = []
    for path in sorted(FUNCTIONS.glob("*/*.py")):
        if path.parent.name == "common":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(FUNCTIONS.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr in raw:
                offences.append(f"{where} .{node.attr}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in beanie_writes
                  and not node.args and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "store")):
                offences.append(f"{where} .{node.func.attr}()")
    assert offences == []


class CountingWrites:
    """Counts the writes that reach Parcel's collection (update_one and find_one_and_update)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        collection_type = type(Parcel.get_pymongo_collection())
        for name in ("update_one", "find_one_and_update"):
            real = getattr(collection_type, name)

            def counted(self_, *args, _real=real, **kwargs):
                if self_.name == Parcel.get_collection_name():
                    self.count += 1
                return _real(self_, *args, **kwargs)

            monkeypatch.setattr(collection_type, name, counted)


async def test_an_answered_event_is_taken_off_by_the_next_write_of_its_document_at_no_cost(database, dapr, monkeypatch):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    asked = parcel.stage(StockReserved(orderId=ORDER_4), source="products", key=ORDER_4)
    await store.insert(parcel, answered=True)

    # Published and audited; the event stays on the document (flagged), and the sweep leaves it.
    assert [e["id"] for e in dapr.published] == [asked.id] and await AuditEvent.get(asked.id) is not None
    assert [p.id for p in (await Parcel.get(parcel.id)).outbox] == [asked.id]
    assert await outbox.OutboxRelay([Parcel], 3600).sweep() == 0

    writes = CountingWrites(monkeypatch)
    answer = reserved(new_id())
    assert await store.update(Parcel, parcel.id, {"$inc": {"weight": 2}}, where={"weight": 0}, events=[answer])

    # One write for the change, the answered event's take-off and the new event; then the new
    # event's own take-off after its relay.
    assert writes.count == 2
    stored = await Parcel.get(parcel.id)
    assert stored.weight == 2 and stored.outbox == [] and not stored.outboxPending
    assert [e["id"] for e in dapr.published] == [asked.id, answer.id]  # none published twice
    assert outbox.awaiting_answer(Parcel, parcel.id) is None


async def test_an_answered_event_whose_answer_does_not_come_is_taken_off_after_the_wait(database, dapr, monkeypatch):
    monkeypatch.setattr(outbox, "ANSWER_WAIT_SECONDS", 0.2)
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    parcel.stage(StockReserved(orderId=new_id()), source="products")
    await store.insert(parcel, answered=True)
    assert (await Parcel.get(parcel.id)).outboxPending

    for _ in range(50):
        await asyncio.sleep(0.1)
        if not (await Parcel.get(parcel.id)).outboxPending:
            break
    stored = await Parcel.get(parcel.id)
    assert stored.outbox == [] and not stored.outboxPending and len(dapr.published) == 1


async def test_a_write_that_fails_its_condition_leaves_the_answered_event_waiting(database, dapr):
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}", weight=7)
    asked = parcel.stage(StockReserved(orderId=new_id()), source="products")
    await store.insert(parcel, answered=True)

    assert not await store.update(Parcel, parcel.id, {"$set": {"weight": 1}}, where={"weight": 0})
    assert [p.id for p in (await Parcel.get(parcel.id)).outbox] == [asked.id]
    assert outbox.awaiting_answer(Parcel, parcel.id) is not None

    await outbox.take_off_unanswered()  # what a function does as it stops
    stored = await Parcel.get(parcel.id)
    assert stored.weight == 7 and stored.outbox == [] and not stored.outboxPending


async def test_an_answered_event_taken_off_elsewhere_leaves_the_next_write_as_usual(database, dapr):
    """Another replica (or the sweep after a restart) emptied the outbox meanwhile: the write
    falls back to its usual form and stages its own events as always."""
    parcel = Parcel(label=f"p-{uuid.uuid4().hex}")
    parcel.stage(StockReserved(orderId=new_id()), source="products")
    await store.insert(parcel, answered=True)
    await Parcel.get_pymongo_collection().update_one({"_id": parcel.id}, {"$set": {"outbox": [], "outboxPending": False}})

    answer = reserved(new_id())
    assert await store.update(Parcel, parcel.id, {"$inc": {"weight": 1}}, events=[answer])

    stored = await Parcel.get(parcel.id)
    assert stored.weight == 1 and stored.outbox == [] and not stored.outboxPending
    assert dapr.published[-1]["id"] == answer.id
