"""Benchmark of the shop on the real local stack: latency, throughput and memory.

    ./task bench                        # 40 customers, 8 at a time
    ./task bench -- --customers 100 --concurrency 16
    ./task bench -- --fresh             # on an empty database and broker (deletes local data)
    python -m tests.bench.orders        # the same, from the project's root in its venv

Starts the stack when it is not running (and stops it after), or measures the one `task up`
started. Each customer registers, logs in, adds a product to the cart and orders it with
`tok_visa` (after one journey not counted, to warm up); the script then follows the order through the saga until it is invoiced and its
invoice e-mail is stored. It reports each step's latency (p50, p95, max), the order throughput,
and the resident memory of every process of the stack (now and its peak, VmRSS / VmHWM).

A measurement, not a test: nothing here passes or fails on a figure. The figures in the README
come from this script.
"""

import argparse
import json
import os
import shutil
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

from tests.e2e.shop import admin_token, api, bearer, eventually
from tests.stack import stack

# Saga times come from the shop's own timestamps (order history, e-mail record), so polling
# only has to notice the end; polling faster would mostly measure the polling.
POLL_SECONDS = 0.25


def timed(call) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    return time.perf_counter() - started, response


def expect(response: httpx.Response, *codes: int) -> dict:
    if response.status_code not in codes:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code} {response.text[:300]}")
    return response.json()["data"]


def create_product(stock: int) -> str:
    with api("products") as products:
        product = expect(
            products.post(
                "/api/products",
                headers=bearer(admin_token()),
                json={"name": f"Producto de carga {uuid.uuid4().hex[:8]}", "description": "benchmark",
                      "price": 10.0, "category": "Benchmark", "stock": stock},
            ),
            201,
        )
    return product["id"]


def one_customer(product_id: str) -> dict[str, float]:
    """One customer's journey; the seconds each step took."""
    tag = uuid.uuid4().hex[:10]
    body = {"name": "Carga", "lastName": tag, "email": f"carga.{tag}@example.com",
            "password": "una-clave-larga", "phone": f"+57{int(tag, 16) % 10**10:010d}"}
    took: dict[str, float] = {}
    with api("users") as users, api("cart") as cart, api("payments") as payments, api("notifications") as notifications:
        took["register"], response = timed(lambda: users.post("/api/users/register", json=body))
        expect(response, 201)
        took["login"], response = timed(lambda: users.post("/api/users/login", json=body))
        headers = bearer(expect(response, 200)["token"])
        took["add to cart"], response = timed(
            lambda: cart.post("/api/cart/items", headers=headers, json={"productId": product_id, "quantity": 1})
        )
        expect(response, 201)
        took["place order (202)"], response = timed(
            lambda: payments.post("/api/orders", headers=headers, json={"paymentMethod": {"token": "tok_visa"}})
        )
        order_id = expect(response, 202)["orderId"]

        def order() -> dict:
            return expect(payments.get(f"/api/orders/{order_id}", headers=headers), 200)

        done = eventually(
            lambda: (o := order())["status"] in ("invoiced", "rejected", "payment_failed") and o,
            f"order {order_id}", timeout=120, every=POLL_SECONDS,
        )
        if done["status"] != "invoiced":
            raise RuntimeError(f"order {order_id} ended {done['status']}")
        at = {step["status"]: datetime.fromisoformat(step["at"]) for step in done["history"]}
        took["order placed → invoiced"] = (at["invoiced"] - at["pending"]).total_seconds()

        subject = f"Factura de tu pedido #{order_id}"

        def invoice_email() -> dict | None:
            mails = expect(notifications.get("/api/notifications", headers=headers), 200)
            return next((m for m in mails if m["subject"] == subject), None)

        mail = eventually(invoice_email, f"the invoice e-mail of {order_id}", timeout=120, every=POLL_SECONDS)
        stored = datetime.fromisoformat(mail["createdAt"])
        took["order placed → invoice e-mail stored"] = (stored - at["pending"]).total_seconds()
    return took


def stack_processes() -> dict[str, int]:
    """name -> pid of every long-running process of the stack, found in /proc."""
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args if a]
        line = " ".join(words)
        if "kafka.Kafka" in words:
            found["kafka (JVM)"] = int(proc.name)
        elif words and Path(words[0]).name == "ferretdb":
            found["ferretdb"] = int(proc.name)
        elif words and Path(words[0]).name == "daprd" and "--app-id" in words:
            found[f"daprd {words[words.index('--app-id') + 1]}"] = int(proc.name)
        else:
            for name in stack.FUNCTIONS:
                if f"functions.{name}.app:app" in line and "uvicorn" in line:
                    found[f"app {name}"] = int(proc.name)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident now, resident peak) in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fresh", action="store_true",
                        help="stop the stack and delete its local data first: FerretDB serves non-_id filters "
                             "about as slowly as scans, so its figures fall as data accumulates")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    if args.fresh:
        stack.down()
        for data in ("ferretdb", "kafka"):
            shutil.rmtree(stack.STATE / data, ignore_errors=True)
    started_here = not all(stack.functions_ready().values())
    if started_here:
        stack.up()
    try:
        product_id = create_product(stock=args.customers + 1)
        one_customer(product_id)  # warm-up, not counted: first connections, first use of each topic
        processes = sorted(stack_processes().items())
        idle = {name: memory_mib(pid) for name, pid in processes}
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes}
        began = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            journeys = list(pool.map(lambda _: one_customer(product_id), range(args.customers)))
        wall = time.perf_counter() - began
        loaded = {name: memory_mib(pid) for name, pid in processes}
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes}
    finally:
        if started_here:
            stack.down()

    steps = {step: [j[step] for j in journeys] for step in journeys[0]}
    print(f"\n{args.customers} customers, {args.concurrency} at a time: every journey (register → invoice "
          f"e-mail) done in {wall:.1f} s, {args.customers / wall:.2f} orders/s end to end\n")
    print("| step | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
    for step, values in steps.items():
        print(f"| {step} | {statistics.median(values) * 1000:.0f} | {percentile(values, 95) * 1000:.0f} "
              f"| {max(values) * 1000:.0f} |")
    print("\n| process | CPU s used | RSS before MiB | RSS after MiB | peak MiB |\n|---|---|---|---|---|")
    for name, (after, peak) in loaded.items():
        print(f"| {name} | {cpu[name]:.1f} | {idle[name][0]:.0f} | {after:.0f} | {peak:.0f} |")
    print(f"| total | {sum(cpu.values()):.1f} of {wall * os.cpu_count():.0f} available "
          f"| {sum(v[0] for v in idle.values()):.0f} | {sum(v[0] for v in loaded.values()):.0f} | |")
    if args.json:
        args.json.write_text(json.dumps({
            "customers": args.customers, "concurrency": args.concurrency, "wall_seconds": wall,
            "steps": steps, "cpu_seconds": cpu, "memory_mib": {"before": idle, "after": loaded},
        }, indent=2))


if __name__ == "__main__":
    main()
