"""The shop issue's flows, black-box on the real stack: register, cart, the order saga, e-mails,
redelivered events and access rules."""

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.shop import admin_token, api, bearer, emails, eventually, kafka_events, new_customer, sidecar

FINAL = {"invoiced", "rejected", "payment_failed"}


def create_product(stock: int, price: float = 20.0) -> dict:
    """A product of this test's own, so stock figures do not depend on other tests or runs."""
    with api("products") as products:
        response = products.post(
            "/api/products",
            headers=bearer(admin_token()),
            json={
                "name": f"Producto de prueba {uuid.uuid4().hex[:8]}",
                "description": "Creado por las pruebas de extremo a extremo",
                "price": price,
                "category": "Pruebas",
                "stock": stock,
            },
        )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def stock_of(product_id: str) -> int:
    with api("products") as products:
        return products.get(f"/api/products/{product_id}").json()["data"]["stock"]


def cart_items(token: str) -> list[dict]:
    with api("cart") as cart:
        response = cart.get("/api/cart/items", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["data"]["items"]


def add_to_cart(token: str, product_id: str, quantity: int) -> None:
    with api("cart") as cart:
        response = cart.post("/api/cart/items", headers=bearer(token), json={"productId": product_id, "quantity": quantity})
    assert response.status_code == 201, response.text


def place_order(token: str, card: str, key: str | None = None) -> dict:
    headers = bearer(token) | ({"Idempotency-Key": key} if key else {})
    with api("payments") as payments:
        response = payments.post("/api/orders", headers=headers, json={"paymentMethod": {"token": card}})
    assert response.status_code in (200, 202), response.text
    return response.json()["data"]


def order(token: str, order_id: str) -> dict:
    with api("payments") as payments:
        response = payments.get(f"/api/orders/{order_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["data"]


def settled(token: str, order_id: str) -> dict:
    return eventually(lambda: (o := order(token, order_id))["status"] in FINAL and o, f"order {order_id} to settle", 90)


def ordered(token: str, card: str, *, stock: int, quantity: int) -> tuple[dict, dict]:
    """A product of its own with `stock`, `quantity` of it ordered with `card`: the product and
    the settled order."""
    product = create_product(stock=stock)
    add_to_cart(token, product["id"], quantity)
    return product, settled(token, place_order(token, card)["orderId"])


def republish(via: str, topic: str, cloud_event: dict) -> None:
    """Deliver an already-published event again, same id, through a real sidecar and Kafka."""
    with sidecar(via) as dapr:
        response = dapr.post(
            f"/v1.0/publish/pubsub/{topic}",
            json=cloud_event,
            headers={"Content-Type": "application/cloudevents+json"},
        )
    assert response.status_code == 204, response.text


@pytest.fixture(scope="module")
def customer() -> dict:
    return new_customer()


def test_login_answers_one_message_for_unknown_email_and_wrong_password(customer: dict) -> None:
    with api("users") as users:
        wrong = users.post("/api/users/login", json={"email": customer["email"], "password": "incorrecta-123"})
        unknown = users.post("/api/users/login", json={"email": "nadie@example.com", "password": "incorrecta-123"})
        me = users.get("/api/users/me", headers=bearer(customer["token"]))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["message"] == unknown.json()["message"]
    assert me.status_code == 200 and me.json()["data"]["email"] == customer["email"]
    assert "password" not in me.text.lower()


def test_cart_add_change_remove_sends_the_removal_email(customer: dict) -> None:
    first, second = create_product(stock=10, price=12.5), create_product(stock=10, price=9.9)
    token = customer["token"]
    add_to_cart(token, first["id"], 1)
    add_to_cart(token, second["id"], 2)
    add_to_cart(token, first["id"], 1)  # adds to the existing line
    with api("cart") as cart:
        changed = cart.patch(f"/api/cart/items/{second['id']}", headers=bearer(token), json={"quantity": 3})
        assert changed.status_code == 200, changed.text
        removed = cart.delete(f"/api/cart/items/{first['id']}", headers=bearer(token))
        assert removed.status_code == 200, removed.text
        missing = cart.delete(f"/api/cart/items/{first['id']}", headers=bearer(token))
        assert missing.status_code == 404

    [line] = cart_items(token)
    assert (line["productId"], line["quantity"], line["unitPrice"]) == (second["id"], 3, 9.9)
    assert line["lineTotal"] == pytest.approx(29.7)

    updates = kafka_events("cart_updates", lambda ce: ce["data"].get("productId") == second["id"])
    assert {e["data"]["action"] for e in updates} == {"added", "changed"}

    def removal_email():
        return [m for m in emails(token) if first["name"] in m["html"] and m["topic"] == "cart_removals"]

    [mail] = eventually(removal_email, "the removal e-mail naming the product")
    assert mail["to"] == customer["email"]
    with api("cart") as cart:  # empty the cart again for the next tests
        cart.delete(f"/api/cart/items/{second['id']}", headers=bearer(token))


def test_paid_order_is_invoiced_and_mailed_and_takes_stock(customer: dict) -> None:
    paid_order_is_invoiced_and_mailed(customer)


def paid_order_is_invoiced_and_mailed(customer: dict) -> None:
    """The order journey, asserted step by step (the cluster's journey, tests/cluster, too)."""
    token = customer["token"]
    product = create_product(stock=5, price=15.0)
    add_to_cart(token, product["id"], 2)

    key = uuid.uuid4().hex
    placed = place_order(token, "tok_visa", key)
    assert placed["status"] == "pending"
    assert place_order(token, "tok_visa", key)["orderId"] == placed["orderId"], "same Idempotency-Key, same order"

    done = settled(token, placed["orderId"])
    assert done["status"] == "invoiced", done
    assert re.fullmatch(r"INV-\d{4}-\d{6}", done["invoiceNumber"])
    assert [h["status"] for h in done["history"]][:4] == ["pending", "stock_reserved", "paid", "invoiced"]
    assert stock_of(product["id"]) == 3
    eventually(lambda: not cart_items(token), "the cart to empty after checkout")

    subject = f"Factura de tu pedido #{placed['orderId']}"
    [invoice_mail] = eventually(lambda: [m for m in emails(token) if m["subject"] == subject], "the invoice e-mail")
    assert invoice_mail["to"] == customer["email"] and invoice_mail["topic"] == "invoice_processing"
    # Rendered by notifications from the invoice's lines and amounts.
    assert done["invoiceNumber"] in invoice_mail["html"] and product["name"] in invoice_mail["html"]
    assert "Total: $" in invoice_mail["html"]
    # Checkout empties the cart without removal e-mails.
    assert not [m for m in emails(token) if m["topic"] == "cart_removals" and product["name"] in m["html"]]


def test_declined_card_fails_the_payment_and_restores_stock(customer: dict) -> None:
    token = customer["token"]
    product, done = ordered(token, "tok_declined", stock=4, quantity=3)
    assert done["status"] == "payment_failed", done
    assert not done.get("invoiceNumber")
    eventually(lambda: stock_of(product["id"]) == 4, "the reserved stock to come back")
    subject = f"Factura de tu pedido #{done['orderId']}"
    assert not [m for m in emails(token) if m["subject"] == subject]


def test_a_processor_outage_is_retried_through_dapr_until_the_card_pays(customer: dict) -> None:
    """tok_error: the simulated processor fails the first two charges; the handler answers RETRY
    and the real sidecar redelivers the same stock_reserved event until the charge goes through."""
    product, done = ordered(customer["token"], "tok_error", stock=3, quantity=1)
    assert done["status"] == "invoiced", done
    assert done["transientChargeFailures"] == 2
    assert [h["status"] for h in done["history"]] == ["pending", "stock_reserved", "paid", "invoiced"]
    assert stock_of(product["id"]) == 2


def test_a_processor_that_stays_down_fails_the_payment_and_releases_the_stock(customer: dict) -> None:
    product, done = ordered(customer["token"], "tok_unavailable", stock=3, quantity=2)
    assert done["status"] == "payment_failed", done
    assert done["failureReason"].startswith("Payment processor unavailable after")
    assert done["transientChargeFailures"] >= 1 and not done.get("invoiceNumber")
    eventually(lambda: stock_of(product["id"]) == 3, "the held stock to come back")


def test_concurrent_orders_for_the_last_units_never_oversell(customer: dict) -> None:
    """Five customers order one unit each of a product with three left, all at once: three are
    invoiced with consecutive invoice numbers, two rejected, and the stock ends at zero."""
    product = create_product(stock=3)
    buyers = [new_customer() for _ in range(5)]
    for buyer in buyers:
        add_to_cart(buyer["token"], product["id"], 1)
    with ThreadPoolExecutor(len(buyers)) as pool:
        placed = list(pool.map(lambda b: place_order(b["token"], "tok_visa")["orderId"], buyers))
    done = [settled(b["token"], order_id) for b, order_id in zip(buyers, placed)]

    assert sorted(o["status"] for o in done) == ["invoiced"] * 3 + ["rejected"] * 2
    assert stock_of(product["id"]) == 0
    numbers = sorted(int(o["invoiceNumber"].rsplit("-", 1)[1]) for o in done if o["status"] == "invoiced")
    assert numbers == list(range(numbers[0], numbers[0] + 3)), f"not consecutive: {numbers}"


def test_order_beyond_stock_is_rejected(customer: dict) -> None:
    product, done = ordered(customer["token"], "tok_visa", stock=1, quantity=2)
    assert done["status"] == "rejected", done
    assert stock_of(product["id"]) == 1


def test_a_redelivered_event_changes_nothing(customer: dict) -> None:
    token = customer["token"]
    product, done = ordered(token, "tok_visa", stock=6, quantity=2)
    assert done["status"] == "invoiced"
    order_id = done["orderId"]

    def for_this_order(ce: dict) -> bool:
        return ce.get("data", {}).get("orderId") == order_id

    [created] = kafka_events("order_created", for_this_order)
    [paid] = kafka_events("payment_processed", for_this_order)
    [welcome] = kafka_events("welcome_flow", lambda ce: ce["data"].get("email") == customer["email"])
    republish("payments", "order_created", created)
    republish("payments", "payment_processed", paid)
    republish("users", "welcome_flow", welcome)

    # The redelivery has crossed Kafka when a marker event published after it has been handled.
    marker = new_customer()
    eventually(lambda: [m for m in emails(marker["token"]) if m["topic"] == "welcome_flow"], "the marker e-mail")

    assert stock_of(product["id"]) == 4
    again = order(token, order_id)
    assert again["invoiceNumber"] == done["invoiceNumber"] and again["status"] == "invoiced"
    assert len(again["history"]) == len(done["history"])
    subject = f"Factura de tu pedido #{order_id}"
    assert len([m for m in emails(token) if m["subject"] == subject]) == 1
    assert len([m for m in emails(token) if m["topic"] == "welcome_flow"]) == 1


def test_a_customer_cannot_create_products_read_others_orders_or_send_mail(customer: dict) -> None:
    other = new_customer()
    product = create_product(stock=3)
    add_to_cart(other["token"], product["id"], 1)
    others_order = place_order(other["token"], "tok_visa")["orderId"]
    settled(other["token"], others_order)  # no order of this test still running when the next starts

    with api("products") as products:
        created = products.post(
            "/api/products",
            headers=bearer(customer["token"]),
            json={"name": "x", "description": "x", "price": 1, "category": "x", "stock": 1},
        )
    with api("payments") as payments:
        read = payments.get(f"/api/orders/{others_order}", headers=bearer(customer["token"]))
        mail = payments.post(
            "/api/facture",
            headers=bearer(customer["token"]),
            json={"to": other["email"], "subject": "hola", "content": "spam"},
        )
        as_admin = payments.get(f"/api/orders/{others_order}", headers=bearer(admin_token()))
    assert created.status_code == 403
    assert read.status_code == 404
    assert mail.status_code == 403
    assert as_admin.status_code == 200


def test_a_double_click_on_checkout_without_a_key_makes_one_order_and_one_charge() -> None:
    customer, product = new_customer(), create_product(stock=5)
    token = customer["token"]
    add_to_cart(token, product["id"], 2)

    def checkout() -> tuple[int, str | None]:
        with api("payments") as payments:
            response = payments.post("/api/orders", headers=bearer(token), json={"paymentMethod": {"token": "tok_visa"}})
        return response.status_code, (response.json().get("data") or {}).get("orderId")

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: checkout(), range(3)))
    # One 202; a click that read the cart before the checkout emptied it gets that order again
    # (200), one that read it after finds it empty (422). Never a second order.
    codes = sorted(code for code, _ in answers)
    assert codes.count(202) == 1 and set(codes) <= {200, 202, 422}, answers
    [order_id] = {order_id for code, order_id in answers if code in (200, 202)}
    assert settled(token, order_id)["status"] == "invoiced"
    with api("payments") as payments:
        assert len(payments.get("/api/orders", headers=bearer(token)).json()["data"]) == 1
    eventually(lambda: stock_of(product["id"]) == 3, "one order's units taken")
