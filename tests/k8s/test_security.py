"""Every pod runs unprivileged, with probes and resource bounds; the functions also on a read-only
root filesystem, as the user the image declares."""

import base64
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.k8s.manifests import ROOT, containers, functions, local_apps, one, workloads


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
            if container in pod["containers"]:  # an init container runs to completion: Kubernetes probes none
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
    assert settings["data"]["env"] == ("production" if overlay == "prod" else "local")
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


def test_no_sidecar_loads_the_kubernetes_secret_store_it_has_no_token_for(docs):
    """daprd's built-in Kubernetes secret store needs the pod's API token, which no function
    mounts: loading it is fatal at start (seen on a real cluster, task k8s:e2e). Nothing uses it:
    the Dapr operator resolves the Components' secretKeyRefs."""
    for deployment in functions(docs):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations.get("dapr.io/disable-builtin-k8s-secret-store") == "true", deployment["metadata"]["name"]


def test_a_secret_is_read_whole_by_each_function_that_reads_it(docs):
    """One Secret per holder: a function that reads a Secret reads every key of it that any
    function reads, so no function is given a Secret that also holds another's secret (the admin
    password sits in users' Secret alone, the SendGrid key in notifications')."""
    readers: dict[tuple[str, str], set[str]] = {}
    for deployment in functions(docs):
        for variable in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                readers.setdefault((ref["name"], ref["key"]), set()).add(deployment["metadata"]["name"])
    for (secret, key), holders in readers.items():
        for (other_secret, other_key), other_holders in readers.items():
            if other_secret == secret:
                assert holders == other_holders, f"{secret}: {key} is read by {sorted(holders)}, {other_key} by {sorted(other_holders)}"


# --- the in-cluster database: nobody in without the shop's user -----------------------------------
def resolved_env(docs: list[dict], container: dict) -> dict[str, str]:
    """A container's environment as the pod sees it: values, Secret keys and ConfigMap keys."""
    data = {(d["kind"], d["metadata"]["name"]): d.get("data") or {}
            for d in docs if d["kind"] in ("Secret", "ConfigMap")}
    env = {}
    for variable in container.get("env", []):
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[variable["name"]] = base64.b64decode(data[("Secret", ref["name"])][ref["key"]]).decode()
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[variable["name"]] = data[("ConfigMap", ref["name"])][ref["key"]]
        else:
            env[variable["name"]] = variable.get("value", "")
    return env


def function_env(docs: list[dict], deployment: dict) -> dict[str, str]:
    return resolved_env(docs, deployment["spec"]["template"]["spec"]["containers"][0])


def database(docs: list[dict]) -> dict:
    return one(docs, "StatefulSet", "mongodb")


@pytest.mark.overlays(exclude=("prod",))  # prod runs no MongoDB of its own
def test_the_functions_sign_in_as_the_user_the_database_makes(docs, overlay):
    [container] = database(docs)["spec"]["template"]["spec"]["containers"]
    made = resolved_env(docs, container)
    for deployment in functions(docs):
        uri = urlsplit(function_env(docs, deployment)["MONGODB_URI"])
        where = deployment["metadata"]["name"]
        assert (unquote(uri.username or ""), unquote(uri.password or "")) == (
            made["MONGODB_APP_USERNAME"], made["MONGODB_APP_PASSWORD"]), where
        # Not the database's administrator: the root user is for people, never for a function.
        assert uri.username != made.get("MONGODB_ROOT_USERNAME"), where


