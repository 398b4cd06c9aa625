"""One handler per topic; each renders its template and sends through `send_once`."""

from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import CartItemRemoved, EmailRequested, UserRegistered
from functions.notifications import APP_ID
from functions.notifications.sending import send_once

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(UserRegistered)
async def send_welcome_email(event: UserRegistered, context: EventContext) -> None:
    await send_once(
        context,
        to=event.email,
        subject=f"¡Bienvenido a La Tienda, {event.name}!",
        template="welcome",
        variables={"name": event.name, "lastName": event.lastName},
    )


@subscriptions.handler(CartItemRemoved)
async def send_cart_removal_email(event: CartItemRemoved, context: EventContext) -> None:
    await send_once(
        context,
        to=event.email,
        subject=f"Eliminaste {event.productName} de tu carrito",
        template="cart_removal",
        variables={"productName": event.productName, "quantity": event.quantity},
    )


@subscriptions.handler(EmailRequested)
async def send_requested_email(event: EmailRequested, context: EventContext) -> None:
    await send_once(
        context,
        to=event.to,
        subject=event.subject,
        template=event.template,
        variables={
            "to": event.to,
            "content": event.content,
            "orderId": event.orderId,
            "invoiceNumber": event.invoiceNumber,
        },
    )
