"""What must hold after any run of the shop, however it was disturbed: read straight from the
functions' databases. Used by the replica race (tests/replicas) and the chaos run (tests/chaos).

Each check gives a line with its count and the violations it found; `violations` empty means the
run kept every promise.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pymongo

FINAL = {"invoiced", "rejected", "payment_failed", "expired"}


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    dead_letters: int = 0

    def check(self, ok: bool, line: str, violation: str) -> None:
        self.lines.append(("ok   " if ok else "FAIL ") + line)
        if not ok:
            self.violations.append(violation)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def orders_of(client: pymongo.MongoClient, prefix: str, order_ids: list[str]) -> dict[str, dict]:
    found = client[f"{prefix}_payments"]["orders"].find({"_id": {"$in": list(order_ids)}})
    return {str(o["_id"]): o for o in found}


def pending_outboxes(client: pymongo.MongoClient, prefix: str) -> dict[str, int]:
    found = {}
    for name in client.list_database_names():
        if name.startswith(f"{prefix}_"):
            for collection in client[name].list_collection_names():
                count = client[name][collection].count_documents({"outboxPending": True})
                if count:
                    found[f"{name}.{collection}"] = count
    return found


def settled(client: pymongo.MongoClient, prefix: str, order_ids: list[str]) -> bool:
    """Every order final and no event left in any outbox: the run is quiet."""
    orders = orders_of(client, prefix, order_ids)
    return len(orders) == len(order_ids) and all(o["status"] in FINAL for o in orders.values()) \
        and not pending_outboxes(client, prefix)


def check(
    client: pymongo.MongoClient,
    prefix: str,
    order_ids: list[str],
    initial_stock: dict[str, int],
    customer_emails: list[str],
) -> Report:
    """Every invariant over the orders `order_ids`, the products of `initial_stock` (ordered by
    these orders only) and the customers `customer_emails`."""
    report = Report()
    payments, products = client[f"{prefix}_payments"], client[f"{prefix}_products"]
    orders = orders_of(client, prefix, order_ids)
    report.statuses = Counter(o["status"] for o in orders.values())
    invoiced = {oid for oid, o in orders.items() if o["status"] == "invoiced"}
    unfinished = [oid for oid in order_ids if orders.get(oid, {}).get("status") not in FINAL]
    report.check(not unfinished, f"{len(order_ids)} orders, every one final: {dict(report.statuses)}",
                 f"orders not final: {unfinished[:10]}")

    for product_id, initial in initial_stock.items():
        stored = products["products"].find_one({"_id": product_id}) or {}
        sold = sum(line["quantity"] for oid in invoiced for line in orders[oid]["lines"] if line["productId"] == product_id)
        holds = stored.get("holds") or {}
        ok = stored.get("stock") == initial - sold and not holds and sold <= initial
        report.check(ok, f"product {product_id}: initial {initial} = on hand {stored.get('stock')} + sold {sold}, "
                         f"{len(holds)} holds left", f"stock of {product_id} not conserved ({initial}, {stored.get('stock')}, "
                                                     f"{sold}, holds {holds})")

    kept = {c["_id"] for c in payments["simulated_charges"].find({"approved": True, "refunded": {"$ne": True}})}
    kept &= set(order_ids)
    refunded = payments["simulated_charges"].count_documents({"_id": {"$in": order_ids}, "refunded": True})
    report.check(kept == invoiced, f"{len(kept)} charges kept = {len(invoiced)} invoiced orders ({refunded} refunded)",
                 f"charges kept for orders not invoiced {sorted(kept - invoiced)[:5]}, invoiced without one "
                 f"{sorted(invoiced - kept)[:5]}")

    numbers = [orders[oid].get("invoiceNumber") for oid in invoiced]
    ledger = sorted(n["seq"] for n in payments["invoice_numbers"].find({"year": datetime.now(UTC).year}))
    gapless = ledger == list(range(1, len(ledger) + 1))
    unique = len(set(numbers)) == len(numbers) and None not in numbers
    report.check(gapless and unique, f"{len(numbers)} invoice numbers unique; the year's ledger of {len(ledger)} "
                                     f"gapless from 1", f"invoice numbers: unique {unique}, gapless {gapless}")

    emails = list(client[f"{prefix}_notifications"]["emails"].find(
        {"template": {"$in": ["invoice", "welcome"]}}, {"subject": 1, "to": 1, "template": 1}))
    invoice_mails = Counter(m["subject"].rsplit("#", 1)[-1] for m in emails if m["template"] == "invoice")
    mailed = {oid: invoice_mails.get(oid, 0) for oid in order_ids}
    wrong = {oid: n for oid, n in mailed.items() if n != (1 if oid in invoiced else 0)}
    report.check(not wrong, f"{sum(mailed.values())} invoice e-mails: one per invoiced order",
                 f"invoice e-mails per order wrong: {dict(list(wrong.items())[:5])}")
    welcomes = Counter(m["to"] for m in emails if m["template"] == "welcome")
    wrong_welcomes = {e: welcomes.get(e.lower(), 0) for e in customer_emails if welcomes.get(e.lower(), 0) != 1}
    report.check(not wrong_welcomes, f"{len(customer_emails)} customers, one welcome e-mail each",
                 f"welcome e-mails wrong: {dict(list(wrong_welcomes.items())[:5])}")

    left = pending_outboxes(client, prefix)
    report.check(not left, "no event left in any outbox", f"events left in outboxes: {left}")

    parked = Counter()
    for name in client.list_database_names():
        if name.startswith(f"{prefix}_"):
            for letter in client[name]["dead_letters"].find({}, {"topic": 1}):
                parked[f"{name.removeprefix(prefix + '_')}:{letter['topic']}"] += 1
    report.dead_letters = sum(parked.values())
    report.lines.append(f"info dead letters parked: {report.dead_letters} {dict(parked)}")
    return report
