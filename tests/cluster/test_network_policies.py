"""The namespace's NetworkPolicies, enforced on a real cluster: probe pods (the shop's image, no
sidecar) try to open a TCP connection to a function's app port, its daprd's service-invocation
port, Kafka and the database, and the policies decide who gets through. Every target listens (its
pod is Ready), so a connection refused (a policy's REJECT) or timed out (its DROP) is blocked.

Run by `task k8s:e2e` after the journey, from the cluster's network, told how to call kubectl.
The local cluster enforces the policies with kube-network-policies (k8s/tools/netpol); on a
cluster whose network plugin ignores NetworkPolicies this fails, and says so."""

import json
import textwrap
import uuid
import warnings
from collections.abc import Iterator

import pytest

from tests.cluster.cluster import KUBECTL, NAMESPACE, kubectl

# The Ingress controller's namespace as k8s/base/network-policies.yaml names it.
INGRESS_NAMESPACE = "ingress-nginx"

pytestmark = pytest.mark.skipif(not KUBECTL, reason="runs on a cluster only: task k8s:e2e")

PROBE = textwrap.dedent("""
    import json, socket, sys, time
    # The policy controller learns a new pod's address a moment after it starts: a target counts
    # as blocked only if no attempt reached it in the whole window. Every target is tried once a
    # second all along, so a hole open only part of the time shows as such: each target's tries,
    # and when (seconds into the window) a connection got through.
    began, began_at = time.monotonic(), time.strftime("%H:%M:%S", time.gmtime())
    seen = {target: {"tries": 0, "reached": []} for target in sys.argv[1:]}
    while time.monotonic() < began + 30:
        for target, outcome in seen.items():
            host, port = target.rsplit(":", 1)
            outcome["tries"] += 1
            try:
                socket.create_connection((host, int(port)), timeout=3).close()
                outcome["reached"].append(round(time.monotonic() - began, 1))
            except OSError:
                pass
        time.sleep(1)
    print(json.dumps({"window began (UTC)": began_at, "targets": seen}))
""")
# Who may reach what (k8s/base and k8s/overlays/dev network-policies.yaml).
EXPECTED = {
    "a pod of the namespace": {"app port": "blocked", "sidecar": "blocked", "kafka": "blocked", "database": "blocked"},
    "a function's pod": {"app port": "blocked", "sidecar": "reached", "kafka": "reached", "database": "reached"},
    "the Ingress controller": {"app port": "reached", "sidecar": "blocked", "kafka": "blocked", "database": "blocked"},
}


def pod_ip(name: str) -> str:
    return kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.status.podIP}").strip()


def function_pod(function: str) -> dict:
    pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={function}",
                              "-o", "json"))["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
    assert running, f"no running pod of {function}"
    return running[0]


def probe_pod(name: str, namespace: str, labels: dict[str, str], image: str, targets: list[str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "network-probe", **labels}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            # What the namespace's Pod Security "restricted" asks of any pod.
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", PROBE, *targets],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"cpu": "200m", "memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[dict[str, str], str]]:
    """The addresses the probes try, by what they are, and the image the probes run (the shop's)."""
    notifications = function_pod("notifications")
    [app] = [c for c in notifications["spec"]["containers"] if c["name"] != "daprd"]
    app_port = next(p["containerPort"] for p in app["ports"] if p.get("name") == "http")
    address = notifications["status"]["podIP"]
    addresses = {"app port": f"{address}:{app_port}", "sidecar": f"{address}:50002",
                 "kafka": f"{pod_ip('kafka-0')}:9092", "database": f"{pod_ip('mongodb-0')}:27017"}
    # A cluster with ingress-nginx installed keeps its namespace: only a namespace made here goes.
    made_namespace = not kubectl("get", "namespace", INGRESS_NAMESPACE, "--ignore-not-found", "-o", "name").strip()
    if made_namespace:
        kubectl("create", "namespace", INGRESS_NAMESPACE)
    try:
        yield addresses, app["image"]
    finally:
        if made_namespace:
            kubectl("delete", "namespace", INGRESS_NAMESPACE, "--wait=false", check=False)


def probe(addresses: dict[str, str], image: str) -> dict[str, dict]:
    """One round of the three probes: what each tried and reached, by probe and by target."""
    run = uuid.uuid4().hex[:6]
    probes = {
        "a pod of the namespace": (f"probe-stranger-{run}", NAMESPACE, {}),
        "a function's pod": (f"probe-function-{run}", NAMESPACE, {"app.kubernetes.io/component": "function"}),
        "the Ingress controller": (f"probe-ingress-{run}", INGRESS_NAMESPACE, {}),
    }
    try:
        for name, namespace, labels in probes.values():
            kubectl("apply", "-f", "-", stdin=json.dumps(probe_pod(name, namespace, labels, image,
                                                                   list(addresses.values()))))
        results = {}
        for probe_name, (name, namespace, _) in probes.items():
            kubectl("wait", f"pod/{name}", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded",
                    "--timeout=180s")
            got = json.loads(kubectl("logs", name, "-n", namespace).strip().splitlines()[-1])
            reached = {what: got["targets"][target] for what, target in addresses.items()}
            results[probe_name] = {**got, "targets": reached}
        return results
    finally:
        for name, namespace, _ in probes.values():
            kubectl("delete", "pod", name, "-n", namespace, "--ignore-not-found", "--wait=false", check=False)


def outcomes(seen: dict[str, dict]) -> dict[str, dict[str, str]]:
    return {probe_name: {what: "reached" if tried["reached"] else "blocked" for what, tried in got["targets"].items()}
            for probe_name, got in seen.items()}


def described(seen: dict[str, dict]) -> str:
    """Each probe's tries of each target, and the seconds into its window at which a connection got through."""
    return "\n".join(
        f"{probe_name}, window from {got['window began (UTC)']} UTC: " + "; ".join(
            f"{what} {len(tried['reached'])}/{tried['tries']} reached"
            + (f", at {tried['reached']} s" if 0 < len(tried["reached"]) <= 5 else "")
            for what, tried in got["targets"].items())
        for probe_name, got in seen.items())


def only_single_leaks(seen: dict[str, dict]) -> bool:
    """True if every difference from EXPECTED is a target that should be blocked and was reached on
    one try only: kube-router's transient gap (README, "Known limits"), not a policy that is missing
    or wrong, which lets every try through."""
    differences = [(probe_name, what) for probe_name, got in outcomes(seen).items()
                   for what, outcome in got.items() if outcome != EXPECTED[probe_name][what]]
    return bool(differences) and all(
        EXPECTED[probe_name][what] == "blocked" and len(seen[probe_name]["targets"][what]["reached"]) == 1
        for probe_name, what in differences)


def test_nothing_reaches_the_shop_but_what_the_policies_allow(targets: tuple[dict[str, str], str]) -> None:
    seen = probe(*targets)
    if all(outcome == "reached" for got in outcomes(seen).values() for outcome in got.values()):
        pytest.fail("every probe reached every pod: this cluster's network plugin does not enforce NetworkPolicies "
                    "(`SHOP_E2E_NETWORK_POLICIES=0 task k8s:e2e` skips this check)")
    earlier = ""
    if only_single_leaks(seen):
        # One connection through in a window of tries, on this cluster's policy controller: said
        # loudly (pytest's warnings summary), and the whole check once more, which must then hold
        # on every try.
        warnings.warn(f"a single connection got through where none may; probed again.\n{described(seen)}",
                      stacklevel=1)
        earlier, seen = f"\n(the round before:\n{described(seen)})", probe(*targets)
    assert outcomes(seen) == EXPECTED, described(seen) + earlier
