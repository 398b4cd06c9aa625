"""The floor under the order saga: what Kafka alone costs, and what a chain of no-op Dapr hops
costs, on this machine and the running stack's broker (127.0.0.1:9092, `./task up`).

    python -m tests.bench.floor                          # 16 in flight, 200 measured, 3 hops
    python -m tests.bench.floor --count 100 --hops 3 --json floor.json

(a) raw Kafka: kafka-python produces a keyed message and a consumer group reads it back.
(b) a pipeline shaped like the saga from order to invoice e-mail (order_created → stock_reserved
    → invoice_processing, 3 topics): `--hops` topics, each
    consumed by a tiny FastAPI app beside its own daprd, which republishes the event to the next
    topic through its sidecar; the last app reports the arrival to a collector in this process.
    The apps do nothing else, so whatever the saga takes beyond this is the shop's own work.

Both keep `--concurrency` chains in flight (a new one starts when one arrives) and report chains/s
and round-trip percentiles, after warm-up chains that are not counted. Topics are new for each run
(4 partitions, like the shop's) and deleted after it; the sidecars, apps and collector use ports
3900-3999 (clear of the stack's and below the ephemeral range) and are stopped before returning.
Every listener and connection is on 127.0.0.1; the sidecars resolve names through their own SQLite
database. Logs: .dapr/logs/floor-*.log. A measurement, not a test: nothing passes or fails here.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml
from fastapi import FastAPI, Request
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from functions.common import sidecar
from tests.stack import stack

# Topics from a placed order to its invoice e-mail: order_created, stock_reserved, invoice_processing
# (payments invoices in the charge step; its payment_processed goes to products only).
SAGA_HOPS = 3

BROKER = f"127.0.0.1:{stack.KAFKA_PORT}"
PUBSUB = "pubsub"  # the component's name in components/pubsub.yaml
PARTITIONS = 4  # as the shop's topics (dapr/local/kafka/server.properties)
# Hop i's listeners: sidecar HTTP 3900+i, gRPC 3910+i, internal gRPC 3920+i, metrics 3930+i, app 3950+i.
PORT_BASE, MAX_HOPS, APP_PORT_BASE, COLLECTOR_PORT = 3900, 10, 3950, 3990
START_TIMEOUT = 120.0  # first chain: sidecars start, join their consumer groups, get partitions
CHAIN_TIMEOUT = 60.0


# --- one hop: run by uvicorn in its own process, beside its own daprd ---------------------------
def hop_app() -> FastAPI:
    """Relays each event of FLOOR_TOPIC to FLOOR_NEXT_TOPIC through this hop's sidecar, as a saga
    step publishes its next event (a CloudEvent of its own, through the functions' own publish:
    the sidecar's gRPC API); the last hop (no next topic) reports the arrival instead."""
    topic, next_topic = os.environ["FLOOR_TOPIC"], os.environ.get("FLOOR_NEXT_TOPIC")
    collector_url = f"http://127.0.0.1:{COLLECTOR_PORT}/"
    client = httpx.AsyncClient(timeout=CHAIN_TIMEOUT, trust_env=False)  # no proxy between loopback ports
    app = FastAPI()

    @app.get("/dapr/subscribe")
    def subscribe() -> list[dict[str, str]]:
        return [{"pubsubname": PUBSUB, "topic": topic, "route": "/event"}]

    @app.post("/event")
    async def event(request: Request) -> dict[str, str]:
        arrived = time.monotonic()
        data = (await request.json())["data"]
        if next_topic:
            await sidecar.publish_cloud_event(next_topic, {
                "specversion": "1.0", "id": f"evt_{uuid.uuid4().hex}", "source": "floor", "type": "floor.hop.v1",
                "datacontenttype": "application/json", "data": data,
            }, data["id"])
        else:
            response = await client.post(collector_url, json={"id": data["id"], "at": arrived})
            response.raise_for_status()
        return {"status": "SUCCESS"}

    return app


# --- the driver -----------------------------------------------------------------------------------
class Arrivals:
    """Chains in flight, each waiting for its id to reach the far end. Times are time.monotonic():
    CLOCK_MONOTONIC is one clock for every process on Linux, so the last app can stamp its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._at: dict[str, float] = {}

    def expect(self, chain_id: str) -> None:
        with self._lock:
            self._events[chain_id] = threading.Event()

    def arrived(self, chain_id: str, at: float) -> None:
        with self._lock:
            if chain_id in self._events and chain_id not in self._at:  # a redelivery keeps the first time
                self._at[chain_id] = at
                self._events[chain_id].set()

    def wait(self, chain_id: str, timeout: float) -> float:
        self._events[chain_id].wait(timeout)
        with self._lock:
            if chain_id not in self._at:
                raise TimeoutError(f"chain {chain_id} did not arrive within {timeout:.0f}s; logs: {stack.LOGS}/floor-*.log")
            return self._at[chain_id]

    def release_all(self) -> None:
        """Wake every waiting chain (they end with TimeoutError) when the run is cut short."""
        with self._lock:
            for event in self._events.values():
                event.set()


def closed_loop(send: Callable[[str], None], arrivals: Arrivals, concurrency: int, count: int,
                timeout: float = CHAIN_TIMEOUT) -> tuple[list[float], float]:
    """`count` chains, `concurrency` in flight; (each chain's seconds from send to arrival, wall seconds)."""

    def chain(_: int) -> float:
        chain_id = uuid.uuid4().hex
        arrivals.expect(chain_id)
        sent = time.monotonic()
        send(chain_id)
        return arrivals.wait(chain_id, timeout) - sent

    began = time.monotonic()
    pool = ThreadPoolExecutor(concurrency)
    try:
        seconds = list(pool.map(chain, range(count)))
    finally:  # if cut short (a timeout, Ctrl-C): drop queued chains, wake waiting ones, go clean up
        pool.shutdown(wait=False, cancel_futures=True)
        arrivals.release_all()
    return seconds, time.monotonic() - began


def measure(send: Callable[[str], None], arrivals: Arrivals, concurrency: int, count: int) -> dict[str, float]:
    """One chain alone (the path is live end to end; its seconds are `first_s`), `concurrency`
    more (warm connections), then the `count` chains that are reported."""
    first, _ = closed_loop(send, arrivals, 1, 1, START_TIMEOUT)
    closed_loop(send, arrivals, concurrency, concurrency)
    seconds, wall = closed_loop(send, arrivals, concurrency, count)
    cuts = statistics.quantiles([s * 1000 for s in seconds], n=100, method="inclusive")
    return {"per_s": count / wall, "p50_ms": cuts[49], "p95_ms": cuts[94], "p99_ms": cuts[98], "wall_s": wall,
            "first_s": first[0]}


@contextmanager
def fresh_topics(names: list[str]) -> Iterator[None]:
    """Topics of this run only, so no earlier run's events interfere; deleted after it."""
    admin = KafkaAdminClient(bootstrap_servers=BROKER, client_id="floor")
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names], wait_for_metadata=True)
        try:
            yield
        finally:
            admin.delete_topics(names)
    finally:
        admin.close()


