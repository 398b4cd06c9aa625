"""The three topic handlers: templates, one e-mail per event, SendGrid outcomes."""

import asyncio
import json
import re
import uuid
from datetime import timedelta

import httpx

from functions.common.clock import now
from functions.common.consumers import EventContext, deliver
from functions.common.contracts import (
    CartItemRemoved,
    EmailRequested,
    EmailVerified,
    InvoiceProcessing,
    OrderLine,
    UserRegistered,
)
from functions.common.ids import new_id
from functions.notifications import mailer
from functions.notifications.models import Email
from functions.notifications.sending import GIVE_UP_AFTER, resend_stalled
from functions.notifications.settings import get_settings
from functions.notifications.subscriptions import (
    release_held_emails,
    send_cart_removal_email,
    send_invoice_email,
    send_requested_email,
    send_welcome_email,
)
from tests.unit.notifications.conftest import SENDGRID_KEY, new_address

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
ORDER_42 = new_id()
PRODUCT_1 = new_id()
PRODUCT_2 = new_id()
USER_1 = new_id()


def context(topic: str) -> EventContext:
    return EventContext(id=f"evt_{uuid.uuid4().hex}", topic=topic)


def cloud_event(event, event_id: str | None = None) -> dict:
    return {"id": event_id or f"evt_{uuid.uuid4().hex}", "topic": event.topic, "data": event.model_dump(mode="json")}


def welcome(to: str | None = None, name: str = "Lucía") -> UserRegistered:
    return UserRegistered(userId=USER_1, email=to or new_address(), name=name, lastName="Pérez")


def facture(to: str | None = None) -> EmailRequested:
    """An e-mail an admin wrote (POST /api/facture)."""
    return EmailRequested(to=to or new_address(), subject="Tu factura", content="Adjuntamos tu factura.\nTotal: $29.75")


def invoice(to: str | None = None) -> InvoiceProcessing:
    return InvoiceProcessing(
        orderId=ORDER_42,
        invoiceNumber="INV-2026-000042",
        userId=USER_1,
        email=to or new_address(),
        lines=[
            OrderLine(productId=PRODUCT_1, name="Café Orgánico de Altura", unitPriceCents=1250, quantity=2),
            OrderLine(productId=PRODUCT_2, name="Jabón Artesanal <Lavanda>", unitPriceCents=675, quantity=1),
        ],
        subtotalCents=3175,
        taxRate=0.19,
        taxCents=603,
        totalCents=3778,
        currency="USD",
    )


async def emails_for(event_id: str) -> list[Email]:
    return await Email.find(Email.eventId == event_id).to_list()


async def test_welcome_email_greets_the_new_user_by_name_and_is_kept_locally_without_a_key(client):
    event, ctx = welcome(), context("welcome_flow")
    await send_welcome_email(event, ctx)

    [email] = await emails_for(ctx.id)
    assert email.to == event.email and email.template == "welcome" and email.topic == "welcome_flow"
    assert email.status == "outboxed" and email.providerMessageId is None and email.error is None
    assert "Lucía" in email.subject and "Bienvenido" in email.subject
    assert "¡Bienvenido, Lucía!" in email.html and "Lucía Pérez" in email.html
    assert f"© {now().year}" in email.html.replace("&copy;", "©")


async def test_cart_removal_email_names_the_removed_product(client):
    event = CartItemRemoved(
        userId=USER_1, email=new_address(), productId=PRODUCT_1, productName="Miel Pura de Abeja", quantity=2
    )
    ctx = context("cart_removals")
    await send_cart_removal_email(event, ctx)

    [email] = await emails_for(ctx.id)
    assert email.template == "cart_removal" and "Miel Pura de Abeja" in email.subject
    assert "<strong>Miel Pura de Abeja</strong>" in email.html and "2 unidades" in email.html


async def test_the_invoice_email_is_rendered_from_the_invoices_lines_and_amounts(client):
    event, ctx = invoice(), context("invoice_processing")
    await send_invoice_email(event, ctx)

    [email] = await emails_for(ctx.id)
    today = now()
    months = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
              "septiembre", "octubre", "noviembre", "diciembre"]  # fmt: skip
    assert email.template == "invoice" and email.subject == f"Factura de tu pedido #{ORDER_42}"  # the original's subject
    assert email.to == event.email and email.topic == "invoice_processing"
    assert f"Para: {event.email}" in email.html and f"Factura de tu pedido #{ORDER_42}</h1>" in email.html
    assert f"Fecha: {today.day} de {months[today.month - 1]} de {today.year}" in email.html
    assert "Factura: INV-2026-000042" in email.html and f"Pedido: #{ORDER_42}" in email.html
    text = " ".join(re.sub(r"<[^>]+>", " ", email.html).split())
    assert "Café Orgánico de Altura 2 $12.50 $25.00" in text
    assert "Jabón Artesanal &lt;Lavanda&gt; 1 $6.75 $6.75" in text  # names are escaped
    assert "Subtotal: $31.75 Impuestos (19%): $6.03 Total: $37.78" in text