@pytest.mark.overlays("dev")  # e2e runs FerretDB there, which the image sets up (k8s/images/ferretdb)
def test_the_dev_database_requires_sign_in_and_grants_the_functions_their_databases_only(docs, overlay):
    pod = database(docs)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["command"]
    assert "--auth" in command and "--keyFile" in command
    keyfile = command[command.index("--keyFile") + 1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in container["volumeMounts"] if keyfile.startswith(m["mountPath"] + "/")]
    assert "emptyDir" in volumes[mount["name"]], "the keyfile is a copy that mongod's user alone may read"
    # ... made by an init container from the Secret, readable by its owner only (MongoDB asks for
    # no group or world permissions; a Secret volume's files are group-readable under an fsGroup).
    [copier] = [c for c in pod["initContainers"] if any(m["name"] == mount["name"] for m in c["volumeMounts"])
                and f"chmod 0400 {keyfile}" in c["command"][-1]]
    [source] = [m for m in copier["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert [i["key"] for i in volumes[source["name"]]["secret"]["items"]] == ["keyfile"]
    # The set-up script the postStart hook runs: the one the ConfigMap mounted there holds.
    hook = container["lifecycle"]["postStart"]["exec"]["command"][-1]
    [script_path] = re.findall(r"--file (\S+)", hook)
    [script_mount] = [m for m in container["volumeMounts"] if script_path.startswith(m["mountPath"] + "/")]
    config_map = volumes[script_mount["name"]]["configMap"]["name"]
    script = one(docs, "ConfigMap", config_map)["data"][script_path.rsplit("/", 1)[1]]
    # The shop's user may read and write the functions' databases (<SHOP_DB_PREFIX>_<app-id>), no others.
    [granted] = re.findall(r"const FUNCTIONS = \[([^\]]*)\]", script)
    assert set(re.findall(r'"([a-z]+)"', granted)) == set(local_apps())
    assert 'role: "readWrite", db: `${env.SHOP_DB_PREFIX}_${name}`' in script
    env = resolved_env(docs, container)
    assert {function_env(docs, d)["SHOP_DB_PREFIX"] for d in functions(docs)} == {env["SHOP_DB_PREFIX"]}
    # The users are made in admin, where the functions' URI signs in.
    assert "admin.createUser" in script
    for deployment in functions(docs):
        uri = function_env(docs, deployment)["MONGODB_URI"]
        assert parse_qs(urlsplit(uri).query).get("authSource") == ["admin"], deployment["metadata"]["name"]
    # What the script does, step by step, test_mongodb_init.py runs (a script that does not parse
    # fails every case there).


# --- network policies: who may connect to whom, evaluated as Kubernetes does ---------------------
SHOP_NAMESPACE = {"kubernetes.io/metadata.name": "shop"}
INGRESS_NAMESPACE = {"kubernetes.io/metadata.name": "ingress-nginx"}
STRANGER = {"app.kubernetes.io/name": "someone-else"}


def _selects(selector: dict, labels: dict) -> bool:
    assert not selector.get("matchExpressions"), "only matchLabels is understood here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _port_matches(rule_port: dict, pod: dict, port: int) -> bool:
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):  # a named container port
        named = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        return named.get(wanted) == port
    return wanted == port


def admitted(docs: list[dict], workload: dict, port: int, source: dict, source_namespace: dict) -> bool:
    """Whether a pod labelled `source`, in a namespace labelled `source_namespace`, may open a
    connection to `workload`'s pods on `port` under the overlay's NetworkPolicies."""
    pod = workload["spec"]["template"]
    labels = pod["metadata"]["labels"]
    namespace = workload["metadata"].get("namespace")
    policies = [p for p in docs if p["kind"] == "NetworkPolicy" and p["metadata"].get("namespace") == namespace
                and _selects(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return True
    same_namespace = source_namespace == {"kubernetes.io/metadata.name": namespace}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            peer_ok = peers is None or any(
                ("namespaceSelector" in peer and _selects(peer["namespaceSelector"], source_namespace)
                 and _selects(peer.get("podSelector", {}), source))
                or ("namespaceSelector" not in peer and same_namespace and _selects(peer["podSelector"], source))
                for peer in peers
            )
            ports = rule.get("ports")
            if peer_ok and (ports is None or any(_port_matches(p, pod, port) for p in ports)):
                return True
    return False


def test_every_pod_is_behind_a_default_deny(docs):
    for workload in workloads(docs):
        assert not admitted(docs, workload, 12345, STRANGER, SHOP_NAMESPACE), workload["metadata"]["name"]


def test_an_app_port_is_open_to_the_ingress_controller_only(docs):
    """No pod of the cluster, not even another function, can post to /events/<topic> on an app
    port; the app's own sidecar reaches it over localhost."""
    for deployment in functions(docs):
        app_port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        name = deployment["metadata"]["name"]
        function = {"app.kubernetes.io/component": "function", "app.kubernetes.io/name": "other"}
        assert admitted(docs, deployment, app_port, {}, INGRESS_NAMESPACE), name
        assert not admitted(docs, deployment, app_port, function, SHOP_NAMESPACE), name
        assert not admitted(docs, deployment, app_port, STRANGER, SHOP_NAMESPACE), name
        assert not admitted(docs, deployment, app_port, {}, {"kubernetes.io/metadata.name": "elsewhere"}), name


def test_a_sidecar_is_open_to_the_other_functions_sidecars_only(docs):
    function = {"app.kubernetes.io/component": "function", "app.kubernetes.io/name": "other"}
    for deployment in functions(docs):
        name = deployment["metadata"]["name"]
        assert admitted(docs, deployment, 50002, function, SHOP_NAMESPACE), name
        assert not admitted(docs, deployment, 50002, STRANGER, SHOP_NAMESPACE), name
        assert not admitted(docs, deployment, 50002, function, INGRESS_NAMESPACE), name
        for api_port in (3500, 50001):  # the sidecar's own API: its app only, over localhost
            assert not admitted(docs, deployment, api_port, function, SHOP_NAMESPACE), (name, api_port)


@pytest.mark.overlays(exclude=("prod",))  # prod runs no Kafka or MongoDB of its own
def test_the_dev_broker_and_database_take_the_functions_only(docs, overlay):
    function = {"app.kubernetes.io/component": "function", "app.kubernetes.io/name": "cart"}
    for name, port in (("kafka", 9092), ("mongodb", 27017)):
        [workload] = [w for w in workloads(docs) if w["metadata"]["name"] == name]
        assert admitted(docs, workload, port, function, SHOP_NAMESPACE), name
        assert not admitted(docs, workload, port, STRANGER, SHOP_NAMESPACE), name


# --- the namespace, availability ------------------------------------------------------------------
def test_the_namespace_enforces_the_restricted_pod_security_standard(docs):
    [namespace] = [d for d in docs if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    # What "restricted" asks of every pod beyond the checks above: the runtime's seccomp profile.
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            for container in containers(workload):
                assert container["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", workload["metadata"]["name"]


@pytest.mark.overlays("prod")  # dev runs one replica of each function
def test_prod_keeps_every_function_up_through_a_drain_and_spreads_its_replicas(docs, overlay):
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for deployment in functions(docs):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if all(labels.get(k) == v for k, v in b["spec"]["selector"]["matchLabels"].items())]
        assert len(covering) == 1 and covering[0]["spec"].get("maxUnavailable") == 1, name
        # With one replica away, one still serves: two at least, always (the autoscaler's floor).
        assert one(docs, "ScaledObject", name)["spec"]["minReplicaCount"] >= 2, name
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        for constraint in spread:
            # Each function spreads its own pods, not the functions' pods all together.
            assert "app.kubernetes.io/name" in constraint["matchLabelKeys"], name


@pytest.mark.overlays("prod")  # dev is reached by port-forward
def test_prod_serves_its_public_host_over_tls_only(docs, overlay):
    """The Ingress answers for the host the e-mails' links name (public-url), with a certificate
    for it, and sends plain HTTP there."""
    ingress = one(docs, "Ingress", "shop")
    settings = next(c for c in docs if c["kind"] == "ConfigMap" and c["metadata"]["name"].startswith("shop-settings"))
    public = urlsplit(settings["data"]["public-url"])
    assert public.scheme == "https"
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [public.hostname]
    assert any(public.hostname in tls["hosts"] and tls["secretName"] for tls in ingress["spec"]["tls"])
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
