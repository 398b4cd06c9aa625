from datetime import datetime
from typing import Any, Literal

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import IndexModel

from functions.common.clock import now
from functions.common.contracts import OrderLine
from functions.common.ids import EntityId, NewEntityId
from functions.common.outbox import HasOutbox

# "expired": the saga did not complete within SHOP_ORDER_DEADLINE_SECONDS (payments/saga.py).
OrderStatus = Literal["pending", "stock_reserved", "paid", "invoiced", "rejected", "payment_failed", "expired"]
FINAL_STATUSES: frozenset[str] = frozenset({"invoiced", "rejected", "payment_failed", "expired"})


class Transition(BaseModel):
    """One step of the order's history."""

    status: OrderStatus
    at: datetime
    reason: str | None = None
    # The event that moved the order here; for "pending", the order_created event it announced.
    eventId: str | None = None


class OrderedLine(BaseModel):
    """A line as payments keeps it in an order and its invoice: what was ordered, at the price
    products gave when it was placed. Stored; `OrderLine` (contracts) is what events carry."""

    productId: EntityId
    name: str
    unitPriceCents: int = Field(ge=0)
    quantity: int = Field(ge=1)

    def contract(self) -> OrderLine:
        return OrderLine(productId=self.productId, name=self.name, unitPriceCents=self.unitPriceCents,
                         quantity=self.quantity)


class Amounts(BaseModel):
    """An order's amounts as payments keeps them, fixed when it is placed; the order and its
    invoice hold them. Stored; `OrderAmounts` (contracts) is what events carry."""

    subtotalCents: int
    taxRate: float
    taxCents: int
    totalCents: int
    currency: str

    def amounts(self) -> dict[str, Any]:
        """The block alone: for another holder of it, or an event (`OrderAmounts`' fields)."""
        return {name: getattr(self, name) for name in Amounts.model_fields}


class Invoice(Amounts):
    number: str
    issuedAt: datetime
    lines: list[OrderedLine]


class Order(Document, HasOutbox, Amounts):
    """The order and its saga state: every change is one conditional update from the status it
    expects (`saga.transition`), so a redelivered or late event cannot move it backwards.

    Its amounts are fixed when it is placed (prices from products, tax rate from
    settings): the amount charged and the invoice are these, whatever changes later."""

    id: NewEntityId
    userId: EntityId
    email: str
    lines: list[OrderedLine]
    status: OrderStatus = "pending"
    history: list[Transition] = Field(default_factory=list)
    # The simulated processor's card token (never a card number); sent to the processor only.
    paymentToken: str
    # The client's Idempotency-Key, or the cart's version ("cart:<digest>") when it sent none:
    # the unique index (userId, idempotencyKey) makes one order of one cart.
    idempotencyKey: str
    paymentId: str | None = None
    # Charges that failed transiently (processor timeout, outage); see saga.count_failed_charge.
    transientChargeFailures: int = 0
    failureReason: str | None = None
    invoiceNumber: str | None = None
    invoice: Invoice | None = None
    createdAt: datetime = Field(default_factory=now)
    updatedAt: datetime = Field(default_factory=now)

    class Settings:
        name = "orders"
        indexes = [
            IndexModel([("userId", 1), ("idempotencyKey", 1)], unique=True, name="user_idempotency_key_unique"),
            IndexModel([("userId", 1), ("createdAt", -1)], name="user_orders"),
            IndexModel("status", name="status"),  # the deadline sweep's equality
        ]


class Payment(Document):
    """The result of charging one order: at most one per order (its id is the order id)."""

    id: EntityId  # the order id, also the processor's idempotency key
    provider: str
    chargeId: str
    status: Literal["approved", "declined"]
    reason: str | None = None
    amountCents: int
    currency: str
    createdAt: datetime = Field(default_factory=now)

    class Settings:
        name = "payments"


class InvoiceNumber(Document):
    """The invoice-number ledger: one record per number issued, naming the order that owns it.

    See `invoicing.allocate_invoice_number` for why this, not a counter document.
    """

    id: str  # "INV-<year>-<seq, 6 digits>"
    year: int
    seq: int
    orderId: EntityId
    allocatedAt: datetime = Field(default_factory=now)

    class Settings:
        name = "invoice_numbers"
        indexes = [
            IndexModel("orderId", unique=True, name="orderId_unique"),
            IndexModel([("year", 1), ("seq", 1)], unique=True, name="year_seq_unique"),
        ]


class InvoiceSequence(Document):
    """Where a year's next invoice number is looked for: every number below `next` is issued.

    A hint, not the number itself: the ledger's unique index still decides, and a hint that lags
    (a lost write, a crash) only costs a collision. It makes allocation one read by _id instead
    of a scan of the year's ledger, so it costs the same at the 50,000th invoice as at the first.
    """

    id: int  # the year
    next: int

    class Settings:
        name = "invoice_sequences"


class SimulatedCharge(Document):
    """What the simulated card processor charged, by idempotency key, as a real provider keeps
    it: a second charge with the same key answers this first result."""

    id: str  # the idempotency key
    chargeId: str
    token: str
    amountCents: int
    currency: str
    approved: bool
    reason: str | None = None
    refunded: bool = False
    createdAt: datetime = Field(default_factory=now)

    class Settings:
        name = "simulated_charges"


class MailRequest(Document, HasOutbox):
    """An e-mail an admin asked for through POST /api/facture; carries its email_notification."""

    id: NewEntityId
    requestedBy: str
    to: str
    subject: str
    content: str
    createdAt: datetime = Field(default_factory=now)

    class Settings:
        name = "mail_requests"
