"""Every query the shop makes on a growing collection is served by an index the database's
planner really uses: the cost of an order must not grow with the orders already taken.

Each case stores a few thousand documents with the model's own declared indexes (as `init_db`
creates them), then asks the database to explain the query, filter for filter as the function
makes it. On FerretDB the plan is PostgreSQL's (a Bitmap Index Scan on the GIN index that
dapr/local/postgres/ferretdb-gin.sql adds beside each index FerretDB creates); on MongoDB an
IXSCAN. The catalogue's text search (`q`, a regex) is the one scan: it is bounded by the
products, not by orders, customers or e-mails.
"""

import json
import os
import uuid
from datetime import UTC, datetime

import pytest
from beanie import init_beanie
from pymongo import AsyncMongoClient, MongoClient

from functions.cart.models import Cart
from functions.common.consumers import InboxPruning, ProcessedEvent, hour_bucket
from functions.common.db import declared_indexes
from functions.common.ids import new_id
from functions.common.outbox import AuditEvent
from functions.notifications.models import Email
from functions.payments.models import InvoiceNumber, InvoiceSequence, Order, Payment
from functions.products.models import Product, StockReservation
from functions.users.models import User
from tests.stack import stack

ROWS = 3000
OID = new_id()
NOW = datetime.now(UTC)


def doc(i: int, **fields) -> dict:
    return {"_id": OID if i == 0 else new_id(), **fields}


# (model, one stored document per i, the filters the function queries it with)
CASES = [
    (User, lambda i: doc(i, email=f"u{i}@example.com", phone=f"+57{i:010d}"),
     [{"email": "u7@example.com"}, {"phone": f"+57{7:010d}"}, {"_id": OID}]),
    (Cart, lambda i: {"_id": f"user{i}", "userId": f"user{i}", "lines": {}, "outboxPending": i == 1},
     [{"_id": "user7"}, {"outboxPending": True}]),
    (Order, lambda i: doc(i, userId=f"user{i % 500}", idempotencyKey=f"k{i}", status="invoiced", outboxPending=False),
     [{"userId": "user7"}, {"userId": "user7", "idempotencyKey": "k7"}, {"_id": OID, "status": "paid"},
      {"outboxPending": True}, {"status": "pending"}]),
    (Payment, lambda i: {"_id": f"order{i}", "status": "paid"}, [{"_id": "order7"}]),
    (InvoiceNumber, lambda i: {"_id": f"INV-2026-{i:06d}", "year": 2026, "seq": i, "orderId": f"order{i}"},
     [{"orderId": "order7"}]),
    (InvoiceSequence, lambda i: {"_id": 1000 + i, "next": 1}, [{"_id": 2026}]),
    (Email, lambda i: doc(i, to=f"u{i % 700}@example.com", eventId=f"evt_{i}", createdAt=NOW, status="sent"),
     [{"to": "u7@example.com"}, {"eventId": "evt_7"}, {"status": "pending"}]),
    (Product, lambda i: doc(i, name=f"p{i}", category=f"c{i % 20}", stock=5, outboxPending=False),
     [{"_id": OID}, {"_id": OID, "stock": {"$gte": 1}}, {"outboxPending": True}]),
    (StockReservation, lambda i: {"_id": f"order{i}", "state": "reserved", "outboxPending": False},
     [{"_id": "order7", "state": "reserving"}, {"outboxPending": True}]),
    (ProcessedEvent, lambda i: {"_id": f"h:evt_{i}", "topic": "t", "processedAt": NOW, "processedHour": hour_bucket(NOW)},
     [{"_id": "h:evt_7"}, {"processedHour": "2026-01-01T00"}]),
    (InboxPruning, lambda i: {"_id": f"coll{i}", "prunedBefore": NOW}, [{"_id": "processed_events"}]),
    (AuditEvent, lambda i: {"_id": f"evt_{i}", "topic": "t"}, [{"_id": "evt_7"}]),
]


@pytest.fixture(scope="module")
async def database(mongo_uri):
    name = f"plans{uuid.uuid4().hex[:8]}"
    beanie_client = AsyncMongoClient(mongo_uri, tz_aware=True)
    # Beanie only to read each model's collection name and declared indexes.
    await init_beanie(database=beanie_client[name], document_models=[m for m, _, _ in CASES], skip_indexes=True)
    client = MongoClient(mongo_uri, tz_aware=True)
    db = client[name]
    for model, make, _ in CASES:
        collection = db[model.get_settings().name]
        for index in declared_indexes(model):
            collection.create_indexes([index])
        collection.insert_many([make(i) for i in range(ROWS)])
    if port := os.environ.get("SHOP_UNIT_PG_PORT"):
        # The planner's statistics, as autovacuum keeps them on a live database.
        stack.psql(int(port), "ANALYZE", database="ferretdb")
    yield db
    client.drop_database(name)
    client.close()
    await beanie_client.close()


def plan_of(db, collection: str, query: dict) -> dict:
    return db.command("explain", {"find": collection, "filter": query})["queryPlanner"]


def uses_an_index(plan: dict) -> bool:
    text = json.dumps(plan)
    if "Node Type" in text:  # FerretDB on PostgreSQL: PostgreSQL's own plan
        return "Index Scan" in text and "Seq Scan" not in text
    return "IXSCAN" in text and "COLLSCAN" not in text  # MongoDB


@pytest.mark.parametrize(
    ("model", "query"),
    [(model, query) for model, _, queries in CASES for query in queries],
    ids=lambda v: v.__name__ if isinstance(v, type) else json.dumps(v, default=str),
)
def test_the_query_is_served_by_an_index(database, model, query):
    plan = plan_of(database, model.get_settings().name, query)
    assert uses_an_index(plan), json.dumps(plan, indent=1, default=str)[:3000]


def test_a_filter_on_an_unindexed_field_is_seen_as_a_scan(database):
    """The check can fail: a field no index covers is reported as a scan."""
    plan = plan_of(database, Order.get_settings().name, {"status": "invoiced"})
    assert not uses_an_index(plan)
