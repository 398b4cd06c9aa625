"""One handler per topic; each renders its template and sends through `send_once`."""

from functions.common.clock import now
from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import CartItemRemoved, EmailRequested, EmailVerified, InvoiceProcessing, UserRegistered
from functions.common.money import money_text
from functions.notifications import APP_ID
from functions.notifications.models import VerifiedAddress
from functions.notifications.sending import release_held, send_once

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(UserRegistered)
async def send_welcome_email(event: UserRegistered, context: EventContext) -> None:
    await send_once(
        context,
        to=event.email,
        subject=f"¡Bienvenido a La Tienda, {event.name}!",
        template="welcome",
        variables={"name": event.name, "lastName": event.lastName, "verificationUrl": event.verificationUrl},
        needs_verified_address=False,  # it is what verifies the address
    )


@subscriptions.handler(EmailVerified)
async def release_held_emails(event: EmailVerified, context: EventContext) -> None:
    """The address is verified: remember it, and send what was held for it."""
    await VerifiedAddress.get_pymongo_collection().update_one(
        {"_id": event.email.lower()}, {"$setOnInsert": {"verifiedAt": now()}}, upsert=True
    )
    await release_held(event.email)


@subscriptions.handler(CartItemRemoved)
async def send_cart_removal_email(event: CartItemRemoved, context: EventContext) -> None:
    await send_once(
        context,
        to=event.email,
        subject=f"Eliminaste {event.productName} de tu carrito",
        template="cart_removal",
        variables={"productName": event.productName, "quantity": event.quantity},
    )


@subscriptions.handler(InvoiceProcessing)
async def send_invoice_email(event: InvoiceProcessing, context: EventContext) -> None:
    """The invoice is issued: e-mail it, rendered here from its lines and amounts."""
    await send_once(
        context,
        to=event.email,
        subject=f"Factura de tu pedido #{event.orderId}",  # exactly the original shop's subject
        template="invoice",
        variables={
            "to": event.email,
            "orderId": event.orderId,
            "invoiceNumber": event.invoiceNumber,
            "lines": [
                {"name": line.name, "quantity": line.quantity, "unitPrice": money_text(line.unitPriceCents),
                 "lineTotal": money_text(line.line_total_cents)}
                for line in event.lines
            ],
            "subtotal": money_text(event.subtotalCents),
            "taxPercent": f"{event.taxRate * 100:g}",
            "tax": money_text(event.taxCents),
            "total": money_text(event.totalCents),
        },
    )


@subscriptions.handler(EmailRequested)
async def send_requested_email(event: EmailRequested, context: EventContext) -> None:
    """An e-mail an admin wrote (POST /api/facture): its text as it came."""
    await send_once(context, to=event.to, subject=event.subject, template="message", variables={"content": event.content})
