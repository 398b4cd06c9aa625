#!/usr/bin/env python3
"""`task k8s:e2e`: the shop on a real Kubernetes cluster, end to end.

    python k8s/tools/e2e.py            # local cluster: build, start, deploy, journey, tear down
    KUBECONFIG=... python k8s/tools/e2e.py   # a cluster of yours (kind, minikube, ...): deploy, journey

With no KUBECONFIG it starts the local single-node cluster (k8s/tools/cluster.py: its own network
namespace, nothing leaves the machine), builds the images it needs (k8s/images/, and the shop's
own from the Dockerfile) with podman and loads them into the node. On a cluster of yours the
images must already be there (`kind load docker-image the-shop:dev`, ...), and Dapr too if
`helm` is not wanted (SHOP_E2E_INSTALL_DAPR=0).

Then: the Dapr control plane with Helm (the chart inside the dapr module), KEDA's operator and
metrics adapter (KEDA's own manifests from the keda module; SHOP_E2E_INSTALL_KEDA=0 where it is installed
already), the e2e overlay (k8s/overlays/e2e: the dev overlay with images that can be built here
and FerretDB on PostgreSQL for MongoDB), static volumes for Kafka's and the database's claims,
every pod Ready with its daprd, the customer journey (tests/cluster) through the functions'
Services, and the database refusing clients that do not sign in as the shop's user. Last,
serverless scaling: k8s/overlays/e2e-scaling hands notifications to KEDA, which must take it to
zero replicas, wake it for a burst of registrations and take it to a second replica on their lag
(every welcome e-mail sent once), then back to zero. Each step prints its time; on failure, the
pods, the events and the logs of every pod not ready. SHOP_E2E_KEEP=1 leaves the local cluster
running afterwards (`cluster.py down` stops it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402
import kube  # noqa: E402
import stack  # noqa: E402 - dapr/local/stack.py: the cached daprd, FerretDB and Kafka builds
from cluster import CACHE, say, step  # noqa: E402

ROOT = kube.ROOT
IMAGES = kube.K8S / "images"
SCALING_OVERLAY = "e2e-scaling"
NAMESPACE = "shop"
FUNCTIONS = ("users", "products", "cart", "payments", "notifications")
PODMAN_ROOT = CACHE / "podman"
ARCHIVES = CACHE / "image-archives"
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
SHOP_IMAGE = "docker.io/library/the-shop:dev"
KAFKA_IMAGE = f"localhost/shop-kafka:{stack.KAFKA_VERSION}"
FERRETDB_IMAGE = f"localhost/shop-ferretdb:{stack.FERRETDB_VERSION}"
DAPR_IMAGES = [f"ghcr.io/dapr/{name}:{cluster.DAPR_VERSION}" for name in (*cluster.DAPR_COMMANDS, "daprd")]
KEDA_IMAGE = f"ghcr.io/kedacore/keda:{cluster.KEDA_VERSION}"
KEDA_ADAPTER_IMAGE = f"ghcr.io/kedacore/keda-metrics-apiserver:{cluster.KEDA_VERSION}"
# The claims of the dev overlay's StatefulSets, and the user each one's pod runs as.
VOLUMES = {"data-kafka-0": 1000, "data-mongodb-0": 999}


# --- images ------------------------------------------------------------------------------------
# crun refuses this machine's hybrid cgroups; runc works. Storage in the cache, outside the checkout,
# with run state of its own (another cache's podman keeps its locks apart).
PODMAN_RUNROOT = Path("/run") / f"shop-podman-{hashlib.sha256(str(PODMAN_ROOT).encode()).hexdigest()[:8]}"
PODMAN = ["podman", "--root", str(PODMAN_ROOT), "--runroot", str(PODMAN_RUNROOT), "--runtime", "runc",
          "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def podman(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([*PODMAN, *args], text=True, capture_output=capture)
    if result.returncode != 0:
        raise RuntimeError(f"podman {args[0]} failed:\n{(result.stdout or '')[-4000:]}{(result.stderr or '')[-4000:]}")
    return result


def has_image(name: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", name]).returncode == 0


def base_image() -> None:
    """debian:bookworm-slim, made here: debootstrap's minimal bookworm, imported."""
    if has_image(BASE_IMAGE):
        return
    with step("base image: debootstrap --variant=minbase bookworm"):
        rootfs = CACHE / "bookworm-rootfs.partial"
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                       check=True, stdout=subprocess.DEVNULL)
        for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*PODMAN, "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
                       stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)


