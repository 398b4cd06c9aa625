"""The cart side of checkout: the order placed from a cart empties those lines of it."""

import logging
from datetime import datetime

from functions.cart.catalogue import is_product_id
from functions.cart.models import Cart
from functions.common import store
from functions.common.clock import now

log = logging.getLogger(__name__)


async def empty_ordered_lines(user_id: str, order_id: str, product_ids: list[str], cart_updated_at: datetime | None) -> None:
    """Remove the ordered products from the user's cart, with no removal e-mails.

    Idempotent by nature: removing a line that is gone changes nothing. A line changed after
    the cart was read for the order (`cart_updated_at`) was not ordered as it is now, so it stays.
    """
    for product_id in product_ids:
        if not is_product_id(product_id):
            log.warning("order %s names an impossible product id %r; skipped", order_id, product_id)
            continue
        path = f"lines.{product_id}"
        where: dict = {path: {"$exists": True}}
        if cart_updated_at is not None:
            where[f"{path}.updatedAt"] = {"$lte": cart_updated_at}
        await store.update(Cart, user_id, {"$unset": {path: ""}, "$set": {"updatedAt": now()}}, where=where)
