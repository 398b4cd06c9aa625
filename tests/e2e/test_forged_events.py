"""Only Dapr delivers events, and only the function reaches its sidecar: both directions carry a
token (`dapr-api-token`) that `task up` makes for the stack (dapr/local/stack.py, api_tokens)."""

import uuid

import grpc
import httpx
import pytest
from dapr.proto import api_service_v1, api_v1

from tests.e2e.shop import admin_token, api, bearer, sidecar
from tests.stack import stack


def test_a_forged_event_posted_to_an_app_port_is_refused_and_mails_nobody() -> None:
    stranger = f"stranger.{uuid.uuid4().hex[:10]}@example.com"
    forged = {"id": f"evt_{uuid.uuid4().hex}", "specversion": "1.0", "type": "shop.email_notification.v1",
              "source": "payments", "topic": "email_notification",
              "data": {"to": stranger, "subject": "Factura", "content": "Pague aquí"}}
    port = stack.FUNCTIONS["notifications"]
    for headers in ({}, {"dapr-api-token": "guessed"}):
        response = httpx.post(f"http://127.0.0.1:{port}/events/email_notification", json=forged, headers=headers)
        assert response.status_code == 401, response.text
    with api("notifications") as notifications:
        kept = notifications.get("/api/notifications", params={"to": stranger}, headers=bearer(admin_token()))
    assert kept.status_code == 200 and kept.json()["data"] == []


def test_every_sidecar_refuses_its_api_to_a_caller_without_the_token() -> None:
    for function, port in stack.SIDECAR_HTTP.items():
        refused = httpx.post(f"http://127.0.0.1:{port}/v1.0/publish/pubsub/welcome_flow", json={"forged": True})
        assert refused.status_code == 401, (function, refused.text)
        with sidecar(function) as dapr:  # the token `task up` gave the function
            assert dapr.get("/v1.0/metadata").status_code == 200, function


def test_every_sidecar_refuses_its_grpc_api_to_a_caller_without_the_token() -> None:
    """The API the functions publish through (functions/common/sidecar.py): the same token."""
    token = stack.api_tokens()["DAPR_API_TOKEN"]
    forged = api_v1.PublishEventRequest(pubsub_name="pubsub", topic="welcome_flow", data=b'{"forged": true}',
                                        data_content_type="application/json")
    for function, port in stack.SIDECAR_GRPC.items():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            dapr = api_service_v1.DaprStub(channel)
            for metadata in (None, (("dapr-api-token", "guessed"),)):
                with pytest.raises(grpc.RpcError) as refused:
                    dapr.PublishEvent(forged, metadata=metadata, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (function, refused.value.details())
            # With its token the same API answers (metadata, which changes nothing).
            dapr.GetMetadata(api_v1.GetMetadataRequest(), metadata=(("dapr-api-token", token),), timeout=10)


def test_a_sidecar_refuses_to_publish_a_topic_its_function_does_not_own() -> None:
    # The Component's publishing scopes: cart may not announce a payment, even with its own token.
    forged = {"specversion": "1.0", "id": f"evt_{uuid.uuid4().hex}", "source": "cart",
              "type": "shop.payment_processed.v1", "data": {"orderId": "0" * 24, "paymentId": "ch_x", "amountCents": 1}}
    with sidecar("cart") as dapr:
        refused = dapr.post("/v1.0/publish/pubsub/payment_processed", json=forged,
                            headers={"Content-Type": "application/cloudevents+json"})
        allowed = dapr.get("/v1.0/metadata")
    assert refused.status_code == 403, refused.text
    assert allowed.status_code == 200
