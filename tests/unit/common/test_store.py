"""The write path: one conditional write of one document with the events it stages, published
after; a write whose conditions no longer hold changes, stages and publishes nothing."""

import ast
import asyncio
import uuid
from pathlib import Path

import pytest
from pymongo.errors import DuplicateKeyError

from functions.common import store
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
