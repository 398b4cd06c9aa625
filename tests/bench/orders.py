"""Benchmark of the order path on the real local stack: throughput, latency, CPU per order,
memory, and whether the cost of an order grows with the orders already in the database.

    ./task bench                                   # 200 orders, 16 at a time, at K = 0 and K = 50,000
    ./task bench -- --orders 100 --preload 0 --preload 5000
    ./task bench -- --fresh                        # `task reset` first: an empty database and broker
    python -m tests.bench.orders ...               # the same, from the project's root in its venv

For each K in --preload (ascending, in one run): the database is filled up to K earlier orders
(tests/bench/preload.py, bulk-inserted; then VACUUM (ANALYZE), as after any bulk load), then the
set-up, untimed: N customers register, log in and put two products in their cart. Then the timed
phase: the N orders are placed, C at a time over C keep-alive connections made beforehand, with
`tok_visa`, and each is followed to its invoice e-mail by reading the database (a few
indexed queries a second: see `watch`). Reported per K: orders/s from the first POST to the last
invoice e-mail stored; p50/p95/p99 of POST → 202 and of POST → invoice e-mail stored (its
`createdAt`, the server's clock; same machine); CPU seconds per process per order; peak memory;
the database statements per order by collection (tests/bench/statements.py). It checks that no
order was lost and none charged, invoiced or e-mailed twice, and exits non-zero if one was. With
--floor it also measures, in the same run, raw Kafka and a no-op pipeline through real sidecars
(tests/bench/floor.py).

A measurement, not a test: no figure passes or fails. The README's figures come from here.
"""

import argparse
import json
import os
import queue
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pymongo import MongoClient

from tests.bench import statements
from tests.bench.floor import run_floor
from tests.bench.preload import preload
from tests.e2e.shop import admin_token, api, bearer
from tests.stack import stack

MONGODB_URI = os.environ.get("MONGODB_URI", f"mongodb://127.0.0.1:{stack.DB_PORT}")
OWN_DATABASE = "MONGODB_URI" not in os.environ  # FerretDB on the stack's PostgreSQL
DB_PREFIX = os.environ.get("SHOP_DB_PREFIX", "shop")
WATCH_SECONDS = 1.0
TIMEOUT_SECONDS = 600


def expect(response: httpx.Response, *codes: int) -> dict:
    if response.status_code not in codes:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code} {response.text[:300]}")
    return response.json()["data"]


def create_product(stock: int) -> str:
    with api("products") as products:
        return expect(products.post(
            "/api/products", headers=bearer(admin_token()),
            json={"name": f"Producto de carga {uuid.uuid4().hex[:8]}", "description": "benchmark",
                  "price": 10.0, "category": "Benchmark", "stock": stock},
        ), 201)["id"]


@dataclass
class Customer:
    email: str
    headers: dict[str, str]
    order_id: str = ""
    posted_at: float = 0.0  # wall clock, comparable with the server's timestamps
    to_202: float = 0.0
    emailed_at: float = 0.0


def set_up(product_ids: list[str]) -> Customer:
    """Untimed: register, log in, two products in the cart."""
    tag = uuid.uuid4().hex[:12]
    body = {"name": "Carga", "lastName": tag, "email": f"carga.{tag}@example.com",
            "password": "una-clave-larga", "phone": f"+57{int(tag, 16) % 10**10:010d}"}
    with api("users") as users, api("cart") as cart:
        expect(users.post("/api/users/register", json=body), 201)
        headers = bearer(expect(users.post("/api/users/login", json=body), 200)["token"])
        for product_id in product_ids:
            expect(cart.post("/api/cart/items", headers=headers, json={"productId": product_id, "quantity": 1}), 201)
    return Customer(email=body["email"], headers=headers)


def place(customer: Customer, connections: "queue.Queue[httpx.Client]") -> None:
    payments = connections.get()
    try:
        customer.posted_at = time.time()
        started = time.perf_counter()
        response = payments.post("/api/orders", headers=customer.headers, json={"paymentMethod": {"token": "tok_visa"}})
        customer.to_202 = time.perf_counter() - started
    finally:
        connections.put(payments)
    customer.order_id = expect(response, 202)["orderId"]


def keep_alive_connections(count: int) -> "queue.Queue[httpx.Client]":
    """The load generator's connections to payments, one per order in flight, made and opened
    before the clock starts: making an httpx.Client costs about 20 ms of CPU (its TLS context,
    even for http://), which a client per order would take from the shop on a 2-core machine."""
    connections: queue.Queue[httpx.Client] = queue.Queue()
    for _ in range(count):
        payments = api("payments")
        payments.get("/healthz").raise_for_status()
        connections.put(payments)
    return connections


