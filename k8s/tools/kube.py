#!/usr/bin/env python3
"""The shop's Kubernetes manifests, proven without a cluster.

    python k8s/tools/kube.py provision        # kubectl, Dapr's CRDs, the dry-run API server
    python k8s/tools/kube.py render [--out D]  # every overlay -> D/<overlay>.yaml (default k8s/rendered)
    python k8s/tools/kube.py apiserver        # only the local API server for the dry run

Provisioning is idempotent. A kubectl in the cache or on PATH (with kustomize v5) is used as it
is; otherwise kubectl is built from the Go module proxy (k8s/tools/kubectl/go.mod pins it) into
$SHOP_CACHE (default ~/.cache/the-shop). The API server for `kubectl apply --dry-run=server`
(etcd and kube-apiserver in one process, k8s/tools/apiserver) is built the same way, unless
SHOP_K8S_DRY_RUN=0. Dapr's CRDs come from the Go module cache, at the Dapr version the local
stack pins (dapr/local/build/daprd/go.mod). Nothing built or downloaded enters the repository.

Overlays are rendered from a temporary copy of k8s/ in which every `*.env` is the committed
`*.env.example`: the checks never read real prod credentials and pass on a fresh clone.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

K8S = Path(__file__).resolve().parents[1]
ROOT = K8S.parent
TOOLS = K8S / "tools"
sys.path.insert(0, str(ROOT / "dapr" / "local"))
import stack  # noqa: E402 - the local stack's Go build, shared
CACHE = Path(os.environ.get("SHOP_CACHE", Path.home() / ".cache" / "the-shop")).expanduser()


def say(message: str) -> None:
    print(f"[k8s] {message}", file=sys.stderr, flush=True)


def go_require(go_mod: Path, module: str) -> str:
    """The version go.mod requires of a module, without the leading v."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+v(\S+)", go_mod.read_text(), re.M)
    if not match:
        raise SystemExit(f"{module} is not required in {go_mod}")
    return match.group(1)


# k8s.io/kubectl v0.X.Y is Kubernetes v1.X.Y.
KUBECTL_VERSION = "1." + go_require(TOOLS / "kubectl" / "go.mod", "k8s.io/kubectl").split(".", 1)[1]
KUBERNETES_VERSION = go_require(TOOLS / "apiserver" / "go.mod", "k8s.io/kubernetes")
DAPR_VERSION = go_require(ROOT / "dapr" / "local" / "build" / "daprd" / "go.mod", "github.com/dapr/dapr")
# The KEDA whose CRDs the ScaledObjects are checked against (the module's config/crd/bases), and
# whose operator the local cluster runs (k8s/tools/keda/go.mod).
KEDA_VERSION = go_require(TOOLS / "keda" / "go.mod", "github.com/kedacore/keda/v2")


def source_stamp(module_dir: Path, names: tuple[str, ...] = ("go.mod", "go.sum", "main.go")) -> str:
    """A short hash of a tool's `names` (go.mod, go.sum and its main.go, unless told): an edit
    means a new cached build."""
    digest = hashlib.sha256()
    for name in names:
        digest.update((module_dir / name).read_bytes())
    return digest.hexdigest()[:10]


CACHED_KUBECTL = CACHE / f"kubectl-v{KUBECTL_VERSION}-{source_stamp(TOOLS / 'kubectl')}" / "kubectl"
APISERVER = CACHE / f"shop-apiserver-v{KUBERNETES_VERSION}-{source_stamp(TOOLS / 'apiserver')}" / "shop-apiserver"


def go_build(module_dir: Path, target: Path, version: str, package: str = ".") -> None:
    """The local stack's build (dapr/local/stack.py): into a temporary name then renamed, with a
    progress line every 20 s, as a cold build of the API server takes minutes."""
    if shutil.which("go") is None:
        raise SystemExit(f"building {target.name} needs Go (>= the go line of {module_dir}/go.mod)")
    started = time.monotonic()
    stamp = f"-X k8s.io/component-base/version.gitVersion=v{version}"
    stamp += f" -X k8s.io/client-go/pkg/version.gitVersion=v{version}"
    stack.go_build(module_dir, target, package, "-ldflags=-s -w " + stamp,
                   env={"GOFLAGS": "-mod=readonly -buildvcs=false"})
    say(f"built {target} in {time.monotonic() - started:.0f}s")


