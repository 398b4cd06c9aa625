"""Every event that crosses a function boundary: topic, CloudEvent type and data model.

One visible place for the contracts (as eShopOnDapr's IntegrationEvents folders). Each event is
published as a CloudEvent whose `type` carries the contract version; `data` is the model below.
Money is integer cents, so no float rounding ever reaches a total.
"""

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from functions.common.ids import EntityId


class IntegrationEvent(BaseModel):
    # Consumers ignore fields they do not know: a producer may add fields without a new version.
    model_config = ConfigDict(extra="ignore")

    topic: ClassVar[str]
    # The one function that publishes it: the pub/sub Component's publishing scopes allow no other
    # (components/pubsub.yaml, tests/unit/test_topics.py), and staging it elsewhere is refused.
    publisher: ClassVar[str]
    version: ClassVar[int] = 1

    @classmethod
    def cloud_event_type(cls) -> str:
        return f"shop.{cls.topic}.v{cls.version}"


# --- users -------------------------------------------------------------------------------------
class UserRegistered(IntegrationEvent):
    """Published only after the user is saved; never carries the password or its hash."""

    topic = "welcome_flow"
    publisher = "users"
    userId: EntityId
    email: EmailStr
    name: str
    lastName: str
    # The link that verifies the address (users/verification.py); the welcome e-mail carries it.
    verificationUrl: str | None = None


class UserLoggedIn(IntegrationEvent):
    topic = "user_login"
    publisher = "users"
    userId: EntityId
    # Not EmailStr: the configured admin (default admin@shop.local) logs in too, and EmailStr
    # rejects special-use domains such as .local.
    email: str


class EmailVerified(IntegrationEvent):
    """The user followed the link of the welcome e-mail: mail may now go to the address."""

    topic = "email_verified"
    publisher = "users"
    email: EmailStr
    userId: EntityId


# --- products ----------------------------------------------------------------------------------
class ProductCreated(IntegrationEvent):
    topic = "product_created"
    publisher = "products"
    productId: EntityId
    name: str
    priceCents: int
    category: str
    stock: int


class StockReserved(IntegrationEvent):
    topic = "stock_reserved"
    publisher = "products"
    orderId: EntityId


class StockRejected(IntegrationEvent):
    topic = "stock_rejected"
    publisher = "products"
    orderId: EntityId
    reason: str
    productIds: list[EntityId] = Field(default_factory=list)


# --- cart --------------------------------------------------------------------------------------
class CartUpdated(IntegrationEvent):
    topic = "cart_updates"
    publisher = "cart"
    userId: EntityId
    productId: EntityId
    name: str
    quantity: int
    action: Literal["added", "changed"]


class CartItemRemoved(IntegrationEvent):
    topic = "cart_removals"
    publisher = "cart"
    userId: EntityId
    # The caller's e-mail from the token; not EmailStr, which rejects the configured admin's
    # special-use domain (admin@shop.local) as UserLoggedIn explains.
    email: str
    productId: EntityId
    productName: str
    quantity: int


# --- payments: orders, payments, invoices ------------------------------------------------------
class OrderLine(BaseModel):
    productId: EntityId
    name: str
    unitPriceCents: int = Field(ge=0)
    quantity: int = Field(ge=1)

    @property
    def line_total_cents(self) -> int:
        return self.unitPriceCents * self.quantity


class CartCheckedOut(IntegrationEvent):
    """The order was placed from this user's cart: the cart empties itself (no removal e-mails)."""

    topic = "cart_checkout"
    publisher = "payments"
    userId: EntityId
    orderId: EntityId
    productIds: list[EntityId]
    # The latest change among the lines the order was made from, on the cart's own clock (as
    # the cart reported it): a line changed after it (the customer added more while the order
    # was placed) is not what was ordered and stays in the cart. None: remove the lines as named.
    cartUpdatedAt: datetime | None = None


class OrderCreated(IntegrationEvent):
    topic = "order_created"
    publisher = "payments"
    orderId: EntityId
    userId: EntityId
    email: str  # from the token; not EmailStr (see CartItemRemoved)
    lines: list[OrderLine]
    totalCents: int
    currency: str


class PaymentProcessed(IntegrationEvent):
    topic = "payment_processed"
    publisher = "payments"
    orderId: EntityId
    paymentId: str
    amountCents: int


class PaymentFailed(IntegrationEvent):
    topic = "payment_failed"
    publisher = "payments"
    orderId: EntityId
    reason: str


class OrderCancelled(IntegrationEvent):
    """The order will not complete; products releases whatever stock it reserved for it."""

    topic = "order_cancelled"
    publisher = "payments"
    orderId: EntityId
    reason: str


class OrderAmounts(BaseModel):
    """An order's amounts, fixed when it is placed: the order, its invoice and
    invoice_processing carry this same block."""

    subtotalCents: int
    taxRate: float
    taxCents: int
    totalCents: int
    currency: str


class InvoiceProcessing(IntegrationEvent, OrderAmounts):
    topic = "invoice_processing"
    publisher = "payments"
    orderId: EntityId
    invoiceNumber: str
    userId: EntityId
    email: str  # from the token; not EmailStr (see CartItemRemoved)
    lines: list[OrderLine]


class EmailRequested(IntegrationEvent):
    """An e-mail an admin wrote (POST /api/facture), for notifications to send as it is. (The
    invoice e-mail is rendered by notifications from invoice_processing.)"""

    topic = "email_notification"
    publisher = "payments"
    # Not EmailStr (see CartItemRemoved); POST /api/facture validates the addresses it accepts.
    to: str
    subject: str
    content: str
    # v1 also carried invoice e-mails ("invoice", with orderId and invoiceNumber); they are sent as
    # plain messages if one still arrives.
    template: Literal["invoice", "message"] = "message"
    orderId: EntityId | None = None
    invoiceNumber: str | None = None


ALL_EVENTS: tuple[type[IntegrationEvent], ...] = (
    UserRegistered,
    UserLoggedIn,
    ProductCreated,
    StockReserved,
    StockRejected,
    CartUpdated,
    CartItemRemoved,
    CartCheckedOut,
    OrderCreated,
    PaymentProcessed,
    PaymentFailed,
    OrderCancelled,
    InvoiceProcessing,
    EmailRequested,
)
