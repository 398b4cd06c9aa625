"""CPU per publish, app and sidecar, through the sidecar's HTTP API (httpx) and its gRPC API (the
way the functions publish: functions/common/sidecar.py), against the running local stack.

    python -m tests.bench.publish                 # 2,000 publishes each way, 8 in flight, twice
    python -m tests.bench.publish --count 5000

It publishes `user_login` events through users' sidecar (a topic no function consumes, so the
shop does nothing with them) and reports, per publish: this process's CPU (the app's side of a
publish), users' daprd CPU, and the wall time. A measurement, not a test.
"""

import argparse
import asyncio
import os
import time
import uuid

import httpx

from functions.common import sidecar
from functions.common.settings import settings_of
from tests.bench.orders import cpu_seconds, stack_processes
from tests.stack import stack

TOPIC = "user_login"
FUNCTION = "users"


def daprd_pid() -> int:
    for pid, name in stack_processes().items():
        if name == f"daprd {FUNCTION}":
            return pid
    raise SystemExit(f"no daprd for {FUNCTION}: is the stack up (`task up`)?")


def cloud_event() -> dict:
    at = "2026-11-29T13:00:00.000+00:00"
    return {"specversion": "1.0", "id": f"evt_{uuid.uuid4().hex}", "source": FUNCTION, "type": "shop.user_login.v1",
            "time": at, "datacontenttype": "application/json",
            "data": {"userId": uuid.uuid4().hex[:24], "email": "carga@example.com", "at": at}}


async def measure(name: str, publish, count: int, concurrency: int, daprd: int) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            await publish(cloud_event())

    await asyncio.gather(*(one() for _ in range(min(count, 200))))  # warm: connections, first calls
    cpu, sidecar_cpu, wall = time.process_time(), cpu_seconds(daprd), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    cpu, sidecar_cpu, wall = (time.process_time() - cpu, cpu_seconds(daprd) - sidecar_cpu,
                              time.perf_counter() - wall)
    print(f"| {name} | {cpu / count * 1000:.2f} | {sidecar_cpu / count * 1000:.2f} | {wall / count * 1000:.2f} |",
          flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    token = stack.api_tokens()["DAPR_API_TOKEN"]
    os.environ.update(DAPR_GRPC_PORT=str(stack.SIDECAR_GRPC[FUNCTION]), DAPR_API_TOKEN=token)
    settings_of.cache_clear()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.SIDECAR_HTTP[FUNCTION]}",
                             headers={"dapr-api-token": token}, timeout=10)

    async def over_http(event: dict) -> None:
        response = await http.post(f"/v1.0/publish/pubsub/{TOPIC}", json=event, params={"metadata.partitionKey": "k"},
                                   headers={"Content-Type": "application/cloudevents+json"})
        response.raise_for_status()

    async def over_grpc(event: dict) -> None:
        await sidecar.publish_cloud_event(TOPIC, event, "k")

    daprd = daprd_pid()
    print(f"{args.count} publishes each, {args.concurrency} in flight, through the sidecar of {FUNCTION}\n\n"
          "| API | app CPU ms per publish | daprd CPU ms per publish | wall ms per publish |\n|---|---|---|---|")
    for _ in range(2):
        await measure("HTTP (httpx)", over_http, args.count, args.concurrency, daprd)
        await measure("gRPC (the functions' way)", over_grpc, args.count, args.concurrency, daprd)
    await http.aclose()
    await sidecar.close()


if __name__ == "__main__":
    asyncio.run(main())
