"""What each e-mail says: its address, subject, template and the facts the template shows, built
from the event that asks for it. Payments and users publish facts; the wording lives here and in
templates/."""

from dataclasses import dataclass, field

from functions.common.contracts import CartItemRemoved, EmailRequested, InvoiceProcessing, UserRegistered
from functions.common.money import money_text
from functions.notifications.models import Template


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    template: Template
    variables: dict[str, object] = field(default_factory=dict)
    # Every e-mail but the welcome waits for its address to be verified (sending.py).
    needs_verified_address: bool = True


def welcome(event: UserRegistered) -> Message:
    return Message(
        to=event.email,
        subject=f"¡Bienvenido a La Tienda, {event.name}!",
        template="welcome",
        variables={"name": event.name, "lastName": event.lastName, "verificationUrl": event.verificationUrl},
        needs_verified_address=False,  # it is what verifies the address
    )


def cart_removal(event: CartItemRemoved) -> Message:
    return Message(
        to=event.email,
        subject=f"Eliminaste {event.productName} de tu carrito",
        template="cart_removal",
        variables={"productName": event.productName, "quantity": event.quantity},
    )


def invoice(event: InvoiceProcessing) -> Message:
    """The invoice, rendered from its lines and amounts."""
    return Message(
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


def requested(event: EmailRequested) -> Message:
    """An e-mail an admin wrote (POST /api/facture): its text as it came."""
    return Message(to=event.to, subject=event.subject, template="message", variables={"content": event.content})
