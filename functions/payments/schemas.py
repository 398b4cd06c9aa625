from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, EmailStr, StringConstraints

from functions.common.money import PricedLineOut, money
from functions.common.web import DocumentOut
from functions.payments.models import Amounts, Invoice, Order, OrderStatus, Transition

# A card token as processors issue them ("tok_visa"); never a card number.
CardToken = Annotated[str, StringConstraints(pattern=r"^tok_[A-Za-z0-9_]{1,64}$")]
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]


class PaymentMethod(BaseModel):
    token: CardToken


class PlaceOrder(BaseModel):
    # Only how to pay: the lines come from the caller's cart and the prices from products, so
    # any items or prices a client sends are ignored.
    paymentMethod: PaymentMethod


class OrderPlaced(BaseModel):
    orderId: str
    status: OrderStatus
    total: float
    totalCents: int
    currency: str

    @classmethod
    def of(cls, order: Order) -> "OrderPlaced":
        return cls(
            orderId=order.id,
            status=order.status,
            total=money(order.totalCents),
            totalCents=order.totalCents,
            currency=order.currency,
        )


class AmountsOut(BaseModel):
    """An order's or an invoice's amounts: numbers with two decimals beside their cents."""

    subtotal: float
    subtotalCents: int
    taxRate: float
    tax: float
    taxCents: int
    total: float
    totalCents: int
    currency: str

    @staticmethod
    def shown(source: Amounts) -> dict:
        return {
            "subtotal": money(source.subtotalCents),
            "subtotalCents": source.subtotalCents,
            "taxRate": source.taxRate,
            "tax": money(source.taxCents),
            "taxCents": source.taxCents,
            "total": money(source.totalCents),
            "totalCents": source.totalCents,
            "currency": source.currency,
        }


class InvoiceOut(AmountsOut):
    number: str
    issuedAt: datetime
    lines: list[PricedLineOut]

    @classmethod
    def of(cls, invoice: Invoice) -> "InvoiceOut":
        return cls(
            number=invoice.number,
            issuedAt=invoice.issuedAt,
            lines=[PricedLineOut.of(line) for line in invoice.lines],
            **cls.shown(invoice),
        )


class OrderOut(AmountsOut, DocumentOut):
    orderId: str
    userId: str
    email: str
    status: OrderStatus
    lines: list[PricedLineOut]
    paymentId: str | None
    # Charges the processor could not answer (retried; the payment fails after the allowed number).
    transientChargeFailures: int
    failureReason: str | None
    invoiceNumber: str | None
    invoice: InvoiceOut | None
    history: list[Transition]
    createdAt: datetime
    updatedAt: datetime

    @classmethod
    def of(cls, order: Order) -> "OrderOut":
        return super().of(
            order,
            orderId=order.id,
            lines=[PricedLineOut.of(line) for line in order.lines],
            invoice=InvoiceOut.of(order.invoice) if order.invoice else None,
            **cls.shown(order),
        )


class FactureRequest(BaseModel):
    to: EmailStr
    subject: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    content: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class MailQueued(BaseModel):
    id: str
    to: str
    subject: str
    createdAt: datetime
