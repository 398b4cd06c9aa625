"""The product's name and price, asked of products through Dapr service invocation."""

import re

from fastapi import HTTPException, status

from functions.common.catalogue import ProductSnapshot, fetch_product

# Product ids become field names in the cart (`lines.<id>`): only plain ids are accepted, which
# every product id is (products issues ObjectIds).
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PRODUCT_NOT_FOUND = "Product not found"


def is_product_id(product_id: str) -> bool:
    return bool(_PRODUCT_ID.match(product_id))


async def product_info(product_id: str) -> ProductSnapshot:
    """The product as products knows it now; 404 if there is no such product, 503 if products
    cannot answer."""
    product = await fetch_product(product_id) if is_product_id(product_id) else None
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, PRODUCT_NOT_FOUND)
    return product
