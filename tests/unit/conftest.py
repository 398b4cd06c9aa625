"""Unit-test fixtures: a real FerretDB on PostgreSQL for Beanie (a throw-away database per session), respx
standing in for the Dapr sidecar's HTTP API (service invocation) and an in-process gRPC server for its
gRPC API (publishing). No Kafka, no daprd: those are end-to-end tests."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
import pytest
import respx
from dapr.proto import api_service_v1
from fastapi import FastAPI
from google.protobuf import empty_pb2

from functions.common import sidecar
from functions.common.settings import settings_of
from tests.stack import stack

SIDECAR = "http://127.0.0.1:3500"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def mongo_uri() -> str:
    """MONGODB_URI if set (a real MongoDB), else a private FerretDB on PostgreSQL on free loopback
    ports, its cluster in a temporary folder."""
    processes: list[subprocess.Popen] = []
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        stack.provision(["postgres", "ferretdb"])
        folder = Path(tempfile.mkdtemp(prefix="shop-unit-db-"))
        folder.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach its data
        port, pg_port = _free_port(), _free_port()
        processes = stack.start_private_database(folder / "postgres", pg_port, port)
        uri = f"mongodb://127.0.0.1:{port}"
        os.environ["SHOP_UNIT_PG_PORT"] = str(pg_port)  # for tests that read PostgreSQL's plans
    try:  # whatever fails from here on, the private database stops with the session
        os.environ.update(
            MONGODB_URI=uri,
            SHOP_DB_PREFIX=f"unit{uuid.uuid4().hex[:8]}",
            DAPR_HTTP_PORT="3500",
            SHOP_OUTBOX_SWEEP_SECONDS="3600",  # tests flush explicitly; no background surprises
            SENDGRID_API_KEY="",
        )
        settings_of.cache_clear()
        yield uri
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)  # FerretDB stops; PostgreSQL's fast shutdown
            process.wait(30)
        if processes:
            shutil.rmtree(folder, ignore_errors=True)


class FakeSidecarGrpc(api_service_v1.DaprServicer):
    """The sidecar's gRPC API as far as the shop uses it (PublishEvent), on a loopback port for the
    whole session. A test's `dapr` fixture answers; with none, the sidecar is down (UNAVAILABLE)."""

    def __init__(self) -> None:
        self.answering: "SidecarMock | None" = None

    async def PublishEvent(self, request, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:  # noqa: N802 - Dapr's name
        if self.answering is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no sidecar in this test")
        return await self.answering.publish(request, context)


async def serve_grpc_sidecar(servicer: FakeSidecarGrpc, port: int = 0) -> tuple[grpc.aio.Server, int]:
    """`servicer` served on 127.0.0.1:`port` (0: a free one); the server and its port."""
    server = grpc.aio.server()
    api_service_v1.add_DaprServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


@pytest.fixture(scope="session", autouse=True)
async def grpc_sidecar(mongo_uri) -> AsyncIterator[FakeSidecarGrpc]:
    servicer = FakeSidecarGrpc()
    server, port = await serve_grpc_sidecar(servicer)
    os.environ["DAPR_GRPC_PORT"] = str(port)
    settings_of.cache_clear()
    yield servicer
    await sidecar.close()
    await server.stop(None)


class SidecarMock:
    """respx routes for the sidecar's HTTP API and the answers of its gRPC API; records every
    CloudEvent published (`published`) and every publish asked for (`publish_requests`)."""

    def __init__(self, router: respx.Router) -> None:
        self.router = router
        self.published: list[dict] = []
        self.publish_requests: list[dict] = []
        # (code, details) to refuse every publish with, as a sidecar with no broker would.
        self.publish_failure: tuple[grpc.StatusCode, str] | None = None
        # What products answers for its products, one by id or several (`?ids=`); an id missing
        # here is no product. `catalogue_route` answers the list: `.respond(503)` takes it down.
        self.catalogue: dict[str, dict] = {}
        self.catalogue_route = router.get(url__regex=rf"{SIDECAR}/v1.0/invoke/products/method/api/products\?")
        self.catalogue_route.mock(side_effect=self._products)

    async def publish(self, request, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        event = json.loads(request.data)
        self.publish_requests.append({
            "pubsub": request.pubsub_name, "topic": request.topic, "contentType": request.data_content_type,
            "metadata": dict(request.metadata), "token": dict(context.invocation_metadata()).get("dapr-api-token"),
            "event": event,
        })
        if self.publish_failure:
            await context.abort(*self.publish_failure)
        self.published.append({"topic": request.topic, **event})
        return empty_pb2.Empty()

    def _products(self, request: httpx.Request) -> httpx.Response:
        asked = request.url.params.get("ids", "").split(",")
        found = [self.catalogue[product_id] for product_id in asked if product_id in self.catalogue]
        return httpx.Response(200, json={"message": f"{len(found)} product(s)", "data": found, "total": len(found)})

    def events(self, topic: str) -> list[dict]:
        return [e for e in self.published if e["topic"] == topic]

    def product(self, name: str = "Café Orgánico de Altura", price_cents: int = 1250) -> dict:
        """A product that products answers, through service invocation, as its API does."""
        product_id = uuid.uuid4().hex[:24]
        data = {
            "id": product_id,
            "name": name,
            "description": "",
            "price": round(price_cents / 100, 2),
            "priceCents": price_cents,
            "category": "Bebidas",
            "stock": 10,
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T00:00:00Z",
        }
        self.invoke("products", f"api/products/{product_id}").respond(200, json={"message": "Product", "data": data})
        self.catalogue[product_id] = data
        return data

    def invoke(self, app_id: str, path: str, method: str = "GET") -> respx.Route:
        """Route for a service invocation; set `.respond(...)` or `.mock(...)` on it."""
        return self.router.route(method=method, url=f"{SIDECAR}/v1.0/invoke/{app_id}/method/{path.lstrip('/')}")


@pytest.fixture
async def dapr(grpc_sidecar: FakeSidecarGrpc) -> AsyncIterator[SidecarMock]:
    await sidecar.close()  # a fresh client per test, bound to this test's respx router
    with respx.mock(assert_all_called=False) as router:
        grpc_sidecar.answering = mock = SidecarMock(router)
        try:
            yield mock
        finally:
            grpc_sidecar.answering = None
    await sidecar.close()


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (database, seeds) and talk to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
