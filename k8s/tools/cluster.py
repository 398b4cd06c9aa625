#!/usr/bin/env python3
"""A real single-node Kubernetes cluster on this machine, inside a network namespace of its own.

    python k8s/tools/cluster.py up        # build what is missing (cached), start it, wait for the node
    python k8s/tools/cluster.py down      # stop every process and container, remove the namespace and state
    python k8s/tools/cluster.py status
    python k8s/tools/cluster.py kubectl -- ARGS...      # kubectl against it
    python k8s/tools/cluster.py exec -- COMMAND...      # a command inside its network namespace

Why a network namespace: the node's address, the pods' bridge and every Service address exist
only inside `shop-k8s`, so nothing the cluster does can reach, or be seen on, a real interface
of the machine; its default route is an interface with nothing behind it, so whatever is not for a pod goes nowhere.

The parts (measured facts in ../shared/notes/local-cluster.md): containerd and runc and the CNI
plugins from Debian (installed when missing); kubelet, kube-controller-manager, kube-scheduler and
kube-proxy built from k8s.io/kubernetes with k8s/tools/node/go.mod; kube-router's NetworkPolicy
controller (k8s/tools/netpol), for the bridge plugin enforces none; metrics-server
(k8s/tools/metrics) for the HPAs of CPU triggers; the API server (etcd inside)
is the one `kube.py` builds for the dry run; the pause image is built here from Kubernetes' own
pause.c. Builds are cached in $SHOP_CACHE keyed by version and source; the running cluster's state
is in $SHOP_CACHE/cluster-run, and `down` removes it. Linux, as root. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kube  # noqa: E402 - the shared builds (kubectl, API server) and the Go module cache
import stack  # noqa: E402 - dapr/local/stack.py (kube.py put it on the path): go_build, daprd
from kube import CACHE, KUBERNETES_VERSION, TOOLS  # noqa: E402

NETNS = "shop-k8s"
NODE = "shop-node"
# Addresses that exist only inside the namespace.
NODE_IP = "10.201.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
# CoreDNS runs on the node itself, at the node's address (no Service needed in front of it).
CLUSTER_DNS = NODE_IP
API_PORT = 6443
FRONT_PROXY_CLIENT = "front-proxy-client"  # the aggregation layer's client certificate, as kubeadm names it
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"  # kubeadm's for this Kubernetes version
DEBIAN_PACKAGES = {"containerd": "containerd", "runc": "runc", "iptables": "iptables", "ipset": "ipset",
                   "/usr/lib/cni/bridge": "containernetworking-plugins"}
CNI_BIN = Path("/usr/lib/cni")

RUN = CACHE / "cluster-run"
NODE_BUILD = CACHE / f"kube-node-v{KUBERNETES_VERSION}-{kube.source_stamp(TOOLS / 'node', ('go.mod', 'go.sum'))}"
NODE_COMMANDS = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
PAUSE_BUILD = CACHE / f"pause-v{KUBERNETES_VERSION}"
DAPR_VERSION = kube.DAPR_VERSION
DAPR_BUILD = CACHE / f"dapr-control-plane-{DAPR_VERSION}-{kube.source_stamp(TOOLS / 'dapr', ('go.mod', 'go.sum'))}"
DAPR_COMMANDS = ("operator", "injector", "sentry", "placement", "scheduler")
HELM_VERSION = kube.go_require(TOOLS / "helm" / "go.mod", "helm.sh/helm/v3")
COREDNS_VERSION = kube.go_require(TOOLS / "coredns" / "go.mod", "github.com/coredns/coredns")
COREDNS = CACHE / f"coredns-v{COREDNS_VERSION}-{kube.source_stamp(TOOLS / 'coredns', ('go.mod', 'go.sum'))}" / "coredns"
KEDA_VERSION = kube.KEDA_VERSION
KEDA_BUILD = CACHE / f"keda-v{KEDA_VERSION}-{kube.source_stamp(TOOLS / 'keda', ('go.mod', 'go.sum'))}"
KEDA_COMMANDS = {"keda": "operator", "keda-adapter": "adapter"}  # binary: github.com/kedacore/keda/v2/cmd/<package>
HELM = CACHE / f"helm-v{HELM_VERSION}-{kube.source_stamp(TOOLS / 'helm', ('go.mod', 'go.sum'))}" / "helm"
NETPOL_VERSION = kube.go_require(TOOLS / "netpol" / "go.mod", "github.com/cloudnativelabs/kube-router/v2")
NETPOL_BUILD = CACHE / f"kube-router-v{NETPOL_VERSION}-{kube.source_stamp(TOOLS / 'netpol', ('go.mod', 'go.sum'))}"
NETPOL = NETPOL_BUILD / "kube-router"
METRICS_VERSION = kube.go_require(TOOLS / "metrics" / "go.mod", "sigs.k8s.io/metrics-server")
METRICS_STAMP = kube.source_stamp(TOOLS / "metrics", ("go.mod", "go.sum"))
METRICS_BUILD = CACHE / f"metrics-server-v{METRICS_VERSION}-{METRICS_STAMP}"
METRICS_SERVER = METRICS_BUILD / "metrics-server"
METRICS_PORT = 4443  # on the node's address, behind the Service the resource metrics APIService names
# Started in this order, stopped in the reverse one.
PROCESSES = ("containerd", "apiserver", "dns", "controller-manager", "scheduler", "kubelet", "proxy", "netpol",
             "metrics")
TOKENS = {  # user, groups: what each client is to the API server's authorizers
    "admin": ("shop-admin", "system:masters"),
    "node": (f"system:node:{NODE}", "system:nodes"),
    "proxy": ("system:kube-proxy", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "controller-manager": ("system:kube-controller-manager", "system:masters"),
    "dns": ("shop-coredns", "system:masters"),
    "netpol": ("shop-network-policies", "system:masters"),
    "metrics": ("shop-metrics-server", "system:masters"),
}

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[cluster {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def step(title: str):
    return stack.step(title, report=say)


def run(*cmd: str, check: bool = True, capture: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)


def in_netns(*cmd: str) -> list[str]:
    # nsenter, not `ip netns exec`: that one also remounts /sys, hiding the cgroup mounts kubelet reads.
    return ["nsenter", f"--net=/run/netns/{NETNS}", "--", *cmd]


# --- provisioning ------------------------------------------------------------------------------
def debian_packages(packages: dict[str, str] = DEBIAN_PACKAGES) -> None:
    """Install the Debian packages whose probe (a command, or a path) is missing."""
    missing = sorted({pkg for probe, pkg in packages.items()
                      if not (Path(probe).exists() if probe.startswith("/") else shutil.which(probe))})
    if not missing:
        return
    with step(f"Debian packages {' '.join(missing)}"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def node_binaries() -> Path:
    """kubelet, kube-proxy, kube-scheduler and kube-controller-manager (cold: about six minutes;
    the first compiles what all four share)."""
    for command in NODE_COMMANDS:
        target = NODE_BUILD / command
        if not target.exists():
            with step(f"{command} v{KUBERNETES_VERSION}: go build from the Go module proxy"):
                kube.go_build(TOOLS / "node", target, KUBERNETES_VERSION, package=f"k8s.io/kubernetes/cmd/{command}")
    return NODE_BUILD


def go_tool(title: str, module: str, target: Path, package: str, stamp: str = "", cgo: bool = True) -> Path:
    """`package` built with k8s/tools/<module>/go.mod (as it stands: -mod=readonly) into `target`,
    unless it is there already; `stamp`: the -X flags that give it its version."""
    if not target.exists():
        with step(f"{title}: go build from the Go module proxy"):
            stack.go_build(TOOLS / module, target, package, f"-ldflags=-s -w {stamp}".rstrip(),
                           env={"GOFLAGS": "-mod=readonly -buildvcs=false", **({} if cgo else {"CGO_ENABLED": "0"})})
    return target


def dapr_binaries() -> Path:
    """Dapr's control plane (cold: about three minutes); the sidecars run the local stack's daprd."""
    for command in DAPR_COMMANDS:
        go_tool(f"dapr {command} {DAPR_VERSION}", "dapr", DAPR_BUILD / command, f"github.com/dapr/dapr/cmd/{command}",
                f"-X github.com/dapr/dapr/pkg/buildinfo.version={DAPR_VERSION}")
    return DAPR_BUILD


def coredns() -> Path:
    """Cold: about two minutes."""
    return go_tool(f"coredns v{COREDNS_VERSION}", "coredns", COREDNS, "github.com/coredns/coredns")


def helm() -> Path:
    """Cold: about two minutes."""
    return go_tool(f"helm v{HELM_VERSION}", "helm", HELM, "helm.sh/helm/v3/cmd/helm",
                   f"-X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}")


def network_policies() -> Path:
    """kube-router, for its NetworkPolicy controller only (k8s/tools/netpol; cold: about four minutes)."""
    return go_tool(f"kube-router v{NETPOL_VERSION}", "netpol", NETPOL,
                   "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router", cgo=False)


def metrics_server() -> Path:
    """The resource metrics API (k8s/tools/metrics), which the HPAs behind KEDA's CPU triggers read."""
    return go_tool(f"metrics-server v{METRICS_VERSION}", "metrics", METRICS_SERVER,
                   "sigs.k8s.io/metrics-server/cmd/metrics-server", cgo=False)


