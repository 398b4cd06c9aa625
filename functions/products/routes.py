import re
from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, HTTPException, Query, status

from functions.common import outbox
from functions.common.auth import AdminUser
from functions.common.clock import now
from functions.common.contracts import ProductCreated
from functions.common.ids import parse_object_id
from functions.common.text import OneLine
from functions.common.web import Envelope
from functions.products import APP_ID
from functions.products.models import Product
from functions.products.schemas import (
    ProductCreate,
    ProductOut,
    ProductPage,
    ProductUpdate,
    cents,
)
from functions.products.stock import product_lock

router = APIRouter(prefix="/api/products", tags=["products"])

NOT_FOUND = "Product not found"
Filter = Annotated[str | None, Query(max_length=100), OneLine]


def _contains(text: str) -> dict:
    return {"$regex": re.escape(text), "$options": "i"}


async def _found(product_id: str) -> Product:
    parsed = parse_object_id(product_id)  # a malformed id names no product: 404, not 500
    product = await Product.get(parsed) if parsed is not None else None
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return product


@router.get("", summary="List products; filter by category and text, page with limit/offset")
async def list_products(
    category: Filter = None,
    q: Filter = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ProductPage:
    query: dict = {}
    if category and category.strip():
        query["category"] = {"$regex": f"^{re.escape(category.strip())}$", "$options": "i"}
    if q and q.strip():
        query["$or"] = [{"name": _contains(q.strip())}, {"description": _contains(q.strip())}]
    total = await Product.find(query).count()
    products = await Product.find(query).sort([("name", 1), ("_id", 1)]).skip(offset).limit(limit).to_list()
    message = f"{total} product(s)" if total else "No products match"
    return ProductPage(message=message, data=[ProductOut.of(p) for p in products], total=total)


@router.get("/{product_id}", summary="One product")
async def get_product(product_id: str) -> Envelope[ProductOut]:
    return Envelope(message="Product", data=ProductOut.of(await _found(product_id)))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a product (admins)")
async def create_product(body: ProductCreate, _: AdminUser) -> Envelope[ProductOut]:
    product = Product(
        id=PydanticObjectId(),
        name=body.name,
        description=body.description,
        priceCents=cents(body.price),
        category=body.category,
        stock=body.stock,
    )
    product.stage(
        ProductCreated(
            productId=str(product.id),
            name=product.name,
            priceCents=product.priceCents,
            category=product.category,
            stock=product.stock,
        ),
        source=APP_ID,
        key=str(product.id),
    )
    await product.insert()
    await outbox.flush(Product, product.id)
    return Envelope(message="Product created", data=ProductOut.of(product))


@router.patch("/{product_id}", summary="Change a product (admins)")
async def update_product(product_id: str, body: ProductUpdate, _: AdminUser) -> Envelope[ProductOut]:
    product = await _found(product_id)
    # $set of the given fields only, under the product's lock: never a whole-document save that
    # could overwrite a concurrent stock reservation.
    async with product_lock(product.id):
        changed = await Product.get_pymongo_collection().update_one(
            {"_id": product.id}, {"$set": {**body.changes(), "updatedAt": now()}}
        )
    if not changed.matched_count:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return Envelope(message="Product updated", data=ProductOut.of(await _found(product_id)))


@router.delete("/{product_id}", summary="Delete a product (admins)")
async def delete_product(product_id: str, _: AdminUser) -> Envelope[ProductOut]:
    product = await _found(product_id)
    async with product_lock(product.id):
        deleted = await Product.get_pymongo_collection().delete_one({"_id": product.id})
    if not deleted.deleted_count:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return Envelope(message="Product deleted", data=ProductOut.of(product))
