"""The Dapr sidecar's HTTP API: publish to a topic, invoke another function.

Every call goes to the local sidecar, never straight to another service: Dapr adds retries
(resiliency), mTLS and tracing, and finds the target by app id.
"""

from typing import Any

import httpx

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


async def close() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


async def publish_cloud_event(topic: str, cloud_event: dict[str, Any], partition_key: str | None) -> None:
    """Publish a ready-made CloudEvent; Dapr keeps its id, so a re-publish is recognisable."""
    settings = get_settings()
    params = {"metadata.partitionKey": partition_key} if partition_key else None
    try:
        response = await client().post(
            f"/v1.0/publish/{settings.pubsub_name}/{topic}",
            json=cloud_event,
            params=params,
            headers={"Content-Type": "application/cloudevents+json"},
        )
    except httpx.HTTPError as exc:
        raise SidecarError(f"publish to {topic}: {exc!r}") from exc
    if response.status_code != 204:
        raise SidecarError(f"publish to {topic}: {response.status_code} {response.text[:200]}")


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
