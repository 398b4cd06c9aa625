"""Every pod runs unprivileged, with probes and resource bounds; the functions also on a read-only
root filesystem, as the user the image declares."""

import re

from tests.k8s.manifests import ROOT, containers, functions, workloads


def dockerfile_user() -> int:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile sets no USER"
    return int(users[-1].split(":")[0])


def test_every_container_is_bounded_and_unprivileged(docs):
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] != 0
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "livenessProbe" in container and "readinessProbe" in container, where


def test_functions_run_read_only_as_the_image_user_with_a_writable_tmp(docs):
    for deployment in functions(docs):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == dockerfile_user()
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], deployment["metadata"]["name"]


def test_functions_probe_health_and_readiness(docs):
    for deployment in functions(docs):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_sidecars_are_bounded_too(docs):
    for deployment in functions(docs):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        for key in ("cpu-request", "memory-request", "cpu-limit", "memory-limit"):
            assert annotations.get(f"dapr.io/sidecar-{key}"), f"{deployment['metadata']['name']}: {key}"
