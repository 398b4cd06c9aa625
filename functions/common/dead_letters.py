"""Dead letters: what a function could not handle is kept, shouted about, and can be replayed.

Dapr sends an event to `dlq_<app>_<topic>` when its handler answered DROP (it can never succeed
as it is) or kept failing past the redelivery window. Each function subscribes to its own
dead-letter topics (`Subscriptions.mount`) and parks every such event in its `dead_letters`
collection, one record per (topic, event id), counting how often it came back, and logs it at
ERROR. `task dlq` (dapr/local/stack.py) lists them and replays one or all: it publishes the
original CloudEvent, same id, to its topic again, where the (idempotent) handler takes it anew.
Orders stuck by a dead letter end anyway at their deadline (payments/saga.py); a replay is
for the cases where the cause was fixed (a bug, an outage longer than the window).
"""

import logging
from datetime import datetime
from typing import Any, Literal

from beanie import Document
from pymongo import IndexModel

from functions.common import store
from functions.common.clock import now

log = logging.getLogger(__name__)


class DeadLetter(Document):
    id: str  # "<topic>:<event id>"
    topic: str  # the topic the event was published to (not the dead-letter topic)
    eventId: str
    cloudEvent: dict[str, Any]  # as it reached the dead letter: the event to replay
    firstAt: datetime
    lastAt: datetime
    receipts: int = 1  # how often it reached the dead letter (a replay that fails again adds one)
    replays: int = 0
    status: Literal["parked", "replayed"] = "parked"

    class Settings:
        name = "dead_letters"
        indexes = [IndexModel("status", name="status")]  # `task dlq` lists the parked ones


def dead_letter_topic(app_id: str, topic: str) -> str:
    return f"dlq_{app_id}_{topic}"


async def park(app_id: str, topic: str, cloud_event: dict[str, Any]) -> None:
    """Keep a dead-lettered event (one record per event id; a second arrival counts)."""
    event_id = str(cloud_event.get("id") or "")
    at = now()
    await store.update(
        DeadLetter,
        f"{topic}:{event_id}",
        {
            "$setOnInsert": {"topic": topic, "eventId": event_id, "cloudEvent": cloud_event, "firstAt": at, "replays": 0},
            "$set": {"lastAt": at, "status": "parked"},
            "$inc": {"receipts": 1},
        },
        upsert=True,
    )
    log.error("DEAD LETTER %s: %s event %s could not be handled; parked for `task dlq`", app_id, topic, event_id)
