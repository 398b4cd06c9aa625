"""Every rendered object validates offline: built-in kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail), Dapr's kinds against Dapr's own CRDs, KEDA's
(prod's scaling) against KEDA's."""

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s.manifests import kube, one

# Validate against the Kubernetes minor that the pinned kubectl and API server speak.
K8S_SCHEMA_VERSION = ".".join(kube.KUBERNETES_VERSION.split(".")[:2]) + ".0"


def strict(schema: dict) -> dict:
    """The CRD schema with unknown fields rejected, as `kubectl apply` (strict field validation)
    rejects them: objects with properties admit no others unless the schema says so."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_validators(crds_dir: Path) -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> validator, for every served version of every Dapr CRD."""
    validators = {}
    for path in crds_dir.glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


@pytest.fixture(scope="session")
def dapr_validators(dapr_crds_dir):
    return crd_validators(dapr_crds_dir)


def dapr_errors(doc: dict, validators) -> list[str]:
    validator = validators.get((doc["apiVersion"], doc["kind"]))
    if validator is None:
        return [f"no served CRD for {doc['apiVersion']} {doc['kind']}"]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.fixture(scope="session")
def keda_validators(keda_crds_dir):
    return crd_validators(keda_crds_dir)


def test_builtin_objects_match_the_kubernetes_schemas(docs):
    errors = []
    for doc in docs:
        if doc["apiVersion"].startswith(("dapr.io/", "keda.sh/")):
            continue
        try:
            kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {getattr(exc, 'message', exc)}")
    assert not errors, "\n".join(errors)


def test_dapr_objects_match_dapr_crds(docs, dapr_validators):
    dapr_docs = [d for d in docs if d["apiVersion"].startswith("dapr.io/")]
    assert {d["kind"] for d in dapr_docs} == {"Component", "Configuration", "Resiliency"}
    errors = [f"{d['kind']} {d['metadata']['name']}: {e}" for d in dapr_docs for e in dapr_errors(d, dapr_validators)]
    assert not errors, "\n".join(errors)


def test_keda_objects_match_keda_crds(docs, overlay, keda_validators):
    keda_docs = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    kinds = {"prod": {"ScaledObject", "TriggerAuthentication"}, "e2e-scaling": {"ScaledObject"}}.get(overlay, set())
    assert {d["kind"] for d in keda_docs} == kinds
    errors = [f"{d['kind']} {d['metadata']['name']}: {e}" for d in keda_docs for e in dapr_errors(d, keda_validators)]
    assert not errors, "\n".join(errors)
    if keda_docs:  # the validator does catch a misspelt field
        scaled = copy.deepcopy(next(d for d in keda_docs if d["kind"] == "ScaledObject"))
        scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")
        assert dapr_errors(scaled, keda_validators)


def test_the_validators_reject_what_a_cluster_rejects(rendered_text, dapr_validators):
    """Guards the two tests above: a misspelt field and a wrong type must both be caught."""
    docs = [d for d in yaml.safe_load_all(rendered_text["dev"]) if d]
    component = copy.deepcopy(one(docs, "Component", "pubsub"))
    component["spec"]["metdata"] = component["spec"].pop("metadata")
    assert dapr_errors(component, dapr_validators)
    config = copy.deepcopy(one(docs, "Configuration", "shop-config"))
    del config["spec"]["nameResolution"]["version"]  # the CRD requires it (the local file omits it)
    assert dapr_errors(config, dapr_validators)

    service = copy.deepcopy(one(docs, "Service", "users"))
    service["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_SCHEMA_VERSION, strict=True)
    deployment = copy.deepcopy(one(docs, "Deployment", "users"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_SCHEMA_VERSION, strict=True)
