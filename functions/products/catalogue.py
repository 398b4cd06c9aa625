"""The original shop's five products, seeded once with stock."""

import logging
from dataclasses import dataclass

from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.clock import now
from functions.common.contracts import ProductCreated
from functions.products import APP_ID
from functions.products.models import CatalogueSeed, Product

log = logging.getLogger(__name__)

SEED_ID = "original-catalogue-v1"


@dataclass(frozen=True)
class SeedProduct:
    id: str  # fixed, so replicas seeding at once, or a restart, insert each product only once
    name: str
    description: str
    priceCents: int
    category: str
    stock: int


CATALOGUE = (
    SeedProduct(
        "5eed00000000000000000001",
        "Café Orgánico de Altura",
        "Café de especialidad cultivado a más de 1.800 m, tostado medio, bolsa de 500 g.",
        1250,
        "Bebidas",
        100,
    ),
    SeedProduct(
        "5eed00000000000000000002",
        "Cuadro Pintado a Mano",
        "Óleo sobre lienzo de 40 × 50 cm, pieza única firmada por el artista.",
        4500,
        "Arte",
        10,
    ),
    SeedProduct(
        "5eed00000000000000000003",
        "Jabón Artesanal de Lavanda",
        "Jabón vegetal hecho en frío con aceite esencial de lavanda, 120 g.",
        675,
        "Cuidado Personal",
        50,
    ),
    SeedProduct(
        "5eed00000000000000000004",
        "Miel Pura de Abeja",
        "Miel cruda de flores silvestres, sin pasteurizar, frasco de 500 g.",
        990,
        "Alimentos",
        30,
    ),
    SeedProduct(
        "5eed00000000000000000005",
        "Pulsera de Cuero Trenzado",
        "Pulsera de cuero genuino trenzada a mano, con cierre metálico.",
        1500,
        "Accesorios",
        25,
    ),
)


async def seed_catalogue() -> None:
    """Insert the catalogue once; `product_created` is staged in each product, as the original's seeder publishes it."""
    if await CatalogueSeed.get(SEED_ID) is not None:
        return
    for item in CATALOGUE:
        product = Product(
            id=item.id,
            name=item.name,
            description=item.description,
            priceCents=item.priceCents,
            category=item.category,
            stock=item.stock,
        )
        product.stage(
            ProductCreated(
                productId=item.id, name=item.name, priceCents=item.priceCents, category=item.category, stock=item.stock
            ),
            source=APP_ID,
            key=item.id,
        )
        try:
            await store.insert(product)
        except DuplicateKeyError:
            continue  # inserted by another replica, or by a start that stopped before the marker
    try:
        await store.insert(CatalogueSeed(id=SEED_ID, seededAt=now()))
        log.info("seeded the catalogue (%d products)", len(CATALOGUE))
    except DuplicateKeyError:
        pass
