"""users scaled by KEDA on CPU alone, as prod scales it: a stream of logins (each an argon2 hash)
drives its CPU past the trigger, the HPA KEDA made reads it through the resource metrics API and
asks for a second replica, which comes up Ready and takes logins too; no login fails meanwhile.
`task k8s:e2e` runs it with k8s/overlays/e2e-scaling applied (users between one and two
replicas), told how to call kubectl."""

import json
import os
import threading
import time

import httpx
import pytest

from tests.cluster.cluster import KUBECTL, NAMESPACE, kubectl
from tests.e2e.shop import api, new_customer

LOGGING_IN = 4  # concurrent logins: within users' hash queue (SHOP_PASSWORD_HASH_QUEUE), so none is turned away
WITHIN = 240  # seconds for the second replica: metrics every 15 s, the HPA every second (the local cluster)

pytestmark = pytest.mark.skipif(
    os.environ.get("SHOP_CPU_SCALING") != "1" or not KUBECTL, reason="runs on a cluster: task k8s:e2e"
)


def users_replicas() -> tuple[int, int]:
    """(replicas asked for, replicas ready) of users."""
    deployment = json.loads(kubectl("get", "deployment", "users", "-n", NAMESPACE, "-o", "json"))
    return deployment["spec"].get("replicas", 1), deployment.get("status", {}).get("readyReplicas", 0)


def test_a_stream_of_logins_gives_users_a_second_replica_and_no_login_fails() -> None:
    assert users_replicas() == (1, 1), "users should start at KEDA's minimum: one replica"
    customer = new_customer()
    credentials = {"email": customer["email"], "password": customer["password"]}
    answers: list[int] = []
    stop = threading.Event()

    def log_in() -> None:
        with api("users") as users:
            while not stop.is_set():
                try:
                    answers.append(users.post("/api/users/login", json=credentials, timeout=30).status_code)
                except httpx.TransportError:
                    answers.append(0)

    threads = [threading.Thread(target=log_in, daemon=True) for _ in range(LOGGING_IN)]
    for thread in threads:
        thread.start()
    began, seen = time.monotonic(), []
    try:
        while time.monotonic() - began < WITHIN:
            seen.append(users_replicas())
            if seen[-1] == (2, 2):
                time.sleep(10)  # logins keep flowing while the Service spreads them over both
                break
            time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert seen[-1] == (2, 2), f"users never had two ready replicas in {WITHIN}s under logins; seen {seen}"
    print(f"users: two replicas ready {time.monotonic() - began - 10:.0f}s after the logins began, "
          f"{len(answers)} logins")
    failed = [code for code in answers if code != 200]
    assert not failed, f"{len(failed)} of {len(answers)} logins failed during the scale-up: {sorted(set(failed))}"
