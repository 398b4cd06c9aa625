"""The cluster and the local run say the same: the manifests are compared with the local Dapr
files (dapr/dapr.yaml, components/pubsub.yaml, dapr/config.yaml, dapr/resiliency.yaml) and with
the function apps themselves (their subscriptions, their routes, their settings)."""

import ast
import copy
import importlib
import warnings
from functools import cache

import pytest
import yaml

from tests.k8s.manifests import ROOT, find, functions, local, local_apps, metadata_items, one, settings_kind


def app_id(deployment: dict) -> str:
    return deployment["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-id"]


def function_by_app_id(docs: list[dict]) -> dict[str, dict]:
    return {app_id(d): d for d in functions(docs)}


def app_module(deployment: dict) -> str:
    """functions.<name>.app, from the container's uvicorn command."""
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    return next(arg for arg in command if arg.endswith(":app")).split(":")[0]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@cache
def fastapi_app(name: str):
    """The function's FastAPI app, imported without entering its lifespan (no database)."""
    if not (ROOT / "functions" / name / "app.py").exists():
        pytest.skip(f"functions/{name}/app.py does not exist yet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(f"functions.{name}.app").app


def client(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note about httpx, not ours to act on
        from fastapi.testclient import TestClient
    return TestClient(fastapi_app(name))


@cache
def subscriptions(name: str) -> list[dict]:
    """What the app answers on GET /dapr/subscribe (404: it subscribes to nothing)."""
    response = client(name).get("/dapr/subscribe")
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return response.json()


@cache
def api_paths(name: str) -> list[str]:
    return [p for p in client(name).get("/openapi.json").json()["paths"] if p.startswith("/api/")]


# --- app-ids and ports --------------------------------------------------------------------------
def test_app_ids_and_ports_match_the_run_file(docs):
    cluster = {}
    for app, deployment in function_by_app_id(docs).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        command_port = int(flag(container["command"], "--port"))
        container_port = one_port(container["ports"], "http")["containerPort"]
        assert int(annotations["dapr.io/app-port"]) == command_port == container_port, app
        cluster[app] = command_port
    assert cluster == local_apps()


def test_each_function_runs_its_own_module_as_locally(docs):
    local_modules = {}
    for app in local("dapr/dapr.yaml")["apps"]:
        command = app["command"]
        local_modules[app["appID"]] = next(a for a in command if a.endswith(":app")).split(":")[0]
    cluster_modules = {app: app_module(d) for app, d in function_by_app_id(docs).items()}
    assert cluster_modules == local_modules
    for app, deployment in function_by_app_id(docs).items():
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        # In a pod the app listens on the pod's address (the sidecar and probes reach it there).
        assert flag(command, "--host") == "0.0.0.0", app


def test_services_expose_the_app_ports(docs):
    for app, deployment in function_by_app_id(docs).items():
        service = one(docs, "Service", deployment["metadata"]["name"])
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert one_port(service["spec"]["ports"], "http")["port"] == local_apps()[app]


def one_port(ports: list[dict], name: str) -> dict:
    found = [p for p in ports if p.get("name") == name]
    assert len(found) == 1, f"expected one port named {name}: {ports}"
    return found[0]


# --- Dapr annotations ---------------------------------------------------------------------------
def test_dapr_annotations(docs):
    run_file = local("dapr/dapr.yaml")["common"]
    configs = {c["metadata"]["name"] for c in find(docs, "Configuration")}
    for app, deployment in function_by_app_id(docs).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/enabled"] == "true"
        assert annotations["dapr.io/app-id"] == deployment["metadata"]["name"] == app
        assert annotations["dapr.io/config"] in configs, app
        assert annotations["dapr.io/app-protocol"] == run_file["appProtocol"]
        assert annotations["dapr.io/app-health-check-path"] == run_file["appHealthCheckPath"]
        assert annotations["dapr.io/enable-app-health-check"] == str(run_file["enableAppHealthCheck"]).lower()


# --- pub/sub --------------------------------------------------------------------------------------
def test_pubsub_component_matches_the_local_one(docs):
    mine = local("components/pubsub.yaml")
    theirs = one(docs, "Component", mine["metadata"]["name"])
    assert theirs["spec"]["type"] == mine["spec"]["type"] == "pubsub.kafka"
    assert theirs["spec"]["version"] == mine["spec"]["version"]
    local_items, cluster_items = metadata_items(mine), metadata_items(theirs)
    # Where the broker is and how to log in differ by design; how to consume must not.
    for name in ("consumerGroup", "clientID", "version", "initialOffset", "publishingScopes", "subscriptionScopes"):
        assert cluster_items.get(name) == local_items.get(name), name
    assert set(cluster_items) >= set(local_items), "every local setting is set in the cluster too"


def test_pubsub_component_is_scoped_to_the_functions(docs):
    scopes = one(docs, "Component", "pubsub").get("scopes")
    assert scopes is None or sorted(scopes) == sorted(local_apps())


def test_functions_are_told_the_component_name(docs):
    settings = next(c for c in find(docs, "ConfigMap") if c["metadata"]["name"].startswith("shop-settings"))
    assert settings["data"]["pubsub-name"] == local("components/pubsub.yaml")["metadata"]["name"]


def test_subscriptions_use_the_component_and_dead_letter_topics(docs):
    scopes = set(one(docs, "Component", "pubsub").get("scopes") or local_apps())
    components = {c["metadata"]["name"] for c in find(docs, "Component")}
    inbound = local("dapr/resiliency.yaml")["spec"]["targets"]["components"]
    seen = 0
    for app, deployment in function_by_app_id(docs).items():
        subs = subscriptions(app_module(deployment).split(".")[1])
        topics = {sub["topic"] for sub in subs}
        for sub in subs:
            seen += 1
            where = f"{app} <- {sub['topic']}"
            assert sub["pubsubname"] in components, where
            assert app in scopes, f"{where}: the Component is not scoped to {app}"
            if sub["topic"].startswith("dlq_"):
                # The function parks its own dead letters (functions/common/dead_letters.py).
                assert sub["topic"].removeprefix(f"dlq_{app}_") in topics, where
                assert not sub.get("deadLetterTopic"), f"{where}: a dead letter of a dead letter"
                continue
            assert sub.get("deadLetterTopic") == f"dlq_{app}_{sub['topic']}", where
            assert f"dlq_{app}_{sub['topic']}" in topics, f"{where}: nobody parks its dead letters"
            assert inbound[sub["pubsubname"]]["inbound"]["retry"], f"{where}: no inbound retry policy"
    assert seen, "no function subscribes to anything"


@cache
def all_topics() -> set[str]:
    """Every topic an app publishes (functions/common/contracts.py) or subscribes to, and every
    dead-letter topic: what an external Kafka without topic auto-creation must have."""
    from functions.common.contracts import IntegrationEvent

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    topics = {event.topic for event in subclasses(IntegrationEvent) if "topic" in vars(event)}
    for app in local_apps():
        for sub in subscriptions(app):
            topics |= {sub["topic"], *([sub["deadLetterTopic"]] if sub.get("deadLetterTopic") else [])}
    return topics


def test_prod_topic_list_is_complete():
    lines = (ROOT / "k8s" / "overlays" / "prod" / "topics.txt").read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(all_topics())


def test_dev_kafka_creates_topics_on_first_use(rendered_text):
    docs = [d for d in yaml.safe_load_all(rendered_text["dev"]) if d]
    env = {e["name"]: e.get("value") for e in one(docs, "StatefulSet", "kafka")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "true"


def local_partitions() -> int:
    properties = (ROOT / "dapr" / "local" / "kafka" / "server.properties").read_text().splitlines()
    [value] = [line.split("=", 1)[1] for line in properties if line.startswith("num.partitions=")]
    return int(value)


def test_topics_have_a_partition_for_every_replica(rendered_text):
    """Kafka shares a topic's partitions out among a consumer group: a replica beyond the count
    would receive nothing. The dev broker and the local one create topics alike."""
    dev = [d for d in yaml.safe_load_all(rendered_text["dev"]) if d]
    env = {e["name"]: e.get("value") for e in one(dev, "StatefulSet", "kafka")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert int(env["KAFKA_NUM_PARTITIONS"]) == local_partitions()
    for overlay, text in rendered_text.items():
        docs = [d for d in yaml.safe_load_all(text) if d]
        # The most replicas a function can have: its autoscaler's ceiling, or its fixed count.
        ceilings = {d["spec"]["scaleTargetRef"]["name"]: d["spec"]["maxReplicaCount"] for d in find(docs, "ScaledObject")}
        replicas = [ceilings.get(d["metadata"]["name"], d["spec"].get("replicas", 1)) for d in functions(docs)]
        assert max(replicas) <= local_partitions(), f"{overlay}: {max(replicas)} replicas, fewer partitions"


@pytest.mark.overlays("prod")  # dev runs one replica of each function
def test_prod_scales_every_function_on_its_own_work(docs, overlay):
    """KEDA owns every function's replica count in prod (no fixed count an apply would reset);
    a function that consumes topics scales on its own consumer group's lag (Dapr's group is its
    app id: components/pubsub.yaml's consumerGroup "{appID}")."""
    group = metadata_items(one(docs, "Component", "pubsub"))["consumerGroup"]["value"]
    assert group == "{appID}"
    for deployment in functions(docs):
        name = app_id(deployment)
        assert "replicas" not in deployment["spec"], name
        scaled = one(docs, "ScaledObject", deployment["metadata"]["name"])
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        kafka = [t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
        consumes = bool(subscriptions(name))
        assert bool(kafka) == consumes, name
        for trigger in kafka:  # its group: test_kafka_triggers_read_the_lag_as_dapr_consumes
            assert trigger["metadata"]["bootstrapServersFromEnv"] == "KAFKA_BROKERS"
            assert trigger["authenticationRef"]["name"] == "kafka"
        assert any(t["type"] == "cpu" for t in scaled["spec"]["triggers"]), name


def test_kafka_triggers_read_the_lag_as_dapr_consumes(docs):
    """KEDA's Kafka scaler counts lag as the function's Dapr consumers will read it: the same group
    (the app id), the same protocol version as Dapr's component (Kafka 4 refuses sarama's default),
    and a partition the group never committed on counts from its oldest event, because Dapr's
    consumers start there (initialOffset "oldest"). A function KEDA may take to zero names every
    topic it consumes, dead letters included: a trigger without a topic only sees the topics the
    group has committed on, so the first event on another would wake nothing."""
    pubsub = {k: v["value"] for k, v in metadata_items(one(docs, "Component", "pubsub")).items() if "value" in v}
    reset = {"oldest": "earliest", "newest": "latest"}[pubsub["initialOffset"]]
    by_deployment = {d["metadata"]["name"]: app_id(d) for d in functions(docs)}
    for scaled in find(docs, "ScaledObject"):
        name = by_deployment[scaled["spec"]["scaleTargetRef"]["name"]]
        kafka = [t["metadata"] for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
        for trigger in kafka:
            assert trigger["consumerGroup"] == name
            assert trigger.get("version") == pubsub["version"], name
            assert trigger.get("offsetResetPolicy") == reset, name
        if scaled["spec"].get("minReplicaCount", 1) == 0:
            topics = {s["topic"] for s in subscriptions(name)}
            assert topics and sorted(t.get("topic") for t in kafka) == sorted(topics), name
            assert not [t for t in scaled["spec"]["triggers"] if t["type"] != "kafka"], f"{name}: only lag wakes it"


@pytest.mark.overlays("e2e-scaling")  # the one overlay whose triggers name their brokers
def test_keda_reaches_the_broker_whose_lag_it_reads(docs, overlay):
    """e2e-scaling's triggers name the overlay's own Kafka Service, and the broker advertises a
    name that resolves from KEDA's namespace too (the bare Service name would not)."""
    named = [t["metadata"] for d in find(docs, "ScaledObject") for t in d["spec"]["triggers"] if t["type"] == "kafka"]
    assert named
    kafka = one(docs, "Service", "kafka")
    address = f"kafka.{kafka['metadata']['namespace']}.svc:{kafka['spec']['ports'][0]['port']}"
    assert {t["bootstrapServers"] for t in named} == {address}
    env = {e["name"]: e for e in one(docs, "StatefulSet", "kafka")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["KAFKA_ADVERTISED_LISTENERS"]["value"] == "PLAINTEXT://kafka.$(POD_NAMESPACE).svc:9092"


# --- configuration and resiliency ---------------------------------------------------------------
def test_configuration_matches_the_local_one(docs):
    mine = local("dapr/config.yaml")
    theirs = one(docs, "Configuration", mine["metadata"]["name"])
    assert theirs["spec"]["tracing"] == mine["spec"]["tracing"]
    assert theirs["spec"]["nameResolution"]["component"] == "kubernetes"
    # Access control needs the callers' mTLS identities, which only a cluster gives its sidecars.
    assert set(theirs["spec"]) == set(mine["spec"]) | {"accessControl"}


def test_tracing_is_off_unless_an_exporter_is_set(docs):
    tracing = one(docs, "Configuration", "shop-config")["spec"]["tracing"]
    exporters = {"zipkin", "otel"} & set(tracing)
    assert float(tracing["samplingRate"]) == 0 or exporters, tracing


def invocations() -> dict[str, set[str]]:
    """caller app id -> the paths it invokes on other functions, read from the code: its own
    `sidecar.invoke(<app>, <path>)` calls, and products' catalogue for a function that uses it."""
    found: dict[str, set[str]] = {}
    functions_dir = ROOT / "functions"
    for package in sorted(p for p in functions_dir.iterdir() if (p / "app.py").exists()):
        paths: set[str] = set()
        for module in package.glob("*.py"):
            tree = ast.parse(module.read_text())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "invoke"
                        and len(node.args) >= 2):
                    path = node.args[1]
                    text = path.value if isinstance(path, ast.Constant) else ast.unparse(path)
                    paths.add("/" + text.split("{")[0].rstrip("/").removeprefix("f'").removeprefix('f"')
                              + ("/*" if isinstance(path, ast.JoinedStr) else ""))
                if isinstance(node, ast.ImportFrom) and node.module == "functions.common.catalogue":
                    calls = {"fetch_product": "/api/products/*", "fetch_products": "/api/products"}
                    paths.update(calls[alias.name] for alias in node.names if alias.name in calls)
        if paths:
            found[package.name] = paths
    return found


def test_only_the_calls_the_code_makes_are_allowed(docs):
    """The callee's sidecar refuses any other service invocation (403), by the caller's identity."""
    acl = one(docs, "Configuration", "shop-config")["spec"]["accessControl"]
    assert acl["defaultAction"] == "deny"
    namespaces = {d["metadata"].get("namespace") for d in functions(docs)}
    allowed = {}
    for policy in acl["policies"]:
        assert policy["defaultAction"] == "deny" and {policy["namespace"]} == namespaces, policy
        assert all(op["httpVerb"] == ["GET"] and op["action"] == "allow" for op in policy["operations"]), policy
        allowed[policy["appId"]] = {op["name"] for op in policy["operations"]}
    assert allowed == invocations()


def pruned(value, schema: dict):
    """The value as Dapr keeps it: fields its schema does not know are dropped (the API server
    prunes them, daprd decodes into the same struct)."""
    if isinstance(value, dict):
        if "properties" in schema:
            return {k: pruned(v, schema["properties"][k]) for k, v in value.items() if k in schema["properties"]}
        if isinstance(schema.get("additionalProperties"), dict):
            return {k: pruned(v, schema["additionalProperties"]) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [pruned(v, schema["items"]) for v in value]
    return copy.deepcopy(value)


def test_resiliency_says_to_dapr_what_the_local_one_says(docs, dapr_crds_dir):
    crd = yaml.safe_load((dapr_crds_dir / "resiliency.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    mine = local("dapr/resiliency.yaml")
    theirs = one(docs, "Resiliency", mine["metadata"]["name"])
    assert pruned(theirs["spec"], schema) == pruned(mine["spec"], schema)
    assert theirs["spec"] == pruned(theirs["spec"], schema), "the cluster copy has fields Dapr ignores"


def test_resiliency_targets_name_real_apps_and_components(docs):
    targets = one(docs, "Resiliency", "shop-resiliency")["spec"]["targets"]
    assert set(targets["apps"]) == set(function_by_app_id(docs))
    assert set(targets["components"]) <= {c["metadata"]["name"] for c in find(docs, "Component")}


def test_payment_attempts_end_an_outage_before_the_dead_letter(docs):
    """The saga fails a payment after SHOP_PAYMENT_MAX_ATTEMPTS transient failures; Dapr must
    deliver stock_reserved that often, or the event dead-letters with the order holding stock."""
    payments = function_by_app_id(docs)["payments"]
    env = {e["name"]: e for e in payments["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["SHOP_PAYMENT_MAX_ATTEMPTS"]["valueFrom"]["configMapKeyRef"]
    attempts = int(one(docs, "ConfigMap", ref["name"])["data"][ref["key"]])
    resiliency = one(docs, "Resiliency", "shop-resiliency")["spec"]
    inbound = resiliency["targets"]["components"]["pubsub"]["inbound"]["retry"]
    assert 1 <= attempts <= 1 + resiliency["policies"]["retries"][inbound]["maxRetries"]


# --- ingress --------------------------------------------------------------------------------------
def ingress_routes(docs: list[dict]) -> dict[str, tuple[str, str]]:
    """path prefix -> (service, port name)."""
    routes = {}
    for ingress in find(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                service = path["backend"]["service"]
                routes[path["path"]] = (service["name"], service["port"].get("name") or service["port"]["number"])
    return routes


def test_every_api_route_is_reachable_through_the_ingress(docs):
    routes = ingress_routes(docs)
    for app, deployment in function_by_app_id(docs).items():
        for path in api_paths(app_module(deployment).split(".")[1]):
            prefixes = [p for p in routes if path == p or path.startswith(p + "/")]
            assert prefixes, f"{app} serves {path}, which no Ingress path routes"
            longest = max(prefixes, key=len)
            assert routes[longest][0] == deployment["metadata"]["name"], f"{path} goes to {routes[longest][0]}"


def test_every_ingress_path_goes_to_a_function_that_serves_it(docs):
    by_service = {d["metadata"]["name"]: d for d in functions(docs)}
    for prefix, (service, _) in ingress_routes(docs).items():
        assert service in by_service, f"{prefix} goes to {service}, not a function"
        served = api_paths(app_module(by_service[service]).split(".")[1])
        assert any(p == prefix or p.startswith(prefix + "/") for p in served), f"{service} serves nothing under {prefix}"


# --- settings -------------------------------------------------------------------------------------
# Prod's KEDA Kafka scaler reads the brokers from the scaled container (bootstrapServersFromEnv).
READ_BY_THE_AUTOSCALER = {"KAFKA_BROKERS"}


def test_every_function_is_given_only_its_own_settings_and_every_secret_it_needs(docs):
    """Each variable a function's Deployment sets is read by that function's settings (so payments
    never holds the admin password, nor cart the SendGrid key), and every secret it needs comes
    from the cluster, never from the code's local defaults."""
    for deployment in functions(docs):
        name = deployment["metadata"]["name"]
        kind = settings_kind(name)
        known = {field.alias for field in kind.model_fields.values()}
        names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        names -= READ_BY_THE_AUTOSCALER
        assert names <= known, f"{name}: {sorted(names - known)} are not read by {name}"
        assert {"MONGODB_URI"} | {variable for variable, _ in kind.SECRETS.values()} <= names, name
