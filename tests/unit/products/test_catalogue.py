"""The catalogue over HTTP: reading, filtering, paging, and admin-only changes."""

import asyncio
import uuid

import pytest

from functions.common.contracts import OrderLine
from functions.common.ids import new_id
from functions.products import stock
from functions.products.catalogue import CATALOGUE, SEED_ID, seed_catalogue
from functions.products.models import CatalogueSeed, Product

SEEDED = {
    "Café Orgánico de Altura": (12.5, 1250, "Bebidas"),
    "Cuadro Pintado a Mano": (45.0, 4500, "Arte"),
    "Jabón Artesanal de Lavanda": (6.75, 675, "Cuidado Personal"),
    "Miel Pura de Abeja": (9.9, 990, "Alimentos"),
    "Pulsera de Cuero Trenzado": (15.0, 1500, "Accesorios"),
}


def new_product(**overrides) -> dict:
    tag = uuid.uuid4().hex[:8]
    return {
        "name": f"Vela Aromática {tag}",
        "description": f"Cera de soja con esencia de vainilla ({tag})",
        "price": 19.99,
        "category": f"Hogar {tag}",
        "stock": 7,
        **overrides,
    }


async def test_the_original_five_products_are_seeded_with_stock(client):
    response = await client.get("/api/products", params={"limit": 100})
    assert response.status_code == 200
    by_name = {p["name"]: p for p in response.json()["data"]}
    for name, (price, price_cents, category) in SEEDED.items():
        product = by_name[name]
        assert (product["price"], product["priceCents"], product["category"]) == (price, price_cents, category)
        assert product["stock"] > 0 and product["description"]


async def test_one_product_has_the_documented_shape(client):
    cafe = CATALOGUE[0]
    response = await client.get(f"/api/products/{cafe.id}")
    assert response.status_code == 200
    body = response.json()
    assert body["message"]
    product = body["data"]
    assert set(product) == {
        "id", "name", "description", "price", "priceCents", "category", "stock", "createdAt", "updatedAt"
    }  # fmt: skip
    assert product["id"] == cafe.id and product["name"] == "Café Orgánico de Altura"
    assert product["price"] == 12.5 and product["priceCents"] == 1250
    assert isinstance(product["stock"], int)


async def test_seeding_is_idempotent_across_restarts_and_concurrent_replicas(client, dapr):
    ids = [item.id for item in CATALOGUE]
    # Start from scratch, then let three "replicas" seed at once and one restart after.
    await Product.find({"_id": {"$in": [i for i in ids]}}).delete()
    await CatalogueSeed.find(CatalogueSeed.id == SEED_ID).delete()
    await asyncio.gather(seed_catalogue(), seed_catalogue(), seed_catalogue())
    await seed_catalogue()

    for item in CATALOGUE:
        assert await Product.find({"name": item.name}).count() == 1, item.name
        stored = await Product.get(item.id)
        assert (stored.priceCents, stored.category, stored.stock) == (item.priceCents, item.category, item.stock)
    created = dapr.events("product_created")
    assert sorted(e["data"]["productId"] for e in created) == sorted(ids)
    assert await CatalogueSeed.get(SEED_ID) is not None


async def test_a_deleted_seed_product_is_not_seeded_again(client, admin):
    honey = CATALOGUE[3]
    assert (await client.delete(f"/api/products/{honey.id}", headers=admin)).status_code == 200
    await seed_catalogue()  # a restart
    assert (await client.get(f"/api/products/{honey.id}")).status_code == 404

    # Put it back for the other tests: a fresh seed (no marker) restores what is missing.
    await CatalogueSeed.find(CatalogueSeed.id == SEED_ID).delete()
    await seed_catalogue()
    assert (await client.get(f"/api/products/{honey.id}")).status_code == 200


async def test_filter_by_category_and_text_case_insensitively(client, admin):
    first = new_product(name="Taza de Barro Negro")
    category = first["category"]
    second = new_product(name="Plato Hondo", description="Barro cocido, hecho a mano", category=category)
    other = new_product(name="Taza de Porcelana")
    for body in (first, second, other):
        assert (await client.post("/api/products", json=body, headers=admin)).status_code == 201

    in_category = (await client.get("/api/products", params={"category": category.upper()})).json()
    assert in_category["total"] == 2
    assert sorted(p["name"] for p in in_category["data"]) == ["Plato Hondo", "Taza de Barro Negro"]

    clay = (await client.get("/api/products", params={"category": category, "q": "BARRO"})).json()
    assert clay["total"] == 2  # name of one, description of the other
    cups = (await client.get("/api/products", params={"category": category, "q": "taza"})).json()
    assert [p["name"] for p in cups["data"]] == ["Taza de Barro Negro"]


async def test_an_empty_result_is_200_with_an_empty_list(client):
    for params in ({"category": f"nada-{uuid.uuid4().hex}"}, {"q": "(unclosed [regex"}, {"q": ".*", "category": "x"}):
        response = await client.get("/api/products", params=params)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == [] and response.json()["total"] == 0


