from datetime import datetime
from typing import Literal

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import IndexModel

from functions.common.clock import stored_now
from functions.common.ids import EntityId, NewEntityId
from functions.common.outbox import HasOutbox


class Product(Document, HasOutbox):
    id: NewEntityId
    name: str
    description: str = ""
    priceCents: int
    category: str
    stock: int
    # Units held by orders in flight, by order id (an id is a safe field name, see ids.py). The hold is what makes
    # taking and giving back an order's units happen once per product, whatever is redelivered.
    holds: dict[str, int] = Field(default_factory=dict)
    createdAt: datetime = Field(default_factory=stored_now)
    updatedAt: datetime = Field(default_factory=stored_now)

    class Settings:
        name = "products"
        indexes = [IndexModel("category"), IndexModel("name")]


class ReservedLine(BaseModel):
    productId: EntityId
    name: str
    quantity: int


ReservationState = Literal["reserving", "reserved", "rejected", "committed", "released", "cancelled"]


class StockReservation(Document, HasOutbox):
    """One per order: what it asked for, what happened, and the outcome event (in its outbox).

    reserving → reserved → committed (paid) or released (cancelled); reserving → rejected;
    cancelled: the cancellation arrived before the order, so the order reserves nothing.
    """

    id: EntityId  # the order id
    state: ReservationState
    lines: list[ReservedLine]
    shortProductIds: list[str] = Field(default_factory=list)
    reason: str | None = None
    createdAt: datetime = Field(default_factory=stored_now)
    updatedAt: datetime = Field(default_factory=stored_now)

    class Settings:
        name = "stock_reservations"


class CatalogueSeed(Document):
    """Marks a catalogue seed as done, so products an admin later deletes stay deleted."""

    id: str
    seededAt: datetime

    class Settings:
        name = "catalogue_seeds"