def fingerprint(*parts: Path | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = [part] if not part.is_dir() else sorted(
                p for p in part.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            for file in files:
                digest.update(str(file.relative_to(ROOT) if file.is_relative_to(ROOT) else file).encode())
                digest.update(file.read_bytes())
        else:
            digest.update(part.encode())
    return digest.hexdigest()[:12]


def build(tags: list[str], context: Path, containerfile: Path, machine_ca: bool = False,
          build_args: dict[str, str] | None = None) -> None:
    # `machine_ca`: the machine's CA bundle over the image's while it builds (pip behind a
    # TLS-inspecting egress); not kept in the image. Not where the build installs ca-certificates.
    ca = ["--volume", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"] if machine_ca else []
    args = [a for name, value in (build_args or {}).items() for a in ("--build-arg", f"{name}={value}")]
    podman("build", "--pull=never", "--network=host", "--layers", "--ulimit", "nofile=20000:20000", *ca, *args,
           "-f", str(containerfile), *[a for tag in tags for a in ("-t", tag)], str(context), capture=True)


def archive(name: str, tags: list[str], key: str, make_context, machine_ca: bool = False,
            build_args: dict[str, str] | None = None) -> Path:
    """The image as a `docker save` archive in the cache, built when its inputs changed."""
    target = ARCHIVES / f"{name}-{key}.tar"
    if target.exists():
        return target
    with step(f"image {tags[0]}"):
        base_image()
        with tempfile.TemporaryDirectory() as tmp:
            context, containerfile = make_context(Path(tmp))
            build(tags, context, containerfile, machine_ca, build_args)
        ARCHIVES.mkdir(parents=True, exist_ok=True)
        for stale in ARCHIVES.glob(f"{name}-*.tar"):
            stale.unlink()
        partial = target.with_suffix(".partial")
        podman("save", "--format", "docker-archive", "-o", str(partial), *tags, capture=True)
        partial.rename(target)
        # The image this one replaces is untagged now, and so are the intermediate images of its build:
        # without this the cache keeps every build ever made (2.6 GB after a few days of them). Those
        # of the images kept stay, as their parents: the next build still starts from them.
        podman("image", "prune", "--force", capture=True)
    return target


def images() -> list[Path]:
    """Every image the e2e overlay and the Dapr chart run, as archives to load into the node."""
    stack.provision_kafka()
    stack.provision_ferretdb()
    stack.provision_daprd()
    control_plane = cluster.dapr_binaries()
    keda = cluster.keda()
    # What the shop's Dockerfile builds FROM here (its pinned python:3.11-slim is on Docker Hub
    # only): a stand-in tagged by its own inputs, so that changing them builds a new one.
    python_image = f"localhost/shop-python:3.11-{fingerprint(IMAGES / 'python')}"

    def shop_context(tmp: Path):
        if not has_image(python_image):
            build([python_image], IMAGES / "python", IMAGES / "python" / "Containerfile")
            for stale in podman("images", "--format", "{{.Repository}}:{{.Tag}}",
                                "--filter", "reference=localhost/shop-python", capture=True).stdout.split():
                if stale != python_image:
                    # That name only (an untag without one drops them all); the image is pruned with
                    # the rest after the shop's image is saved, once no name is left on it.
                    podman("untag", stale, stale)
        return ROOT, ROOT / "Dockerfile"

    def kafka_context(tmp: Path):
        shutil.copytree(IMAGES / "kafka", tmp, dirs_exist_ok=True)
        shutil.copytree(stack.KAFKA_LIBS, tmp / "libs")
        shutil.copy(ROOT / "dapr" / "local" / "kafka" / "log4j2.yaml", tmp / "log4j2.yaml")
        return tmp, tmp / "Containerfile"

    def ferretdb_context(tmp: Path):
        shutil.copytree(IMAGES / "ferretdb", tmp, dirs_exist_ok=True)
        shutil.copy(stack.FERRETDB, tmp / "ferretdb")
        shutil.copy(stack.GIN_SQL, tmp / "ferretdb-gin.sql")
        return tmp, tmp / "Containerfile"

    def dapr_context(tmp: Path):
        shutil.copytree(IMAGES / "dapr", tmp, dirs_exist_ok=True)
        (tmp / "bin").mkdir()
        for command in cluster.DAPR_COMMANDS:
            shutil.copy(control_plane / command, tmp / "bin" / command)
        shutil.copy(stack.DAPRD, tmp / "bin" / "daprd")
        return tmp, tmp / "Containerfile"

    def keda_context(tmp: Path):
        shutil.copytree(IMAGES / "keda", tmp, dirs_exist_ok=True)
        for binary in cluster.KEDA_COMMANDS:
            shutil.copy(keda / binary, tmp / binary)
        return tmp, tmp / "Containerfile"

    shop_inputs = [ROOT / name for name in ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml",
                                            "README.md", "functions")]
    return [
        archive("kafka", [KAFKA_IMAGE], fingerprint(IMAGES / "kafka", stack.KAFKA_VERSION), kafka_context),
        archive("ferretdb", [FERRETDB_IMAGE], fingerprint(IMAGES / "ferretdb", stack.GIN_SQL, str(stack.FERRETDB)),
                ferretdb_context),
        archive("dapr", DAPR_IMAGES, fingerprint(IMAGES / "dapr", str(control_plane), str(stack.DAPRD)), dapr_context),
        archive("keda", [KEDA_IMAGE, KEDA_ADAPTER_IMAGE], fingerprint(IMAGES / "keda", str(keda)), keda_context),
        archive("shop", [SHOP_IMAGE], fingerprint(*shop_inputs, python_image), shop_context,
                machine_ca=True, build_args={"PYTHON_IMAGE": python_image}),
    ]


def load(archives: list[Path]) -> None:
    with step(f"load {len(archives)} images into the node"):
        for path in archives:
            cluster.import_image(path)


# --- deployment --------------------------------------------------------------------------------
def kubectl(*args: str, check: bool = True, timeout: float = 600) -> str:
    if not LOCAL:
        result = subprocess.run([kube.kubectl(), *args], capture_output=True, text=True, timeout=timeout)
    else:
        result = cluster.kubectl(*args, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def in_cluster_net(cmd: list[str]) -> list[str]:
    return cmd if not LOCAL else cluster.in_netns(*cmd)


def install_dapr() -> None:
    if os.environ.get("SHOP_E2E_INSTALL_DAPR") == "0":
        return
    chart = kube.module_dir("github.com/dapr/dapr", cluster.DAPR_VERSION) / "charts" / "dapr"
    with step(f"Dapr {cluster.DAPR_VERSION} control plane: helm install (chart of the dapr module)"):
        home = CACHE / "helm-home"
        env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
               "HELM_DATA_HOME": str(home / "data")}
        if LOCAL:
            env["KUBECONFIG"] = str(cluster.RUN / "admin.kubeconfig")
        subprocess.run(in_cluster_net([
            str(cluster.helm()), "upgrade", "--install", "dapr", str(chart), "--namespace", "dapr-system",
            "--create-namespace", "--wait", "--timeout", "10m",
            "--set", "global.registry=ghcr.io/dapr", "--set", f"global.tag={cluster.DAPR_VERSION}",
            "--set", "global.ha.enabled=false",
            # The shop's namespace enforces Pod Security "restricted": daprd must drop every capability.
            "--set", "dapr_sidecar_injector.sidecarDropALLCapabilities=true",
            # One node, no provisioner: scheduler and placement keep their state in memory.
            "--set", "dapr_scheduler.cluster.inMemoryStorage=true",
            "--set", "dapr_placement.cluster.forceInMemoryLog=true",
        ]), check=True, env=env)


def keda_install(folder: Path) -> Path:
    """The kustomization that installs KEDA's operator and metrics adapter as KEDA's own manifests
    do (the module's config/: CRDs, namespace, RBAC, operator, the adapter and its APIService),
    written in `folder`. The operator takes a workload from zero to one replica and back; beyond
    one, the HPA it makes reads the lag through the adapter (the aggregated external metrics API,
    whose certificate the operator makes and writes into the APIService). Not KEDA's admission
    webhooks, so the operator is told not to patch their certificates."""
    config = kube.module_dir("github.com/kedacore/keda/v2", cluster.KEDA_VERSION) / "config"
    shutil.copytree(config, folder / "config")  # beside ours: kustomize takes no absolute path
    container = "/spec/template/spec/containers/0"
    pull_from_the_node = {"op": "replace", "path": f"{container}/imagePullPolicy", "value": "IfNotPresent"}
    install = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"../config/{part}"
                      for part in ("crd", "general", "rbac", "manager", "service_account", "metrics-server")],
        "images": [{"name": image.rsplit(":", 1)[0], "newTag": cluster.KEDA_VERSION}
                   for image in (KEDA_IMAGE, KEDA_ADAPTER_IMAGE)],
        "patches": [
            {"target": {"kind": "Deployment", "name": "keda-operator"}, "patch": json.dumps([
                pull_from_the_node,
                {"op": "add", "path": f"{container}/args/-", "value": "--enable-webhook-patching=false"},
            ])},
            {"target": {"kind": "Deployment", "name": "keda-metrics-apiserver"}, "patch": json.dumps([
                pull_from_the_node,
            ])},
        ],
    }
    (folder / "install").mkdir()
    (folder / "install" / "kustomization.yaml").write_text(json.dumps(install))
    return folder / "install"


