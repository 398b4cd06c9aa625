"""Every name a manifest uses resolves inside the same overlay: Secret and ConfigMap keys, the
Services an Ingress routes to, the pods a Service selects, the ports probes and Services name."""

import base64

from tests.k8s.manifests import config_refs, containers, find, workloads


def keys_of(doc: dict) -> set[str]:
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def test_every_secret_and_config_key_exists(docs):
    available = {(d["kind"], d["metadata"]["name"]): keys_of(d) for d in docs if d["kind"] in ("Secret", "ConfigMap")}
    refs = list(config_refs(docs))
    assert refs
    missing = [
        f"{where}: {kind} {name} key {key!r}"
        for kind, name, key, where in refs
        if (kind, name) not in available or (key and key not in available[(kind, name)])
    ]
    assert not missing, "\n".join(missing)


def test_no_generated_secret_is_unused(docs):
    used = {(kind, name) for kind, name, _, _ in config_refs(docs)}
    for doc in find(docs, "Secret") + find(docs, "ConfigMap"):
        assert (doc["kind"], doc["metadata"]["name"]) in used, f"{doc['kind']} {doc['metadata']['name']} is read by nothing"


def test_secrets_are_filled_in(docs):
    """Every secret value is set, except the SendGrid key (empty keeps mail in the local outbox)."""
    for secret in find(docs, "Secret"):
        for key, value in (secret.get("data") or {}).items():
            if (secret["metadata"]["name"].startswith("shop-sendgrid"), key) != (True, "api-key"):
                assert base64.b64decode(value), f"{secret['metadata']['name']} {key} is empty"


def test_services_select_pods_and_name_their_ports(docs):
    for service in find(docs, "Service"):
        selector = service["spec"]["selector"].items()
        selected = [w for w in workloads(docs) if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        ports = {p.get("name") for c in containers(selected[0]) for p in c.get("ports", [])}
        ports |= {p["containerPort"] for c in containers(selected[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in ports, f"Service {service['metadata']['name']}: {port}"


def test_workload_selectors_match_their_pods(docs):
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"].items()
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels, workload["metadata"]["name"]


def test_statefulsets_name_a_service(docs):
    services = {s["metadata"]["name"] for s in find(docs, "Service")}
    for statefulset in find(docs, "StatefulSet"):
        assert statefulset["spec"]["serviceName"] in services


def test_probes_use_declared_ports(docs):
    for workload in workloads(docs):
        for container in containers(workload):
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                action = container.get(probe, {})
                for kind in ("httpGet", "tcpSocket"):
                    if kind in action:
                        assert action[kind]["port"] in ports, f"{workload['metadata']['name']} {probe}"


def test_ingress_backends_exist(docs):
    services = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    for ingress in find(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, path["path"]
                ports = services[backend["name"]]["spec"]["ports"]
                assert backend["port"].get("name") in {p.get("name") for p in ports} or backend["port"].get(
                    "number"
                ) in {p["port"] for p in ports}, path["path"]


def test_volume_mounts_name_volumes(docs):
    for workload in workloads(docs):
        spec = workload["spec"]
        volumes = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{workload['metadata']['name']}: {mount['name']}"
