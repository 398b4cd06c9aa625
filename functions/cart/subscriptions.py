"""Cart's topics, each mapped to its step."""

from functions.cart import APP_ID, checkout
from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import CartCheckedOut

subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(CartCheckedOut)
async def empty_checked_out_lines(event: CartCheckedOut, context: EventContext) -> None:
    await checkout.empty_ordered_lines(event.userId, event.productIds, event.cartUpdatedAt)
