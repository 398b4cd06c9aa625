"""The product's name and price, asked of products through Dapr service invocation."""

from fastapi import HTTPException, status

from functions.common.catalogue import ProductSnapshot, fetch_product

PRODUCT_NOT_FOUND = "Product not found"


async def product_info(product_id: str) -> ProductSnapshot:
    """The product as products knows it now; 404 if there is no such product, 503 if products
    cannot answer."""
    product = await fetch_product(product_id)
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, PRODUCT_NOT_FOUND)
    return product
