"""One e-mail per event: stored first, then sent at most once per event id, with its outcome.

The unique `eventId` makes a redelivered event find its e-mail instead of making another one.
An e-mail still `pending` (an earlier attempt hit a 5xx or a timeout, or stopped) is sent again;
one `sent`, `outboxed` or `failed` is final, so a redelivery sends nothing.

Only the welcome e-mail (which carries the verification link) goes to an address its owner has not
verified: any other is stored `held` and sent when `email_verified` arrives (`release_held`), so
the shop cannot be made to mail a stranger (a registration with their address, an admin's
/api/facture).

An outage of the provider longer than Dapr's redelivery window sends the event to its dead letter
with its e-mail still `pending`: `resend_stalled` (every minute) sends such e-mails again, and
gives up on one after `GIVE_UP_AFTER` (status `failed`, the reason kept).
"""

import logging
from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.clock import now
from functions.common.consumers import EventContext, PermanentError
from functions.notifications.mailer import (
    Mailer,
    OutgoingEmail,
    RejectedMailError,
    TransientMailError,
    configured_mailer,
)
from functions.notifications.messages import Message
from functions.notifications.models import Email, Template, VerifiedAddress, stored_now
from functions.notifications.rendering import render

log = logging.getLogger(__name__)

# Longer than a SendGrid call may take (its timeout is 10 s), so a lease only lapses when the
# delivery holding it has stopped.
LEASE = timedelta(seconds=30)
RESEND_SWEEP_SECONDS = 60.0
# Past Dapr's redelivery window (dapr/resiliency.yaml, about 26 s): by then the event is dead-lettered.
RESEND_AFTER = timedelta(minutes=3)
GIVE_UP_AFTER = timedelta(hours=24)


class EmailBusy(Exception):
    """Another delivery of the same event is sending this e-mail right now: try again later."""