async def test_limit_and_offset_page_through_the_matches(client, admin):
    category = f"Paginada {uuid.uuid4().hex[:8]}"
    names = [f"Artículo {i:02d}" for i in range(5)]
    for name in names:
        await client.post("/api/products", json=new_product(name=name, category=category), headers=admin)

    pages = []
    for offset in (0, 2, 4):
        body = (await client.get("/api/products", params={"category": category, "limit": 2, "offset": offset})).json()
        assert body["total"] == 5
        pages.append([p["name"] for p in body["data"]])
    assert pages == [names[0:2], names[2:4], names[4:5]]
    default = (await client.get("/api/products", params={"category": category, "offset": 10})).json()
    assert default["data"] == [] and default["total"] == 5


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}])
async def test_bad_paging_is_422(client, params):
    response = await client.get("/api/products", params=params)
    assert response.status_code == 422
    assert next(iter(params)) in response.json()["message"]


@pytest.mark.parametrize("product_id", ["not-an-id", "0" * 24, "5eed0000000000000000000z", "%20"])
async def test_an_unknown_or_malformed_id_is_404(client, product_id):
    response = await client.get(f"/api/products/{product_id}")
    assert response.status_code == 404
    assert response.json() == {"message": "Product not found"}


async def test_an_admin_creates_a_product_and_it_is_announced(client, dapr, admin):
    body = new_product(price=19.99)
    response = await client.post("/api/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    product = response.json()["data"]
    assert product["price"] == 19.99 and product["priceCents"] == 1999 and product["stock"] == 7

    assert (await client.get(f"/api/products/{product['id']}")).json()["data"] == product
    [event] = [e for e in dapr.events("product_created") if e["data"]["productId"] == product["id"]]
    assert event["data"] == {
        "productId": product["id"], "name": body["name"], "priceCents": 1999, "category": body["category"], "stock": 7
    }  # fmt: skip
    assert (await Product.get(product["id"])).outbox == []


async def test_only_admins_change_the_catalogue(client, dapr, customer, admin):
    body = new_product()
    cafe = CATALOGUE[0].id
    attempts = {
        "anonymous": (None, 401),
        "customer": (customer, 403),
    }
    for who, (headers, code) in attempts.items():
        created = await client.post("/api/products", json=body, headers=headers)
        patched = await client.patch(f"/api/products/{cafe}", json={"price": 0.01}, headers=headers)
        deleted = await client.delete(f"/api/products/{cafe}", headers=headers)
        for response in (created, patched, deleted):
            assert response.status_code == code, (who, response.text)
            assert response.json()["message"]
    assert await Product.find({"name": body["name"]}).count() == 0
    assert (await Product.get(cafe)).priceCents == 1250
    assert dapr.events("product_created") == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": 10.999}, "price"),
        ({"price": 0}, "price"),
        ({"price": -5}, "price"),
        ({"stock": -1}, "stock"),
        ({"stock": 1.5}, "stock"),
        ({"name": ""}, "name"),
        ({"category": None}, "category"),
    ],
)
async def test_invalid_products_are_422_and_leave_nothing(client, dapr, admin, change, field):
    body = new_product(**change)
    response = await client.post("/api/products", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]
    assert await Product.find({"description": body["description"]}).count() == 0
    assert dapr.events("product_created") == []


async def test_an_admin_updates_only_the_given_fields(client, admin):
    created = (await client.post("/api/products", json=new_product(), headers=admin)).json()["data"]
    response = await client.patch(
        f"/api/products/{created['id']}", json={"price": 21.5, "stock": 3}, headers=admin
    )
    assert response.status_code == 200, response.text
    updated = response.json()["data"]
    assert (updated["price"], updated["priceCents"], updated["stock"]) == (21.5, 2150, 3)
    assert (updated["name"], updated["category"]) == (created["name"], created["category"])
    assert updated["updatedAt"] > created["updatedAt"]
    assert (await client.get(f"/api/products/{created['id']}")).json()["data"] == updated


@pytest.mark.parametrize("body", [{}, {"price": None}, {"stock": -2}, {"price": "cheap"}])
async def test_an_update_with_nothing_valid_is_422(client, admin, body):
    response = await client.patch(f"/api/products/{CATALOGUE[0].id}", json=body, headers=admin)
    assert response.status_code == 422 and response.json()["message"]
    assert (await Product.get(CATALOGUE[0].id)).priceCents == 1250


async def test_stock_delta_adds_units_atomically_beside_reservations(client, admin, make_product):
    lamp = await make_product(10)
    reserving = [stock.reserve(new_id(), [OrderLine(productId=str(lamp.id), name=lamp.name,
                                                                   unitPriceCents=1000, quantity=1)]) for _ in range(4)]
    restock = [client.patch(f"/api/products/{lamp.id}", json={"stockDelta": 5}, headers=admin) for _ in range(3)]
    results = await asyncio.gather(*restock, *reserving)

    assert all(r.status_code == 200 for r in results[:3])
    stored = await Product.get(lamp.id)
    assert (stored.stock, len(stored.holds)) == (10 + 15 - 4, 4)


