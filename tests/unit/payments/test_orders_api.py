"""POST/GET /api/orders and POST /api/facture: prices from products, idempotency, access rules."""

import asyncio
import uuid

from functions.common import outbox
from functions.payments.models import MailRequest, Order
from tests.unit.payments.conftest import Customer
from tests.unit.payments.saga_steps import one, published


async def place(client, customer, card: str = "tok_visa", key: str | None = None, **extra):
    headers = customer.headers | ({"Idempotency-Key": key} if key else {})
    return await client.post("/api/orders", headers=headers, json={"paymentMethod": {"token": card}, **extra})


async def orders_of(customer) -> list[Order]:
    return await Order.find({"userId": customer.id}).to_list()


async def test_an_order_is_priced_by_products_never_by_the_client_or_the_cart(client, dapr, shop, customer):
    cafe, miel = shop.product("Café Orgánico de Altura", 1250), shop.product("Miel Pura de Abeja", 990)
    cart = shop.cart((cafe, 2), (miel, 1), unit_price=0.01)  # the cart shows a stale, wrong price

    response = await place(client, customer, items=[{"productId": cafe["id"], "quantity": 2, "price": 0.01}])

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    subtotal = 2 * 1250 + 990  # 3490; tax 19 % of it is 663.1 -> 663
    assert data == {"orderId": data["orderId"], "status": "pending", "total": 41.53, "totalCents": 4153, "currency": "USD"}
    assert cart.calls.last.request.headers["Authorization"] == customer.headers["Authorization"]
    # Every product of the order priced in one call to products, whatever the number of lines.
    [priced] = dapr.catalogue_route.calls
    assert priced.request.url.params["ids"] == f"{cafe['id']},{miel['id']}"

    [order] = await orders_of(customer)
    assert str(order.id) == data["orderId"]
    assert [(l.productId, l.name, l.unitPriceCents, l.quantity) for l in order.lines] == [
        (cafe["id"], "Café Orgánico de Altura", 1250, 2),
        (miel["id"], "Miel Pura de Abeja", 990, 1),
    ]
    assert (order.subtotalCents, order.taxRate, order.taxCents, order.totalCents) == (subtotal, 0.19, 663, 4153)
    assert [(h.status, h.reason, h.eventId) for h in order.history] == [
        ("pending", "Order placed", one(dapr, "order_created", data["orderId"])["id"])
    ]
    # Both events published; they stay on the order, awaiting the write of the step that answers
    # order_created, which takes them off (functions/common/outbox.py).
    assert [p.topic for p in order.outbox] == ["order_created", "cart_checkout"]
    assert outbox.awaiting_answer(Order, order.id) == [p.model_dump() for p in order.outbox]

    created = one(dapr, "order_created", data["orderId"])["data"]
    assert created["userId"] == customer.id and created["email"] == customer.email
    assert created["totalCents"] == 4153 and created["currency"] == "USD"
    assert [(l["productId"], l["unitPriceCents"], l["quantity"]) for l in created["lines"]] == [
        (cafe["id"], 1250, 2),
        (miel["id"], 990, 1),
    ]
    checkout = one(dapr, "cart_checkout", data["orderId"])
    assert checkout["data"]["userId"] == customer.id
    assert checkout["data"]["productIds"] == [cafe["id"], miel["id"]]
    assert checkout["data"]["cartUpdatedAt"].startswith("2026-01-01T10:00:00.123")


async def test_an_empty_cart_is_422_and_leaves_nothing(client, dapr, shop, customer):
    shop.cart()
    response = await place(client, customer)
    assert response.status_code == 422
    assert response.json() == {"message": "Your cart is empty"}
    assert await orders_of(customer) == []
    assert dapr.published == []


async def test_a_missing_or_invalid_card_token_is_422_before_anything_is_asked(client, dapr, shop, customer):
    cart = shop.cart((shop.product(), 1))
    for body in ({}, {"paymentMethod": {}}, {"paymentMethod": {"token": ""}}, {"paymentMethod": {"token": "4242424242424242"}},
                 {"paymentMethod": {"token": "tok_ with spaces"}}, {"paymentMethod": "tok_visa"}):
        response = await client.post("/api/orders", headers=customer.headers, json=body)
        assert response.status_code == 422, body
        assert response.json()["message"].startswith("Invalid request")
    assert not cart.called
    assert await orders_of(customer) == []
    assert dapr.published == []


async def test_no_token_is_401(client, dapr, shop):
    response = await client.post("/api/orders", json={"paymentMethod": {"token": "tok_visa"}})
    assert response.status_code == 401
    assert (await client.get("/api/orders")).status_code == 401


async def test_a_product_gone_from_products_is_409_and_products_down_is_503(client, dapr, shop, customer):
    gone = uuid.uuid4().hex[:24]  # not in products' catalogue: its answer leaves it out
    shop.cart((shop.product(), 1), ({"id": gone, "name": "Borrado", "price": 1.0}, 1))
    response = await place(client, customer)
    assert response.status_code == 409
    assert gone in response.json()["message"]

    dapr.catalogue_route.respond(503, json={"message": "unavailable"})
    shop.cart((shop.product(), 1))
    assert (await place(client, customer)).status_code == 503

    dapr.invoke("cart", "api/cart/items").respond(500)
    assert (await place(client, customer)).status_code == 503
    assert await orders_of(customer) == []
    assert dapr.published == []