def install_keda() -> None:
    if os.environ.get("SHOP_E2E_INSTALL_KEDA") == "0":
        return
    with step(f"KEDA {cluster.KEDA_VERSION} operator and metrics adapter: kubectl apply -k (the keda module's config)"):
        with tempfile.TemporaryDirectory() as tmp:
            kubectl("apply", "-k", str(keda_install(Path(tmp))), "--server-side", "--force-conflicts")


def static_volumes() -> None:
    """On the local cluster, which has no provisioner: a hostPath PersistentVolume bound to each
    claim of the dev overlay's StatefulSets, in a folder owned by the pod's user (fsGroup does not
    reach hostPath volumes). A cluster of yours provisions them with its default StorageClass."""
    root = cluster.RUN / "volumes"
    for claim, uid in VOLUMES.items():
        folder = root / claim
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, uid, uid)
        volume = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"shop-e2e-{claim}", "labels": {"app.kubernetes.io/part-of": "shop-e2e"}},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                     "claimRef": {"namespace": NAMESPACE, "name": claim},
                     "hostPath": {"path": str(folder), "type": "Directory"}},
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as manifest:
            json.dump(volume, manifest)
        try:
            kubectl("apply", "-f", manifest.name)
        finally:
            os.unlink(manifest.name)


def apply_overlay(name: str = "e2e") -> None:
    with step(f"kubectl apply -k k8s/overlays/{name}"):
        with tempfile.TemporaryDirectory() as tmp:
            tree = kube.prepare_tree(kube.K8S, Path(tmp))
            kubectl("apply", "-k", str(tree / "overlays" / name), "--server-side", "--force-conflicts")
        if LOCAL and name == "e2e":
            static_volumes()


