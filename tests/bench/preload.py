"""Earlier orders, bulk-inserted straight into the shop's databases for the benchmark: the
records a real order leaves behind, in every function, so that the timed orders run against a
database holding K of them (the question: does an order cost more when the book is larger?).

Per earlier order: its customer (users), an empty cart (cart), the order invoiced with its
payment, simulated charge and invoice number (payments), its stock reservation (products), the
welcome and invoice e-mails (notifications) and the audit events of the events that crossed (no
inbox record: the handlers an order goes through keep none). Shapes follow the functions'
models; password hashes are placeholders (nobody logs in as these customers). The year's
invoice-number hint moves past them.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from pymongo import MongoClient

from functions.common.ids import new_id

BATCH = 2000


def _records(index: int, at: datetime, seq: int, product_id: str) -> list[tuple[str, str, dict]]:
    """(function, collection, document) of every record earlier order number `index` left."""
    uid, oid, email = new_id(), new_id(), f"earlier.{index}@example.com"
    line = {"productId": product_id, "name": "Producto anterior", "unitPriceCents": 1000, "quantity": 2}
    amounts = {"subtotalCents": 2000, "taxRate": 0.19, "taxCents": 380, "totalCents": 2380, "currency": "USD"}
    number = f"INV-{at.year}-{seq:06d}"
    history = [{"status": s, "at": at, "reason": None, "eventId": f"evt_{s}_{oid}"}
               for s in ("pending", "stock_reserved", "paid", "invoiced")]

    def audit(topic: str) -> dict:
        return {"_id": f"evt_{topic}_{oid}", "topic": topic, "type": f"shop.{topic}.v1", "source": "bench",
                "key": oid, "time": at, "publishedAt": at, "data": {"orderId": oid}}

    def mail(topic: str, subject: str) -> dict:
        return {"_id": new_id(), "to": email, "subject": subject, "html": "<p>…</p>",
                "template": "invoice" if topic == "invoice_processing" else "welcome", "status": "sent",
                "providerMessageId": None, "eventId": f"evt_{topic}_{oid}", "topic": topic, "createdAt": at,
                "sentAt": at, "error": None, "attempts": 1, "leaseUntil": at}

    return [
        ("users", "users", {"_id": uid, "name": "Anterior", "lastName": str(index), "email": email,
                            "phone": f"+1{index:010d}", "passwordHash": "$argon2id$preloaded", "role": "customer",
                            "createdAt": at, "lastLoginAt": at, "outbox": [], "outboxPending": False}),
        ("users", "events", audit("welcome_flow")),
        ("cart", "carts", {"_id": uid, "userId": uid, "lines": {}, "createdAt": at, "updatedAt": at,
                           "outbox": [], "outboxPending": False}),
        ("payments", "orders", {
            "_id": oid, "userId": uid, "email": email, "lines": [line], **amounts, "status": "invoiced",
            "history": history, "paymentToken": "tok_visa", "idempotencyKey": f"auto:{oid}",
            "paymentId": f"ch_{oid}", "transientChargeFailures": 0, "failureReason": None, "invoiceNumber": number,
            "invoice": {"number": number, "issuedAt": at, "lines": [line], **amounts},
            "createdAt": at, "updatedAt": at,
            "outbox": [], "outboxPending": False}),
        ("payments", "payments", {"_id": oid, "provider": "simulated", "chargeId": f"ch_{oid}", "status": "approved",
                                  "reason": None, "amountCents": 2380, "currency": "USD", "createdAt": at}),
        ("payments", "simulated_charges", {"_id": oid, "chargeId": f"ch_{oid}", "token": "tok_visa",
                                           "amountCents": 2380, "currency": "USD", "approved": True, "reason": None,
                                           "createdAt": at}),
        ("payments", "invoice_numbers", {"_id": number, "year": at.year, "seq": seq, "orderId": oid,
                                         "allocatedAt": at}),
        ("payments", "events", audit("order_created")),
        ("products", "stock_reservations", {"_id": oid, "state": "committed",
                                            "lines": [{"productId": product_id, "quantity": 2}],
                                            "shortProductIds": [], "reason": None, "createdAt": at,
                                            "updatedAt": at, "outbox": [], "outboxPending": False}),
        ("products", "events", audit("stock_reserved")),
        ("notifications", "emails", mail("welcome_flow", "Bienvenido")),
        ("notifications", "emails", mail("invoice_processing", f"Factura de tu pedido #{oid}")),
    ]


def _batches(count: int, at: datetime, first_seq: int, product_id: str) -> Iterator[dict[tuple[str, str], list[dict]]]:
    batch: dict[tuple[str, str], list[dict]] = {}
    for n in range(count):
        for database, collection, document in _records(n, at, first_seq + n, product_id):
            batch.setdefault((database, collection), []).append(document)
        if (n + 1) % BATCH == 0:
            yield batch
            batch = {}
    if batch:
        yield batch


def preload(mongo_uri: str, count: int, product_id: str, db_prefix: str = "shop") -> int:
    """Insert `count` earlier orders; returns how many documents were written."""
    if count <= 0:
        return 0
    written = 0
    with MongoClient(mongo_uri, tz_aware=True) as client:
        at = datetime.now(UTC) - timedelta(minutes=5)  # this year's, as the timed orders'
        sequences = client[f"{db_prefix}_payments"]["invoice_sequences"]
        first_seq = (sequences.find_one({"_id": at.year}) or {}).get("next", 1)
        for batch in _batches(count, at, first_seq, product_id):
            for (database, collection), documents in batch.items():
                client[f"{db_prefix}_{database}"][collection].insert_many(documents, ordered=False)
                written += len(documents)
        sequences.update_one({"_id": at.year}, {"$max": {"next": first_seq + count}}, upsert=True)
    return written