def keda() -> Path:
    """KEDA's operator and its metrics adapter, static as KEDA builds them (cold: about eight
    minutes for the operator, for the SDKs of every scaler it links; the adapter shares most)."""
    for binary, package in KEDA_COMMANDS.items():
        go_tool(f"keda {package} v{KEDA_VERSION}", "keda", KEDA_BUILD / binary,
                f"github.com/kedacore/keda/v2/cmd/{package}",
                f"-X github.com/kedacore/keda/v2/version.Version={KEDA_VERSION}", cgo=False)
    return KEDA_BUILD


def pause_binary() -> Path:
    target = PAUSE_BUILD / "pause"
    if not target.exists():
        source = kube.module_dir("k8s.io/kubernetes", KUBERNETES_VERSION) / "build" / "pause" / "linux" / "pause.c"
        PAUSE_BUILD.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        run("gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10.1-shop", "-o", str(partial), str(source))
        partial.rename(target)
    return target


def image_archive(path: Path, tag: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> Path:
    """A one-layer image in `docker save` form (what `ctr images import` reads): `files` maps a
    path in the image to (content, mode)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(config).encode()
    manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, content in (("layer.tar", layer_bytes), ("config.json", config_bytes),
                              ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def provision() -> None:
    debian_packages()
    node_binaries()
    kube.kubectl()
    kube.apiserver()
    pause_binary()
    coredns()
    network_policies()
    metrics_server()
    dapr_binaries()
    helm()
    keda()
    stack.provision_daprd()


# --- configuration -----------------------------------------------------------------------------
def paths() -> dict[str, Path]:
    return {
        "containerd": RUN / "containerd",
        "cni": RUN / "cni",
        "etcd": RUN / "etcd",
        "certs": RUN / "certs",
        "kubelet": RUN / "kubelet",
        "logs": RUN / "logs",
        "pids": RUN / "pids",
        "images": RUN / "images",
    }


def kubeconfig(name: str, token: str) -> Path:
    path = RUN / f"{name}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "shop", "cluster": {"server": f"https://{NODE_IP}:{API_PORT}",
                                                  "certificate-authority": str(RUN / "certs" / "apiserver.crt")}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "shop", "context": {"cluster": "shop", "user": name}}],
        "current-context": "shop",
    }))
    path.chmod(0o600)
    return path


def client_certificate(folder: str, subject: str) -> None:
    """A CA of its own in certs/<folder>, and the API server's client certificate from it
    (apiserver.crt, apiserver.key) with `subject`."""
    pki = paths()["certs"] / folder
    pki.mkdir(parents=True, exist_ok=True)
    quiet = {"capture": True}
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=shop-{folder}",
        "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"), **quiet)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"), **quiet)
    run("openssl", "x509", "-req", "-days", "2", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
        "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-out", str(pki / "apiserver.crt"), **quiet)


def write_configuration() -> dict[str, str]:
    for folder in paths().values():
        folder.mkdir(parents=True, exist_ok=True)
    # kubelet admits no anonymous caller: the API server reaches it (logs, exec) as system:masters.
    client_certificate("kubelet-clients", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    # The aggregation layer: the API server proxies an aggregated API (KEDA's external metrics)
    # with this certificate, and the API's server believes the user it names only under this CA.
    client_certificate("front-proxy", f"/CN={FRONT_PROXY_CLIENT}")
    tokens = {name: hashlib.sha256(os.urandom(32)).hexdigest()[:32] for name in TOKENS}
    (RUN / "tokens.csv").write_text("".join(
        f'{tokens[name]},{user},{user}' + (f',"{groups}"' if groups else "") + "\n"
        for name, (user, groups) in TOKENS.items()))
    (RUN / "tokens.csv").chmod(0o600)
    state = paths()["containerd"]
    (state / "config.toml").write_text(f"""version = 2
root = "{state / 'root'}"
state = "{state / 'state'}"
[grpc]
  address = "{state / 'containerd.sock'}"
[ttrpc]
  address = "{state / 'containerd.sock.ttrpc'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{state / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine refuses a negative oom_score_adj (the pause containers ask for -998).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{paths()['cni'] / 'net.d'}"
""")
    (paths()["cni"] / "net.d").mkdir(parents=True, exist_ok=True)
    (paths()["cni"] / "net.d" / "10-shop.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "shop",
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": str(paths()["cni"] / "ipam")},
        }],
    }, indent=1))
    # Pods with dnsPolicy Default, and kubelet, read this: no resolver beyond the cluster's own.
    (RUN / "resolv.conf").write_text(f"nameserver {CLUSTER_DNS}\n")
    # The cluster's names only: nothing is forwarded, so no query leaves the namespace.
    (RUN / "Corefile").write_text(f"""cluster.local:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa {{
        kubeconfig {RUN / 'dns.kubeconfig'} shop
        pods insecure
    }}
    cache 5
}}
.:53 {{
    bind {NODE_IP}
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
""")
    (RUN / "kubelet.json").write_text(json.dumps({
        "kind": "KubeletConfiguration", "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "failCgroupV1": False,  # this machine has cgroups v1 (hybrid); 1.35 refuses them by default
        "cgroupDriver": "cgroupfs", "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{state / 'containerd.sock'}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(paths()["certs"] / "kubelet-clients" / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [CLUSTER_DNS], "clusterDomain": "cluster.local", "resolvConf": str(RUN / "resolv.conf"),
        "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "serializeImagePulls": False, "maxPods": 60,
        # A disk that is nearly full must not evict the shop: this cluster lives minutes.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
    }, indent=1))
    (RUN / "proxy.json").write_text(json.dumps({
        "kind": "KubeProxyConfiguration", "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "mode": "iptables", "hostnameOverride": NODE, "clusterCIDR": POD_CIDR,
        "clientConnection": {"kubeconfig": str(kubeconfig("proxy", tokens["proxy"]))},
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        # Without br_netfilter a reply between two pods of the bridge would skip conntrack's
        # un-DNAT; masquerading every Service connection routes the reply back through the node.
        "iptables": {"masqueradeAll": True},
        "conntrack": {"maxPerCore": 0},  # a global sysctl, not this namespace's to set
    }, indent=1))
    return tokens


# --- processes ---------------------------------------------------------------------------------
def command_of(name: str, tokens: dict[str, str]) -> list[str]:
    bins, certs = NODE_BUILD, paths()["certs"]
    if name == "containerd":
        return ["containerd", "--config", str(paths()["containerd"] / "config.toml")]
    if name == "apiserver":
        return [str(kube.apiserver()), f"--etcd-data-dir={paths()['etcd']}",
                "--etcd-client-url=http://127.0.0.1:2379", "--etcd-peer-url=http://127.0.0.1:2380", "--",
                f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}", f"--cert-dir={certs}",
                f"--token-auth-file={RUN / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={certs / 'kubelet-clients' / 'apiserver.crt'}",
                f"--kubelet-client-key={certs / 'kubelet-clients' / 'apiserver.key'}",
                f"--requestheader-client-ca-file={certs / 'front-proxy' / 'ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}", "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={certs / 'front-proxy' / 'apiserver.crt'}",
                f"--proxy-client-key-file={certs / 'front-proxy' / 'apiserver.key'}",
                "--profiling=false"]
    if name == "dns":
        kubeconfig("dns", tokens["dns"])
        return [str(coredns()), "-conf", str(RUN / "Corefile"), "-dns.port", "53"]
    if name == "controller-manager":
        return [str(bins / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig('controller-manager', tokens['controller-manager'])}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--use-service-account-credentials=false",
                f"--service-account-private-key-file={paths()['etcd'] / 'service-account.key'}",
                f"--root-ca-file={certs / 'apiserver.crt'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The HPAs (KEDA's) read their metrics every second instead of every 15: a woken
                # replica drains the scaling check's burst of lag a few seconds after it starts,
                # and the HPA must see that lag to ask for a second one (seen missed at 5 s).
                "--horizontal-pod-autoscaler-sync-period=1s",
                "--profiling=false"]
    if name == "scheduler":
        return [str(bins / "kube-scheduler"), f"--kubeconfig={kubeconfig('scheduler', tokens['scheduler'])}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--profiling=false"]
    if name == "kubelet":
        return [str(bins / "kubelet"), f"--config={RUN / 'kubelet.json'}",
                f"--kubeconfig={kubeconfig('node', tokens['node'])}", f"--root-dir={paths()['kubelet']}",
                f"--cert-dir={paths()['kubelet'] / 'pki'}", f"--node-ip={NODE_IP}", f"--hostname-override={NODE}"]
    if name == "proxy":
        return [str(bins / "kube-proxy"), f"--config={RUN / 'proxy.json'}"]
    if name == "netpol":
        # The bridge plugin ignores NetworkPolicies; kube-router's firewall enforces them (iptables
        # and ipsets in the node's namespace, on the bridged traffic br_netfilter hands to them).
        # Nothing else of kube-router: no routing, no BGP, no service proxy, no CNI of its own.
        return [str(network_policies()), "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
                "--enable-cni=false", "--enable-ipv6=false", f"--kubeconfig={kubeconfig('netpol', tokens['netpol'])}",
                f"--hostname-override={NODE}", "--health-port=0", "--metrics-port=0",
                # Each sync's start and length in its log: what a failed NetworkPolicy check is read beside.
                "--v=1"]
    if name == "metrics":
        metrics = kubeconfig("metrics", tokens["metrics"])
        return [str(metrics_server()), f"--kubeconfig={metrics}", f"--authentication-kubeconfig={metrics}",
                f"--authorization-kubeconfig={metrics}", f"--bind-address={NODE_IP}", f"--secure-port={METRICS_PORT}",
                f"--cert-dir={RUN / 'metrics-server'}", "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP", "--metric-resolution=15s", "--profiling=false"]
    raise ValueError(name)


def start(name: str, tokens: dict[str, str]) -> None:
    log = open(paths()["logs"] / f"{name}.log", "ab")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    process = subprocess.Popen(in_netns(*command_of(name, tokens)), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    (paths()["pids"] / f"{name}.pid").write_text(str(process.pid))


def alive(name: str) -> bool:
    pid_file = paths()["pids"] / f"{name}.pid"
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def wait_for(what: str, check, timeout: float, failing: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if failing and not alive(failing):
            raise SystemExit(f"{failing} exited while waiting for {what}; see {paths()['logs'] / failing}.log")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f}s (logs: {paths()['logs']})")
        time.sleep(1)


def kubectl(*args: str, capture: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(RUN / "admin.kubeconfig")}
    return subprocess.run(in_netns(kube.kubectl(), *args), capture_output=capture, text=True, env=env, timeout=timeout)


def api_ready() -> bool:
    result = kubectl("get", "--raw", "/readyz")
    return result.returncode == 0 and result.stdout.strip() == "ok"


def resource_metrics_api() -> None:
    """metrics.k8s.io served by the metrics-server on the node: its APIService, through a Service
    whose one endpoint is the node's address (the API server reaches it through kube-proxy).
    Self-signed serving certificate, as metrics-server makes it: this cluster's only."""
    objects = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics-server", "namespace": "kube-system"},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_PORT, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "metrics-server-node", "namespace": "kube-system",
                      "labels": {"kubernetes.io/service-name": "metrics-server"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [NODE_IP]}],
         "ports": [{"name": "https", "port": METRICS_PORT, "protocol": "TCP"}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.metrics.k8s.io"},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                  "groupPriorityMinimum": 100, "versionPriority": 100,
                  "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443}}},
    ]
    path = RUN / "metrics-server.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=1))
    applied = kubectl("apply", "-f", str(path))
    if applied.returncode != 0:
        raise SystemExit(f"the resource metrics API: {applied.stderr.strip()}")


def firewall_ready() -> bool:
    rules = run(*in_netns("iptables", "-S", "FORWARD"), check=False, capture=True).stdout
    return "KUBE-ROUTER-FORWARD" in rules


def node_ready() -> bool:
    result = kubectl("get", "node", NODE, "-o",
                     "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
    return result.returncode == 0 and result.stdout.strip() == "True"


def network_namespace() -> None:
    if NETNS in run("ip", "netns", "list", capture=True).stdout.split():
        return
    run("ip", "netns", "add", NETNS)
    for cmd in (("ip", "link", "set", "lo", "up"),
                # A bridge with no port: an interface for the node's address whose packets go nowhere
                # (this kernel has no dummy interfaces).
                ("ip", "link", "add", "node0", "type", "bridge"),
                ("ip", "addr", "add", f"{NODE_IP}/32", "dev", "node0"),
                ("ip", "link", "set", "node0", "up"),
                # Whatever is not for the node or a pod goes out of node0, to nothing.
                ("ip", "route", "add", "default", "dev", "node0"),
                ("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")):
        run(*in_netns(*cmd))


def import_image(archive: Path) -> None:
    sock = paths()["containerd"] / "containerd.sock"
    run("ctr", "--address", str(sock), "-n", "k8s.io", "images", "import", "--no-unpack", str(archive), capture=True)


def up() -> None:
    if RUN.exists() and any(alive(name) for name in PROCESSES):
        raise SystemExit(f"a cluster is already running ({RUN}); `down` first")
    provision()
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    (RUN / "started").touch()
    with step(f"node {NODE} in network namespace {NETNS} (node address {NODE_IP})"):
        network_namespace()
        tokens = write_configuration()
        start("containerd", tokens)
        wait_for("containerd", lambda: (paths()["containerd"] / "containerd.sock").exists(), 60, "containerd")
        pause = image_archive(paths()["images"] / "pause.tar", PAUSE_IMAGE,
                              {"/pause": (pause_binary().read_bytes(), 0o755)}, ["/pause"])
        import_image(pause)
        start("apiserver", tokens)
        certificate = paths()["certs"] / "apiserver.crt"
        wait_for("the API server's certificate", certificate.exists, 120, "apiserver")
        kubeconfig("admin", tokens["admin"])
        wait_for("the API server", api_ready, 180, "apiserver")
        for name in ("dns", "controller-manager", "scheduler", "kubelet", "proxy"):
            start(name, tokens)
        wait_for(f"node {NODE} Ready", node_ready, 180, "kubelet")
        # kube-router reads its Node at start (and exits without it), so it starts after it.
        start("netpol", tokens)
        wait_for("NetworkPolicy enforcement (kube-router's chains)", firewall_ready, 60, "netpol")
        start("metrics", tokens)
        resource_metrics_api()
    say(f"cluster up: KUBECONFIG={RUN / 'admin.kubeconfig'}, inside network namespace {NETNS} (`cluster.py kubectl`)")


# --- teardown ----------------------------------------------------------------------------------
def _pids_under(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        try:
            pids |= {int(p) for p in procs.read_text().split()}
        except OSError:
            continue
    return pids


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _pod_network_namespaces() -> set[str]:
    """The pods' network namespaces (/run/netns/cni-<id>) this cluster's containerd made, as its
    metadata names them: they outlive the containers, and no other containerd's are touched."""
    meta = paths()["containerd"] / "root" / "io.containerd.metadata.v1.bolt" / "meta.db"
    try:
        data = meta.read_bytes()
    except OSError:
        return set()
    return {m.decode() for m in re.findall(rb"/netns/(cni-[0-9a-f-]{36})", data)}


def _signal_processes(sig: int) -> None:
    """`sig` to each of the cluster's processes (its whole process group), last started first."""
    for name in reversed(PROCESSES):
        pid_file = paths()["pids"] / f"{name}.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), sig)
            except (OSError, ValueError):
                pass


def down() -> None:
    began = time.monotonic()
    pod_namespaces = _pod_network_namespaces()
    _signal_processes(signal.SIGTERM)
    time.sleep(2)
    # Containers outlive containerd (each has its shim): every process in the pods' cgroups,
    # then every shim of this containerd, goes.
    for controller in ("pids", "memory", "cpu,cpuacct", "systemd", "unified"):
        root = Path("/sys/fs/cgroup") / controller / "kubepods"
        if root.exists():
            _kill(_pids_under(root))
    # The shims name this containerd's socket, which lies under RUN, as does every path of ours.
    shims = {pid for pid, words in stack.command_lines() if any(str(RUN) in word for word in words)}
    shims.discard(os.getpid())
    _kill(shims)
    _signal_processes(signal.SIGKILL)
    time.sleep(1)
    # Unmount what containerd and kubelet mounted under the state folder, deepest first.
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(RUN))), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    # The pods' cgroups, now empty.
    for controller in Path("/sys/fs/cgroup").iterdir():
        root = controller / "kubepods"
        if root.is_dir():
            for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            try:
                root.rmdir()
            except OSError:
                pass
    existing = set(run("ip", "netns", "list", capture=True, check=False).stdout.split())
    for namespace in sorted((pod_namespaces | {NETNS}) & existing):
        run("ip", "netns", "delete", namespace, check=False)
    # kubelet writes the containers' logs under /var/log whatever its root: those of this run go.
    started = (RUN / "started").stat().st_mtime if (RUN / "started").exists() else None
    for logs in (Path("/var/log/pods"), Path("/var/log/containers")):
        for entry in logs.glob("*") if started is not None and logs.is_dir() else ():
            if entry.lstat().st_mtime >= started:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    shutil.rmtree(RUN, ignore_errors=True)
    say(f"down in {time.monotonic() - began:.1f}s")


def status() -> int:
    for name in PROCESSES:
        say(f"{name:20s} {'running' if RUN.exists() and alive(name) else 'STOPPED'}")
    if RUN.exists() and alive("apiserver"):
        print(kubectl("get", "nodes,pods", "-A", "-o", "wide").stdout)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "provision", "kubectl", "exec"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    if os.geteuid() != 0 and args.command not in ("status",):
        raise SystemExit("the local cluster needs root (network namespace, containerd, kubelet)")
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "status":
        return status()
    elif args.command == "provision":
        provision()
    elif args.command == "kubectl":
        return kubectl(*rest, capture=False, timeout=3600).returncode
    elif args.command == "exec":
        env = {**os.environ, "KUBECONFIG": str(RUN / "admin.kubeconfig")}
        return subprocess.run(in_netns(*rest), env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
