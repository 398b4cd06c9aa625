"""Where e-mails go: SendGrid when SENDGRID_API_KEY is set, otherwise nowhere but our own store.

The SendGrid adapter builds the request body with the sendgrid library's mail model
(`Mail(...).get()`, the v3 mail/send JSON) but sends it with httpx rather than the library's
`SendGridAPIClient`: that client is synchronous (python_http_client over urllib), so it would
block the event loop, and it cannot be faked with respx in unit tests. The endpoint, headers and
body are the ones the library would send.
"""

from dataclasses import dataclass
from typing import Literal, Protocol

import httpx
from sendgrid.helpers.mail import CustomArg, Mail

from functions.notifications.settings import get_settings

SENDGRID_SEND_URL = "https://api.sendgrid.com/v3/mail/send"

# One connection pool for every e-mail this process sends: a new client per e-mail cost about
# 20 ms of CPU to make (its TLS context) and a TLS handshake with SendGrid each time.
_client: httpx.AsyncClient | None = None


def _sendgrid_client() -> httpx.AsyncClient:
    global _client
    if _client is None or _client.is_closed:
        _client = httpx.AsyncClient()
    return _client


async def close() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    html: str
    event_id: str


@dataclass(frozen=True)
class Delivery:
    status: Literal["sent", "outboxed"]
    provider_message_id: str | None = None


class TransientMailError(Exception):
    """The provider did not answer usefully (5xx, 429, timeout, network): try again later."""


class RejectedMailError(Exception):
    """The provider refused this e-mail (4xx): sending it again would fail the same way."""


class Mailer(Protocol):
    async def send(self, email: OutgoingEmail) -> Delivery: ...


class LocalOutbox:
    """No provider configured: the stored e-mail is the only copy ("outboxed")."""

    async def send(self, email: OutgoingEmail) -> Delivery:
        return Delivery(status="outboxed")


class SendGridMailer:
    def __init__(self, api_key: str, sender: str, timeout_seconds: float = 10.0) -> None:
        self.api_key = api_key
        self.sender = sender
        self.timeout_seconds = timeout_seconds

    def body(self, email: OutgoingEmail) -> dict:
        mail = Mail(from_email=self.sender, to_emails=email.to, subject=email.subject, html_content=email.html)
        # Travels with SendGrid's webhooks, so a bounce can be traced back to its event.
        mail.custom_arg = CustomArg("eventId", email.event_id)
        return mail.get()

    async def send(self, email: OutgoingEmail) -> Delivery:
        try:
            response = await _sendgrid_client().post(
                SENDGRID_SEND_URL,
                json=self.body(email),
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise TransientMailError(f"SendGrid unreachable: {exc!r}") from exc
        detail = f"SendGrid answered {response.status_code}: {response.text[:300]}"
        # 429 is a 4xx but means "later", not "never".
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientMailError(detail)
        if response.status_code >= 400:
            raise RejectedMailError(detail)
        return Delivery(status="sent", provider_message_id=response.headers.get("X-Message-Id"))


def configured_mailer() -> Mailer:
    settings = get_settings()
    if settings.sendgrid_api_key:
        return SendGridMailer(settings.sendgrid_api_key, settings.mail_from)
    return LocalOutbox()
