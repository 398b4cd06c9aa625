"""One e-mail per event: stored first, then sent at most once per event id, with its outcome.

The unique `eventId` makes a redelivered event find its e-mail instead of making another one.
An e-mail still `pending` (an earlier attempt hit a 5xx or a timeout, or stopped) is sent again;
one `sent`, `outboxed` or `failed` is final, so a redelivery sends nothing.
"""

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

# Longer than a SendGrid call may take (its timeout is 10 s), so a lease only lapses when the
# delivery holding it has stopped.
LEASE = timedelta(seconds=30)


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
    emails = Email.get_pymongo_collection()
    try:
        await email.insert()
        claimed = {"_id": email.id, "to": email.to, "subject": email.subject, "html": email.html}
    except DuplicateKeyError:
        # A redelivery: the e-mail exists; claim it, unless it is final or another delivery holds it.
        claimed_at = now()
        # FerretDB does not isolate a find-and-modify from a concurrent one; the lock (keyed by the
        # event) makes the claim exclusive in this process, the lease across replicas on MongoDB.
        async with outbox.write_lock(Email, context.id):
            claimed = await emails.find_one_and_update(
                {"eventId": context.id, "status": "pending", "leaseUntil": {"$lte": claimed_at}},
                {"$set": {"leaseUntil": claimed_at + LEASE}, "$inc": {"attempts": 1}},
                return_document=ReturnDocument.AFTER,
            )
        if claimed is None:
            stored = await Email.find_one(Email.eventId == context.id)
            if stored is not None and stored.status != "pending":
                return  # already handled: a redelivery sends nothing
            raise EmailBusy(f"e-mail for event {context.id} is being sent by another delivery")

    outgoing = OutgoingEmail(to=claimed["to"], subject=claimed["subject"], html=claimed["html"], event_id=context.id)
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