def _kustomize_major(kubectl: str) -> int:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        return int(json.loads(out).get("kustomizeVersion", "v0").lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0


def kubectl() -> str:
    """A kubectl whose kustomize is v5: $SHOP_KUBECTL, the cached build, PATH, or a new build."""
    if os.environ.get("SHOP_KUBECTL"):
        return os.environ["SHOP_KUBECTL"]
    if CACHED_KUBECTL.exists():
        return str(CACHED_KUBECTL)
    on_path = shutil.which("kubectl")
    if on_path and _kustomize_major(on_path) >= 5:
        return on_path
    # Debian's kubernetes-client (1.20) embeds kustomize v2, too old for these kustomizations.
    say(f"kubectl v{KUBECTL_VERSION}: go build from the Go module proxy (cold: a few minutes)")
    go_build(TOOLS / "kubectl", CACHED_KUBECTL, KUBECTL_VERSION)
    return str(CACHED_KUBECTL)


def module_dir(module: str, version: str) -> Path:
    """Where the Go module cache keeps `module` at `version` (downloaded when missing)."""
    if shutil.which("go") is None:
        raise SystemExit(f"{module}'s files come from the Go module cache: install Go")
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@v{version}"],
        cwd=tempfile.gettempdir(),  # outside any module: a plain download
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(json.loads(out)["Dir"])


def dapr_crds() -> Path:
    """Dapr's CRD files (components.yaml, configuration.yaml, resiliency.yaml, ...)."""
    crds = module_dir("github.com/dapr/dapr", DAPR_VERSION) / "charts" / "dapr" / "crds"
    for name in ("components.yaml", "configuration.yaml", "resiliency.yaml", "subscription.yaml"):
        if not (crds / name).is_file():
            raise SystemExit(f"{crds / name} is missing from dapr v{DAPR_VERSION}")
    return crds


KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")


def keda_crds() -> Path:
    """KEDA's CRD files (ScaledObject, TriggerAuthentication, ...)."""
    crds = module_dir("github.com/kedacore/keda/v2", KEDA_VERSION) / "config" / "crd" / "bases"
    for name in KEDA_CRDS:
        if not (crds / name).is_file():
            raise SystemExit(f"{crds / name} is missing from keda v{KEDA_VERSION}")
    return crds


def prepare_tree(source: Path, dest: Path) -> Path:
    """Copy source (a k8s/ folder) to dest/k8s with every *.env taken from its *.env.example."""
    tree = dest / "k8s"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns("rendered", "tools", "*.env"))
    for example in tree.rglob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return tree


def overlays(tree: Path) -> list[str]:
    return sorted(p.parent.name for p in (tree / "overlays").glob("*/kustomization.yaml"))


def render(kubectl_path: str, overlay_dir: Path) -> str:
    result = subprocess.run([kubectl_path, "kustomize", str(overlay_dir)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay_dir} failed:\n{result.stderr}")
    return result.stdout


def dry_run_enabled() -> bool:
    """The server-side dry run is on unless SHOP_K8S_DRY_RUN=0 (it builds an API server once)."""
    return os.environ.get("SHOP_K8S_DRY_RUN", "1") != "0"


def apiserver() -> Path:
    if not APISERVER.exists():
        say(f"shop-apiserver v{KUBERNETES_VERSION}: go build from the Go module proxy (cold: several minutes)")
        go_build(TOOLS / "apiserver", APISERVER, KUBERNETES_VERSION)
    return APISERVER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_api_server(workdir: Path, timeout: float = 180):
    """Run etcd and kube-apiserver (one process, shop-apiserver) on 127.0.0.1 and yield a
    kubeconfig for it; the process is stopped on exit. Nothing listens beyond loopback, and the
    server has no controllers, nodes or webhooks, so it never connects anywhere else either."""
    binary = apiserver()
    token = secrets.token_hex(16)
    (workdir / "tokens.csv").write_text(f"{token},shop-check,shop-check,system:masters\n")
    port = _free_port()
    args = [
        str(binary),
        f"--etcd-data-dir={workdir / 'etcd'}",
        f"--etcd-client-url=http://127.0.0.1:{_free_port()}",
        f"--etcd-peer-url=http://127.0.0.1:{_free_port()}",
        "--",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'certs'}",
        f"--token-auth-file={workdir / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        # Only allocated in etcd, never contacted: there is no node or proxy behind it.
        "--service-cluster-ip-range=10.96.0.0/24",
        # The endpoint reconciler would publish 127.0.0.1 as the API's address, which is invalid.
        "--endpoint-reconciler-type=none",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
    ]
    log = open(workdir / "apiserver.log", "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
        request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"shop-apiserver exited; see {workdir / 'apiserver.log'}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"shop-apiserver not ready in {timeout}s; see {workdir / 'apiserver.log'}")
            time.sleep(0.5)
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                    "users": [{"name": "check", "user": {"token": token}}],
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "check"}}],
                    "current-context": "local",
                }
            )
        )
        yield kubeconfig
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision")
    render_parser = sub.add_parser("render")
    render_parser.add_argument("--out", type=Path, default=K8S / "rendered")
    sub.add_parser("apiserver")
    args = parser.parse_args()

    if args.command == "provision":
        say(f"kubectl: {kubectl()}")
        say(f"Dapr v{DAPR_VERSION} CRDs: {dapr_crds()}")
        say(f"KEDA v{KEDA_VERSION} CRDs: {keda_crds()}")
        if dry_run_enabled():
            say(f"API server for the dry run: {apiserver()}")
    elif args.command == "render":
        tool = kubectl()
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tree = prepare_tree(K8S, Path(tmp))
            for name in overlays(tree):
                target = args.out / f"{name}.yaml"
                target.write_text(render(tool, tree / "overlays" / name))
                say(f"{name}: {target}")
        say("prod was rendered with the *.env.example placeholders, not with real secrets")
    elif args.command == "apiserver":
        say(f"API server: {apiserver()}")


if __name__ == "__main__":
    main()
