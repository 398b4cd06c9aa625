"""The local stack heals itself: a function whose sidecar or app dies, for any reason, is started
again by the supervisor (dapr/local/stack.py), one function at a time while the rest serve; a
function started while Kafka is down serves once Kafka is back. Each case ends with a real flow
through the function that was lost."""

import json
import os
import signal
import time

from tests.e2e.shop import api, bearer, emails, eventually, new_customer, process_of
from tests.e2e.test_shop_flows import FINAL, add_to_cart, create_product, place_order, settled
from tests.stack import stack


def restarts(function: str) -> int:
    return json.loads(stack.SUPERVISOR_STATE.read_text())[function]["restarts"]


def readiness(function: str):
    with api(function) as app:
        return app.get("/readyz")


def welcome_email(customer: dict) -> list[dict]:
    return [m for m in emails(customer["token"]) if m["topic"] == "welcome_flow"]


def test_a_sidecar_killed_with_sigkill_is_started_again_and_its_function_serves() -> None:
    before = restarts("payments")
    os.kill(process_of("payments", "daprd"), signal.SIGKILL)
    eventually(lambda: not stack.function_ready("payments"), "payments to be seen down", timeout=10, every=0.2)
    eventually(lambda: stack.function_ready("payments"), "payments started again", timeout=90)
    assert restarts("payments") == before + 1

    customer, product = new_customer(), create_product(stock=2)
    add_to_cart(customer["token"], product["id"], 1)
    placed = place_order(customer["token"], "tok_visa")
    assert settled(customer["token"], placed["orderId"])["status"] == "invoiced"


def test_an_app_killed_with_sigkill_is_started_again_and_its_function_serves() -> None:
    before = restarts("notifications")
    os.kill(process_of("notifications", "app"), signal.SIGKILL)
    eventually(lambda: restarts("notifications") == before + 1, "the supervisor to see it", timeout=30)
    eventually(lambda: stack.function_ready("notifications"), "notifications started again", timeout=90)

    customer = new_customer()
    eventually(lambda: welcome_email(customer), "the welcome e-mail", timeout=60)


def test_task_run_restarts_one_function_mid_journey_while_the_rest_serve() -> None:
    customer, product = new_customer(), create_product(stock=2)
    add_to_cart(customer["token"], product["id"], 1)
    stack.restart("cart")  # what `task run -- cart` does
    with api("products") as products:  # the others served throughout
        assert products.get(f"/api/products/{product['id']}").status_code == 200
    placed = place_order(customer["token"], "tok_visa")  # reads the cart through the new cart
    assert settled(customer["token"], placed["orderId"])["status"] in FINAL
    with api("cart") as cart:
        eventually(lambda: cart.get("/api/cart/items", headers=bearer(customer["token"])).json()["data"]["items"] == [],
                   "the cart emptied by cart_checkout", timeout=60)


def test_a_function_started_while_kafka_is_down_serves_once_kafka_is_back() -> None:
    stack.stop("kafka")
    try:
        before = restarts("notifications")
        stack.kill_group(int(stack.pid_file("fn-notifications").read_text()), signal.SIGTERM)
        eventually(lambda: restarts("notifications") > before, "the supervisor to start it again", timeout=30)
        # Its daprd cannot initialise the Kafka component: it exits (and is started again, with
        # backoff) or hangs (and is restarted once it has not answered for the start's grace).
        time.sleep(10)
        assert not stack.function_ready("notifications")
    finally:
        stack.start_kafka()
    started = time.monotonic()
    eventually(lambda: stack.function_ready("notifications"), "notifications once Kafka is back", timeout=180)
    print(f"notifications served {time.monotonic() - started:.0f}s after Kafka came back")
    customer = new_customer()
    eventually(lambda: welcome_email(customer), "the welcome e-mail", timeout=90)


def test_a_paused_database_makes_functions_unready_not_restarted_and_they_serve_once_it_is_back() -> None:
    # FerretDB stopped dead (SIGSTOP: connections open, nothing answers), longer than the
    # readiness grace (SHOP_DB_UNREADY_AFTER_SECONDS, 10 s).
    before = {name: restarts(name) for name in stack.FUNCTIONS}
    ferretdb = int(stack.pid_file("ferretdb").read_text())
    os.kill(ferretdb, signal.SIGSTOP)
    try:
        unready = eventually(lambda: readiness("products").status_code == 503, "products to say it is unready",
                             timeout=40, every=1)
        assert unready and "database unreachable" in readiness("products").json()["message"]
        assert stack.function_alive("products")  # alive: nothing to restart, only to wait for
        time.sleep(10)
    finally:
        os.kill(ferretdb, signal.SIGCONT)
    eventually(lambda: all(stack.functions_ready().values()), "every function ready again", timeout=60)
    assert {name: restarts(name) for name in stack.FUNCTIONS} == before

    customer = new_customer()
    eventually(lambda: welcome_email(customer), "the welcome e-mail", timeout=60)
