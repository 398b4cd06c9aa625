import uuid

import pytest

from functions.common.auth import issue_token
from functions.products.app import app
from functions.products.models import Product
from tests.unit.conftest import running


@pytest.fixture
async def client(dapr):
    """The products app, started (database, seeded catalogue) for the whole test."""
    async with running(app) as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token('a' * 24, 'admin@shop.local', 'admin')}"}


@pytest.fixture
def customer() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token('c' * 24, 'ana@example.com', 'customer')}"}


@pytest.fixture
def make_product(client):
    """Insert a product straight into the database (no event): a fixture for stock tests."""

    async def make(stock: int, price_cents: int = 1000, name: str | None = None, category: str = "Pruebas") -> Product:
        product = Product(
            name=name or f"Producto {uuid.uuid4().hex[:8]}", priceCents=price_cents, category=category, stock=stock
        )
        await product.insert()
        return product

    return make