def pods() -> list[dict]:
    return json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-o", "json"))["items"]


def function_of(pod: dict) -> str | None:
    return pod["metadata"].get("labels", {}).get("app.kubernetes.io/name")


def container_statuses(pod: dict) -> list[dict]:
    return pod.get("status", {}).get("containerStatuses") or []


def ready_containers(pod: dict) -> int:
    return sum(1 for s in container_statuses(pod) if s.get("ready"))


def ready(pod: dict) -> bool:
    statuses = container_statuses(pod)
    return bool(statuses) and ready_containers(pod) == len(statuses)


def wait_for_shop(timeout: float = 900) -> None:
    with step("every pod of the shop Ready, each function with its daprd"):
        deadline, last = time.monotonic() + timeout, ""
        while True:
            current = pods()
            by_function = {f: [p for p in current if function_of(p) == f] for f in FUNCTIONS}
            sidecars = all(any(c["name"] == "daprd" for c in p["spec"]["containers"])
                           for f in FUNCTIONS for p in by_function[f])
            summary = ", ".join(f"{p['metadata']['name']} {ready_containers(p)}/{len(p['spec']['containers'])}"
                                for p in current)
            if summary != last:
                say(f"  {summary}")
                last = summary
            if current and all(ready(p) for p in current) and all(by_function.values()) and sidecars:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the shop was not Ready within {timeout:.0f}s")
            time.sleep(5)


