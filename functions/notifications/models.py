from datetime import datetime
from typing import Literal

from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from functions.common.clock import stored_now
from functions.common.ids import NewEntityId

# held: for an address its owner has not verified yet, sent once it is (sending.py);
# pending: not yet accepted by the provider (being sent, or waiting for a retry);
# sent: accepted by SendGrid; outboxed: kept here only (no SENDGRID_API_KEY);
# failed: refused by SendGrid (4xx), dead-lettered.
EmailStatus = Literal["held", "pending", "sent", "outboxed", "failed"]
Template = Literal["welcome", "cart_removal", "invoice", "message"]


class Email(Document):
    id: NewEntityId
    to: str  # lower-cased, as the caller's token e-mail is matched against it
    subject: str
    html: str
    template: Template
    status: EmailStatus = "pending"
    providerMessageId: str | None = None  # SendGrid's X-Message-Id
    eventId: str  # the CloudEvent that asked for it: one e-mail per event
    topic: str
    createdAt: datetime = Field(default_factory=stored_now)
    sentAt: datetime | None = None
    error: str | None = None
    attempts: int = 0
    # While a delivery is sending this e-mail, no other delivery of the same event may.
    leaseUntil: datetime = Field(default_factory=stored_now)

    class Settings:
        name = "emails"
        indexes = [
            IndexModel("eventId", unique=True, name="event_unique"),
            IndexModel([("to", 1), ("createdAt", -1)], name="to_newest"),
            # An admin's listing of every e-mail, newest first (MongoDB; FerretDB sorts in memory).
            IndexModel([("createdAt", -1), ("_id", -1)], name="newest"),
            IndexModel("status", name="status"),  # sending.resend_stalled's equality
        ]


class VerifiedAddress(Document):
    """An address whose owner followed the verification link (`email_verified`): mail may go to it."""

    id: str  # the address, lower-cased
    verifiedAt: datetime

    class Settings:
        name = "verified_addresses"
