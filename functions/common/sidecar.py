"""The Dapr sidecar's API: publish to a topic (gRPC), invoke another function (HTTP).

Every call goes to the local sidecar, never straight to another service: Dapr adds retries
(resiliency), mTLS and tracing, and finds the target by app id.

Publishing goes over the sidecar's gRPC API with the stub the Dapr SDK generates: measured here
(tests/bench/publish.py), a publish costs the app about a quarter of the CPU it cost over HTTP
with httpx, and the sidecar less too. The SDK's `DaprClient` is not used: making one waits for
the sidecar synchronously (up to a minute of `time.sleep`, the event loop blocked); the channel
below connects, and reconnects, by itself. Service invocation stays HTTP: it carries the caller's
request (method, path, status codes, body) to the callee's HTTP API as it is.
"""

import json
from typing import Any

import grpc
import httpx
from dapr.proto import api_service_v1, api_v1

from functions.common.settings import get_settings


class SidecarError(Exception):
    """The sidecar or the target behind it did not answer usefully; worth retrying later."""


_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None or _client.is_closed:
        settings = get_settings()
        # With DAPR_API_TOKEN set, the sidecar refuses calls that do not carry it.
        headers = {"dapr-api-token": settings.dapr_api_token} if settings.dapr_api_token else {}
        _client = httpx.AsyncClient(base_url=settings.dapr_url, timeout=settings.dapr_timeout_seconds, headers=headers)
    return _client


_channel: grpc.aio.Channel | None = None
_publisher: api_service_v1.DaprStub | None = None
# A lost sidecar (a crash, a restart) is redialled within 2 s, not after gRPC's default backoff
# (up to 120 s): until then every publish fails at once and its event waits in the outbox.
_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
              ("grpc.max_reconnect_backoff_ms", 2000)]


def publisher() -> api_service_v1.DaprStub:
    global _channel, _publisher
    if _publisher is None:
        settings = get_settings()
        _channel = grpc.aio.insecure_channel(f"{settings.dapr_host}:{settings.dapr_grpc_port}", options=_RECONNECT)
        _publisher = api_service_v1.DaprStub(_channel)
    return _publisher


async def close() -> None:
    global _client, _channel, _publisher
    if _client is not None:
        await _client.aclose()
        _client = None
    if _channel is not None:
        await _channel.close()
        _channel, _publisher = None, None


async def publish_cloud_event(topic: str, cloud_event: dict[str, Any], partition_key: str | None) -> None:
    """Publish a ready-made CloudEvent; Dapr keeps its id, so a re-publish is recognisable."""
    settings = get_settings()
    request = api_v1.PublishEventRequest(
        pubsub_name=settings.pubsub_name,
        topic=topic,
        data=json.dumps(cloud_event, separators=(",", ":")).encode(),
        data_content_type="application/cloudevents+json",
        metadata={"partitionKey": partition_key} if partition_key else {},
    )
    # With DAPR_API_TOKEN set, the sidecar refuses calls that do not carry it.
    token = (("dapr-api-token", settings.dapr_api_token),) if settings.dapr_api_token else None
    try:
        await publisher().PublishEvent(request, metadata=token, timeout=settings.dapr_timeout_seconds)
    except grpc.aio.AioRpcError as exc:
        raise SidecarError(f"publish to {topic}: {exc.code().name} {exc.details()}") from exc


async def invoke(
    app_id: str,
    path: str,
    *,
    method: str = "GET",
    token: str | None = None,
    json: Any = None,
) -> httpx.Response:
    """Dapr service invocation; the caller's bearer token travels with the call."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = await client().request(
            method, f"/v1.0/invoke/{app_id}/method/{path.lstrip('/')}", headers=headers, json=json
        )
    except httpx.HTTPError as exc:
        raise SidecarError(f"invoke {app_id} {path}: {exc!r}") from exc
    if response.status_code >= 500:
        raise SidecarError(f"invoke {app_id} {path}: {response.status_code} {response.text[:200]}")
    return response
