"""Service invocation through the real sidecars: a callee's 4xx is its answer, not its failure.

Before dapr/resiliency.yaml matched retries on status codes and dropped the circuit breaker, an
unknown product took 2.4 s (its 404 retried three times) and, after five such requests, the
breaker for that path answered 503 to everyone for 30 s.
"""

import time
import uuid

from tests.e2e.shop import api, bearer, new_customer
from tests.stack import stack

ASKED = 12  # more than twice the breaker's old trip count (5 consecutive failures)


def test_an_unknown_product_is_a_quick_404_however_often_it_is_asked() -> None:
    customer = new_customer()
    unknown = uuid.uuid4().hex[:24]
    answers, slowest = [], 0.0
    with api("cart") as cart:
        for _ in range(ASKED):
            started = time.monotonic()
            response = cart.post(
                "/api/cart/items", headers=bearer(customer["token"]), json={"productId": unknown, "quantity": 1}
            )
            slowest = max(slowest, time.monotonic() - started)
            answers.append((response.status_code, response.json()["message"]))
    assert {code for code, _ in answers} == {404}, answers
    # One retry with backoff alone would take 500 ms or more; the old policy took 2.4 s.
    assert slowest < 0.5, f"slowest 404 took {slowest * 1000:.0f} ms: retried?"


def test_products_sees_each_request_for_an_unknown_product_once() -> None:
    """No retry of a 404 by the sidecar: products' sidecar counts one call per request."""
    customer = new_customer()
    unknown = uuid.uuid4().hex[:24]
    path = f"/api/products/{unknown}"
    before = _served(path)
    with api("cart") as cart:
        for _ in range(3):
            cart.post("/api/cart/items", headers=bearer(customer["token"]), json={"productId": unknown, "quantity": 1})
    assert _served(path) - before == 3


def _served(path: str) -> int:
    """How many times products' app answered `path` (uvicorn's access log)."""
    return sum(
        1
        for log in stack.LOGS.glob("*products*.log")
        for line in log.read_text(errors="replace").splitlines()
        if f"GET {path} " in line
    )


def test_a_product_id_spelled_in_upper_case_is_a_404_not_a_503() -> None:
    customer = new_customer()
    with api("products") as products:
        product_id = products.get("/api/products").json()["data"][0]["id"]
    with api("cart") as cart:
        response = cart.post(
            "/api/cart/items", headers=bearer(customer["token"]), json={"productId": product_id.upper(), "quantity": 1}
        )
    assert response.status_code == 404, response.text