async def test_the_same_idempotency_key_answers_the_same_order(client, dapr, shop, customer):
    cafe = shop.product()
    cart = shop.cart((cafe, 1))
    key = uuid.uuid4().hex

    first = await place(client, customer, key=key)
    assert first.status_code == 202
    shop.cart()  # checkout emptied the cart meanwhile: the replay must not read it as empty
    again = await place(client, customer, key=key)
    assert again.status_code == 200, again.text
    assert again.json()["data"] == first.json()["data"]
    assert cart.call_count == 1

    other_key = await place(client, customer, key=uuid.uuid4().hex)  # another key is another order
    assert other_key.status_code == 422  # ...of an empty cart now
    another_customer = Customer()
    shop.cart((cafe, 1))
    same_key_other_user = await place(client, another_customer, key=key)
    assert same_key_other_user.status_code == 202
    assert same_key_other_user.json()["data"]["orderId"] != first.json()["data"]["orderId"]

    assert len(await orders_of(customer)) == 1
    assert len(published(dapr, "order_created", first.json()["data"]["orderId"])) == 1


async def test_two_concurrent_requests_with_one_key_make_one_order(client, dapr, shop, customer):
    shop.cart((shop.product(), 2))
    key = uuid.uuid4().hex
    responses = await asyncio.gather(*(place(client, customer, key=key) for _ in range(4)))
    assert {r.status_code for r in responses} <= {200, 202} and 202 in {r.status_code for r in responses}
    order_ids = {r.json()["data"]["orderId"] for r in responses}
    assert len(order_ids) == 1
    assert len(await orders_of(customer)) == 1
    [order_id] = order_ids
    assert len({e["id"] for e in published(dapr, "order_created", order_id)}) == 1
    assert len(dapr.events("order_created")) == len({e["id"] for e in dapr.events("order_created")})


async def test_a_bad_idempotency_key_is_422(client, dapr, shop, customer):
    shop.cart((shop.product(), 1))
    response = await place(client, customer, key="x" * 201)
    assert response.status_code == 422
    assert await orders_of(customer) == []


async def test_orders_are_listed_and_read_by_their_owner_only(client, dapr, shop, customer, admin):
    shop.cart((shop.product(), 1))
    mine = (await place(client, customer)).json()["data"]["orderId"]
    other = Customer()
    theirs = (await place(client, other)).json()["data"]["orderId"]

    listed = await client.get("/api/orders", headers=customer.headers)
    assert listed.status_code == 200
    assert [o["orderId"] for o in listed.json()["data"]] == [mine]

    read = await client.get(f"/api/orders/{mine}", headers=customer.headers)
    assert read.status_code == 200
    data = read.json()["data"]
    assert (data["status"], data["invoiceNumber"], data["total"]) == ("pending", None, 14.88)
    assert [h["status"] for h in data["history"]] == ["pending"]
    assert "paymentToken" not in data and "outbox" not in data

    for order_id in (theirs, "not-an-id", "0" * 24):
        response = await client.get(f"/api/orders/{order_id}", headers=customer.headers)
        assert response.status_code == 404, order_id
        assert response.json() == {"message": "Order not found"}
    as_admin = await client.get(f"/api/orders/{theirs}", headers=admin.headers)
    assert as_admin.status_code == 200 and as_admin.json()["data"]["userId"] == other.id


async def test_facture_is_for_admins_only(client, dapr, customer, admin):
    body = {"to": "luis@example.com", "subject": "Hola", "content": "Gracias por tu compra"}
    denied = await client.post("/api/facture", headers=customer.headers, json=body)
    assert denied.status_code == 403
    assert denied.json() == {"message": "Administrators only"}
    assert (await client.post("/api/facture", json=body)).status_code == 401
    assert dapr.events("email_notification") == []

    for bad in ({**body, "to": "no-es-un-correo"}, {**body, "subject": " "}, {"to": "luis@example.com"}):
        assert (await client.post("/api/facture", headers=admin.headers, json=bad)).status_code == 422, bad
    assert dapr.events("email_notification") == []

    sent = await client.post("/api/facture", headers=admin.headers, json=body)
    assert sent.status_code == 202, sent.text
    data = sent.json()["data"]
    assert (data["to"], data["subject"]) == ("luis@example.com", "Hola")
    [event] = dapr.events("email_notification")
    assert event["data"] == {
        "to": "luis@example.com",
        "subject": "Hola",
        "content": "Gracias por tu compra",
        "template": "message",
        "orderId": None,
        "invoiceNumber": None,
    }
    stored = await MailRequest.get(data["id"])
    assert stored.requestedBy == admin.id and stored.outbox == []


async def test_without_a_key_one_cart_ordered_four_times_at_once_is_one_order_and_one_charge(client, dapr, shop, customer):
    """A double click, or a client that retries: the cart's version is the key."""
    shop.cart((shop.product(), 2))
    responses = await asyncio.gather(*(place(client, customer) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202], [r.text for r in responses]
    assert len({r.json()["data"]["orderId"] for r in responses}) == 1
    [order] = await orders_of(customer)
    assert order.idempotencyKey.startswith("cart:")
    assert len({e["id"] for e in published(dapr, "order_created", str(order.id))}) == 1


async def test_without_a_key_a_changed_cart_is_a_new_order(client, dapr, shop, customer):
    cafe = shop.product()
    shop.cart((cafe, 1))
    first = await place(client, customer)
    shop.cart((cafe, 2))  # the customer changed the cart after the first order
    second = await place(client, customer)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["data"]["orderId"] != second.json()["data"]["orderId"]
