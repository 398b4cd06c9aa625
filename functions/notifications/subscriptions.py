"""Notifications' topics: each e-mail event mapped to its message and sent once
(functions/notifications/messages.py, sending.py); a verified address releases what was held.

The e-mail handlers need no inbox: the e-mail is stored under its event's id (unique) and sent
under a lease, so a redelivered or racing event sends nothing more (sending.py)."""

from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import CartItemRemoved, EmailRequested, EmailVerified, InvoiceProcessing, UserRegistered
from functions.notifications import APP_ID, messages, sending

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(UserRegistered, inbox=False)
async def send_welcome_email(event: UserRegistered, context: EventContext) -> None:
    await sending.send_once(context, messages.welcome(event))


@subscriptions.handler(CartItemRemoved, inbox=False)
async def send_cart_removal_email(event: CartItemRemoved, context: EventContext) -> None:
    await sending.send_once(context, messages.cart_removal(event))


@subscriptions.handler(InvoiceProcessing, inbox=False)
async def send_invoice_email(event: InvoiceProcessing, context: EventContext) -> None:
    await sending.send_once(context, messages.invoice(event))


@subscriptions.handler(EmailRequested, inbox=False)
async def send_requested_email(event: EmailRequested, context: EventContext) -> None:
    await sending.send_once(context, messages.requested(event))


@subscriptions.handler(EmailVerified)
async def release_held_emails(event: EmailVerified, context: EventContext) -> None:
    await sending.address_verified(event.email)
