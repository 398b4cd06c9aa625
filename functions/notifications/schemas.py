from datetime import datetime

from pydantic import BaseModel

from functions.common.web import Envelope
from functions.notifications.models import Email, EmailStatus, Template


class EmailOut(BaseModel):
    id: str
    to: str
    subject: str
    html: str
    template: Template
    status: EmailStatus
    providerMessageId: str | None
    eventId: str
    topic: str
    createdAt: datetime
    sentAt: datetime | None
    error: str | None

    @classmethod
    def of(cls, email: Email) -> "EmailOut":
        return cls(
            id=str(email.id),
            to=email.to,
            subject=email.subject,
            html=email.html,
            template=email.template,
            status=email.status,
            providerMessageId=email.providerMessageId,
            eventId=email.eventId,
            topic=email.topic,
            createdAt=email.createdAt,
            sentAt=email.sentAt,
            error=email.error,
        )


class EmailPage(Envelope[list[EmailOut]]):
    total: int  # how many match, of which `data` is the page at offset/limit, newest first
