from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, model_validator

from functions.common.money import money
from functions.common.text import OneLine
from functions.common.web import DocumentOut, Envelope
from functions.products.models import Product

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), OneLine]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), OneLine]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Price = Annotated[Decimal, Field(gt=0, le=Decimal("1000000"), decimal_places=2, examples=[12.5])]
Stock = Annotated[int, Field(ge=0, le=1_000_000)]
StockDelta = Annotated[int, Field(ge=-1_000_000, le=1_000_000, examples=[10, -2])]


def cents(price: Decimal) -> int:
    return int(price * 100)


class ProductOut(DocumentOut):
    name: str
    description: str
    price: float  # two decimals, from priceCents
    priceCents: int
    category: str
    stock: int
    createdAt: datetime
    updatedAt: datetime

    @classmethod
    def of(cls, product: Product) -> "ProductOut":
        return super().of(product, price=money(product.priceCents))


class ProductPage(Envelope[list[ProductOut]]):
    total: int  # how many match the filters, of which `data` is the page at offset/limit


class ProductCreate(BaseModel):
    name: Name
    description: Description = ""
    price: Price
    category: Category
    stock: Stock = 0


class ProductUpdate(BaseModel):
    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    category: Category | None = None
    # The units on hand, as counted: send it with If-Match (the ETag of the product as read), or
    # units held for orders meanwhile would be overwritten.
    stock: Stock | None = None
    # Units to add (or, negative, to take away) to what is on hand now: applied atomically.
    stockDelta: StockDelta | None = None

    @model_validator(mode="after")
    def something_to_change(self) -> "ProductUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of name, description, price, category, stock, stockDelta")
        nulls = sorted(f for f in self.model_fields_set if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        if {"stock", "stockDelta"} <= self.model_fields_set:
            raise ValueError("give stock (the count) or stockDelta (a change), not both")
        return self

    def changes(self) -> dict:
        """The fields to $set, as stored (stockDelta is an $inc, not among them)."""
        values = self.model_dump(include=self.model_fields_set - {"stockDelta"})
        if "price" in values:
            values["priceCents"] = cents(values.pop("price"))
        return values
