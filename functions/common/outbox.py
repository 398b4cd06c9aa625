"""Transactional outbox: an event is saved inside the document whose change it announces.

A change stages its event on the document it changes (`functions/common/store.py` writes both in
one single-document write), so the change and its event are saved together: no event without the change,
no change whose event can be lost. The relay then publishes each pending event through Dapr,
records it in the `events` audit collection and pulls it off the document (or, for an event whose
answer writes the document again, leaves that to the answer's write: `awaiting_answer`). If the
process dies in between, the sweep publishes it later; the CloudEvent id stays the same, so
consumers that already saw it skip it.
"""

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import IndexModel
from pymongo.errors import BulkWriteError

from functions.common import sidecar
from functions.common.clock import now, stored_now
from functions.common.contracts import IntegrationEvent
from functions.common.locks import KeyedLocks, document_lock
from functions.common.periodic import Periodic
from functions.common.rounds import GroupCommit

log = logging.getLogger(__name__)


class PendingEvent(BaseModel):
    id: str
    topic: str
    type: str
    source: str
    key: str | None = None
    time: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: IntegrationEvent, *, source: str, key: str | None = None) -> "PendingEvent":
        if source != event.publisher:
            # Its sidecar would refuse the publish (the Component's publishing scopes), and the
            # event would wait in the outbox forever: refuse it here, before anything is written.
            raise ValueError(f"{event.topic} is published by {event.publisher}, not {source}")
        return cls(
            id=f"evt_{uuid.uuid4().hex}",
            topic=event.topic,
            type=event.cloud_event_type(),
            source=source,
            key=key,
            # To the millisecond, as the database keeps it: the event as staged then equals the
            # event as stored, so a flush can take it off without reading the document first.
            time=stored_now(),
            data=event.model_dump(mode="json"),
        )

    def cloud_event(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat(),
            "datacontenttype": "application/json",
            "data": self.data,
        }


class AuditEvent(Document):
    """The `events` collection: every event this function published, as the original keeps."""

    id: str  # the CloudEvent id
    topic: str
    type: str
    source: str
    key: str | None = None
    time: datetime
    publishedAt: datetime
    data: dict[str, Any]

    class Settings:
        name = "events"


class HasOutbox(BaseModel):
    """Mix into a Document that announces its changes (`db.init_db` gives it OUTBOX_INDEX)."""

    outbox: list[PendingEvent] = Field(default_factory=list)
    # True while the outbox may hold events: the sweep finds such documents by this equality,
    # which an index serves on every database (FerretDB pushes down equalities only).
    outboxPending: bool = False

    def stage(self, event: IntegrationEvent, *, source: str, key: str | None = None) -> PendingEvent:
        pending = PendingEvent.of(event, source=source, key=key)
        self.outbox.append(pending)
        self.outboxPending = True
        return pending


# Not a workaround: one relay per document at a time in this process spares double publishing.
_relay_locks = KeyedLocks(isolation_workaround=False)

# The sweep finds documents with pending events by this index, not by a scan of the collection.
OUTBOX_INDEX = IndexModel([("outboxPending", 1)], name="outbox_pending")


class OutboxRelay:
    """Publishes what a crashed or disconnected process left in the outboxes of `models`."""

    def __init__(self, models: list[type[Document]], sweep_seconds: float) -> None:
        self.models = models
        self.periodic = Periodic("outbox sweep", self.sweep, sweep_seconds, expected=(sidecar.SidecarError,))

    async def sweep(self) -> int:
        published = 0
        for model in self.models:
            async for raw in model.get_pymongo_collection().find({"outboxPending": True}, {"_id": 1}):
                if awaiting_answer(model, raw["_id"]) is not None:
                    continue  # published; its next write or its timer takes the events off
                try:
                    published += await relay(model, raw["_id"])
                except sidecar.SidecarError:
                    raise  # the sidecar is down: every other document would fail the same way
                except Exception:  # noqa: BLE001 - one poisoned document must not hold back the rest
                    log.exception("outbox of %s %s cannot be relayed; skipped this round", model.__name__, raw["_id"])
        return published