async def test_a_plain_message_uses_the_message_template(client):
    event = EmailRequested(to=new_address(), subject="Aviso", content="Hola\nmundo")
    ctx = context("email_notification")
    await send_requested_email(event, ctx)
    [email] = await emails_for(ctx.id)
    assert email.template == "message" and "Hola<br>\nmundo" in email.html and "Factura" not in email.html


async def test_event_text_is_escaped_in_the_html(client):
    ctx = context("welcome_flow")
    await send_welcome_email(welcome(name="<script>alert(1)</script>"), ctx)
    [email] = await emails_for(ctx.id)
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html


async def test_a_redelivered_event_sends_nothing(client, sendgrid):
    delivered = cloud_event(welcome())
    assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "SUCCESS"
    assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "SUCCESS"
    # And the handler called again with the same event id: the e-mail, stored under it, is final.
    await send_welcome_email(welcome(to=delivered["data"]["email"]), context("welcome_flow").model_copy(
        update={"id": delivered["id"]}
    ))

    assert sendgrid.call_count == 1
    [email] = await emails_for(delivered["id"])
    assert email.status == "sent" and email.attempts == 1


async def test_sendgrid_gets_the_mail_model_body_and_its_message_id_is_kept(client, sendgrid):
    event, ctx = facture(), context("email_notification")
    await send_requested_email(event, ctx)

    [call] = sendgrid.calls
    assert call.request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"
    body = json.loads(call.request.content)
    assert body["personalizations"] == [{"to": [{"email": event.to}]}]
    assert body["from"] == {"email": get_settings().mail_from}
    assert body["subject"] == event.subject
    [content] = body["content"]
    assert content["type"] == "text/html" and "Adjuntamos tu factura." in content["value"]
    assert body["custom_args"] == {"eventId": ctx.id}

    [email] = await emails_for(ctx.id)
    assert email.status == "sent" and email.sentAt is not None
    assert email.providerMessageId == call.response.headers["X-Message-Id"]
    assert email.html == content["value"]


async def test_every_email_goes_through_one_sendgrid_client(client, sendgrid, monkeypatch):
    # A client per e-mail costs its TLS context (~20 ms of CPU) and a TLS handshake with SendGrid.
    made = []

    class CountedClient(httpx.AsyncClient):
        def __init__(self, *args, **kwargs) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mailer.httpx, "AsyncClient", CountedClient)
    await mailer.close()
    for _ in range(3):
        await send_requested_email(facture(), context("email_notification"))

    assert sendgrid.call_count == 3
    assert len(made) == 1 and not made[0].is_closed
    await mailer.close()
    assert made[0].is_closed


async def test_a_sendgrid_5xx_is_retried_and_the_retry_sends_it(client, sendgrid):
    sendgrid.side_effect = [httpx.Response(503, text="busy"), httpx.Response(202, headers={"X-Message-Id": "sg-2"})]
    delivered = cloud_event(welcome())

    assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "RETRY"
    [email] = await emails_for(delivered["id"])
    assert email.status == "pending" and "503" in email.error

    assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "SUCCESS"
    [email] = await emails_for(delivered["id"])
    assert (email.status, email.providerMessageId, email.error, email.attempts) == ("sent", "sg-2", None, 2)
    assert sendgrid.call_count == 2


async def test_a_sendgrid_timeout_or_rate_limit_is_retried(client, sendgrid):
    for failure in (httpx.ConnectTimeout("timed out"), httpx.Response(429, text="slow down")):
        sendgrid.side_effect = [failure]
        delivered = cloud_event(welcome())
        assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "RETRY"
        [email] = await emails_for(delivered["id"])
        assert email.status == "pending" and email.error


async def test_a_sendgrid_4xx_is_recorded_as_failed_and_dead_lettered(client, sendgrid):
    sendgrid.side_effect = [httpx.Response(400, json={"errors": [{"message": "invalid from address"}]})]
    delivered = cloud_event(facture())

    assert await deliver("notifications", EmailRequested, send_requested_email, delivered) == "DROP"
    [email] = await emails_for(delivered["id"])
    assert email.status == "failed" and "400" in email.error and "invalid from address" in email.error

    # Replayed from the dead letter: nothing is sent again.
    await send_requested_email(facture(), context("email_notification").model_copy(update={"id": delivered["id"]}))
    assert sendgrid.call_count == 1
    assert [e.status for e in await emails_for(delivered["id"])] == ["failed"]


async def test_an_email_another_delivery_is_sending_is_retried_not_sent_twice(client, sendgrid):
    delivered = cloud_event(welcome())
    data = delivered["data"]
    await Email(
        to=data["email"], subject="s", html="<p>h</p>", template="welcome", eventId=delivered["id"],
        topic="welcome_flow", leaseUntil=now() + timedelta(seconds=30),
    ).insert()  # fmt: skip

    assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "RETRY"
    assert sendgrid.call_count == 0


