"""What a hostile client sends, against the running stack's public ports, black box: oversized
bodies, control characters, account enumeration, login floods, odd ids. Each must be refused with
a clear 4xx (or 5xx with Retry-After for overload) and change nothing."""

import uuid

import httpx

from tests.e2e.shop import admin_token, api, bearer, new_customer
from tests.stack import stack


def test_an_oversized_body_is_413_on_every_function_before_it_is_read() -> None:
    huge = b'{"email": "' + b"a" * (300 * 1024) + b'"}'
    for function, path in (("users", "/api/users/login"), ("cart", "/api/cart/items"), ("payments", "/api/orders"),
                           ("products", "/api/products"), ("notifications", "/events/welcome_flow")):
        with api(function) as app:
            response = app.post(path, content=huge, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json()["message"], (function, response.text[:200])


def test_control_characters_in_names_and_queries_are_422() -> None:
    with api("products") as products:
        for params in ({"q": "caf\x00"}, {"category": "Bebidas\x1b[31m"}):
            assert products.get("/api/products", params=params).status_code == 422, params
        created = products.post("/api/products", headers=bearer(admin_token()), json={
            "name": "Lámpara\r\nBcc: victima@example.com", "price": 10, "category": "Hogar", "stock": 1})
    assert created.status_code == 422 and created.json()["message"]
    tag = uuid.uuid4().hex[:8]
    with api("users") as users:
        registered = users.post("/api/users/register", json={
            "name": "Ana\x00", "lastName": "Gómez", "email": f"nul.{tag}@example.com", "password": "una-clave-larga",
            "phone": f"+57{int(tag, 16) % 10**10:010d}"})
    assert registered.status_code == 422


def test_registration_does_not_tell_which_of_email_and_phone_is_taken() -> None:
    customer = new_customer()
    tag = uuid.uuid4().hex[:8]
    with api("users") as users:
        same_email = users.post("/api/users/register", json={**{k: customer[k] for k in ("name", "lastName", "password")},
                                                             "email": customer["email"], "phone": f"+57{int(tag, 16) % 10**10:010d}"})
        same_phone = users.post("/api/users/register", json={**{k: customer[k] for k in ("name", "lastName", "password")},
                                                             "email": f"otra.{tag}@example.com", "phone": customer["phone"]})
    assert same_email.status_code == same_phone.status_code == 409
    assert same_email.json() == same_phone.json()


def test_a_login_flood_from_one_address_is_429_and_a_guessed_account_locks() -> None:
    customer = new_customer()
    flooder = f"203.0.113.{uuid.uuid4().int % 250}"
    with api("users") as users:
        answers = [users.post("/api/users/login", json={"email": f"nadie{i}@example.com", "password": "x"},
                              headers={"X-Forwarded-For": flooder}).status_code for i in range(101)]
        assert answers[:100] == [401] * 100 and answers[100] == 429
        guesses = [users.post("/api/users/login", json={"email": customer["email"], "password": f"guess-{i}"}).status_code
                   for i in range(11)]
        assert guesses == [401] * 10 + [429]
        locked = users.post("/api/users/login", json={"email": customer["email"], "password": customer["password"]})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


def test_odd_ids_are_404_never_a_5xx() -> None:
    with api("products") as products:
        for product_id in ("0", "6B0AD7102A4006946133932F", "x" * 300, "%00"):
            assert products.get(f"/api/products/{product_id}").status_code == 404, product_id
    token = new_customer()["token"]
    with api("payments") as payments:
        assert payments.get("/api/orders/not-an-order", headers=bearer(token)).status_code == 404
    assert httpx.get(f"http://127.0.0.1:{stack.FUNCTIONS['cart']}/api/cart/items",
                     headers={"Authorization": "Bearer forged.token.here"}).status_code == 401
