"""The cart's HTTP API: prices from products, one line per product, events staged with changes."""

import asyncio

from functions.cart import routes as cart_routes
from functions.cart.models import Cart, CartLine
from functions.common.clock import now
from tests.unit.cart.conftest import Shopper, products_down, unknown_product


def for_user(dapr, topic: str, user_id: str) -> list[dict]:
    return [e for e in dapr.events(topic) if e["data"]["userId"] == user_id]


async def test_an_empty_cart_reads_as_empty_and_reading_publishes_nothing(client, dapr, shopper):
    response = await client.get("/api/cart/items", headers=shopper.headers)
    assert response.status_code == 200
    assert response.json()["data"] == {"items": [], "total": 0.0, "totalCents": 0}
    assert dapr.published == []
    assert await Cart.get(shopper.id) is None  # reading creates nothing either


async def test_name_and_price_come_from_products_never_from_the_client(client, dapr, shopper, catalogue):
    product = catalogue("Miel Pura de Abeja", 990)
    response = await client.post(
        "/api/cart/items",
        headers=shopper.headers,
        json={"productId": product["id"], "quantity": 2, "price": 0.01, "name": "Gratis"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["message"]
    [item] = body["data"]["items"]
    assert (item["name"], item["unitPrice"], item["unitPriceCents"]) == ("Miel Pura de Abeja", 9.9, 990)
    assert (item["quantity"], item["lineTotal"], item["lineTotalCents"]) == (2, 19.8, 1980)
    assert (body["data"]["total"], body["data"]["totalCents"]) == (19.8, 1980)

    [event] = for_user(dapr, "cart_updates", shopper.id)
    assert event["type"] == "shop.cart_updates.v1"
    assert event["data"] == {
        "userId": shopper.id,
        "productId": product["id"],
        "name": "Miel Pura de Abeja",
        "quantity": 2,
        "action": "added",
    }
    assert (await Cart.get(shopper.id)).outbox == []  # relayed


async def test_adding_a_product_again_adds_to_its_line(client, dapr, shopper, catalogue):
    cafe, miel = catalogue("Café", 1250), catalogue("Miel", 990)
    for product, quantity in ((cafe, 1), (miel, 2), (cafe, 3)):
        response = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": quantity})
        assert response.status_code == 201, response.text

    items = (await client.get("/api/cart/items", headers=shopper.headers)).json()["data"]
    assert [(i["name"], i["quantity"]) for i in items["items"]] == [("Café", 4), ("Miel", 2)]  # in order added
    assert items["totalCents"] == 4 * 1250 + 2 * 990 and items["total"] == 69.8
    assert [e["data"]["quantity"] for e in for_user(dapr, "cart_updates", shopper.id)] == [1, 2, 4]


async def test_an_unknown_product_is_404_and_leaves_nothing(client, dapr, shopper):
    for product_id in (unknown_product(dapr), "../users/me", "not a product id"):
        response = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product_id, "quantity": 1})
        assert response.status_code == 404, product_id
        assert response.json() == {"message": "Product not found"}
    assert await Cart.get(shopper.id) is None
    assert dapr.published == []


async def test_products_unreachable_is_503_and_leaves_nothing(client, dapr, shopper):
    response = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": products_down(dapr), "quantity": 1})
    assert response.status_code == 503
    assert response.json()["message"]
    assert await Cart.get(shopper.id) is None
    assert dapr.published == []


async def test_bad_input_is_422_and_no_token_is_401(client, dapr, shopper, catalogue):
    product = catalogue()
    for body in (
        {"productId": product["id"], "quantity": 0},
        {"productId": product["id"], "quantity": -1},
        {"productId": product["id"], "quantity": "2"},
        {"productId": product["id"], "quantity": 1.5},
        {"productId": product["id"]},
        {"quantity": 1},
        {"productId": "", "quantity": 1},
    ):
        response = await client.post("/api/cart/items", headers=shopper.headers, json=body)
        assert response.status_code == 422, body
        assert response.json()["message"].startswith("Invalid request")
    no_token = await client.post("/api/cart/items", json={"productId": product["id"], "quantity": 1})
    assert no_token.status_code == 401
    assert (await client.get("/api/cart/items")).status_code == 401
    assert await Cart.get(shopper.id) is None
    assert dapr.published == []


async def test_a_line_holds_at_most_a_thousand_units(client, dapr, shopper, catalogue):
    product = catalogue()
    ok = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": 1000})
    assert ok.status_code == 201
    too_many = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": 1})
    assert too_many.status_code == 422
    assert (await Cart.get(shopper.id)).lines[product["id"]].quantity == 1000
    assert len(for_user(dapr, "cart_updates", shopper.id)) == 1


async def test_patch_sets_the_quantity(client, dapr, shopper, catalogue):
    product = catalogue("Jabón Artesanal de Lavanda", 675)
    await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": 5})
    response = await client.patch(f"/api/cart/items/{product['id']}", headers=shopper.headers, json={"quantity": 2})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]["items"]
    assert (item["quantity"], item["lineTotal"]) == (2, 13.5)
    changed = [e["data"] for e in for_user(dapr, "cart_updates", shopper.id) if e["data"]["action"] == "changed"]
    assert changed == [
        {"userId": shopper.id, "productId": product["id"], "name": "Jabón Artesanal de Lavanda", "quantity": 2, "action": "changed"}
    ]


