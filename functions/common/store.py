"""The one way a function changes what it stores.

A change is one conditional write of one document: the fields it changes, the conditions under
which it still applies (the state the caller read), and the events that announce it, staged in
the document's outbox by that same write (`functions/common/outbox.py`). The write takes this
process's lock for the document where the local database needs one (FerretDB does not isolate
updates: `functions/common/locks.py`), and once it is saved its events are published at once
(the outbox sweep publishes them later if that fails). A write whose conditions no longer hold
changes nothing, stages nothing and publishes nothing. A write of a document whose published
events await their answer takes them off in the same write (`outbox.awaiting_answer`).

Reads go through Beanie (`Model.get`, `Model.find`); every write goes through here.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from beanie import Document
from pymongo import ReturnDocument
from pymongo.results import UpdateResult

from functions.common import outbox
from functions.common.locks import document_lock
from functions.common.outbox import HasOutbox, PendingEvent

T = TypeVar("T")


def _replacing(changes: dict[str, Any], events: Sequence[PendingEvent]) -> dict[str, Any]:
    """`changes` that also set the outbox to `events` (the published ones it held go)."""
    return {
        **changes,
        "$set": {**changes.get("$set", {}), "outbox": [e.model_dump() for e in events], "outboxPending": bool(events)},
    }


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
    upsert: bool,
) -> T:
    """`write(collection, filter, update)` under the document's lock, the events staged in it.

    If the document's outbox holds events published and awaiting this write (`outbox.awaiting_answer`),
    the write first tries to replace them: one write for the change and their take-off. If the
    outbox no longer holds exactly them, or the change's own conditions fail, it is written as usual."""
    collection = model.get_pymongo_collection()
    async with document_lock(model, doc_id):
        published = outbox.awaiting_answer(model, doc_id)
        if published is not None and not upsert:
            result = await write(collection, {"_id": doc_id, **(where or {}), "outbox": published}, _replacing(changes, events))
            if _changed(result):
                outbox.taken_off_by_write(model, doc_id)
                return result
        return await write(collection, {"_id": doc_id, **(where or {})}, _staging(changes, events))


def _changed(result: Any) -> bool:
    """Whether a write matched: an UpdateResult, or find-and-modify's document (None if none)."""
    return bool(result.matched_count) if isinstance(result, UpdateResult) else result is not None


async def update(model: type[Document], doc_id: Any, changes: dict[str, Any], *, where: dict[str, Any] | None = None,
                 events: Sequence[PendingEvent] = (), upsert: bool = False, answered: bool = False) -> bool:
    """Apply `changes` to the document `doc_id` if it still matches `where`, staging `events` in
    the same write, and publish them; True if the document was changed (or created by `upsert`).
    `answered`: the events' answer writes this document again, which takes them off (outbox.py).
    A DuplicateKeyError (an upsert that lost to another) reaches the caller."""
    result = await _write(
        model, doc_id, changes, where, events,
        lambda collection, filter_, update_: collection.update_one(filter_, update_, upsert=upsert),
        upsert,
    )
    changed = bool(result.matched_count) or result.upserted_id is not None
    if changed and events:
        await outbox.flush(model, doc_id, events, answered=answered)
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
        upsert,
    )
    if found is not None and events:
        await outbox.flush(model, doc_id, events)
    return found


async def insert(document: Document, *, answered: bool = False) -> None:
    """Insert a new document, with any events staged on it (`HasOutbox.stage`), and publish them
    (`answered`: as in `update`). A DuplicateKeyError (the id or a unique field taken) reaches the
    caller; nothing is written."""
    await document.insert()
    if isinstance(document, HasOutbox) and document.outbox:
        await outbox.flush(type(document), document.id, list(document.outbox), answered=answered)


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
