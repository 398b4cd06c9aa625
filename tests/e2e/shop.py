"""Helpers for black-box tests: the shop's public ports, a Kafka reader, polling."""

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from kafka import KafkaConsumer, TopicPartition

from tests.stack import stack

T = TypeVar("T")
ADMIN = {"email": "admin@shop.local", "password": "admin-local-password"}  # the documented local defaults


def api(function: str) -> httpx.Client:
    """The function's public API: the local stack's port, or where SHOP_API_URLS (a JSON object of
    function -> base URL) says, as on a Kubernetes cluster (k8s/tools/e2e.py)."""
    urls = json.loads(os.environ.get("SHOP_API_URLS") or "{}")
    return httpx.Client(base_url=urls.get(function) or f"http://127.0.0.1:{stack.FUNCTIONS[function]}", timeout=15)


def sidecar(function: str) -> httpx.Client:
    """The function's sidecar API, with the stack's DAPR_API_TOKEN (it refuses calls without)."""
    token = stack.api_tokens()["DAPR_API_TOKEN"]
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.SIDECAR_HTTP[function]}", timeout=15, headers={"dapr-api-token": token}
    )


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 45, every: float = 0.5) -> T:
    """Poll until `probe` returns something truthy: events cross Kafka asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def new_customer() -> dict[str, Any]:
    """Register a fresh customer; returns its registration body, its token and its id."""
    tag = uuid.uuid4().hex[:10]
    body = {
        "name": "Ana",
        "lastName": f"Prueba{tag}",
        "email": f"ana.{tag}@example.com",
        "password": "una-clave-larga",
        "phone": f"+57{int(tag, 16) % 10**10:010d}",
    }
    with api("users") as users:
        registered = users.post("/api/users/register", json=body)
        assert registered.status_code == 201, registered.text
        login = users.post("/api/users/login", json={"email": body["email"], "password": body["password"]})
        assert login.status_code == 200, login.text
    data = login.json()["data"]
    return {**body, "id": data["user"]["id"], "token": data["token"]}


def admin_token() -> str:
    with api("users") as users:
        login = users.post("/api/users/login", json=ADMIN)
        assert login.status_code == 200, login.text
        return login.json()["data"]["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def emails(token: str) -> list[dict]:
    """The e-mails notifications keeps for the token's user."""
    with api("notifications") as notifications:
        response = notifications.get("/api/notifications", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["data"]


def kafka_events(topic: str, match: Callable[[dict], bool], timeout: float = 30) -> list[dict]:
    """Read `topic` from the beginning on the real broker; the CloudEvents that `match`."""
    consumer = KafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{stack.KAFKA_PORT}",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    matched: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while not matched and time.monotonic() < deadline:
            if not consumer.assignment():
                partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
                if not partitions:
                    time.sleep(0.5)
                    continue
                consumer.assign(partitions)
                consumer.seek_to_beginning(*partitions)
            matched = [event for message in consumer if match(event := json.loads(message.value))]
        return matched
    finally:
        consumer.close()


def process_of(function: str, part: str) -> int:
    """The pid of a function's running `daprd` or `app` (its uvicorn) in the stack (by its port:
    tests/replicas runs daprds and apps of the same names on other ports)."""
    for pid, words in stack.command_lines():
        if part == "daprd" and Path(words[0]).name == "daprd" and words[words.index("--app-id") + 1 :][:1] == [function] \
                and str(stack.SIDECAR_HTTP[function]) in words:
            return pid
        # (The `dapr run` CLI's own command line names the app too, after `--`.)
        if part == "app" and Path(words[0]).name.startswith("python") and f"functions.{function}.app:app" in words \
                and str(stack.FUNCTIONS[function]) in words:
            return pid
    raise LookupError(f"no running {part} of {function}")
