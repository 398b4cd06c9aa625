"""Every pod runs unprivileged, with probes and resource bounds; the functions also on a read-only
root filesystem, as the user the image declares."""

import re

from tests.k8s.manifests import ROOT, containers, functions, one, workloads


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


def test_only_the_sidecar_reaches_the_app_and_only_the_app_its_sidecar(docs):
    """Both Dapr tokens on every function: the sidecar's annotations and the app's environment
    name the same Secrets (the app checks the app token on its subscription routes)."""
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for deployment in functions(docs):
        name = deployment["metadata"]["name"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        for annotation, variable in (("dapr.io/api-token-secret", "DAPR_API_TOKEN"), ("dapr.io/app-token-secret", "APP_API_TOKEN")):
            secret = annotations.get(annotation)
            assert secret in secrets and "token" in secrets[secret]["data"], (name, annotation)
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "token"}, (name, variable)


def test_prod_refuses_committed_secrets_and_only_dev_runs_as_local(docs, overlay):
    """SHOP_ENV reaches every function; only the dev cluster (committed secrets) is "local"."""
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shop-settings"))
    assert settings["data"]["env"] == ("local" if overlay == "dev" else "production")
    for deployment in functions(docs):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["SHOP_ENV"]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == settings["metadata"]["name"] and ref["key"] == "env"



def test_each_function_runs_as_its_own_account_with_no_api_token(docs):
    """No app needs the Kubernetes API: no token is mounted into it, and each function runs as a
    ServiceAccount of its own (daprd gets its own projected token for its mTLS identity)."""
    for deployment in functions(docs):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name and pod["automountServiceAccountToken"] is False, name
        assert one(docs, "ServiceAccount", name)["automountServiceAccountToken"] is False, name
