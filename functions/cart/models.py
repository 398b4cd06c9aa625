from datetime import datetime

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import IndexModel

from functions.common.clock import now
from functions.common.ids import EntityId
from functions.common.outbox import HasOutbox


class CartLine(BaseModel):
    productId: EntityId
    # Name and price as products gave them when the line was last added to; payments prices
    # the order again from products, so these are for display only.
    name: str
    unitPriceCents: int
    quantity: int
    addedAt: datetime
    updatedAt: datetime


class Cart(Document, HasOutbox):
    """One per user: its id is the user id, so two concurrent first adds cannot make two carts."""

    id: EntityId  # the user id
    userId: EntityId
    # Keyed by product id (an id is a safe field name): a line is added, changed or removed by a
    # single conditional update of `lines.<productId>`, with no array matching.
    lines: dict[str, CartLine] = Field(default_factory=dict)
    createdAt: datetime = Field(default_factory=now)
    updatedAt: datetime = Field(default_factory=now)

    class Settings:
        name = "carts"
        indexes = [IndexModel("userId", unique=True, name="userId_unique")]

    def sorted_lines(self) -> list[CartLine]:
        return sorted(self.lines.values(), key=lambda line: (line.addedAt, line.productId))