def raw_kafka(concurrency: int, count: int) -> dict[str, float]:
    """(a) One Kafka round trip per chain: keyed produce, then a consumer group's poll sees it."""
    topic = f"floor_raw_{uuid.uuid4().hex[:8]}"
    arrivals, stop = Arrivals(), threading.Event()
    with fresh_topics([topic]):
        consumer = KafkaConsumer(topic, bootstrap_servers=BROKER, group_id=topic, client_id="floor-raw",
                                 auto_offset_reset="earliest")
        producer = KafkaProducer(bootstrap_servers=BROKER, client_id="floor-raw", linger_ms=0)

        def consume() -> None:
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    now = time.monotonic()
                    for record in records:
                        arrivals.arrived(record.key.decode(), now)

        def send(chain_id: str) -> None:
            producer.send(topic, key=chain_id.encode(), value=b"{}")

        reader = threading.Thread(target=consume, name="floor-raw-consumer")
        reader.start()
        try:
            return measure(send, arrivals, concurrency, count)
        finally:
            stop.set()
            reader.join()
            consumer.close()
            producer.close()


def sidecar_files(folder: Path) -> tuple[Path, Path]:
    """The shop's sidecar configuration with a resolver database of our own (no mDNS, and the
    stack's registrations untouched), and a resources folder with the shop's Kafka component only."""
    config = yaml.safe_load((stack.ROOT / "dapr" / "config.yaml").read_text())
    config["spec"]["nameResolution"]["configuration"]["connectionString"] = str(folder / "nameresolution.db")
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    resources = folder / "resources"
    resources.mkdir()
    (resources / "pubsub.yaml").write_text((stack.ROOT / "components" / "pubsub.yaml").read_text())
    return config_path, resources


@contextmanager
def hops_running(topics: list[str], folder: Path) -> Iterator[None]:
    """Hop i: app `floor-hop<i+1>` on 3950+i subscribed to topics[i], beside its daprd; all
    stopped (SIGTERM, then SIGKILL after 15 s) on the way out, whatever happened."""
    config, resources = sidecar_files(folder)
    stack.LOGS.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    try:
        for i, topic in enumerate(topics):
            app_id = f"floor-hop{i + 1}"
            app_env = {**os.environ, "FLOOR_TOPIC": topic, **stack.bare_daprd_app_env(PORT_BASE + i),
                       **({"FLOOR_NEXT_TOPIC": topics[i + 1]} if i + 1 < len(topics) else {})}
            with open(stack.LOGS / f"{app_id}-app.log", "wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "--factory", "tests.bench.floor:hop_app",
                     "--host", "127.0.0.1", "--port", str(APP_PORT_BASE + i), "--log-level", "warning"],
                    cwd=stack.ROOT, env=app_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                ))
            with open(stack.LOGS / f"{app_id}-daprd.log", "wb") as log:
                processes.append(subprocess.Popen(
                    stack.bare_daprd_cmd(app_id, PORT_BASE + i, resources=resources, config=config,
                                         app_port=APP_PORT_BASE + i),
                    env={"DAPR_HOST_IP": "127.0.0.1", "PATH": "/usr/bin:/bin"},
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                ))
        yield
    finally:
        stack.terminate(processes)