def service_urls() -> dict[str, str]:
    services = json.loads(kubectl("get", "services", "-n", NAMESPACE, "-o", "json"))["items"]
    urls = {}
    for service in services:
        name = service["metadata"]["name"]
        if name in FUNCTIONS:
            port = next(p["port"] for p in service["spec"]["ports"] if p.get("name") == "http")
            urls[name] = f"http://{service['spec']['clusterIP']}:{port}"
    return urls


def cluster_tests(test_file: str, what: str, urls: dict[str, str], **env: str) -> None:
    """tests/cluster/<test_file>, from inside the cluster's network, told where each Service answers
    and how to call kubectl (tests/cluster/cluster.py)."""
    kubectl_argv = [str(kube.kubectl())] + (["--kubeconfig", str(cluster.RUN / "admin.kubeconfig")] if LOCAL else [])
    env = {**os.environ, "SHOP_API_URLS": json.dumps(urls), "SHOP_KUBECTL": json.dumps(kubectl_argv),
           "SHOP_NAMESPACE": NAMESPACE, **env}
    python = str(ROOT / ".venv" / "bin" / "python")
    pytest = [python, "-m", "pytest", f"tests/cluster/{test_file}", "-q", "-p", "no:cacheprovider"]
    if subprocess.run(in_cluster_net(pytest), cwd=ROOT, env=env).returncode != 0:
        raise RuntimeError(f"{what} failed on the cluster")


def journey() -> None:
    urls = service_urls()
    with step(f"the customer journey (tests/cluster) through the Services {urls}"):
        cluster_tests("test_journey.py", "the customer journey", urls)


def database_access() -> None:
    """The database takes the functions' URI and refuses a client without it: tests/cluster, given
    the URI from the functions' Secret and the database pod's address."""
    cart = json.loads(kubectl("get", "deployment", "cart", "-n", NAMESPACE, "-o", "json"))
    [ref] = [e["valueFrom"]["secretKeyRef"] for e in cart["spec"]["template"]["spec"]["containers"][0]["env"]
             if e["name"] == "MONGODB_URI"]
    secret = json.loads(kubectl("get", "secret", ref["name"], "-n", NAMESPACE, "-o", "json"))
    address = kubectl("get", "pod", "mongodb-0", "-n", NAMESPACE, "-o", "jsonpath={.status.podIP}").strip()
    with step("the database refuses a client that does not sign in as the shop's user"):
        cluster_tests("test_database_access.py", "the database's access check", {},
                      SHOP_DATABASE_URI=base64.b64decode(secret["data"][ref["key"]]).decode(),
                      SHOP_DATABASE_ADDRESS=f"{address}:27017")


def network_policies() -> None:
    """The NetworkPolicies enforced: tests/cluster starts probe pods that try the functions' app
    and sidecar ports, Kafka and the database. A cluster whose network plugin ignores policies
    fails it; SHOP_E2E_NETWORK_POLICIES=0 skips it there."""
    if os.environ.get("SHOP_E2E_NETWORK_POLICIES") == "0":
        say("NetworkPolicies: not checked (SHOP_E2E_NETWORK_POLICIES=0)")
        return
    with step("NetworkPolicies enforced: who reaches an app port, a sidecar, Kafka, the database"):
        cluster_tests("test_network_policies.py", "the NetworkPolicy check", {})


