import uuid
from dataclasses import dataclass, field

import pytest

from functions.common.auth import issue_token
from functions.payments.app import app
from functions.payments.processor import SimulatedCardProcessor, use_processor
from tests.unit.conftest import running


@pytest.fixture
async def client(dapr):
    """The payments app, started for the whole test; respx (via `dapr`) stands in for the sidecar."""
    async with running(app) as client:
        yield client


@pytest.fixture(autouse=True)
def processor():
    """A fresh simulated processor per test (its outage counter is per instance)."""
    fresh = SimulatedCardProcessor(transient_failures=2)
    previous = use_processor(fresh)
    yield fresh
    use_processor(previous)


@dataclass
class Customer:
    """A customer of this test only (the database is shared by the whole session)."""

    role: str = "customer"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    email: str = ""

    def __post_init__(self) -> None:
        self.email = self.email or f"ana.{self.id[:10]}@example.com"
        self.token = issue_token(self.id, self.email, self.role)
        self.headers = {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def customer() -> Customer:
    return Customer()


@pytest.fixture
def admin() -> Customer:
    return Customer(role="admin", email="admin@shop.local")


@pytest.fixture
def shop(dapr):
    """Stand-ins for the other functions, answered through service invocation."""
    return Shop(dapr)


class Shop:
    def __init__(self, dapr) -> None:
        self.dapr = dapr
        self.cart_route = None

    def product(self, name: str = "Café Orgánico de Altura", price_cents: int = 1250) -> dict:
        """A product as products answers GET /api/products/{id}."""
        return self.dapr.product(name, price_cents)

    def cart(self, *lines: tuple[dict, int], unit_price: float | None = None):
        """The caller's cart as cart answers GET /api/cart/items; `unit_price` overrides the
        price the cart shows, which payments must not believe."""
        items = []
        for product, quantity in lines:
            price = unit_price if unit_price is not None else product["price"]
            items.append(
                {
                    "productId": product["id"],
                    "name": product["name"],
                    "unitPrice": price,
                    "quantity": quantity,
                    "lineTotal": round(price * quantity, 2),
                    "updatedAt": "2026-01-01T10:00:00.123000Z",
                }
            )
        body = {"message": "Your cart", "data": {"items": items, "total": sum(i["lineTotal"] for i in items)}}
        self.cart_route = self.dapr.invoke("cart", "api/cart/items").respond(200, json=body)
        return self.cart_route
