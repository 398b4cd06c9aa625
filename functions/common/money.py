"""Money is integer cents inside the shop; these are the ways it is shown."""

from typing import Any, Protocol, Self

from pydantic import BaseModel


def money(cents: int) -> float:
    """Cents as a number with two decimals, as the HTTP API shows prices: 2975 -> 29.75."""
    return round(cents / 100, 2)


def money_text(cents: int) -> str:
    """Cents as text with two decimals, for e-mails: 2975 -> "29.75"."""
    return f"{cents // 100}.{cents % 100:02d}"


class PricedLine(Protocol):
    productId: str
    name: str
    unitPriceCents: int
    quantity: int


class PricedLineOut(BaseModel):
    """A product line as the HTTP API shows it (cart items, order and invoice lines): prices as
    numbers with two decimals beside their cents."""

    productId: str
    name: str
    unitPrice: float
    unitPriceCents: int
    quantity: int
    lineTotal: float
    lineTotalCents: int

    @classmethod
    def of(cls, line: PricedLine, **extra: Any) -> Self:
        total = line.unitPriceCents * line.quantity
        return cls(
            productId=line.productId,
            name=line.name,
            unitPrice=money(line.unitPriceCents),
            unitPriceCents=line.unitPriceCents,
            quantity=line.quantity,
            lineTotal=money(total),
            lineTotalCents=total,
            **extra,
        )
