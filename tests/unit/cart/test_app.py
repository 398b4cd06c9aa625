"""The cart app's shape: health, OpenAPI, and its one subscription with a dead letter."""


async def test_health_docs_and_subscriptions(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/api/cart/items", "/api/cart/items/{product_id}"} <= set(paths)
    subscriptions = (await client.get("/dapr/subscribe")).json()
    assert [(s["topic"], s["route"], s.get("deadLetterTopic")) for s in subscriptions] == [
        ("cart_checkout", "/events/cart_checkout", "dlq_cart_cart_checkout"),
        ("dlq_cart_cart_checkout", "/dead-letters/cart_checkout", None),  # parked (common/dead_letters.py)
    ]