# --- serverless scaling --------------------------------------------------------------------------
def notifications_scale() -> tuple[int, int, int]:
    """(replicas KEDA asked for, replicas ready, notifications pods present: terminating or not)."""
    deployment = json.loads(kubectl("get", "deployment", "notifications", "-n", NAMESPACE, "-o", "json"))
    present = [p for p in pods() if function_of(p) == "notifications"]
    return deployment["spec"].get("replicas", 1), deployment.get("status", {}).get("readyReplicas", 0), len(present)


def wait_for_zero(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (scale := notifications_scale()) != (0, 0, 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"KEDA did not scale notifications to zero within {timeout:.0f}s "
                               f"(replicas, ready, pods): {scale}")
        time.sleep(2)


class ScaleWatch(threading.Thread):
    """Notes when notifications first has a ready replica, and the most replicas asked for and
    ready, from a burst until it is back at zero."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.began, self.first_ready, self.most_asked, self.most_ready = time.monotonic(), None, 0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1):
            try:
                asked, ready_now, _ = notifications_scale()
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
                continue  # one failed look; the next one counts
            if ready_now and self.first_ready is None:
                self.first_ready = time.monotonic() - self.began
            self.most_asked, self.most_ready = max(self.most_asked, asked), max(self.most_ready, ready_now)


def wait_for_api_service(name: str, missing: str, timeout: float = 120) -> None:
    """Until the APIService `name` is Available: registered, and its server answering behind the
    API server (the aggregation layer). `missing`: what to say if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        service = json.loads(kubectl("get", "apiservice", name, "-o", "json", check=False) or "{}")
        if any(c["type"] == "Available" and c["status"] == "True"
               for c in service.get("status", {}).get("conditions", [])):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the APIService {name} is not Available ({missing}): "
                               + kubectl("get", "apiservice", name, "-o", "yaml", check=False))
        time.sleep(2)


def serverless_scaling() -> None:
    """users on CPU (see cpu_scaling); notifications handed to KEDA: to zero when idle, woken by its
    topics' lag, back to zero."""
    if os.environ.get("SHOP_E2E_INSTALL_KEDA") != "0":  # else the cluster's own KEDA, wherever it runs
        with step("KEDA's operator and metrics adapter Ready"):
            for deployment in ("keda-operator", "keda-metrics-apiserver"):
                kubectl("rollout", "status", f"deployment/{deployment}", "-n", "keda", "--timeout=300s")
    with step("the external metrics API served (KEDA's adapter, through the API server)"):
        wait_for_api_service("v1beta1.external.metrics.k8s.io", "KEDA's metrics adapter")
    apply_overlay(SCALING_OVERLAY)
    # First, while users is still at one replica: the registrations of the burst below load it too.
    cpu_scaling()
    with step("KEDA scales notifications to zero (no lag on its topics)"):
        wait_for_zero(300)
    watch = ScaleWatch()
    watch.start()
    try:
        with step("a burst of registrations while notifications has no replica: every welcome e-mail sent once"):
            cluster_tests("test_scale_from_zero.py", "the burst on notifications scaled to zero", service_urls(),
                          SHOP_SCALED_TO_ZERO="1")
        with step("KEDA scales notifications back to zero (cooldown 30 s)"):
            wait_for_zero(300)
    finally:
        watch.stopping.set()
        watch.join()
    if watch.first_ready is None:
        raise RuntimeError("the e-mails were sent, yet no notifications replica was seen ready")
    say(f"  first notifications replica ready {watch.first_ready:.0f}s after the burst began; "
        f"at most {watch.most_asked} asked for, {watch.most_ready} ready")
    # KEDA's operator only ever asks for zero or one: a second replica is the HPA's decision, from
    # the lag it read through the adapter (the burst's lag is many times the overlay's threshold).
    if watch.most_asked < 2:
        hpa = kubectl("get", "hpa", "-n", NAMESPACE, "-o", "yaml", check=False)
        raise RuntimeError(f"notifications never got a second replica from its lag; the HPA:\n{hpa}")


