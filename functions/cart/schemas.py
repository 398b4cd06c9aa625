from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from functions.cart.models import Cart, CartLine
from functions.common.money import PricedLineOut, money

# A generous bound per line: a typo of 10**9 units is a bad request, not an order.
MAX_QUANTITY = 1000
# Distinct products per cart: an order prices each line with products, one call per line.
MAX_LINES = 100
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY, strict=True)]


class AddItem(BaseModel):
    # Any price or name the client sends is ignored: both come from products.
    productId: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    quantity: Quantity


class ChangeQuantity(BaseModel):
    quantity: Quantity


class CartItemOut(PricedLineOut):
    updatedAt: datetime  # the line's last change: checkout leaves lines changed after the order

    @classmethod
    def of(cls, line: CartLine) -> "CartItemOut":
        return super().of(line, updatedAt=line.updatedAt)


class CartOut(BaseModel):
    items: list[CartItemOut]
    total: float
    totalCents: int

    @classmethod
    def of(cls, cart: Cart | None) -> "CartOut":
        items = [CartItemOut.of(line) for line in cart.sorted_lines()] if cart else []
        total = sum(item.lineTotalCents for item in items)
        return cls(items=items, total=money(total), totalCents=total)
