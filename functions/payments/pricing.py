"""An order's lines and amounts: the caller's cart (quantities only) priced by products.

Neither the client nor the cart is trusted for a price: every unit price is asked of products
when the order is placed.
"""

import hashlib
import json
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from fastapi import HTTPException, status
from pydantic import BaseModel, Field, ValidationError

from functions.common import sidecar
from functions.common.catalogue import fetch_products
from functions.common.sidecar import SidecarError
from functions.payments.models import Amounts, OrderedLine


class CartItem(BaseModel):
    productId: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    updatedAt: datetime | None = None  # the line's last change, on the cart's clock


async def read_cart(token: str) -> list[CartItem]:
    """The caller's cart, read from cart with the caller's own token."""
    response = await sidecar.invoke("cart", "api/cart/items", token=token)
    if response.status_code != status.HTTP_200_OK:
        raise SidecarError(f"cart answered {response.status_code}: {response.text[:200]}")
    try:
        items = response.json()["data"]["items"]
        return [CartItem.model_validate(item) for item in items]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise SidecarError(f"cart answered an unreadable cart: {exc}") from exc


def cart_version(items: list[CartItem]) -> str:
    """The cart as read, as a key: the same lines (product, quantity, last change) give the same
    key, so a double click or a retry after a lost answer finds the order this cart already made;
    lines added again after a checkout are new changes, hence a new key."""
    lines = sorted((item.productId, item.quantity, item.updatedAt.isoformat() if item.updatedAt else "") for item in items)
    return "cart:" + hashlib.sha256(json.dumps(lines).encode()).hexdigest()[:32]


def latest_change(items: list[CartItem]) -> datetime | None:
    """The cart's version as read: its lines' latest change (None if the cart did not say)."""
    stamps = [item.updatedAt for item in items]
    return None if None in stamps else max(stamps)


async def price_lines(items: list[CartItem]) -> list[OrderedLine]:
    """One line per product, its name and unit price as products says now (one call for all)."""
    quantities: dict[str, int] = {}
    for item in items:
        quantities[item.productId] = quantities.get(item.productId, 0) + item.quantity
    products = await fetch_products(list(quantities))
    for product_id in quantities:
        if product_id not in products:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"Product {product_id} in your cart no longer exists; remove it and order again",
            )
    return [
        OrderedLine(productId=product_id, name=products[product_id].name,
                    unitPriceCents=products[product_id].priceCents, quantity=quantity)
        for product_id, quantity in quantities.items()
    ]


def amounts(lines: list[OrderedLine], tax_rate: float, currency: str) -> Amounts:
    subtotal = sum(line.unitPriceCents * line.quantity for line in lines)
    # Tax rounded half up to the cent, once, on the subtotal.
    tax = int((Decimal(subtotal) * Decimal(str(tax_rate))).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return Amounts(subtotalCents=subtotal, taxRate=tax_rate, taxCents=tax, totalCents=subtotal + tax, currency=currency)
