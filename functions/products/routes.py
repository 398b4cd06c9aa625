import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status

from functions.common import store
from functions.common.auth import AdminUser
from functions.common.clock import now
from functions.common.contracts import ProductCreated
from functions.common.ids import is_id
from functions.common.text import OneLine
from functions.common.web import Envelope, PageLimit, PageOffset
from functions.products import APP_ID
from functions.products.models import Product
from functions.products.schemas import ProductCreate, ProductOut, ProductPage, ProductUpdate, cents

router = APIRouter(prefix="/api/products", tags=["products"])

NOT_FOUND = "Product not found"
STALE = "The product changed since you read it: read it again (its ETag) and retry"
BELOW_ZERO = "Not enough units on hand to take that many away"
Filter = Annotated[str | None, Query(max_length=100), OneLine]
MAX_IDS = 100
Ids = Annotated[
    str | None,
    Query(max_length=MAX_IDS * 50, description=f"comma-separated product ids (at most {MAX_IDS}): those products, "
          "in the order asked; the others and category, q, limit and offset do not apply"),
]


def _contains(text: str) -> dict:
    return {"$regex": re.escape(text), "$options": "i"}


async def _found(product_id: str) -> Product:
    product = await Product.get(product_id) if is_id(product_id) else None  # a malformed id: 404
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return product


@router.get("", summary="List products; filter by category and text, page with limit/offset")
async def list_products(
    category: Filter = None,
    q: Filter = None,
    limit: PageLimit = 20,
    offset: PageOffset = 0,
    ids: Ids = None,
) -> ProductPage:
    if ids is not None:
        if category is not None or q is not None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "ids cannot be combined with category or q")
        return await _products_by_id(ids)
    query: dict = {}
    if category and category.strip():
        query["category"] = {"$regex": f"^{re.escape(category.strip())}$", "$options": "i"}
    if q and q.strip():
        query["$or"] = [{"name": _contains(q.strip())}, {"description": _contains(q.strip())}]
    total = await Product.find(query).count()
    products = await Product.find(query).sort([("name", 1), ("_id", 1)]).skip(offset).limit(limit).to_list()
    message = f"{total} product(s)" if total else "No products match"
    return ProductPage(message=message, data=[ProductOut.of(p) for p in products], total=total)


async def _products_by_id(ids: str) -> ProductPage:
    """The products named, in the order asked; an id of no product (or of another form) is left
    out. One indexed read per id: a whole order is priced in one call, whatever its lines."""
    asked = list(dict.fromkeys(part.strip() for part in ids.split(",") if part.strip()))
    if len(asked) > MAX_IDS:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"At most {MAX_IDS} ids at a time")
    found = await asyncio.gather(*(Product.get(product_id) for product_id in asked if is_id(product_id)))
    products = [product for product in found if product is not None]
    message = f"{len(products)} product(s)" if products else "No products match"
    return ProductPage(message=message, data=[ProductOut.of(p) for p in products], total=len(products))


def etag(product: Product) -> str:
    """The product's version as an ETag: its stock and its last change (to the millisecond, as
    stored). Every stock movement changes both, so If-Match with it refuses a stale edit."""
    return f'"{product.stock}-{int(product.updatedAt.timestamp() * 1000)}"'


def _as_read(if_match: str) -> dict | None:
    """The filter matching the product as the ETag saw it; None for a malformed ETag."""
    match = re.fullmatch(r'(?:W/)?"(\d+)-(\d+)"', if_match.strip())
    if not match:
        return None
    return {"stock": int(match[1]), "updatedAt": datetime.fromtimestamp(int(match[2]) / 1000, UTC)}


@router.get("/{product_id}", summary="One product (its ETag: the version an If-Match edit names)")
async def get_product(product_id: str, response: Response) -> Envelope[ProductOut]:
    product = await _found(product_id)
    response.headers["ETag"] = etag(product)
    return Envelope(message="Product", data=ProductOut.of(product))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a product (admins)")
async def create_product(body: ProductCreate, _: AdminUser) -> Envelope[ProductOut]:
    product = Product(
        name=body.name,
        description=body.description,
        priceCents=cents(body.price),
        category=body.category,
        stock=body.stock,
    )
    product.stage(
        ProductCreated(
            productId=product.id,
            name=product.name,
            priceCents=product.priceCents,
            category=product.category,
            stock=product.stock,
        ),
        source=APP_ID,
        key=product.id,
    )
    await store.insert(product)
    return Envelope(message="Product created", data=ProductOut.of(product))


@router.patch(
    "/{product_id}",
    summary="Change a product (admins); stockDelta adds units atomically, If-Match refuses a stale edit (412)",
    responses={409: {"description": "stockDelta would take the stock below zero"},
               412: {"description": "If-Match names a version the product no longer has"}},
)
async def update_product(
    product_id: str,
    body: ProductUpdate,
    _: AdminUser,
    response: Response,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Envelope[ProductOut]:
    product = await _found(product_id)
    # One conditional update of the given fields only, never a whole-document save that could
    # overwrite a concurrent stock reservation: a stock change is an $inc, or a count guarded by
    # the version the admin read.
    where: dict = {}
    if if_match is not None:
        as_read = _as_read(if_match)
        if as_read is None:
            raise HTTPException(status.HTTP_412_PRECONDITION_FAILED, STALE)
        where |= as_read
    update: dict = {"$set": {**body.changes(), "updatedAt": now()}}
    if body.stockDelta is not None:
        update["$inc"] = {"stock": body.stockDelta}
        if body.stockDelta < 0:
            where["stock"] = where.get("stock", {"$gte": -body.stockDelta})
            if isinstance(where["stock"], int) and where["stock"] < -body.stockDelta:
                raise HTTPException(status.HTTP_409_CONFLICT, BELOW_ZERO)
    if not await store.update(Product, product.id, update, where=where):
        current = await _found(product_id)  # 404 if it was deleted meanwhile
        if if_match is not None and if_match.strip().removeprefix("W/") != etag(current):
            raise HTTPException(status.HTTP_412_PRECONDITION_FAILED, STALE)
        raise HTTPException(status.HTTP_409_CONFLICT, BELOW_ZERO)
    updated = await _found(product_id)
    response.headers["ETag"] = etag(updated)
    return Envelope(message="Product updated", data=ProductOut.of(updated))


@router.delete("/{product_id}", summary="Delete a product (admins)")
async def delete_product(product_id: str, _: AdminUser) -> Envelope[ProductOut]:
    product = await _found(product_id)
    if not await store.delete(Product, product.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return Envelope(message="Product deleted", data=ProductOut.of(product))
