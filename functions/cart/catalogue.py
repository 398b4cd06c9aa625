"""The product's name and price, asked of products through Dapr service invocation."""

import re
from urllib.parse import quote

from fastapi import HTTPException, status
from pydantic import BaseModel, ValidationError

from functions.common import sidecar
from functions.common.sidecar import SidecarError

# Product ids become field names in the cart (`lines.<id>`): only plain ids are accepted, which
# every product id is (products issues ObjectIds).
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PRODUCT_NOT_FOUND = "Product not found"


class ProductInfo(BaseModel):
    id: str
    name: str
    priceCents: int


def is_product_id(product_id: str) -> bool:
    return bool(_PRODUCT_ID.match(product_id))


async def product_info(product_id: str) -> ProductInfo:
    """The product as products knows it now; 404 if there is no such product, 503 if products
    cannot answer."""
    if not is_product_id(product_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, PRODUCT_NOT_FOUND)
    response = await sidecar.invoke("products", f"api/products/{quote(product_id, safe='')}")
    if response.status_code == status.HTTP_404_NOT_FOUND:
        raise HTTPException(status.HTTP_404_NOT_FOUND, PRODUCT_NOT_FOUND)
    if response.status_code != status.HTTP_200_OK:
        raise SidecarError(f"products answered {response.status_code} for product {product_id}")
    try:
        info = ProductInfo.model_validate(response.json()["data"])
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise SidecarError(f"products answered an unreadable product {product_id}: {exc}") from exc
    if info.id != product_id:
        raise SidecarError(f"products answered product {info.id} for {product_id}")
    return info
