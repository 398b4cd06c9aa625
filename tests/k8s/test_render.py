"""Every overlay renders, and each has the shape its issue asks for."""

import subprocess

from tests.k8s.manifests import (
    ROOT,
    find,
    functions,
    kube,
    local_apps,
    metadata_items,
    one,
)

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "IngressClass"}


def test_overlays_are_dev_prod_and_e2e(tree):
    assert {"dev", "prod", "e2e"} <= set(kube.overlays(tree))


def test_overlay_renders(overlay, rendered_text):
    text = rendered_text[overlay]
    assert not isinstance(text, Exception), str(text)
    assert text.strip()


def test_overlay_renders_into_one_namespace(docs):
    namespaces = find(docs, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == ["shop"]
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == "shop", f"{doc['kind']} {doc['metadata']['name']}"


def test_no_object_is_rendered_twice(docs):
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))


def test_every_function_has_a_deployment_and_a_service(docs):
    apps = set(local_apps())
    assert {d["metadata"]["name"] for d in functions(docs)} == apps
    assert apps <= {s["metadata"]["name"] for s in find(docs, "Service")}


def test_every_function_runs_the_one_image(docs, overlay):
    images = {c["image"] for d in functions(docs) for c in d["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1, images
    image = images.pop().split("/")[-1]
    # Prod names its image by digest: a tag can be moved to another image, a digest cannot.
    assert image.startswith("the-shop@sha256:" if overlay == "prod" else "the-shop:"), image


def test_dev_runs_kafka_and_mongodb_in_the_cluster(rendered_text):
    import yaml

    docs = [d for d in yaml.safe_load_all(rendered_text["dev"]) if d]
    kafka = one(docs, "StatefulSet", "kafka")["spec"]
    assert kafka["template"]["spec"]["containers"][0]["image"].startswith("apache/kafka:")
    assert kafka["volumeClaimTemplates"]
    mongodb = one(docs, "StatefulSet", "mongodb")["spec"]
    assert "--replSet" in mongodb["template"]["spec"]["containers"][0]["command"]
    assert mongodb["volumeClaimTemplates"]
    assert all(d["spec"]["replicas"] == 1 for d in functions(docs))
    pubsub = metadata_items(one(docs, "Component", "pubsub"))
    assert pubsub["authType"]["value"] == "none"
    # The broker address the Component names is the in-cluster Kafka Service.
    host, port = pubsub["brokers"]["value"].split(":")
    service = one(docs, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def test_prod_uses_external_kafka_and_mongodb_by_secret(rendered_text):
    import yaml

    docs = [d for d in yaml.safe_load_all(rendered_text["prod"]) if d]
    assert not find(docs, "StatefulSet"), "prod runs no Kafka or MongoDB of its own"
    # Several replicas of each: KEDA's floor (tests/k8s/test_security.py), no fixed count.
    assert all(one(docs, "ScaledObject", d["metadata"]["name"])["spec"]["minReplicaCount"] > 1 for d in functions(docs))
    pubsub = metadata_items(one(docs, "Component", "pubsub"))
    assert pubsub["authType"]["value"] == "password"
    for name in ("brokers", "saslUsername", "saslPassword"):
        assert pubsub[name]["secretKeyRef"]["name"].startswith("shop-kafka"), name
        assert "value" not in pubsub[name]


def test_real_prod_secrets_cannot_be_committed():
    examples = sorted((ROOT / "k8s" / "overlays" / "prod").glob("*.env.example"))
    assert examples
    real = [str(e.with_suffix("").relative_to(ROOT)) for e in examples]
    ignored = subprocess.run(["git", "check-ignore", *real], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(real)


def test_real_prod_secrets_have_the_example_keys():
    """A filled-in *.env (never committed) must carry every key of its example, and no other."""
    for example in (ROOT / "k8s" / "overlays" / "prod").glob("*.env.example"):
        real = example.with_suffix("")
        if real.exists():
            assert env_keys(real) == env_keys(example), real.name


def env_keys(path):
    lines = (line.strip() for line in path.read_text().splitlines())
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_the_dev_stateful_sets_are_governed_by_headless_services_and_configured_once(rendered_text):
    import yaml

    docs = [d for d in yaml.safe_load_all(rendered_text["dev"]) if d]
    for stateful in find(docs, "StatefulSet"):
        governing = one(docs, "Service", stateful["spec"]["serviceName"])
        assert governing["spec"].get("clusterIP") == "None", stateful["metadata"]["name"]
    kafka = one(docs, "StatefulSet", "kafka")["spec"]["template"]["spec"]
    # Every KAFKA_* variable becomes a broker property: no service links may add any.
    assert kafka["enableServiceLinks"] is False
    mongodb = one(docs, "StatefulSet", "mongodb")["spec"]["template"]["spec"]["containers"][0]
    # The replica set is initiated once after start, never by a probe every few seconds.
    assert "rs.initiate" not in " ".join(mongodb["readinessProbe"]["exec"]["command"])
    assert "mongodb-init.js" in " ".join(mongodb["lifecycle"]["postStart"]["exec"]["command"])
    [init] = [d for d in find(docs, "ConfigMap") if "mongodb-init.js" in d.get("data", {})]
    assert "rs.initiate" in init["data"]["mongodb-init.js"]
