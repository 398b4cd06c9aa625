"""The payments app's shape: health, OpenAPI, and its subscriptions, each with a dead letter."""


async def test_health_docs_and_subscriptions(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/api/orders", "/api/orders/{order_id}", "/api/facture"} <= set(paths)
    subscriptions = {s["topic"]: s for s in (await client.get("/dapr/subscribe")).json()}
    topics = {"stock_reserved", "stock_rejected"}  # not its own payment_processed: it invoices in the charge step
    assert set(subscriptions) == topics | {f"dlq_payments_{t}" for t in topics}
    for topic in topics:
        assert subscriptions[topic]["route"] == f"/events/{topic}"
        assert subscriptions[topic]["deadLetterTopic"] == f"dlq_payments_{topic}"
        assert subscriptions[f"dlq_payments_{topic}"]["route"] == f"/dead-letters/{topic}"
