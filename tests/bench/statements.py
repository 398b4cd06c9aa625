"""The database work of a benchmark phase: the statements FerretDB sent to PostgreSQL, per
collection and kind, from PostgreSQL's pg_stat_statements (the stack loads it: dapr/local/stack.py).

FerretDB turns each MongoDB command into SQL on one table per collection: a find is a SELECT,
an insert an INSERT, an update or find-and-modify a SELECT then an UPDATE, each write in its
own transaction. Counting them per order shows what the shop asks of its database, and which
collection asks most. Only for the stack's own database (not with MONGODB_URI set).
"""

import re
from collections import Counter

from tests.stack import stack

KINDS = ("select", "insert", "update", "delete")
# `SELECT  _jsonb FROM "shop_payments"."orders_325e96ec" WHERE ...`: the schema is the MongoDB
# database (shop_<function>), the table the collection with a hash of its name appended.
_STATEMENT = re.compile(r'^\s*(select|insert|update|delete)\b.*?"([^"]+)"\."([^"]+?)(?:_[0-9a-f]{8})?"',
                        re.IGNORECASE | re.DOTALL)


def reset() -> None:
    stack.psql(stack.PG_PORT, "SELECT pg_stat_statements_reset()", database="ferretdb")


def counts(db_prefix: str) -> tuple[dict[str, Counter], int]:
    """Statements since `reset`: {"<function>.<collection>": Counter(kind -> calls)}, and the
    number of transactions (FerretDB's BEGINs). The shop's databases are `<db_prefix>_<function>`."""
    rows = stack.psql(
        stack.PG_PORT,
        "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'ferretdb')",
        database="ferretdb",
    )
    by_collection: dict[str, Counter] = {}
    transactions = 0
    for row in rows.splitlines():
        calls, _, query = row.partition("|")
        if query.strip().lower() == "begin":
            transactions += int(calls)
        elif match := _STATEMENT.match(query):
            kind, schema, table = match.group(1).lower(), match.group(2), match.group(3)
            if table.startswith("_ferretdb"):
                continue  # FerretDB's own catalogue
            name = f"{schema.removeprefix(f'{db_prefix}_')}.{table}"
            by_collection.setdefault(name, Counter())[kind] += int(calls)
    return by_collection, transactions


def report(phases: list[tuple[str, int, dict[str, dict[str, int]], int]]) -> None:
    """One table per phase: (label, orders, calls by collection and kind, transactions)."""
    for label, orders, by_collection, transactions in phases:
        print(f"\nDatabase statements per order, {label} (FerretDB → PostgreSQL; an update is a SELECT"
              " and an UPDATE)\n")
        print("| function.collection | " + " | ".join(KINDS) + " |\n|---|" + "---|" * len(KINDS))
        busiest = sorted(by_collection.items(), key=lambda item: -sum(item[1].values()))
        for name, kinds in busiest:
            if sum(kinds.values()) / orders < 0.05:
                continue  # the watcher's and the sweeps' odd statement
            print(f"| {name} | " + " | ".join(f"{kinds.get(k, 0) / orders:.2f}" for k in KINDS) + " |")
        total = Counter()
        for kinds in by_collection.values():
            total.update(kinds)
        print("| total | " + " | ".join(f"{total[k] / orders:.2f}" for k in KINDS) + " |")
        print(f"\nwrite transactions per order: {transactions / orders:.1f}")
