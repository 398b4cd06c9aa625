#!/usr/bin/env python3
"""The shop's Kubernetes manifests, proven without a cluster.

    python k8s/tools/kube.py provision        # kubectl (with kustomize v5) and Dapr's CRDs
    python k8s/tools/kube.py render [--out D]  # every overlay -> D/<overlay>.yaml (default k8s/rendered)
    python k8s/tools/kube.py apiserver        # build the local API server used by the dry run

Provisioning is idempotent: a kubectl already on PATH (kustomize v5) or in the cache is used as it
is; otherwise kubectl is built from the Go module proxy (k8s/tools/kubectl/go.mod pins it) into
$SHOP_CACHE (default ~/.cache/the-shop). Dapr's CRDs come from the Go module cache, at the Dapr
version the local stack pins (dapr/local/build/daprd/go.mod). Nothing is committed from either.

Overlays are rendered from a temporary copy of k8s/ in which every `*.env` is the committed
`*.env.example`: the checks never read real prod credentials and pass on a fresh clone.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

K8S = Path(__file__).resolve().parents[1]
ROOT = K8S.parent
TOOLS = K8S / "tools"
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
CACHED_KUBECTL = CACHE / f"kubectl-v{KUBECTL_VERSION}" / "kubectl"
APISERVER = CACHE / f"shop-apiserver-v{KUBERNETES_VERSION}" / "shop-apiserver"


def go_build(module_dir: Path, target: Path, version: str) -> None:
    """Build into a temporary name, then rename: an interrupted build never looks finished."""
    if shutil.which("go") is None:
        raise SystemExit(f"building {target.name} needs Go (>= the go line of {module_dir}/go.mod)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    stamp = f"-X k8s.io/component-base/version.gitVersion=v{version}"
    stamp += f" -X k8s.io/client-go/pkg/version.gitVersion=v{version}"
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w " + stamp, "-o", str(partial), "."],
        cwd=module_dir,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"},
    )
    partial.rename(target)


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


def dapr_crds() -> Path:
    """Dapr's CRD files (components.yaml, configuration.yaml, resiliency.yaml, ...)."""
    if shutil.which("go") is None:
        raise SystemExit("Dapr's CRDs come from the Go module cache: install Go")
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/dapr/dapr@v{DAPR_VERSION}"],
        cwd=tempfile.gettempdir(),  # outside any module: a plain download
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    crds = Path(json.loads(out)["Dir"]) / "charts" / "dapr" / "crds"
    for name in ("components.yaml", "configuration.yaml", "resiliency.yaml", "subscription.yaml"):
        if not (crds / name).is_file():
            raise SystemExit(f"{crds / name} is missing from dapr v{DAPR_VERSION}")
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
        if not APISERVER.exists():
            say(f"shop-apiserver v{KUBERNETES_VERSION}: go build (cold: several minutes)")
            go_build(TOOLS / "apiserver", APISERVER, KUBERNETES_VERSION)
        say(f"API server: {APISERVER}")


if __name__ == "__main__":
    main()