def cpu_scaling() -> None:
    """users on KEDA's CPU trigger (prod's only trigger for it): logins ask for a second replica.
    A cluster without metrics-server fails it; SHOP_E2E_CPU_SCALING=0 skips it there."""
    if os.environ.get("SHOP_E2E_CPU_SCALING") == "0":
        say("scaling on CPU: not checked (SHOP_E2E_CPU_SCALING=0)")
        return
    with step("the resource metrics API served (metrics-server, through the API server)"):
        wait_for_api_service("v1beta1.metrics.k8s.io", f"see {cluster.RUN / 'logs' / 'metrics.log'}" if LOCAL else
                             "CPU triggers need metrics-server in the cluster; SHOP_E2E_CPU_SCALING=0 skips this")
    with step("a stream of logins: KEDA's CPU trigger gives users a second replica, no login fails"):
        try:
            cluster_tests("test_cpu_scaling.py", "users' scaling on CPU", service_urls(), SHOP_CPU_SCALING="1")
        except RuntimeError:
            print(kubectl("get", "hpa", "-n", NAMESPACE, "-o", "yaml", check=False), file=sys.stderr)
            raise


def report() -> None:
    """What a failed run needs to be understood: pods, events, logs of the pods not ready."""
    for args in (("get", "pods", "-A", "-o", "wide"), ("get", "events", "-A", "--sort-by=.lastTimestamp")):
        print(kubectl(*args, check=False), file=sys.stderr)
    for namespace in (NAMESPACE, "dapr-system", "keda"):
        try:
            listed = kubectl("get", "pods", "-n", namespace, "-o", "json", check=False) or "{}"
            items = json.loads(listed).get("items", [])
        except json.JSONDecodeError:
            continue
        for pod in items:
            if ready(pod):
                continue
            name = pod["metadata"]["name"]
            print(f"--- {namespace}/{name}: describe", file=sys.stderr)
            print(kubectl("describe", "pod", "-n", namespace, name, check=False)[-3000:], file=sys.stderr)
            for container in pod["spec"]["containers"]:
                print(f"--- {namespace}/{name}/{container['name']}: logs", file=sys.stderr)
                print(kubectl("logs", "-n", namespace, name, "-c", container["name"], "--tail=60", check=False),
                      file=sys.stderr)
    if LOCAL:  # the local cluster's NetworkPolicy controller: its last syncs and any error
        log = cluster.paths()["logs"] / "netpol.log"
        if log.exists():
            # Each sync's start and length, and whatever it warned of: about the last few minutes.
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if not line.startswith("I") or "Starting sync" in line or "sync iptables took" in line]
            print("--- kube-router (NetworkPolicies): its last syncs", file=sys.stderr)
            print("\n".join(lines[-400:]), file=sys.stderr)
    # Scaling is decided by KEDA's operator, ready or not: what it saw, and what it said.
    for args in (("describe", "scaledobject", "-n", NAMESPACE), ("get", "hpa", "-n", NAMESPACE),
                 ("logs", "-n", "keda", "deployment/keda-operator", "--tail=60")):
        print(f"--- kubectl {' '.join(args)}", file=sys.stderr)
        print(kubectl(*args, check=False), file=sys.stderr)


LOCAL = not os.environ.get("KUBECONFIG")


def main() -> int:
    began = time.monotonic()
    if LOCAL:
        cluster.debian_packages({"debootstrap": "debootstrap", "podman": "podman"})
        archives = images()
        cluster.up()  # provisions what is missing first
    try:
        if LOCAL:
            load(archives)
        install_dapr()
        install_keda()
        apply_overlay()
        wait_for_shop()
        journey()
        database_access()
        network_policies()
        serverless_scaling()
    except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        say(f"FAILED: {exc}")
        report()
        return 1
    finally:
        if LOCAL and os.environ.get("SHOP_E2E_KEEP") != "1":
            cluster.down()
    say(f"k8s e2e passed in {time.monotonic() - began:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