async def test_stock_delta_never_takes_the_stock_below_zero(client, admin, make_product):
    lamp = await make_product(3)
    response = await client.patch(f"/api/products/{lamp.id}", json={"stockDelta": -4, "name": "Otra"}, headers=admin)
    assert response.status_code == 409 and response.json()["message"]
    assert ((await Product.get(lamp.id)).stock, (await Product.get(lamp.id)).name) == (3, lamp.name)
    assert (await client.patch(f"/api/products/{lamp.id}", json={"stockDelta": -3}, headers=admin)).json()["data"]["stock"] == 0
    both = await client.patch(f"/api/products/{lamp.id}", json={"stockDelta": 1, "stock": 5}, headers=admin)
    assert both.status_code == 422


async def test_a_stock_count_against_a_stale_version_is_412_and_changes_nothing(client, admin, make_product):
    lamp = await make_product(10)
    read = await client.get(f"/api/products/{lamp.id}")
    version = read.headers["ETag"]
    # An order takes a unit after the admin read the product.
    await stock.reserve(new_id(), [OrderLine(productId=str(lamp.id), name=lamp.name,
                                                               unitPriceCents=1000, quantity=1)])

    stale = await client.patch(f"/api/products/{lamp.id}", json={"stock": 20}, headers=admin | {"If-Match": version})
    assert stale.status_code == 412 and "read it again" in stale.json()["message"]
    assert (await Product.get(lamp.id)).stock == 9
    malformed = await client.patch(f"/api/products/{lamp.id}", json={"stock": 20}, headers=admin | {"If-Match": "*x"})
    assert malformed.status_code == 412

    fresh = (await client.get(f"/api/products/{lamp.id}")).headers["ETag"]
    counted = await client.patch(f"/api/products/{lamp.id}", json={"stock": 20}, headers=admin | {"If-Match": fresh})
    assert counted.status_code == 200 and counted.json()["data"]["stock"] == 20
    assert counted.headers["ETag"] != fresh


async def test_updating_or_deleting_a_missing_product_is_404(client, admin):
    for product_id in ("0" * 24, "nope"):
        assert (await client.patch(f"/api/products/{product_id}", json={"stock": 1}, headers=admin)).status_code == 404
        assert (await client.delete(f"/api/products/{product_id}", headers=admin)).status_code == 404


async def test_an_admin_deletes_a_product(client, admin):
    created = (await client.post("/api/products", json=new_product(), headers=admin)).json()["data"]
    response = await client.delete(f"/api/products/{created['id']}", headers=admin)
    assert response.status_code == 200 and response.json()["data"]["id"] == created["id"]
    assert (await client.get(f"/api/products/{created['id']}")).status_code == 404
    assert (await client.delete(f"/api/products/{created['id']}", headers=admin)).status_code == 404


async def test_health_readiness_docs_and_subscriptions(client):
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    assert {"/api/products", "/api/products/{product_id}"} <= set((await client.get("/openapi.json")).json()["paths"])
    subscribed = {s["topic"]: s.get("deadLetterTopic") for s in (await client.get("/dapr/subscribe")).json()}
    topics = ("order_created", "order_cancelled", "payment_processed")
    # Each topic with its dead letter, and each dead letter parked by products itself.
    assert subscribed == {t: f"dlq_products_{t}" for t in topics} | {f"dlq_products_{t}": None for t in topics}


@pytest.mark.parametrize("params", [{"q": "caf\x00"}, {"category": "Bebidas\x00"}, {"q": "a\nb"}])
async def test_a_filter_with_control_characters_is_422_before_the_database(client, params):
    response = await client.get("/api/products", params=params)
    assert response.status_code == 422 and "control characters" in response.json()["message"]


async def test_an_id_spelled_in_upper_case_names_no_product(client):
    listed = (await client.get("/api/products")).json()["data"]
    product_id = listed[0]["id"]
    assert (await client.get(f"/api/products/{product_id}")).status_code == 200
    upper = await client.get(f"/api/products/{product_id.upper()}")
    assert upper.status_code == 404 and upper.json()["message"] == "Product not found"


async def test_several_products_are_read_by_id_in_one_call_in_the_order_asked(client, admin):
    made = [(await client.post("/api/products", json=new_product(), headers=admin)).json()["data"] for _ in range(3)]
    unknown, malformed = new_id(), "NOT-AN-ID"
    ids = [made[2]["id"], unknown, made[0]["id"], malformed, made[2]["id"], made[1]["id"]]

    response = await client.get("/api/products", params={"ids": ",".join(ids)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["id"] for p in body["data"]] == [made[2]["id"], made[0]["id"], made[1]["id"]]
    assert body["data"][1] == made[0] and body["total"] == 3


async def test_ids_alone_or_refused_with_a_message(client):
    cafe = CATALOGUE[0].id
    for params in ({"ids": cafe, "q": "café"}, {"ids": cafe, "category": "Bebidas"},
                   {"ids": ",".join(new_id() for _ in range(101))}):
        response = await client.get("/api/products", params=params)
        assert response.status_code == 400, params
        assert response.json()["message"]
    assert (await client.get("/api/products", params={"ids": ""})).json() == {
        "message": "No products match", "data": [], "total": 0}