async def send_once(context: EventContext, message: Message, mailer: Mailer | None = None) -> None:
    """Store and send the e-mail this event asks for, unless that was done already; hold it if
    its address is not verified (and the message needs it verified)."""
    created = stored_now()
    to, subject, template = message.to, message.subject, message.template
    html = render(template, subject, created, **message.variables)
    if message.needs_verified_address and not await _verified(to):
        await _hold(context, to=to, subject=subject, template=template, html=html, created=created)
        return
    email = Email(
        to=to.lower(),
        subject=subject,
        html=html,
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
        await store.insert(email)
        claimed = {"_id": email.id, "to": email.to, "subject": email.subject, "html": email.html}
    except DuplicateKeyError:
        # A redelivery: the e-mail exists; claim it, unless it is final or another delivery holds it.
        stored = await Email.find_one(Email.eventId == context.id)
        claimed = await _claim(stored.id) if stored is not None else None
        if claimed is None:
            stored = await Email.find_one(Email.eventId == context.id)
            if stored is not None and stored.status != "pending":
                return  # already handled: a redelivery sends nothing
            raise EmailBusy(f"e-mail for event {context.id} is being sent by another delivery")
    await _send(claimed, context.id, mailer)


async def _verified(address: str) -> bool:
    return await VerifiedAddress.get(address.lower()) is not None


async def _hold(context: EventContext, *, to: str, subject: str, template: Template, html: str, created: datetime) -> None:
    """Store the e-mail `held` (once per event). If the address was verified meanwhile (its
    release may have run between the check and this insert), send it now."""
    held = Email(to=to.lower(), subject=subject, html=html, template=template, status="held", eventId=context.id,
                 topic=context.topic, createdAt=created)
    try:
        await store.insert(held)
    except DuplicateKeyError:
        pass  # a redelivery: held already, or released since
    if await _verified(to):
        await release_held(to)


async def address_verified(address: str) -> None:
    """The address is verified: remember it, and send what was held for it."""
    try:
        await store.update(VerifiedAddress, address.lower(), {"$setOnInsert": {"verifiedAt": now()}}, upsert=True)
    except DuplicateKeyError:
        pass  # verified by a concurrent delivery
    await release_held(address)


async def release_held(address: str, mailer: Mailer | None = None) -> int:
    """Send every e-mail held for `address` (now verified); returns how many left. One that
    cannot be sent now stays pending, for Dapr's or the resend sweep's next attempt."""
    released = 0
    for held in await Email.find({"to": address.lower(), "status": "held"}).to_list():
        claimed_at = now()
        # Each held e-mail leaves `held` once: a concurrent release (a redelivery, another
        # replica) finds it pending and leaves it to this one.
        claimed = await store.update_and_read(
            Email,
            held.id,
            {"$set": {"status": "pending", "leaseUntil": claimed_at + LEASE}, "$inc": {"attempts": 1}},
            where={"status": "held"},
        )
        if claimed is not None:
            released += await _send_in_background_job(claimed, mailer)
    return released


async def _claim(email_id: object) -> dict | None:
    """Take a pending e-mail for one attempt, unless another delivery holds it (its lease)."""
    claimed_at = now()
    return await store.update_and_read(
        Email,
        email_id,
        {"$set": {"leaseUntil": claimed_at + LEASE}, "$inc": {"attempts": 1}},
        where={"status": "pending", "leaseUntil": {"$lte": claimed_at}},
    )


async def _send(claimed: dict, event_id: str, mailer: Mailer | None) -> None:
    """Send a claimed e-mail and record the outcome."""
    email_id = claimed["_id"]
    outgoing = OutgoingEmail(to=claimed["to"], subject=claimed["subject"], html=claimed["html"], event_id=event_id)
    try:
        delivery = await (mailer or configured_mailer()).send(outgoing)
    except TransientMailError as exc:
        # Stays pending, lease released: Dapr redelivers and the next attempt sends it.
        await store.update(Email, email_id, {"$set": {"error": str(exc), "leaseUntil": now()}})
        raise
    except RejectedMailError as exc:
        await store.update(Email, email_id, {"$set": {"status": "failed", "error": str(exc)}})
        raise PermanentError(str(exc)) from exc
    await store.update(
        Email,
        email_id,
        {"$set": {"status": delivery.status, "providerMessageId": delivery.provider_message_id, "sentAt": now(),
                  "error": None}},
    )


async def resend_stalled(mailer: Mailer | None = None) -> int:
    """Send again every e-mail left `pending` past Dapr's redelivery window (its event was
    dead-lettered during a provider outage); give up on those older than GIVE_UP_AFTER.
    Returns how many were sent. Found by equality on `status` (an index serves it)."""
    sent, at = 0, now()
    for stalled in await Email.find({"status": "pending"}).to_list():
        if stalled.createdAt > at - RESEND_AFTER:
            continue  # Dapr is still redelivering its event
        if stalled.createdAt < at - GIVE_UP_AFTER:
            reason = f"not sent within {GIVE_UP_AFTER}: the provider kept failing"
            await store.update(Email, stalled.id, {"$set": {"status": "failed", "error": reason}}, where={"status": "pending"})
            log.error("e-mail %s: %s", stalled.id, reason)
            continue
        claimed = await _claim(stalled.id)
        if claimed is not None:  # else another delivery or replica holds it
            sent += await _send_in_background_job(claimed, mailer)
    return sent


async def _send_in_background_job(claimed: dict, mailer: Mailer | None) -> bool:
    """Send a claimed e-mail outside an event delivery: a failure is logged, and the e-mail stays
    pending (transient) for the next round, or failed (refused)."""
    try:
        await _send(claimed, claimed["eventId"], mailer)
        return True
    except TransientMailError as exc:
        log.warning("e-mail %s cannot be sent yet: %s; the next round retries", claimed["_id"], exc)
    except PermanentError as exc:
        log.error("e-mail %s refused by the provider: %s", claimed["_id"], exc)
    return False