def watch(customers: list[Customer], client: MongoClient) -> None:
    """Until every order's invoice e-mail is stored. Orders finish roughly in the order they were
    placed, so each round asks (one indexed query each) for the oldest pending ones until the
    first not e-mailed yet: the watcher adds a few queries a second to the database it measures,
    not one per order in flight. The e-mail's own `createdAt` is the figure, whenever seen."""
    emails = client[f"{DB_PREFIX}_notifications"]["emails"]
    pending = sorted(customers, key=lambda c: c.posted_at)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while pending and time.monotonic() < deadline:
        time.sleep(WATCH_SECONDS)
        while pending:
            mail = emails.find_one({"to": pending[0].email, "template": "invoice"}, {"createdAt": 1})
            if not mail:
                break
            pending.pop(0).emailed_at = mail["createdAt"].timestamp()
    if pending:
        raise RuntimeError(f"{len(pending)} orders without an invoice e-mail after {TIMEOUT_SECONDS}s")


def violations(customers: list[Customer], client: MongoClient) -> dict[str, int]:
    """Every order invoiced once, charged once, e-mailed once."""
    payments, notifications = client[f"{DB_PREFIX}_payments"], client[f"{DB_PREFIX}_notifications"]
    found = {"not invoiced": 0, "charged other than once": 0, "invoice numbers other than one": 0,
             "invoice e-mails other than one": 0}
    numbers = []
    for c in customers:
        order = payments["orders"].find_one({"_id": c.order_id}, {"status": 1, "invoiceNumber": 1})
        found["not invoiced"] += order is None or order["status"] != "invoiced"
        found["charged other than once"] += payments["simulated_charges"].count_documents({"_id": c.order_id}) != 1
        found["invoice numbers other than one"] += payments["invoice_numbers"].count_documents({"orderId": c.order_id}) != 1
        found["invoice e-mails other than one"] += notifications["emails"].count_documents(
            {"to": c.email, "template": "invoice"}) != 1
        numbers.append(order and order.get("invoiceNumber"))
    found["duplicate invoice numbers"] = len(numbers) - len(set(numbers))
    return found


# --- processes: CPU and memory of every process of the stack ------------------------------------
def stack_processes() -> dict[int, str]:
    """pid -> group name for every process of the stack (PostgreSQL: the server and its backends)."""
    found: dict[int, str] = {}
    for pid, words in stack.command_lines():
        line, program = " ".join(words), Path(words[0]).name
        if "kafka.Kafka" in words:
            found[pid] = "kafka (JVM)"
        elif program == "ferretdb":
            found[pid] = "ferretdb"
        elif program == "postgres" or line.startswith("postgres: "):
            found[pid] = "postgresql"
        elif program == "daprd" and "--app-id" in words:
            found[pid] = f"daprd {words[words.index('--app-id') + 1]}"
        elif program == "dapr" and "--app-id" in words:  # the CLI: it relays its app's output
            found[pid] = f"dapr run {words[words.index('--app-id') + 1]}"
        elif program.startswith("python"):
            for name in stack.FUNCTIONS:
                if f"functions.{name}.app:app" in line:
                    found[pid] = f"app {name}"
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)


def group_cpu(before: dict[int, float], processes: dict[int, str]) -> dict[str, float]:
    """CPU seconds per group since `before` (a process started since counts from zero)."""
    used: dict[str, float] = {}
    for pid, name in processes.items():
        used[name] = used.get(name, 0.0) + cpu_seconds(pid) - before.get(pid, 0.0)
    return used


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Phase:
    preloaded: int
    orders: int
    concurrency: int
    seconds: float = 0.0
    orders_per_second: float = 0.0
    to_202_ms: dict[str, float] = field(default_factory=dict)
    to_email_ms: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # This script's own CPU in the timed phase (the POSTs and the watcher): the same 2 cores.
    load_cpu_seconds: float = 0.0
    peak_mib: dict[str, float] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    # Statements FerretDB sent to PostgreSQL in the timed phase, per collection and kind; and
    # its write transactions (only for the stack's own database).
    statements: dict[str, dict[str, int]] = field(default_factory=dict)
    transactions: int = 0


def run_phase(preloaded: int, args: argparse.Namespace, product_ids: list[str], client: MongoClient) -> Phase:
    with ThreadPoolExecutor(args.concurrency) as pool:
        customers = list(pool.map(lambda _: set_up(product_ids), range(args.orders)))
    processes = stack_processes()
    if OWN_DATABASE:
        statements.reset()
    connections = keep_alive_connections(args.concurrency)
    before = {pid: cpu_seconds(pid) for pid in processes}
    load_before = time.process_time()
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(lambda customer: place(customer, connections), customers))
    watch(customers, client)
    load_cpu = time.process_time() - load_before
    while not connections.empty():
        connections.get().close()
    processes = {**processes, **stack_processes()}
    phase = Phase(preloaded, args.orders, args.concurrency)
    if OWN_DATABASE:
        phase.statements, phase.transactions = statements.counts(DB_PREFIX)
    first, last = min(c.posted_at for c in customers), max(c.emailed_at for c in customers)
    phase.seconds = last - first
    phase.orders_per_second = args.orders / phase.seconds
    for target, values in ((phase.to_202_ms, [c.to_202 for c in customers]),
                           (phase.to_email_ms, [c.emailed_at - c.posted_at for c in customers])):
        target.update({f"p{p}": percentile(values, p) * 1000 for p in (50, 95, 99)})
    phase.cpu_seconds = group_cpu(before, processes)
    phase.load_cpu_seconds = load_cpu
    for pid, name in processes.items():
        phase.peak_mib[name] = max(phase.peak_mib.get(name, 0.0), peak_mib(pid))
    phase.violations = violations(customers, client)
    return phase