async def test_patch_of_a_product_not_in_the_cart_is_404_and_bad_quantity_422(client, dapr, shopper, catalogue):
    product = catalogue()
    missing = await client.patch(f"/api/cart/items/{product['id']}", headers=shopper.headers, json={"quantity": 2})
    assert missing.status_code == 404
    await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": 1})
    for body in ({"quantity": 0}, {}, {"quantity": 1001}):
        response = await client.patch(f"/api/cart/items/{product['id']}", headers=shopper.headers, json=body)
        assert response.status_code == 422, body
    assert (await Cart.get(shopper.id)).lines[product["id"]].quantity == 1
    assert [e["data"]["action"] for e in for_user(dapr, "cart_updates", shopper.id)] == ["added"]


async def test_delete_removes_the_line_and_announces_it_with_name_and_email(client, dapr, shopper, catalogue):
    cafe, miel = catalogue("Café Orgánico de Altura", 1250), catalogue("Miel Pura de Abeja", 990)
    for product in (cafe, miel):
        await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": 3})

    response = await client.delete(f"/api/cart/items/{cafe['id']}", headers=shopper.headers)
    assert response.status_code == 200, response.text
    assert [i["productId"] for i in response.json()["data"]["items"]] == [miel["id"]]
    [removal] = for_user(dapr, "cart_removals", shopper.id)
    assert removal["data"] == {
        "userId": shopper.id,
        "email": shopper.email,
        "productId": cafe["id"],
        "productName": "Café Orgánico de Altura",
        "quantity": 3,
    }

    again = await client.delete(f"/api/cart/items/{cafe['id']}", headers=shopper.headers)
    assert again.status_code == 404
    assert again.json() == {"message": "This product is not in your cart"}
    assert len(for_user(dapr, "cart_removals", shopper.id)) == 1


async def test_the_configured_admin_can_use_a_cart_too(client, dapr, catalogue):
    """admin@shop.local has a special-use domain that e-mail validation rejects: still no 500."""
    admin = Shopper(role="admin", email="admin@shop.local")
    product = catalogue()
    await client.post("/api/cart/items", headers=admin.headers, json={"productId": product["id"], "quantity": 1})
    response = await client.delete(f"/api/cart/items/{product['id']}", headers=admin.headers)
    assert response.status_code == 200, response.text
    [removal] = for_user(dapr, "cart_removals", admin.id)
    assert removal["data"]["email"] == "admin@shop.local"


async def test_carts_are_per_user(client, dapr, catalogue):
    ana, luis = Shopper(), Shopper()
    product = catalogue()
    await client.post("/api/cart/items", headers=ana.headers, json={"productId": product["id"], "quantity": 1})
    assert (await client.get("/api/cart/items", headers=luis.headers)).json()["data"]["items"] == []
    assert (await client.delete(f"/api/cart/items/{product['id']}", headers=luis.headers)).status_code == 404
    assert len((await client.get("/api/cart/items", headers=ana.headers)).json()["data"]["items"]) == 1


async def test_concurrent_first_adds_make_one_cart_and_lose_no_line(client, dapr, shopper, catalogue):
    products = [catalogue(f"Producto {n}", 100 + n) for n in range(8)]
    responses = await asyncio.gather(
        *(client.post("/api/cart/items", headers=shopper.headers, json={"productId": p["id"], "quantity": 1}) for p in products),
        *(client.post("/api/cart/items", headers=shopper.headers, json={"productId": products[0]["id"], "quantity": 1}) for _ in range(4)),
    )
    assert [r.status_code for r in responses] == [201] * 12
    assert await Cart.find({"userId": shopper.id}).count() == 1
    cart = await Cart.get(shopper.id)
    assert sorted(cart.lines) == sorted(p["id"] for p in products)
    assert cart.lines[products[0]["id"]].quantity == 5
    assert cart.outbox == []
    # Concurrent flushes of one cart may publish an event more than once (at least once, same
    # CloudEvent id, which consumers skip): count the distinct events.
    assert len({e["id"] for e in for_user(dapr, "cart_updates", shopper.id)}) == 12


async def test_the_line_limit_holds_when_another_add_lands_between_the_count_and_the_write(
    client, dapr, shopper, catalogue, monkeypatch
):
    # Another replica adds a product after this request counted the lines (a write of its own,
    # outside this process's lock): this request's write must see it.
    monkeypatch.setattr(cart_routes, "MAX_LINES", 2)
    first, third = catalogue("Carrera 1"), catalogue("Carrera 3")
    assert (await client.post("/api/cart/items", headers=shopper.headers, json={"productId": first["id"], "quantity": 1})).status_code == 201
    read = Cart.get

    async def counted_then_changed(user_id, *args, **kwargs):
        cart = await read(user_id, *args, **kwargs)
        monkeypatch.setattr(Cart, "get", read)  # once
        at = now()
        other = CartLine(productId="b" * 24, name="Carrera 2", unitPriceCents=100, quantity=1, addedAt=at, updatedAt=at)
        await Cart.get_pymongo_collection().update_one(
            {"_id": user_id}, {"$set": {f"lines.{other.productId}": other.model_dump(), "updatedAt": at}}
        )
        return cart

    monkeypatch.setattr(Cart, "get", counted_then_changed)
    late = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": third["id"], "quantity": 1})
    assert late.status_code == 422, late.text
    assert len((await Cart.get(shopper.id)).lines) == 2


async def test_a_cart_holds_at_most_a_hundred_products(client, dapr, shopper, catalogue, monkeypatch):
    monkeypatch.setattr(cart_routes, "MAX_LINES", 3)  # the rule, without 100 requests
    products = [catalogue(f"Producto {n}") for n in range(4)]
    for product in products[:3]:
        assert (await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": 1})).status_code == 201
    fourth = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": products[3]["id"], "quantity": 1})
    assert fourth.status_code == 422
    assert "3 different products" in fourth.json()["message"]
    more_of_one = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": products[0]["id"], "quantity": 1})
    assert more_of_one.status_code == 201
    assert len((await Cart.get(shopper.id)).lines) == 3
