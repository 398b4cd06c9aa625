"""One e-mail per event: stored first, then sent at most once per event id, with its outcome.

The unique `eventId` makes a redelivered event find its e-mail instead of making another one.
An e-mail still `pending` (an earlier attempt hit a 5xx or a timeout, or stopped) is sent again;
one `sent`, `outboxed` or `failed` is final, so a redelivery sends nothing.

An outage of the provider longer than Dapr's redelivery window sends the event to its dead letter
with its e-mail still `pending`: `resend_stalled` (every minute) sends such e-mails again, and
gives up on one after `GIVE_UP_AFTER` (status `failed`, the reason kept).
"""

import logging
from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from functions.common import outbox
from functions.common.clock import now
from functions.common.consumers import EventContext, PermanentError
from functions.notifications.mailer import (
    Mailer,
    OutgoingEmail,
    RejectedMailError,
    TransientMailError,
    configured_mailer,
)
from functions.notifications.models import Email, Template, stored_now
from functions.notifications.rendering import render

log = logging.getLogger(__name__)

# Longer than a SendGrid call may take (its timeout is 10 s), so a lease only lapses when the
# delivery holding it has stopped.
LEASE = timedelta(seconds=30)
RESEND_SWEEP_SECONDS = 60.0
# Past Dapr's redelivery window (dapr/resiliency.yaml, ~70 s): by then the event is dead-lettered.
RESEND_AFTER = timedelta(minutes=3)
GIVE_UP_AFTER = timedelta(hours=24)


class EmailBusy(Exception):
    """Another delivery of the same event is sending this e-mail right now: try again later."""


async def send_once(
    context: EventContext,
    *,
    to: str,
    subject: str,
    template: Template,
    variables: dict[str, object],
    mailer: Mailer | None = None,
) -> None:
    """Store and send the e-mail this event asks for, unless that was done already."""
    created = stored_now()
    email = Email(
        to=to.lower(),
        subject=subject,
        html=render(template, subject, created, **variables),
        template=template,
        eventId=context.id,
        topic=context.topic,
        createdAt=created,
        # Inserted already claimed by this delivery: the first delivery of an event (nearly every
        # one) needs no separate claim.
        attempts=1,
        leaseUntil=created + LEASE,
    )
    try:
        await email.insert()
        claimed = {"_id": email.id, "to": email.to, "subject": email.subject, "html": email.html}
    except DuplicateKeyError:
        # A redelivery: the e-mail exists; claim it, unless it is final or another delivery holds it.
        claimed = await _claim(context.id)
        if claimed is None:
            stored = await Email.find_one(Email.eventId == context.id)
            if stored is not None and stored.status != "pending":
                return  # already handled: a redelivery sends nothing
            raise EmailBusy(f"e-mail for event {context.id} is being sent by another delivery")
    await _send(claimed, context.id, mailer)


async def _claim(event_id: str) -> dict | None:
    """Take the pending e-mail of this event for one attempt, unless another delivery holds it."""
    claimed_at = now()
    # FerretDB does not isolate a find-and-modify from a concurrent one; the lock (keyed by the
    # event) makes the claim exclusive in this process, the lease across replicas on MongoDB.
    async with outbox.write_lock(Email, event_id):
        return await Email.get_pymongo_collection().find_one_and_update(
            {"eventId": event_id, "status": "pending", "leaseUntil": {"$lte": claimed_at}},
            {"$set": {"leaseUntil": claimed_at + LEASE}, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )


async def _send(claimed: dict, event_id: str, mailer: Mailer | None) -> None:
    """Send a claimed e-mail and record the outcome."""
    emails = Email.get_pymongo_collection()
    outgoing = OutgoingEmail(to=claimed["to"], subject=claimed["subject"], html=claimed["html"], event_id=event_id)
    try:
        delivery = await (mailer or configured_mailer()).send(outgoing)
    except TransientMailError as exc:
        # Stays pending, lease released: Dapr redelivers and the next attempt sends it.
        await emails.update_one({"_id": claimed["_id"]}, {"$set": {"error": str(exc), "leaseUntil": now()}})
        raise
    except RejectedMailError as exc:
        await emails.update_one({"_id": claimed["_id"]}, {"$set": {"status": "failed", "error": str(exc)}})
        raise PermanentError(str(exc)) from exc
    await emails.update_one(
        {"_id": claimed["_id"]},
        {
            "$set": {
                "status": delivery.status,
                "providerMessageId": delivery.provider_message_id,
                "sentAt": now(),
                "error": None,
            }
        },
    )


async def resend_stalled(mailer: Mailer | None = None) -> int:
    """Send again every e-mail left `pending` past Dapr's redelivery window (its event was
    dead-lettered during a provider outage); give up on those older than GIVE_UP_AFTER.
    Returns how many were sent. Found by equality on `status` (an index serves it)."""
    sent, at = 0, now()
    emails = Email.get_pymongo_collection()
    async for stalled in emails.find({"status": "pending"}, {"eventId": 1, "createdAt": 1}):
        if stalled["createdAt"] > at - RESEND_AFTER:
            continue  # Dapr is still redelivering its event
        if stalled["createdAt"] < at - GIVE_UP_AFTER:
            reason = f"not sent within {GIVE_UP_AFTER}: the provider kept failing"
            await emails.update_one({"_id": stalled["_id"], "status": "pending"}, {"$set": {"status": "failed", "error": reason}})
            log.error("e-mail %s: %s", stalled["_id"], reason)
            continue
        claimed = await _claim(stalled["eventId"])
        if claimed is None:
            continue  # another delivery or replica holds it
        try:
            await _send(claimed, stalled["eventId"], mailer)
            sent += 1
        except TransientMailError as exc:
            log.warning("e-mail %s still cannot be sent: %s; next round retries", stalled["_id"], exc)
        except PermanentError as exc:
            log.error("e-mail %s refused by the provider: %s", stalled["_id"], exc)
    return sent
