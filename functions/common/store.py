"""The one way a function changes what it stores.

A change is one conditional write of one document: the fields it changes, the conditions under
which it still applies (the state the caller read), and the events that announce it, staged in
the document's outbox by that same write (`functions/common/outbox.py`). The write takes this
process's lock for the document where the local database needs one (FerretDB does not isolate
updates: `functions/common/locks.py`), and once it is saved its events are published at once
(the outbox sweep publishes them later if that fails). A write whose conditions no longer hold
changes nothing, stages nothing and publishes nothing.

Reads go through Beanie (`Model.get`, `Model.find`); every write goes through here.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from beanie import Document
from pymongo import ReturnDocument

from functions.common import outbox
from functions.common.locks import document_lock
from functions.common.outbox import HasOutbox, PendingEvent

T = TypeVar("T")


def _staging(changes: dict[str, Any], events: Sequence[PendingEvent]) -> dict[str, Any]:
    """`changes` (an update document) that also pushes `events` into the outbox."""
    if not events:
        return changes
    return {
        **changes,
        "$set": {**changes.get("$set", {}), "outboxPending": True},
        "$push": {**changes.get("$push", {}), "outbox": {"$each": [e.model_dump() for e in events]}},
    }


async def _write(
    model: type[Document],
    doc_id: Any,
    changes: dict[str, Any],
    where: dict[str, Any] | None,
    events: Sequence[PendingEvent],
    write: Callable[[Any, dict[str, Any], dict[str, Any]], Awaitable[T]],
) -> T:
    """`write(collection, filter, update)` under the document's lock, the events staged in it."""
    async with document_lock(model, doc_id):
        return await write(model.get_pymongo_collection(), {"_id": doc_id, **(where or {})}, _staging(changes, events))


async def update(model: type[Document], doc_id: Any, changes: dict[str, Any], *, where: dict[str, Any] | None = None,
                 events: Sequence[PendingEvent] = (), upsert: bool = False) -> bool:
    """Apply `changes` to the document `doc_id` if it still matches `where`, staging `events` in
    the same write, and publish them; True if the document was changed (or created by `upsert`).
    A DuplicateKeyError (an upsert that lost to another) reaches the caller."""
    result = await _write(
        model, doc_id, changes, where, events,
        lambda collection, filter_, update_: collection.update_one(filter_, update_, upsert=upsert),
    )
    changed = bool(result.matched_count) or result.upserted_id is not None
    if changed and events:
        await outbox.flush(model, doc_id, events)
    return changed


async def update_and_read(
    model: type[Document],
    doc_id: Any,
    changes: dict[str, Any],
    *,
    where: dict[str, Any] | None = None,
    events: Sequence[PendingEvent] = (),
    upsert: bool = False,
    before: bool = False,
) -> dict[str, Any] | None:
    """`update`, answering the whole document as the write left it (`before`: as it found it),
    raw; None when nothing matched. (FerretDB's find-and-modify takes no projection.)"""
    returned = ReturnDocument.BEFORE if before else ReturnDocument.AFTER
    found = await _write(
        model, doc_id, changes, where, events,
        lambda collection, filter_, update_: collection.find_one_and_update(
            filter_, update_, upsert=upsert, return_document=returned
        ),
    )
    if found is not None and events:
        await outbox.flush(model, doc_id, events)
    return found


async def insert(document: Document) -> None:
    """Insert a new document, with any events staged on it (`HasOutbox.stage`), and publish them.
    A DuplicateKeyError (the id or a unique field taken) reaches the caller; nothing is written."""
    await document.insert()
    if isinstance(document, HasOutbox) and document.outbox:
        await outbox.flush(type(document), document.id, list(document.outbox))


async def delete(model: type[Document], doc_id: Any, *, where: dict[str, Any] | None = None) -> bool:
    """Delete the document `doc_id` if it still matches `where`; True if it was there."""
    async with document_lock(model, doc_id):
        result = await model.get_pymongo_collection().delete_one({"_id": doc_id, **(where or {})})
    return bool(result.deleted_count)


async def sweep(model: type[Document], where: dict[str, Any]) -> int:
    """Delete every document matching `where` (housekeeping: pruning, expiry); returns how many.
    No document lock: each matched document is gone either way."""
    result = await model.get_pymongo_collection().delete_many(where)
    return result.deleted_count
