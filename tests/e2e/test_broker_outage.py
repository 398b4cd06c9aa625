"""The outbox on the real parts: a change saved while Kafka is down is not lost. Its event waits
in the document and the relay's sweep publishes it once the broker is back.

Runs first of the end-to-end tests (file order), so every later test also shows that the
sidecars and consumer groups came back whole after the outage.
"""

from tests.e2e.shop import api, bearer, emails, eventually, new_customer, sidecar
from tests.stack import stack


def welcome_emails(customer: dict) -> list[dict]:
    return [m for m in emails(customer["token"]) if m["topic"] == "welcome_flow"]


def test_a_registration_made_while_kafka_is_down_gets_its_welcome_email_when_it_returns() -> None:
    stack.stop("kafka")
    try:
        assert not stack.port_open(stack.KAFKA_PORT)
        # The request answers from the saved user; the publish fails behind it and is deferred.
        customer = new_customer()
        with api("users") as users:
            me = users.get("/api/users/me", headers=bearer(customer["token"]))
        assert me.status_code == 200 and me.json()["data"]["email"] == customer["email"]
        assert welcome_emails(customer) == []
    finally:
        stack.start_kafka()

    [mail] = eventually(lambda: welcome_emails(customer), "the deferred welcome e-mail", timeout=120)
    assert mail["to"] == customer["email"] and customer["name"] in mail["html"]


def test_after_the_outage_a_new_registration_flows_at_once() -> None:
    customer = new_customer()
    eventually(lambda: welcome_emails(customer), "the welcome e-mail", timeout=45)
    with sidecar("notifications") as dapr:
        assert dapr.get("/v1.0/healthz").status_code == 204
