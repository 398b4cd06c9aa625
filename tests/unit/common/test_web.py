"""The shared app shape: envelopes, JSON error bodies (never a 500 for bad input), health, docs."""

import httpx
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from functions.common import sidecar
from functions.common.ids import new_id
from functions.common.web import DocumentOut, Envelope, create_app
from tests.unit.common.conftest import Parcel
from tests.unit.conftest import running


class Order(BaseModel):
    quantity: int = Field(ge=1)


router = APIRouter()


@router.post("/orders")
async def place(order: Order) -> Envelope[Order]:
    return Envelope(message="Placed", data=order)


@router.get("/missing")
async def missing() -> None:
    raise HTTPException(404, "Nothing here")


@router.get("/down")
async def down() -> None:
    raise sidecar.SidecarError("products unreachable")


app = create_app(app_id="webunit", title="web", description="test", models=[Parcel], routers=[router])


async def test_success_bodies_are_envelopes(dapr):
    async with running(app) as client:
        response = await client.post("/orders", json={"quantity": 2})
    assert response.status_code == 200
    assert response.json() == {"message": "Placed", "data": {"quantity": 2}}


async def test_errors_are_json_with_a_message(dapr):
    async with running(app) as client:
        invalid = await client.post("/orders", json={"quantity": 0})
        malformed = await client.post("/orders", content=b"{", headers={"Content-Type": "application/json"})
        missing = await client.get("/missing")
        no_route = await client.get("/nowhere")
        unavailable = await client.get("/down")

    assert invalid.status_code == 422
    body = invalid.json()
    assert body["message"].startswith("Invalid request: quantity:") and body["errors"][0]["loc"] == ["body", "quantity"]
    assert malformed.status_code == 422 and malformed.json()["message"]
    assert (missing.status_code, missing.json()) == (404, {"message": "Nothing here"})
    assert no_route.status_code == 404 and no_route.json()["message"]
    assert unavailable.status_code == 503 and "unavailable" in unavailable.json()["message"]


async def test_health_readiness_and_docs(dapr):
    async with running(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        assert "/orders" in (await client.get("/openapi.json")).json()["paths"]
    # After shutdown the database is gone, and readiness says so.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "unavailable"


class ParcelOut(DocumentOut):
    label: str
    heavy: bool


async def test_a_document_is_shown_with_its_declared_fields_only(database):
    parcel = Parcel(id=new_id(), label="caja", weight=12)
    shown = ParcelOut.of(parcel, heavy=parcel.weight > 10)
    assert shown.model_dump() == {"id": str(parcel.id), "label": "caja", "heavy": True}
    assert "weight" not in shown.model_dump_json() and "outbox" not in shown.model_dump_json()
