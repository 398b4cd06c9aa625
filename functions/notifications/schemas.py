from datetime import datetime

from functions.common.web import DocumentOut, Envelope
from functions.notifications.models import EmailStatus, Template


class EmailOut(DocumentOut):
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


class EmailPage(Envelope[list[EmailOut]]):
    total: int  # how many match, of which `data` is the page at offset/limit, newest first
