"""The stack issue's proof: real HTTP → sidecar → Kafka → sidecar → handler → database, and a
service invocation between two functions, with no mock anywhere."""

from tests.e2e.shop import api, bearer, eventually, kafka_events, new_customer, sidecar
from tests.stack import stack


def test_every_function_and_sidecar_answers() -> None:
    for name, port in stack.FUNCTIONS.items():
        with api(name) as client:
            assert client.get("/healthz").status_code == 200, name
            assert client.get("/readyz").status_code == 200, name
            assert client.get("/docs").status_code == 200, name
        with sidecar(name) as dapr:
            assert dapr.get("/v1.0/healthz").status_code == 204, name
            metadata = dapr.get("/v1.0/metadata").json()
            assert metadata["id"] == name
            assert any(c["type"] == "pubsub.kafka" for c in metadata["components"]), metadata


def test_registration_crosses_kafka_to_the_welcome_email() -> None:
    customer = new_customer()

    # The event is on the real broker's topic, as a CloudEvent without any secret in it.
    events = kafka_events("welcome_flow", lambda ce: ce.get("data", {}).get("email") == customer["email"])
    assert len(events) == 1, events
    event = events[0]
    assert event["source"] == "users" and event["type"].startswith("shop.welcome_flow.v")
    assert "password" not in str(event).lower()

    # ...and the notifications function, behind its own sidecar, handled it and stored the e-mail.
    def welcome_email():
        with api("notifications") as notifications:
            mails = notifications.get("/api/notifications", headers=bearer(customer["token"])).json()["data"]
        return [m for m in mails if m["eventId"] == event["id"]]

    [mail] = eventually(welcome_email, "the welcome e-mail")
    assert mail["to"] == customer["email"]
    assert customer["name"] in mail["html"]


def test_service_invocation_between_sidecars() -> None:
    # cart's sidecar finds products through SQLite name resolution and calls it.
    with sidecar("cart") as dapr:
        response = dapr.get("/v1.0/invoke/products/method/api/products", params={"limit": 5})
    assert response.status_code == 200, response.text
    assert response.json()["data"], "the seeded catalogue should not be empty"
