"""Cart's topics, each mapped to its step."""

from functions.cart import APP_ID, checkout
from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import CartCheckedOut

subscriptions = Subscriptions(APP_ID)


# No inbox: taking off lines unchanged since the order is idempotent on the cart itself.
@subscriptions.handler(CartCheckedOut, inbox=False)
async def empty_checked_out_lines(event: CartCheckedOut, context: EventContext) -> None:
    # An event without the cart's version: lines changed after the order was placed stay.
    await checkout.empty_ordered_lines(event.userId, event.productIds, event.cartUpdatedAt or context.time)
