import uuid

import httpx
import pytest

from functions.cart.app import app
from functions.common.auth import issue_token
from tests.unit.conftest import running


@pytest.fixture
async def client(dapr):
    """The cart app, started for the whole test; respx (via `dapr`) stands in for the sidecar."""
    async with running(app) as client:
        yield client


class Shopper:
    """A customer of this test only (the database is shared by the whole session)."""

    def __init__(self, role: str = "customer", email: str | None = None) -> None:
        self.id = uuid.uuid4().hex[:24]
        self.email = email or f"ana.{self.id[:10]}@example.com"
        self.headers = {"Authorization": f"Bearer {issue_token(self.id, self.email, role)}"}


@pytest.fixture
def shopper() -> Shopper:
    return Shopper()


@pytest.fixture
def catalogue(dapr):
    """Products as the products function answers them through service invocation."""
    return dapr.product


def unknown_product(dapr) -> str:
    product_id = uuid.uuid4().hex[:24]
    dapr.invoke("products", f"api/products/{product_id}").respond(404, json={"message": "Product not found"})
    return product_id


def products_down(dapr) -> str:
    product_id = uuid.uuid4().hex[:24]
    dapr.invoke("products", f"api/products/{product_id}").mock(side_effect=httpx.ConnectError("refused"))
    return product_id
