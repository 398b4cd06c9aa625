"""A product as the other functions see it, asked of products through Dapr service invocation.

Names and prices always come from here, never from a client: cart prices its lines with it and
payments prices an order again with it when the order is placed.
"""

from pydantic import BaseModel, Field, ValidationError

from functions.common import sidecar
from functions.common.ids import EntityId, is_id
from functions.common.sidecar import SidecarError


class ProductSnapshot(BaseModel):
    """The part of products' `GET /api/products/{id}` answer other functions rely on."""

    id: EntityId
    name: str
    priceCents: int = Field(ge=0)


async def fetch_product(product_id: str) -> ProductSnapshot | None:
    """The product as products knows it now; None if there is no such product (an id of another
    form names none, and is not asked about).

    Raises SidecarError (503 for a request, RETRY for a handler) if products cannot answer.
    """
    if not is_id(product_id):
        return None
    response = await sidecar.invoke("products", f"api/products/{product_id}")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise SidecarError(f"products answered {response.status_code} for product {product_id}")
    try:
        product = ProductSnapshot.model_validate(response.json()["data"])
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise SidecarError(f"products answered an unreadable product {product_id}: {exc}") from exc
    if product.id != product_id:
        raise SidecarError(f"products answered product {product.id} for {product_id}")
    return product


async def fetch_products(product_ids: list[str]) -> dict[str, ProductSnapshot]:
    """The products as products knows them now, by id, in one call (`GET /api/products?ids=`);
    an id of no product (or of another form) is absent from the answer.

    Raises SidecarError (503 for a request, RETRY for a handler) if products cannot answer.
    """
    asked = [product_id for product_id in dict.fromkeys(product_ids) if is_id(product_id)]
    if not asked:
        return {}
    response = await sidecar.invoke("products", f"api/products?ids={','.join(asked)}")
    if response.status_code != 200:
        raise SidecarError(f"products answered {response.status_code} for products {asked}")
    try:
        products = [ProductSnapshot.model_validate(item) for item in response.json()["data"]]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise SidecarError(f"products answered unreadable products for {asked}: {exc}") from exc
    found = {product.id: product for product in products}
    if not found.keys() <= set(asked):
        raise SidecarError(f"products answered products {sorted(found.keys() - set(asked))} not asked for")
    return found