def report(phases: list[Phase], floor: dict | None) -> None:
    print("\n| K earlier orders | orders | C | orders/s | POST→202 p50/p95/p99 ms | POST→invoice e-mail p50/p95/p99 ms |"
          "\n|---|---|---|---|---|---|")
    for ph in phases:
        print(f"| {ph.preloaded:,} | {ph.orders} | {ph.concurrency} | {ph.orders_per_second:.1f} "
              f"| {ph.to_202_ms['p50']:.0f} / {ph.to_202_ms['p95']:.0f} / {ph.to_202_ms['p99']:.0f} "
              f"| {ph.to_email_ms['p50']:.0f} / {ph.to_email_ms['p95']:.0f} / {ph.to_email_ms['p99']:.0f} |")
    if len(phases) > 1:
        print(f"\norders/s at K = {phases[-1].preloaded:,} / at K = {phases[0].preloaded:,}: "
              f"{phases[-1].orders_per_second / phases[0].orders_per_second:.2f}")
    names = sorted({n for ph in phases for n in ph.cpu_seconds})
    print("\nCPU ms per order (peak RSS MiB)\n\n| process | " + " | ".join(f"K = {ph.preloaded:,}" for ph in phases)
          + " |\n|---|" + "---|" * len(phases))
    for name in names:
        print(f"| {name} | " + " | ".join(
            f"{ph.cpu_seconds.get(name, 0) / ph.orders * 1000:.0f} ({ph.peak_mib.get(name, 0):.0f})" for ph in phases) + " |")
    print("| total | " + " | ".join(f"{sum(ph.cpu_seconds.values()) / ph.orders * 1000:.0f}" for ph in phases) + " |")
    print("| (the benchmark itself: POSTs and watcher) | "
          + " | ".join(f"{ph.load_cpu_seconds / ph.orders * 1000:.0f}" for ph in phases) + " |")
    statements.report([(f"K = {ph.preloaded:,}", ph.orders, ph.statements, ph.transactions)
                       for ph in phases if ph.statements])
    for ph in phases:
        print(f"\nK = {ph.preloaded:,}: " + ", ".join(f"{k}: {v}" for k, v in ph.violations.items()))
    if floor:
        print("\nThe floor, same run, same concurrency:")
        print(json.dumps(floor, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200, help="orders per phase (N)")
    parser.add_argument("--concurrency", type=int, default=16, help="orders in flight at once (C)")
    parser.add_argument("--preload", type=int, action="append",
                        help="run a phase with this many earlier orders in the database (repeat; default 0 and 50000)")
    parser.add_argument("--fresh", action="store_true", help="`task reset` first: empty database, broker, registrations")
    parser.add_argument("--floor", action="store_true", help="also measure raw Kafka and a no-op Dapr pipeline")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    targets = sorted(set(args.preload or [0, 50_000]))

    if args.fresh:
        stack.reset()
    started_here = not all(stack.functions_ready().values())
    if started_here:
        stack.up()
    phases: list[Phase] = []
    floor = None
    try:
        with MongoClient(MONGODB_URI, tz_aware=True) as client:
            product_ids = [create_product(stock=args.orders * len(targets) + 10) for _ in range(2)]
            set_up(product_ids)  # warm-up, not counted: first connections, first use of each route
            earlier = client[f"{DB_PREFIX}_payments"]["orders"].estimated_document_count()
            for target in targets:
                if target > earlier:
                    began = time.monotonic()
                    written = preload(MONGODB_URI, target - earlier, product_ids[0], DB_PREFIX)
                    if OWN_DATABASE:
                        # As after any bulk load: otherwise PostgreSQL's autovacuum vacuums and
                        # analyses every loaded table during the timed phase (seen: its CPU per
                        # order doubled, 17 -> 38 ms, and none of it the orders').
                        stack.psql(stack.PG_PORT, "VACUUM (ANALYZE)", database="ferretdb")
                    print(f"[bench] preloaded {target - earlier:,} earlier orders ({written:,} documents"
                          f"{', then VACUUM (ANALYZE)' if OWN_DATABASE else ''}) in {time.monotonic() - began:.0f}s",
                          flush=True)
                    earlier = target
                print(f"[bench] phase K = {target:,}: {args.orders} orders, {args.concurrency} at a time", flush=True)
                phases.append(run_phase(target, args, product_ids, client))
                earlier += args.orders
            if args.floor:
                floor = run_floor(concurrency=args.concurrency, count=args.orders)
    finally:
        if started_here:
            stack.down()
    report(phases, floor)
    if args.json:
        args.json.write_text(json.dumps({"phases": [vars(ph) for ph in phases], "floor": floor,
                                         "at": datetime.now(UTC).isoformat()}, indent=2))
    if any(sum(ph.violations.values()) for ph in phases):
        sys.exit("violations found: see above")


if __name__ == "__main__":
    main()
