from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response, status
from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.auth import AdminUser, CurrentUser, Principal
from functions.common.contracts import CartCheckedOut, EmailRequested, OrderCreated
from functions.common.ids import new_id
from functions.common.web import Envelope, PageLimit, PageOffset
from functions.payments import APP_ID
from functions.payments.models import MailRequest, Order, Transition
from functions.payments.pricing import amounts, cart_version, latest_change, price_lines, read_cart
from functions.payments.saga import find_order
from functions.payments.schemas import FactureRequest, IdempotencyKey, MailQueued, OrderOut, OrderPlaced, PlaceOrder
from functions.payments.settings import get_settings

router = APIRouter(prefix="/api", tags=["orders"])

ORDER_NOT_FOUND = "Order not found"


async def _order_for_key(user_id: str, key: str) -> Order | None:
    return await Order.find_one({"userId": user_id, "idempotencyKey": key})


def _replayed(order: Order, response: Response) -> Envelope[OrderPlaced]:
    response.status_code = status.HTTP_200_OK
    return Envelope(message="Order already placed with this Idempotency-Key", data=OrderPlaced.of(order))


@router.post("/orders", status_code=status.HTTP_202_ACCEPTED, summary="Place an order from the caller's cart")
async def place_order(
    body: PlaceOrder,
    principal: CurrentUser,
    response: Response,
    idempotency_key: Annotated[
        IdempotencyKey | None,
        Header(alias="Idempotency-Key", description="Sent again (same caller, same key): the same order, not a new one"),
    ] = None,
) -> Envelope[OrderPlaced]:
    """202: the order is pending; the saga reserves stock, charges the card and invoices it.
    The same Idempotency-Key again answers 200 with the same order; without one, the key is the
    cart's version, so the same cart ordered twice (a double click, a retry) is one order."""
    if idempotency_key is not None and (placed := await _order_for_key(principal.id, idempotency_key)):
        return _replayed(placed, response)

    items = await read_cart(principal.token)
    if not items:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Your cart is empty")
    # Without a header the key is the cart's version; the same cart ordered again meets the
    # unique (userId, idempotencyKey) index at the insert below, so the common case, a new
    # order, pays no look-up first.
    key = idempotency_key or cart_version(items)
    lines = await price_lines(items)
    settings = get_settings()
    totals = amounts(lines, settings.tax_rate, settings.currency)

    order_id = new_id()
    created = OrderCreated(
        orderId=order_id,
        userId=principal.id,
        email=principal.email,
        lines=[line.contract() for line in lines],
        totalCents=totals.totalCents,
        currency=totals.currency,
    )
    order = Order(
        id=order_id,
        userId=principal.id,
        email=principal.email,
        lines=lines,
        **totals.amounts(),
        paymentToken=body.paymentMethod.token,
        idempotencyKey=key,
    )
    # The order, its first history step and both events in one insert: if it fails, nothing
    # is published and no record is left.
    announced = order.stage(created, source=APP_ID, key=order_id)
    order.stage(
        CartCheckedOut(
            userId=principal.id,
            orderId=order_id,
            productIds=[line.productId for line in lines],
            cartUpdatedAt=latest_change(items),
        ),
        source=APP_ID,
        key=principal.id,
    )
    order.history.append(Transition(status="pending", at=order.createdAt, reason="Order placed", eventId=announced.id))
    try:
        # order_created is answered (stock_reserved or stock_rejected), and the step that
        # consumes the answer writes the order again: that write takes both events off.
        await store.insert(order, answered=True)
    except DuplicateKeyError:
        # A concurrent request with the same key (or the same cart) inserted first: its order.
        if placed := await _order_for_key(principal.id, key):
            return _replayed(placed, response)
        raise
    return Envelope(message="Order placed; payment is being processed", data=OrderPlaced.of(order))


@router.get("/orders", summary="The caller's own orders, newest first")
async def list_orders(
    principal: CurrentUser,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> Envelope[list[OrderOut]]:
    orders = (
        await Order.find({"userId": principal.id}).sort([("createdAt", -1), ("_id", -1)]).skip(offset).limit(limit).to_list()
    )
    message = f"{len(orders)} order(s)" if orders else "No orders"
    return Envelope(message=message, data=[OrderOut.of(order) for order in orders])


def _may_read(principal: Principal, order: Order) -> bool:
    return principal.is_admin or order.userId == principal.id


@router.get("/orders/{order_id}", summary="One order: status, lines, totals, history, invoice (own, or any for admins)")
async def get_order(order_id: str, principal: CurrentUser) -> Envelope[OrderOut]:
    order = await find_order(order_id)
    # Someone else's order is a 404 as well: its existence is not the caller's business.
    if order is None or not _may_read(principal, order):
        raise HTTPException(status.HTTP_404_NOT_FOUND, ORDER_NOT_FOUND)
    return Envelope(message=f"Order {order.status}", data=OrderOut.of(order))


@router.post(
    "/facture", status_code=status.HTTP_202_ACCEPTED, tags=["mail"], summary="E-mail anyone (admins only)"
)
async def send_facture(body: FactureRequest, admin: AdminUser) -> Envelope[MailQueued]:
    mail = MailRequest(requestedBy=admin.id, to=body.to, subject=body.subject, content=body.content)
    mail.stage(
        EmailRequested(to=body.to, subject=body.subject, content=body.content, template="message"),
        source=APP_ID,
        key=mail.id,
    )
    await store.insert(mail)
    return Envelope(
        message="E-mail queued",
        data=MailQueued(id=mail.id, to=mail.to, subject=mail.subject, createdAt=mail.createdAt),
    )
