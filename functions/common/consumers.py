"""Topic handlers: idempotent, dead-lettered, answering Dapr with SUCCESS, RETRY or DROP.

A function lists its handlers with `@subscriptions.handler(SomeEvent)` beside the handler code;
`mount` subscribes each one to its topic with its own dead-letter topic. A handler is a plain
`async def handle(event, context)` and can be called directly in a unit test.

By default a delivery goes through the inbox (`ProcessedEvent`: claimed before the handler,
marked done after), so a redelivery changes nothing. A handler that is idempotent on its own
records (a state it moves conditionally, a record keyed by the event or its order), also when two
deliveries of one event race, says `inbox=False`: the inbox's two writes per delivery would only
repeat what its records already decide. Its tests replay the event, and race two deliveries, with
the handler alone.
"""

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from beanie import Document
from dapr.ext.fastapi import DaprApp
from fastapi import Body, Depends, Header, HTTPException, status
from pydantic import BaseModel, ValidationError, model_validator
from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.clock import now
from functions.common.contracts import IntegrationEvent
from functions.common.dead_letters import dead_letter_topic, park
from functions.common.settings import get_settings

log = logging.getLogger(__name__)


class PermanentError(Exception):
    """The event can never be handled (bad data, unknown order...): DROP it to the dead letter."""


class EventContext(BaseModel):
    id: str
    topic: str
    type: str = ""
    source: str = ""
    time: datetime | None = None  # when the publisher staged it (kept by a re-publish)