async def relay(
    model: type[Document], doc_id: Any, staged: Sequence[PendingEvent] | None = None, *, answered: bool = False
) -> int:
    """Publish one document's pending events, record them in `events`, take them off the document.

    `staged`: the events the caller's write just staged (flush's fast path: published without
    reading the document back); else the outbox as stored. One relay per document at a time in
    this process (a flush and the sweep may meet), and what the sweep relays it reads under that
    lock. Database round trips: the read (sweep only), the audit records in one insert shared
    with the relays of the same round (`_settled`), and one update taking the events off — or
    none, with `answered` (see `awaiting_answer`).
    """
    async with _relay_locks(_key(model, doc_id)):
        if staged is None:
            raw = await model.get_pymongo_collection().find_one({"_id": doc_id}, {"outbox": 1, "outboxPending": 1}) or {}
            events = [(stored, PendingEvent.model_validate(stored)) for stored in raw.get("outbox") or []]
            flagged = bool(raw.get("outboxPending"))
            if waiting := awaiting_answer(model, doc_id):
                # Published already, their take-off left to the document's next write.
                published_ids = {event["id"] for event in waiting}
                events = [(stored, pending) for stored, pending in events if pending.id not in published_ids]
                if not events:
                    return 0
        else:
            events, flagged = [(pending.model_dump(), pending) for pending in staged], True
        published: list[tuple[dict[str, Any], PendingEvent]] = []
        try:
            for stored, pending in events:
                await sidecar.publish_cloud_event(pending.topic, pending.cloud_event(), pending.key)
                published.append((stored, pending))
        finally:
            if published or flagged:
                everything = len(published) == len(events)
                wait = answered and everything and bool(published)
                await _settled(_Settle(model, doc_id, published, everything=everything, take_off=not wait))
                if wait:
                    _await_answer(model, doc_id, [stored for stored, _ in published])
        return len(published)


@dataclass
class _Settle:
    """What one relay leaves to write once its events are published: their `events` records,
    then their removal from the document."""

    model: type[Document]
    doc_id: Any
    # (as stored, as staged); None as staged: recorded when published, only to be taken off now
    published: list[tuple[dict[str, Any], PendingEvent | None]]
    everything: bool
    take_off: bool = True  # False: recorded only (the take-off waits for the document's next write)


async def _write_settles(_: None, batch: list[_Settle]) -> list[BaseException | None]:
    """One round: every event's `events` record in one insert, then each document's take-off.
    If the audit fails, nothing is taken off: the events stay for the sweep."""
    await _audit([pending for item in batch for _, pending in item.published if pending])
    taken = iter(await asyncio.gather(
        *(_take_off(item.model, item.doc_id, [stored for stored, _ in item.published], everything=item.everything)
          for item in batch if item.take_off),
        return_exceptions=True,
    ))
    return [next(taken) if item.take_off else None for item in batch]


# Relays that finish publishing while a round is being written wait for the next round, which
# records all their events in one insert (under load one round serves many relays: an insert
# per event costs the database about six times what a shared one does).
_settle_rounds: GroupCommit[None, _Settle] = GroupCommit(_write_settles)


async def _settled(item: _Settle) -> None:
    """Audit and take off what `item` published, in the next round; raises what its writes raised."""
    await _settle_rounds(None, item)


# An event that is answered — the step that consumes it publishes an event whose own step writes
# the published event's document again (order_created → stock_reserved → the order charged) —
# need not be taken off by a write of its own: the document's next write takes it off for free
# (`functions/common/store.py`), if it comes in this process within ANSWER_WAIT_SECONDS; if not,
# the timer takes it off as any other. Meanwhile the sweep leaves the document alone (its
# events are published), and a crash leaves them to the sweep (republished: consumers skip them).
ANSWER_WAIT_SECONDS = 10.0


@dataclass
class _Unanswered:
    model: type[Document]
    doc_id: Any
    published: list[dict[str, Any]]  # the events as stored
    timer: asyncio.TimerHandle


_unanswered: dict[tuple[str, str], _Unanswered] = {}


def _key(model: type[Document], doc_id: Any) -> tuple[str, str]:
    return model.get_collection_name(), str(doc_id)


def awaiting_answer(model: type[Document], doc_id: Any) -> list[dict[str, Any]] | None:
    """The document's published events (as stored) that its next write may take off, if any."""
    waiting = _unanswered.get(_key(model, doc_id))
    return waiting.published if waiting is not None else None


