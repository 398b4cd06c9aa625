"""Topic handlers: idempotent, dead-lettered, answering Dapr with SUCCESS, RETRY or DROP.

A function lists its handlers with `@subscriptions.handler(SomeEvent)` beside the handler code;
`mount` subscribes each one to its topic with its own dead-letter topic. A handler is a plain
`async def handle(event, context)` and can be called directly in a unit test.
"""

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from beanie import Document
from dapr.ext.fastapi import DaprApp
from fastapi import Body, Depends, Header, HTTPException, status
from pydantic import BaseModel, ValidationError, model_validator
from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from functions.common.clock import now
from functions.common.contracts import IntegrationEvent
from functions.common.settings import get_settings

log = logging.getLogger(__name__)


class PermanentError(Exception):
    """The event can never be handled (bad data, unknown order...): DROP it to the dead letter."""


class EventContext(BaseModel):
    id: str
    topic: str
    type: str = ""
    source: str = ""


def hour_bucket(at: datetime) -> str:
    """The inbox's pruning bucket: the UTC hour, e.g. "2026-11-28T10"."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


class ProcessedEvent(Document):
    """Inbox: one record per (handler, event id) handled, so a redelivery changes nothing."""

    id: str
    topic: str
    processedAt: datetime
    # Pruned by equality on this bucket (an index serves it on FerretDB, which pushes down
    # equalities only; a range on processedAt would scan the collection).
    processedHour: str = ""

    @model_validator(mode="after")
    def _bucket(self) -> "ProcessedEvent":
        self.processedHour = self.processedHour or hour_bucket(self.processedAt)
        return self

    class Settings:
        name = "processed_events"
        indexes = [IndexModel("processedHour", name="processed_hour")]  # for forget_old_events


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
        result = await ProcessedEvent.get_pymongo_collection().delete_many({"processedHour": hour_bucket(hour)})
        deleted += result.deleted_count
        hour += timedelta(hours=1)
    await InboxPruning.get_pymongo_collection().update_one(
        {"_id": collection}, {"$set": {"prunedBefore": cutoff}}, upsert=True
    )
    return deleted


Handler = Callable[[Any, EventContext], Awaitable[None]]


def dead_letter_topic(app_id: str, topic: str) -> str:
    return f"dlq_{app_id}_{topic}"


class Subscriptions:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.handlers: list[tuple[type[IntegrationEvent], Handler]] = []

    def handler(self, event_type: type[IntegrationEvent]) -> Callable[[Handler], Handler]:
        def register(func: Handler) -> Handler:
            self.handlers.append((event_type, func))
            return func

        return register

    def mount(self, dapr_app: DaprApp, pubsub_name: str) -> None:
        for event_type, func in self.handlers:
            dapr_app.subscribe(
                pubsub=pubsub_name,
                topic=event_type.topic,
                route=f"/events/{event_type.topic}",
                dead_letter_topic=dead_letter_topic(self.app_id, event_type.topic),
            )(_endpoint(event_type, func))


def require_dapr(token: Annotated[str | None, Header(alias="dapr-api-token")] = None) -> None:
    """Only the function's own sidecar may deliver events: with APP_API_TOKEN set, daprd sends it
    in `dapr-api-token` on every call to the app, and a delivery without it is refused. Anyone
    else who reaches the app port could otherwise post a forged event to a subscription route."""
    expected = get_settings().app_api_token
    if expected and not hmac.compare_digest((token or "").encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Event deliveries come from the Dapr sidecar only")


def _endpoint(event_type: type[IntegrationEvent], func: Handler) -> Callable[..., Awaitable[dict]]:
    """The HTTP route Dapr delivers one topic's CloudEvents to."""

    async def endpoint(cloud_event: dict = Body(...), _: None = Depends(require_dapr)) -> dict:
        return {"status": await deliver(event_type, func, cloud_event)}

    endpoint.__name__ = f"on_{event_type.topic}"
    return endpoint


async def deliver(event_type: type[IntegrationEvent], func: Handler, cloud_event: dict) -> str:
    """Run one handler for one delivered CloudEvent and say what Dapr should do with it."""
    try:
        context = EventContext(
            id=cloud_event["id"],
            topic=cloud_event.get("topic") or event_type.topic,
            type=cloud_event.get("type", ""),
            source=cloud_event.get("source", ""),
        )
        event = event_type.model_validate(cloud_event.get("data") or {})
    except (KeyError, TypeError, ValidationError) as exc:
        log.error("dropping malformed %s event: %s", event_type.topic, exc)
        return "DROP"

    inbox_id = f"{func.__name__}:{context.id}"
    if await ProcessedEvent.get(inbox_id) is not None:
        log.info("%s already handled %s; skipping", func.__name__, context.id)
        return "SUCCESS"
    try:
        await func(event, context)
    except PermanentError as exc:
        log.error("%s dropped %s: %s", func.__name__, context.id, exc)
        return "DROP"
    except Exception:  # noqa: BLE001 - anything else may pass: let Dapr retry, then dead-letter
        log.exception("%s failed on %s; asking Dapr to retry", func.__name__, context.id)
        return "RETRY"
    try:
        await ProcessedEvent(id=inbox_id, topic=context.topic, processedAt=now()).insert()
    except DuplicateKeyError:
        pass
    return "SUCCESS"
