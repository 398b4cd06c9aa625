"""The shop with several replicas per function, as a cluster runs it, on loopback.

Two replicas of products, payments and notifications (one of users and cart), each app beside a
daprd of its own with the same app id, so Kafka splits each topic's partitions between the two
and service invocation picks either. Everything is separate from the `task up` stack, which may
be running: a Kafka broker of its own, a name-resolution database of its own, other ports.

The database is mongo-java-server (dapr/local/build/atomic-mongo), which applies each
conditional update atomically as MongoDB does, and the functions run with SHOP_DOCUMENT_LOCKS=false:
the in-process locks that make up for FerretDB's missing isolation are off, so only what the
database guarantees keeps the replicas correct.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.stack import stack

KAFKA_PORT, KAFKA_CONTROLLER_PORT, DB_PORT = 19092, 19093, 27117
# Another database to race on instead (e.g. FerretDB, to see it lose updates); not for CI.
OTHER_DB = os.environ.get("SHOP_REPLICAS_MONGODB_URI")
MONGODB_URI = OTHER_DB or f"mongodb://127.0.0.1:{DB_PORT}"
DB_PREFIX = "replicas"
REPLICAS = {"users": 1, "products": 2, "cart": 2, "payments": 2, "notifications": 2}
LOGS = stack.STATE / "replicas" / "logs"


@dataclass(frozen=True)
class Instance:
    function: str
    replica: int
    app_port: int
    sidecar_port: int  # daprd's HTTP port; gRPC, internal gRPC and metrics are +10, +20, +30

    @property
    def name(self) -> str:
        return f"{self.function}-{self.replica}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"


def instances() -> list[Instance]:
    made = []
    for function, count in REPLICAS.items():
        for replica in range(1, count + 1):
            k = len(made)
            made.append(Instance(function, replica, app_port=8101 + k, sidecar_port=4000 + 40 * k))
    return made


class ReplicaCluster:
    def __init__(self) -> None:
        self.instances = instances()
        self.tokens = {"DAPR_API_TOKEN": secrets.token_urlsafe(32), "APP_API_TOKEN": secrets.token_urlsafe(32)}
        self.folder = Path(tempfile.mkdtemp(prefix="shop-replicas-"))
        self.processes: dict[str, subprocess.Popen] = {}

    # --- start and stop ---------------------------------------------------------------------
    def start(self, timeout: float = 180) -> None:
        stack.provision(["kafka", "daprd", "atomic-mongo"])
        busy = [p for p in self.ports() if stack.port_open(p)]
        if busy:
            raise RuntimeError(f"ports of the replica cluster already in use: {busy}")
        LOGS.mkdir(parents=True, exist_ok=True)
        if not OTHER_DB:
            self._spawn("atomic-mongo", stack.atomic_mongo_cmd(DB_PORT))
        config = self.folder / "kafka.properties"
        config.write_text(stack.kafka_config(self.folder / "kafka", KAFKA_PORT, KAFKA_CONTROLLER_PORT))
        self._spawn("kafka", stack.kafka_cmd(config, self.folder / "kafka"))
        if not OTHER_DB:
            stack.wait_for_port(DB_PORT, timeout=60)
        stack.wait_for_port(KAFKA_PORT, timeout=90)
        resources, dapr_config = self._dapr_files()
        for instance in self.instances:
            self._spawn(f"{instance.name}-app", self._app_cmd(instance), env=self._app_env(instance))
            self._spawn(
                f"{instance.name}-daprd",
                stack.bare_daprd_cmd(instance.function, instance.sidecar_port, resources=resources, config=dapr_config,
                                     app_port=instance.app_port),
                env={**self.tokens, "DAPR_HOST_IP": "127.0.0.1"},
            )
        stack.wait_until("every replica and its sidecar ready", self.ready, timeout=timeout)

    def stop(self) -> None:
        stack.terminate(list(self.processes.values()), grace=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def ports(self) -> list[int]:
        ports = [KAFKA_PORT, KAFKA_CONTROLLER_PORT] + ([] if OTHER_DB else [DB_PORT])
        for i in self.instances:
            ports += [i.app_port, *(i.sidecar_port + d for d in (0, 10, 20, 30))]
        return ports

    def ready(self) -> bool:
        for instance in self.instances:
            if not stack.http_ok(f"http://127.0.0.1:{instance.sidecar_port}/v1.0/healthz"):
                return False
            if not stack.http_ok(f"{instance.url}/readyz"):
                return False
        dead = [name for name, process in self.processes.items() if process.poll() is not None]
        if dead:
            raise RuntimeError(f"exited during start-up: {dead} (logs in {LOGS})")
        return True

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        with open(LOGS / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                cmd, cwd=stack.ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _app_cmd(self, instance: Instance) -> list[str]:
        return [sys.executable, "-m", "uvicorn", f"functions.{instance.function}.app:app",
                "--host", "127.0.0.1", "--port", str(instance.app_port)]

    def _app_env(self, instance: Instance) -> dict[str, str]:
        return {
            **self.tokens,
            "MONGODB_URI": MONGODB_URI,
            "SHOP_DB_PREFIX": DB_PREFIX,
            "SHOP_DOCUMENT_LOCKS": "false",
            **stack.bare_daprd_app_env(instance.sidecar_port),
            "SHOP_OUTBOX_SWEEP_SECONDS": "2",
            "SENDGRID_API_KEY": "",
            "PYTHONUNBUFFERED": "1",
        }

    def _dapr_files(self) -> tuple[Path, Path]:
        """The stack's own Dapr files, pointed at this cluster's broker and resolver database."""
        resources = self.folder / "resources"
        resources.mkdir()
        pubsub = (stack.ROOT / "components" / "pubsub.yaml").read_text()
        (resources / "pubsub.yaml").write_text(pubsub.replace("127.0.0.1:9092", f"127.0.0.1:{KAFKA_PORT}"))
        shutil.copy(stack.ROOT / "dapr" / "resiliency.yaml", resources / "resiliency.yaml")
        config = yaml.safe_load((stack.ROOT / "dapr" / "config.yaml").read_text())
        config["spec"]["nameResolution"]["configuration"]["connectionString"] = str(self.folder / "nameresolution.db")
        config_path = self.folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        return resources, config_path

    # --- for the tests ------------------------------------------------------------------------
    def of(self, function: str) -> list[Instance]:
        return [i for i in self.instances if i.function == function]

    def api(self, function: str) -> httpx.Client:
        """The function's public API on its first replica."""
        return httpx.Client(base_url=self.of(function)[0].url, timeout=30)

    def subscribers(self) -> dict[str, list[Instance]]:
        """topic -> every replica subscribed to it (from each app's /dapr/subscribe)."""
        found: dict[str, list[Instance]] = {}
        for instance in self.instances:
            answer = httpx.get(f"{instance.url}/dapr/subscribe", timeout=10)
            listed = answer.json() if answer.status_code == 200 else []  # 404: subscribes to nothing
            for subscription in listed:
                found.setdefault(subscription["topic"], []).append(instance)
        return found

    def pause_sidecar(self, instance: Instance, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the replica's daprd: Kafka's deliveries to its partitions wait
        (until the broker gives them to the other replica), and name resolution stops offering it
        once its registration goes stale (updateInterval, 5 s)."""
        self.processes[f"{instance.name}-daprd"].send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def deliver(self, instance: Instance, topic: str, cloud_event: dict, patience: float = 30) -> list[str]:
        """POST a CloudEvent to a replica's subscription route as its sidecar does (with the app
        token), redelivering on RETRY as Dapr would; returns every answer."""
        headers = {"dapr-api-token": self.tokens["APP_API_TOKEN"], "Content-Type": "application/cloudevents+json"}
        deadline = time.monotonic() + patience
        answers = []
        while True:
            response = httpx.post(f"{instance.url}/events/{topic}", content=json.dumps(cloud_event), headers=headers,
                                  timeout=30)
            answers.append(response.json().get("status") if response.status_code == 200 else f"HTTP {response.status_code}")
            if answers[-1] != "RETRY" or time.monotonic() > deadline:
                return answers
            time.sleep(0.5)

    def log_tails(self, lines: int = 30) -> str:
        tails = []
        for path in sorted(LOGS.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"===== {path.name}\n" + "\n".join(tail))
        return "\n".join(tails)

    def log_count(self, text: str) -> int:
        """Lines of the apps' logs that contain `text`."""
        return sum(path.read_text(errors="replace").count(text) for path in LOGS.glob("*-app.log"))
