"""The cart side of checkout: the order placed from a cart empties those lines of it."""

import logging

from functions.cart import APP_ID
from functions.cart.catalogue import is_product_id
from functions.cart.models import Cart
from functions.common.clock import now
from functions.common.consumers import EventContext, Subscriptions
from functions.common.contracts import CartCheckedOut
from functions.common.outbox import write_lock

log = logging.getLogger(__name__)
subscriptions = Subscriptions(APP_ID)


@subscriptions.handler(CartCheckedOut)
async def empty_checked_out_lines(event: CartCheckedOut, context: EventContext) -> None:
    """Remove the ordered products from the user's cart, with no removal e-mails.

    Idempotent by nature: removing a line that is gone changes nothing. A line changed after
    the cart was read for the order (`cartUpdatedAt`) was not ordered as it is now, so it stays.
    """
    carts = Cart.get_pymongo_collection()
    async with write_lock(Cart, event.userId):
        for product_id in event.productIds:
            if not is_product_id(product_id):
                log.warning("order %s names an impossible product id %r; skipped", event.orderId, product_id)
                continue
            path = f"lines.{product_id}"
            where = {"_id": event.userId, path: {"$exists": True}}
            if event.cartUpdatedAt is not None:
                where[f"{path}.updatedAt"] = {"$lte": event.cartUpdatedAt}
            await carts.update_one(where, {"$unset": {path: ""}, "$set": {"updatedAt": now()}})
