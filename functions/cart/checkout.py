"""The cart side of checkout: the order placed from a cart empties those lines of it."""

from datetime import datetime

from functions.cart.models import Cart
from functions.common import store
from functions.common.clock import now


async def empty_ordered_lines(user_id: str, product_ids: list[str], cart_updated_at: datetime | None) -> None:
    """Remove the ordered products from the user's cart, with no removal e-mails.

    Idempotent by nature, so it keeps no inbox: removing a line that is gone changes nothing,
    and a line changed after the cart was read for the order (`cart_updated_at`) was not ordered
    as it is now, so it stays — also when the event comes again after the customer put the same
    product back. Two deliveries racing take each line off once (a conditional write each).
    The usual case, every ordered line still there as ordered, is one write; otherwise each line
    is taken off by a write of its own, if it still qualifies.
    """
    if len(product_ids) > 1 and await _take_off(user_id, product_ids, cart_updated_at):
        return
    for product_id in product_ids:
        await _take_off(user_id, [product_id], cart_updated_at)


async def _take_off(user_id: str, product_ids: list[str], cart_updated_at: datetime | None) -> bool:
    """Remove these lines in one write if every one of them is there, unchanged since the order."""
    where: dict = {}
    for product_id in product_ids:
        path = f"lines.{product_id}"  # an id: a safe field name (the contract checked it, ids.py)
        where[path] = {"$exists": True}
        if cart_updated_at is not None:
            where[f"{path}.updatedAt"] = {"$lte": cart_updated_at}
    unset = {f"lines.{product_id}": "" for product_id in product_ids}
    return await store.update(Cart, user_id, {"$unset": unset, "$set": {"updatedAt": now()}}, where=where)