def _forget(model: type[Document], doc_id: Any) -> _Unanswered | None:
    """The document's wait, no longer tracked, its timer stopped."""
    waiting = _unanswered.pop(_key(model, doc_id), None)
    if waiting is not None:
        waiting.timer.cancel()
    return waiting


def taken_off_by_write(model: type[Document], doc_id: Any) -> None:
    """A write took the document's published events off: nothing left for the timer."""
    _forget(model, doc_id)


def _await_answer(model: type[Document], doc_id: Any, published: list[dict[str, Any]]) -> None:
    earlier = _forget(model, doc_id)
    if earlier is not None:  # still there (a write that did not take them off): they go together
        published = earlier.published + published
    timer = asyncio.get_running_loop().call_later(ANSWER_WAIT_SECONDS, _start_take_off, model, doc_id)
    _unanswered[_key(model, doc_id)] = _Unanswered(model, doc_id, published, timer)


_taking_off: set[asyncio.Task[None]] = set()  # held until done (the loop keeps only weak references)


def _start_take_off(model: type[Document], doc_id: Any) -> None:
    task = asyncio.get_running_loop().create_task(_take_off_unanswered(model, doc_id))
    _taking_off.add(task)
    task.add_done_callback(_taking_off.discard)


async def _take_off_unanswered(model: type[Document], doc_id: Any) -> None:
    waiting = _unanswered.pop(_key(model, doc_id), None)
    if waiting is None:
        return
    try:
        await _settled(_Settle(model, doc_id, [(stored, None) for stored in waiting.published], everything=True))
    except Exception:  # noqa: BLE001 - the flag stays set: the sweep takes them off (and republishes)
        log.exception("could not take the published events off %s %s; the sweep will", model.__name__, doc_id)


async def take_off_unanswered() -> None:
    """At shutdown: take off every published event still waiting for its document's next write."""
    for waiting in list(_unanswered.values()):
        waiting.timer.cancel()
        await _take_off_unanswered(waiting.model, waiting.doc_id)


async def _audit(published: list[PendingEvent]) -> None:
    """One `events` record per event; a re-publish (after a crash, or by another replica) keeps
    the first record."""
    if not published:
        return
    at = now()
    records = [
        {"_id": p.id, "topic": p.topic, "type": p.type, "source": p.source, "key": p.key, "time": p.time,
         "publishedAt": at, "data": p.data}
        for p in published
    ]
    try:
        await AuditEvent.get_pymongo_collection().insert_many(records, ordered=False)
    except BulkWriteError as exc:
        if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
            raise


async def _take_off(model: type[Document], doc_id: Any, published: list[dict[str, Any]], *, everything: bool) -> None:
    collection = model.get_pymongo_collection()
    async with document_lock(model, doc_id):
        if everything:
            # Empty the outbox only if it still holds exactly what was published: an event staged
            # meanwhile (another write, another replica) keeps it, and the flag, for its own relay.
            emptied = await collection.update_one(
                {"_id": doc_id, "outbox": published}, {"$set": {"outbox": [], "outboxPending": False}}
            )
            if emptied.matched_count:
                return
        # Pull each entry exactly as stored: FerretDB's $pull matches whole values, not conditions.
        for stored in published:
            await collection.update_one({"_id": doc_id}, {"$pull": {"outbox": stored}})


async def flush(
    model: type[Document], doc_id: Any, staged: Sequence[PendingEvent] | None = None, *, answered: bool = False
) -> None:
    """Publish a document's pending events now: the fast path right after the change is saved.
    Pass the events the write staged (`staged`) to spare reading them back; `answered`: their
    answer writes the document again, which takes them off (`awaiting_answer`).

    If Dapr is unreachable the events stay pending and the sweep publishes them later; the
    caller's change is saved either way, so this never fails the request.
    """
    try:
        await relay(model, doc_id, staged, answered=answered)
    except sidecar.SidecarError:
        log.warning("publish deferred to the outbox sweep", exc_info=True)
    except Exception:  # noqa: BLE001 - the change is committed; its answer must not be a 500
        log.exception("relay of %s %s failed; the outbox sweep will finish it", model.__name__, doc_id)
