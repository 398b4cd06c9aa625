"""`kubectl apply --dry-run=server` of every overlay against a real API server (etcd and
kube-apiserver on 127.0.0.1, built once from the Go module proxy) with Dapr's and KEDA's CRDs installed:
the server runs its own validation and defaulting, which no offline schema covers.
SHOP_K8S_DRY_RUN=0 skips it (for example on a machine without Go)."""

import copy
import json
import subprocess

import pytest
import yaml

from tests.k8s.manifests import find, kube, one

pytestmark = pytest.mark.skipif(not kube.dry_run_enabled(), reason="SHOP_K8S_DRY_RUN=0")

CRDS = ("components.yaml", "configuration.yaml", "resiliency.yaml", "subscription.yaml")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, kubectl_bin, dapr_crds_dir, keda_crds_dir):
    """A kubectl runner bound to a fresh local API server that has Dapr's and KEDA's CRDs."""
    workdir = tmp_path_factory.mktemp("apiserver")
    with kube.local_api_server(workdir) as kubeconfig:

        def kubectl(*args, stdin=None):
            command = [kubectl_bin, f"--kubeconfig={kubeconfig}", f"--cache-dir={workdir / 'cache'}", *args]
            return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)

        crd_files = [dapr_crds_dir / name for name in CRDS] + [keda_crds_dir / name for name in kube.KEDA_CRDS]
        files = [arg for path in crd_files for arg in ("-f", str(path))]
        installed = kubectl("apply", "--server-side", *files)
        assert installed.returncode == 0, installed.stderr
        names = [f"crd/{crd['metadata']['name']}" for path in crd_files for crd in yaml.safe_load_all(path.read_text()) if crd]
        ready = kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        assert ready.returncode == 0, ready.stderr
        yield kubectl


def dry_run(kubectl, docs: list[dict]) -> subprocess.CompletedProcess:
    # Namespaced objects can only be dry-run into a namespace that exists: create those for real.
    for namespace in find(docs, "Namespace"):
        created = kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
        assert created.returncode == 0, created.stderr
    stream = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    return kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=stream)


def test_the_api_server_accepts_the_overlay(cluster, docs):
    result = dry_run(cluster, docs)
    assert result.returncode == 0, result.stderr
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), result.stdout


def test_the_api_server_rejects_what_the_offline_checks_cannot_see(cluster, rendered_text):
    """Guards the test above: a dry run does fail on objects a cluster would refuse."""
    docs = [d for d in yaml.safe_load_all(rendered_text["dev"]) if d]
    namespace = find(docs, "Namespace")
    # Schema-valid, but a selector that does not match the pod's labels is refused.
    deployment = copy.deepcopy(one(docs, "Deployment", "users"))
    deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "someone-else"
    result = dry_run(cluster, namespace + [deployment])
    assert result.returncode != 0 and "selector" in result.stderr, result.stderr
    # A field Dapr's CRD does not have (the local resiliency file's initialInterval).
    resiliency = copy.deepcopy(one(docs, "Resiliency", "shop-resiliency"))
    resiliency["spec"]["policies"]["retries"]["pubsubRetry"]["initialInterval"] = "500ms"
    result = dry_run(cluster, namespace + [resiliency])
    assert result.returncode != 0 and "initialInterval" in result.stderr, result.stderr