async def test_a_lapsed_lease_lets_the_next_delivery_send(client, sendgrid):
    delivered = cloud_event(welcome())
    data = delivered["data"]
    await Email(
        to=data["email"], subject="s", html="<p>h</p>", template="welcome", eventId=delivered["id"],
        topic="welcome_flow", leaseUntil=now() - timedelta(seconds=1), attempts=1,
    ).insert()  # fmt: skip

    assert await deliver("notifications", UserRegistered, send_welcome_email, delivered) == "SUCCESS"
    [email] = await emails_for(delivered["id"])
    assert email.status == "sent" and email.attempts == 2 and sendgrid.call_count == 1


async def test_a_malformed_event_is_dropped(client):
    assert await deliver("notifications", EmailRequested, send_requested_email, {"id": "evt_x", "data": {"to": "nope"}}) == "DROP"
    assert await emails_for("evt_x") == []


async def test_concurrent_deliveries_of_one_event_send_one_email(client, sendgrid):
    event, event_id = welcome(), f"evt_{uuid.uuid4().hex}"
    attempts = [send_welcome_email(event, EventContext(id=event_id, topic="welcome_flow")) for _ in range(4)]
    results = await asyncio.gather(*attempts, return_exceptions=True)

    assert sendgrid.call_count == 1
    # The others found it sent, or found it being sent and asked for a retry (which sends nothing).
    assert all(r is None or type(r).__name__ == "EmailBusy" for r in results)
    [email] = await emails_for(event_id)
    assert email.status == "sent" and email.attempts == 1


async def stalled(minutes_ago: float) -> Email:
    """An e-mail left pending by a provider outage longer than Dapr's redelivery window."""
    at = now() - timedelta(minutes=minutes_ago)
    email = Email(to=new_address(), subject="Bienvenida", html="<p>hola</p>", template="welcome",
                  eventId=f"evt_{uuid.uuid4().hex}", topic="welcome_flow", createdAt=at, leaseUntil=at, attempts=7,
                  error="SendGrid answered 503")
    await email.insert()
    return email


async def test_an_email_stalled_by_a_long_outage_is_sent_once_the_provider_is_back(client, sendgrid):
    old, fresh = await stalled(10), await stalled(0.5)
    sendgrid.side_effect = lambda request: httpx.Response(503, text="still down")
    await resend_stalled()
    assert (await Email.get(old.id)).status == "pending"  # still down: the next round retries

    sendgrid.side_effect = lambda request: httpx.Response(202, headers={"X-Message-Id": "sg-late"})
    await resend_stalled()
    await resend_stalled()  # sent: the next round sends nothing more

    sent = await Email.get(old.id)
    assert (sent.status, sent.providerMessageId, sent.attempts) == ("sent", "sg-late", 9)
    assert (await Email.get(fresh.id)).status == "pending"  # Dapr is still redelivering that one's event
    assert sum(old.to in call.request.content.decode() for call in sendgrid.calls) == 2


async def test_an_email_the_provider_never_took_is_given_up_after_a_day(client, sendgrid):
    ancient = await stalled(GIVE_UP_AFTER.total_seconds() / 60 + 5)
    await resend_stalled()
    given_up = await Email.get(ancient.id)
    assert given_up.status == "failed" and "not sent within" in given_up.error
    assert not any(ancient.to in call.request.content.decode() for call in sendgrid.calls)


async def test_mail_to_an_unverified_address_is_held_until_it_is_verified(client, sendgrid, unverified):
    to = new_address()
    await send_invoice_email(invoice(to), context("invoice_processing"))
    await send_requested_email(facture(to), context("email_notification"))  # an admin's, to anyone
    held = await Email.find(Email.to == to).to_list()
    assert sorted(e.status for e in held) == ["held", "held"]
    assert not any(to in call.request.content.decode() for call in sendgrid.calls)

    verified = EmailVerified(userId=USER_1, email=to)
    for _ in range(2):  # a redelivery releases nothing more
        assert await deliver("notifications", EmailVerified, release_held_emails, cloud_event(verified)) == "SUCCESS"

    sent = await Email.find(Email.to == to).to_list()
    assert sorted(e.status for e in sent) == ["sent", "sent"]
    assert sum(to in call.request.content.decode() for call in sendgrid.calls) == 2
    # Once verified, mail goes at once.
    await send_cart_removal_email(CartItemRemoved(userId=USER_1, email=to, productId=PRODUCT_1, productName="Miel", quantity=1),
                                  context("cart_removals"))
    assert (await Email.find(Email.to == to, Email.template == "cart_removal").first_or_none()).status == "sent"


async def test_the_welcome_email_goes_unverified_and_carries_the_verification_link(client, unverified):
    to = new_address()
    link = "http://127.0.0.1:8001/api/users/verify?token=abc.def"
    await send_welcome_email(welcome(to).model_copy(update={"verificationUrl": link}), context("welcome_flow"))
    [email] = await Email.find(Email.to == to).to_list()
    assert email.status == "outboxed" and f'href="{link}"' in email.html
