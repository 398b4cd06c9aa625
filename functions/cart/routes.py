"""The caller's cart. Every change is one conditional update of the cart document, as it was
read, that also stages its event (`functions/common/store.py`); one that finds the cart changed
meanwhile reads it again."""

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pymongo.errors import DuplicateKeyError

from functions.cart import APP_ID
from functions.cart.catalogue import product_info
from functions.cart.models import Cart, CartLine
from functions.cart.schemas import MAX_LINES, MAX_QUANTITY, AddItem, CartOut, ChangeQuantity
from functions.common import store
from functions.common.auth import CurrentUser
from functions.common.clock import now
from functions.common.contracts import CartItemRemoved, CartUpdated
from functions.common.ids import is_id
from functions.common.locks import KeyedLocks
from functions.common.outbox import PendingEvent
from functions.common.web import Envelope

router = APIRouter(prefix="/api/cart", tags=["cart"])

NOT_IN_CART = "This product is not in your cart"
# A conditional update misses only when another replica changed the same line in between; read
# again and retry a few times, then give up with a 409 rather than loop.
ATTEMPTS = 5
CONCURRENT_CHANGE = "Your cart changed while this request ran; try again"
# One change of a cart at a time in this process: a customer's concurrent requests take turns
# instead of failing each other's conditions (spares retries only; across replicas the
# conditional updates decide).
_cart_turns = KeyedLocks(isolation_workaround=False)


def _line_path(product_id: str) -> str:
    return f"lines.{product_id}"


def _unchanged(line: CartLine) -> dict[str, Any]:
    """Filter terms that match the line only as it was read."""
    path = _line_path(line.productId)
    return {f"{path}.quantity": line.quantity, f"{path}.updatedAt": line.updatedAt}


async def _current(user_id: str) -> CartOut:
    return CartOut.of(await Cart.get(user_id))


@router.get("/items", summary="The caller's cart (publishes nothing)")
async def get_items(principal: CurrentUser) -> Envelope[CartOut]:
    cart = await Cart.get(principal.id)
    message = "Your cart" if cart and cart.lines else "Your cart is empty"
    return Envelope(message=message, data=CartOut.of(cart))


@router.post("/items", status_code=status.HTTP_201_CREATED, summary="Add units of a product; name and price come from products")
async def add_item(body: AddItem, principal: CurrentUser) -> Envelope[CartOut]:
    product = await product_info(body.productId)
    user_id = principal.id
    path = _line_path(product.id)
    async with _cart_turns(user_id):
        for _ in range(ATTEMPTS):
            cart = await Cart.get(user_id)
            line = cart.lines.get(product.id) if cart else None
            if line is None and cart is not None and len(cart.lines) >= MAX_LINES:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"At most {MAX_LINES} different products per cart")
            quantity = (line.quantity if line else 0) + body.quantity
            if quantity > MAX_QUANTITY:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, f"At most {MAX_QUANTITY} units of one product per cart"
                )
            at = now()
            new_line = CartLine(
                productId=product.id,
                name=product.name,
                unitPriceCents=product.priceCents,
                quantity=quantity,
                addedAt=line.addedAt if line else at,
                updatedAt=at,
            )
            event = CartUpdated(userId=user_id, productId=product.id, name=product.name, quantity=quantity, action="added")
            where = _unchanged(line) if line else {path: {"$exists": False}}
            if line is None and cart is not None:
                # A new line counts toward MAX_LINES: only onto the cart as counted (any change
                # moves its updatedAt), so two adds racing on two replicas cannot pass the limit.
                where["updatedAt"] = cart.updatedAt
            try:
                # Upsert only for a new line: it creates the cart on the first add; if the cart
                # or the line appeared meanwhile, the unique _id refuses a second cart.
                added = await store.update(
                    Cart,
                    user_id,
                    {"$set": {path: new_line.model_dump(), "updatedAt": at}, "$setOnInsert": {"userId": user_id, "createdAt": at}},
                    where=where,
                    events=[PendingEvent.of(event, source=APP_ID, key=user_id)],
                    upsert=line is None,
                )
            except DuplicateKeyError:
                continue
            if added:
                break
        else:
            raise HTTPException(status.HTTP_409_CONFLICT, CONCURRENT_CHANGE)
    return Envelope(message="Product added to your cart", data=await _current(user_id))


@router.patch("/items/{product_id}", summary="Set the quantity of a product in the cart")
async def change_quantity(product_id: str, body: ChangeQuantity, principal: CurrentUser) -> Envelope[CartOut]:
    user_id = principal.id
    if not is_id(product_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_IN_CART)
    async with _cart_turns(user_id):
        for _ in range(ATTEMPTS):
            cart = await Cart.get(user_id)
            line = cart.lines.get(product_id) if cart else None
            if line is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_IN_CART)
            at = now()
            event = CartUpdated(userId=user_id, productId=product_id, name=line.name, quantity=body.quantity, action="changed")
            path = _line_path(product_id)
            if await store.update(
                Cart,
                user_id,
                {"$set": {f"{path}.quantity": body.quantity, f"{path}.updatedAt": at, "updatedAt": at}},
                where=_unchanged(line),
                events=[PendingEvent.of(event, source=APP_ID, key=user_id)],
            ):
                break
        else:
            raise HTTPException(status.HTTP_409_CONFLICT, CONCURRENT_CHANGE)
    return Envelope(message="Quantity changed", data=await _current(user_id))


@router.delete("/items/{product_id}", summary="Remove a product from the cart; the customer is e-mailed about it")
async def remove_item(product_id: str, principal: CurrentUser) -> Envelope[CartOut]:
    user_id = principal.id
    if not is_id(product_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_IN_CART)
    path = _line_path(product_id)
    async with _cart_turns(user_id):
        cart = await Cart.get(user_id)
        line = cart.lines.get(product_id) if cart else None
        if line is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_IN_CART)
        event = CartItemRemoved(
            userId=user_id, email=principal.email, productId=product_id, productName=line.name, quantity=line.quantity
        )
        # Conditional on the line still being there: of two concurrent removals only one
        # removes it and only one e-mail is sent; the other is a 404.
        removed = await store.update(
            Cart,
            user_id,
            {"$unset": {path: ""}, "$set": {"updatedAt": now()}},
            where={path: {"$exists": True}},
            events=[PendingEvent.of(event, source=APP_ID, key=user_id)],
        )
        if not removed:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_IN_CART)
    return Envelope(message=f"{line.name} removed from your cart", data=await _current(user_id))