@contextmanager
def collector(arrivals: Arrivals) -> Iterator[None]:
    """The last app's POST {"id", "at"} marks its chain arrived."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the last app reuses its connections

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            arrivals.arrived(body["id"], body["at"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", COLLECTOR_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, name="floor-collector")
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def pipeline(concurrency: int, count: int, hops: int) -> tuple[dict[str, float], float]:
    """(b) Chains through `hops` sidecar hops; the figures, and seconds until the sidecars were healthy."""
    run_id = uuid.uuid4().hex[:8]
    topics = [f"floor_{run_id}_hop{k}" for k in range(1, hops + 1)]
    arrivals = Arrivals()
    with (
        tempfile.TemporaryDirectory(prefix="shop-floor-") as folder,
        fresh_topics(topics),
        collector(arrivals),
        hops_running(topics, Path(folder)),
        httpx.Client(base_url=f"http://127.0.0.1:{PORT_BASE}", timeout=CHAIN_TIMEOUT, trust_env=False) as first,
    ):
        started = time.monotonic()
        stack.wait_until("the floor's sidecars", lambda: all(
            stack.http_ok(f"http://127.0.0.1:{PORT_BASE + i}/v1.0/healthz") for i in range(hops)), START_TIMEOUT)
        healthy_s = time.monotonic() - started

        def send(chain_id: str) -> None:
            first.post(f"/v1.0/publish/{PUBSUB}/{topics[0]}", params={"metadata.partitionKey": chain_id},
                       json={"id": chain_id}).raise_for_status()

        return measure(send, arrivals, concurrency, count), healthy_s


def run_floor(concurrency: int = 16, count: int = 200, hops: int = SAGA_HOPS) -> dict:
    """Both measurements on the running broker; the figures, as main() prints them."""
    if not 1 <= hops <= MAX_HOPS:
        raise ValueError(f"hops must be 1..{MAX_HOPS} (the port block holds {MAX_HOPS})")
    if concurrency < 1 or count < 2:
        raise ValueError("concurrency must be at least 1 and count at least 2 (for percentiles)")
    if not stack.port_open(stack.KAFKA_PORT):
        raise RuntimeError(f"no Kafka on {BROKER}: start the stack with ./task up")
    ports = [PORT_BASE + block + i for block in (0, 10, 20, 30) for i in range(hops)]
    busy = [p for p in [*ports, *range(APP_PORT_BASE, APP_PORT_BASE + hops), COLLECTOR_PORT] if stack.port_open(p)]
    if busy:
        raise RuntimeError(f"ports of the floor in use (an earlier run left behind?): {busy}")
    began = time.monotonic()
    raw = raw_kafka(concurrency, count)
    piped, healthy_s = pipeline(concurrency, count, hops)
    return {
        "concurrency": concurrency, "count": count, "hops": hops,
        "raw": raw, "pipeline": piped,
        "per_hop_overhead_ms": piped["p50_ms"] / hops - raw["p50_ms"],
        "sidecars_healthy_s": healthy_s, "run_s": time.monotonic() - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16, help="chains in flight")
    parser.add_argument("--count", type=int, default=200, help="chains measured (after warm-up)")
    parser.add_argument("--hops", type=int, default=SAGA_HOPS, help=f"topic hops through sidecars (the saga has {SAGA_HOPS})")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the finally blocks stop every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    floor = run_floor(args.concurrency, args.count, args.hops)
    raw, piped, hops = floor["raw"], floor["pipeline"], floor["hops"]
    print(f"\n{floor['count']} chains, {floor['concurrency']} in flight, broker {BROKER}\n")
    print("| path | chains/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
    for name, figures in (("raw Kafka: produce → consume", raw),
                          (f"{hops} hops: daprd publish → Kafka → daprd → no-op app", piped)):
        print(f"| {name} | {figures['per_s']:.0f} | {figures['p50_ms']:.1f} | {figures['p95_ms']:.1f} "
              f"| {figures['p99_ms']:.1f} |")
    print(f"\nPer hop beyond Kafka: {piped['p50_ms']:.1f} / {hops} − {raw['p50_ms']:.1f} = "
          f"{floor['per_hop_overhead_ms']:.1f} ms (pipeline p50 per hop minus one raw round trip: the sidecar's "
          "gRPC publish, its Kafka client, the delivery to the app and the app itself).")
    print(f"Sidecars healthy (subscribed) {floor['sidecars_healthy_s']:.1f} s after start; the first chain, "
          f"alone, then took {piped['first_s'] * 1000:.0f} ms (raw: {raw['first_s'] * 1000:.0f} ms); "
          f"whole run {floor['run_s']:.1f} s.")
    if args.json:
        args.json.write_text(json.dumps(floor, indent=2))


if __name__ == "__main__":
    main()