def hour_bucket(at: datetime) -> str:
    """The inbox's pruning bucket: the UTC hour, e.g. "2026-11-28T10"."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


class ProcessedEvent(Document):
    """Inbox: one record per event a function handled (or is handling), so a redelivery changes
    nothing. Its id is `inbox_key(function, topic, event id)`: a function's handling of one event
    of one topic, whatever the handler is called and wherever the inbox is kept."""

    id: str
    topic: str
    processedAt: datetime
    # Pruned by equality on this bucket (an index serves it on FerretDB, which pushes down
    # equalities only; a range on processedAt would scan the collection).
    processedHour: str = ""
    # "handling" while a delivery holds the claim (until `claimedUntil`); "done" once handled.
    state: Literal["handling", "done"] = "done"
    claim: str | None = None
    claimedUntil: datetime | None = None

    @model_validator(mode="after")
    def _bucket(self) -> "ProcessedEvent":
        self.processedHour = self.processedHour or hour_bucket(self.processedAt)
        return self

    class Settings:
        name = "processed_events"
        indexes = [IndexModel("processedHour", name="processed_hour")]  # for forget_old_events


def inbox_key(app_id: str, topic: str, event_id: str) -> str:
    return f"{app_id}:{topic}:{event_id}"


# A delivery claims its event in the inbox before handling it (one unique insert: of two racing
# deliveries, on one replica or two, one wins), and marks it done after. A delivery that meets a
# live claim answers RETRY (Dapr redelivers after its backoff, and then finds it done); one that
# meets an expired claim (its holder died mid-handler) takes it over. The claim is far shorter
# than the redelivery window of dapr/resiliency.yaml (~26 s), so a crashed holder never sends an
# event to the dead letter; a slow holder overtaken is harmless, every handler being idempotent.
INBOX_CLAIM_SECONDS = 10.0
DONE, BUSY = "done", "busy"


async def _claim(key: str, topic: str) -> str:
    """A claim token of our own on the event, or DONE (handled already) or BUSY (being handled)."""
    token, at = uuid.uuid4().hex, now()
    until = at + timedelta(seconds=INBOX_CLAIM_SECONDS)
    try:
        await store.insert(ProcessedEvent(id=key, topic=topic, processedAt=at, state="handling", claim=token, claimedUntil=until))
        return token
    except DuplicateKeyError:
        pass
    if await store.update(
        ProcessedEvent, key, {"$set": {"claim": token, "claimedUntil": until}},
        where={"state": "handling", "claimedUntil": {"$lt": at}},
    ):
        return token
    found = await ProcessedEvent.get(key)
    return DONE if found is not None and found.state == "done" else BUSY


async def _finish(key: str, token: str) -> None:
    """Mark the event handled. If this write fails the handler's work stands; the claim expires
    and a redelivery runs the (idempotent) handler once more."""
    at = now()
    try:
        await store.update(
            ProcessedEvent,
            key,
            {"$set": {"state": "done", "processedAt": at, "processedHour": hour_bucket(at)},
             "$unset": {"claim": "", "claimedUntil": ""}},
            where={"claim": token},
        )
    except Exception:  # noqa: BLE001 - the event was handled: its answer is SUCCESS regardless
        log.exception("inbox: could not mark %s done; a redelivery will find its claim expired", key)


async def _give_up(key: str, token: str) -> None:
    """The handler failed: drop the claim, so the redelivery (or a replay) handles it at once
    (if this write fails, at the claim's expiry)."""
    try:
        await store.delete(ProcessedEvent, key, where={"claim": token})
    except Exception:  # noqa: BLE001 - the claim expires on its own
        log.exception("inbox: could not drop the claim on %s", key)


class InboxPruning(Document):
    """How far the inbox has been pruned: every hour bucket before `prunedBefore` is gone."""

    id: str  # the inbox collection's name
    prunedBefore: datetime

    class Settings:
        name = "inbox_pruning"


# How often forget_old_events runs; the first run without a record looks this far back.
INBOX_PRUNE_SECONDS = 3600.0
INBOX_PRUNE_FIRST_LOOKBACK = timedelta(days=2)


async def forget_old_events() -> int:
    """Delete inbox records of every hour that ended SHOP_INBOX_RETENTION_HOURS ago or more, so
    the inbox does not grow forever. (A TTL index would do it on MongoDB; FerretDB 1.24 does not
    implement them.) One delete per hour bucket since the last run, each served by an index."""
    retention = timedelta(hours=get_settings().inbox_retention_hours)
    cutoff = (now() - retention).replace(minute=0, second=0, microsecond=0)
    collection = ProcessedEvent.get_settings().name
    mark = await InboxPruning.get(collection)
    hour = mark.prunedBefore if mark else cutoff - INBOX_PRUNE_FIRST_LOOKBACK
    deleted = 0
    while hour < cutoff:
        deleted += await store.sweep(ProcessedEvent, {"processedHour": hour_bucket(hour)})
        hour += timedelta(hours=1)
    await store.update(InboxPruning, collection, {"$set": {"prunedBefore": cutoff}}, upsert=True)
    return deleted


Handler = Callable[[Any, EventContext], Awaitable[None]]


class Subscriptions:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.handlers: list[tuple[type[IntegrationEvent], Handler]] = []

    def handler(self, event_type: type[IntegrationEvent], *, inbox: bool = True) -> Callable[[Handler], Handler]:
        """Register `func` for `event_type`'s topic; `inbox=False` for a handler idempotent on its
        own records (see the module docstring)."""

        def register(func: Handler) -> Handler:
            if not inbox:
                func.uses_inbox = False  # type: ignore[attr-defined]  # read by `deliver`, as in tests
            self.handlers.append((event_type, func))
            return func

        return register

    def mount(self, dapr_app: DaprApp, pubsub_name: str) -> None:
        """Subscribe each handler to its topic, with its dead-letter topic, and this function to
        each of those dead-letter topics (`dead_letters.park`)."""
        for event_type, func in self.handlers:
            dead_letters = dead_letter_topic(self.app_id, event_type.topic)
            dapr_app.subscribe(
                pubsub=pubsub_name,
                topic=event_type.topic,
                route=f"/events/{event_type.topic}",
                dead_letter_topic=dead_letters,
            )(_endpoint(self.app_id, event_type, func))
            dapr_app.subscribe(pubsub=pubsub_name, topic=dead_letters, route=f"/dead-letters/{event_type.topic}")(
                _dead_letter_endpoint(self.app_id, event_type.topic)
            )


async def require_dapr(token: Annotated[str | None, Header(alias="dapr-api-token")] = None) -> None:
    """Only the function's own sidecar may deliver events: with APP_API_TOKEN set, daprd sends it
    in `dapr-api-token` on every call to the app, and a delivery without it is refused. Anyone
    else who reaches the app port could otherwise post a forged event to a subscription route.
    (async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per delivery.)"""
    expected = get_settings().app_api_token
    if expected and not hmac.compare_digest((token or "").encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Event deliveries come from the Dapr sidecar only")


def _dead_letter_endpoint(app_id: str, topic: str) -> Callable[..., Awaitable[dict]]:
    """The route Dapr delivers `topic`'s dead letters to: parked, or RETRY if that fails."""

    async def endpoint(cloud_event: dict = Body(...), _: None = Depends(require_dapr)) -> dict:
        try:
            await park(app_id, topic, cloud_event)
        except Exception:  # noqa: BLE001 - keep it in Kafka until it can be parked
            log.exception("could not park a dead letter of %s", topic)
            return {"status": "RETRY"}
        return {"status": "SUCCESS"}

    endpoint.__name__ = f"on_dead_{topic}"
    return endpoint


def _endpoint(app_id: str, event_type: type[IntegrationEvent], func: Handler) -> Callable[..., Awaitable[dict]]:
    """The HTTP route Dapr delivers one topic's CloudEvents to."""

    async def endpoint(cloud_event: dict = Body(...), _: None = Depends(require_dapr)) -> dict:
        return {"status": await deliver(app_id, event_type, func, cloud_event)}

    endpoint.__name__ = f"on_{event_type.topic}"
    return endpoint


def _event_time(value: Any) -> datetime | None:
    """The CloudEvent's optional `time`; one that is not a timestamp is treated as absent."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def deliver(app_id: str, event_type: type[IntegrationEvent], func: Handler, cloud_event: dict) -> str:
    """Run function `app_id`'s handler for one delivered CloudEvent and say what Dapr should do
    with it."""
    try:
        context = EventContext(
            id=cloud_event["id"],
            topic=cloud_event.get("topic") or event_type.topic,
            type=cloud_event.get("type", ""),
            source=cloud_event.get("source", ""),
            time=_event_time(cloud_event.get("time")),
        )
        event = event_type.model_validate(cloud_event.get("data") or {})
    except (KeyError, TypeError, ValidationError) as exc:
        log.error("dropping malformed %s event: %s", event_type.topic, exc)
        return "DROP"

    if not getattr(func, "uses_inbox", True):
        return await _run(func, event, context)
    key = inbox_key(app_id, context.topic, context.id)
    token = await _claim(key, context.topic)
    if token == DONE:
        log.info("%s already handled %s; skipping", func.__name__, context.id)
        return "SUCCESS"
    if token == BUSY:
        log.info("%s: %s is being handled by another delivery; retry later", func.__name__, context.id)
        return "RETRY"
    outcome = await _run(func, event, context)
    if outcome == "SUCCESS":
        await _finish(key, token)
    else:
        await _give_up(key, token)
    return outcome


async def _run(func: Handler, event: IntegrationEvent, context: EventContext) -> str:
    """The handler's outcome as Dapr's answer: SUCCESS, DROP (it can never succeed) or RETRY."""
    try:
        await func(event, context)
    except PermanentError as exc:
        log.error("%s dropped %s: %s", func.__name__, context.id, exc)
        return "DROP"
    except Exception:  # noqa: BLE001 - anything else may pass: let Dapr retry, then dead-letter
        log.exception("%s failed on %s; asking Dapr to retry", func.__name__, context.id)
        return "RETRY"
    return "SUCCESS"
