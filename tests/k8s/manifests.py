"""Helpers for reading rendered manifests and the local Dapr files they must agree with."""

import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load_kube():
    spec = importlib.util.spec_from_file_location("shop_k8s_kube", ROOT / "k8s" / "tools" / "kube.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kube = _load_kube()


def settings_kind(function: str) -> type:
    """The function's settings class (functions/<function>/settings.py), or the common base."""
    from functions.common.settings import Settings

    try:
        module = importlib.import_module(f"functions.{function}.settings")
    except ModuleNotFoundError:
        return Settings
    return next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Settings) and v is not Settings)


def local(path: str) -> dict:
    """A local Dapr file (dapr/dapr.yaml, components/pubsub.yaml, ...)."""
    return yaml.safe_load((ROOT / path).read_text())


def local_apps() -> dict[str, int]:
    """app-id -> app port, from the multi-app run file."""
    return {app["appID"]: int(app["appPort"]) for app in local("dapr/dapr.yaml")["apps"]}


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def functions(docs: list[dict]) -> list[dict]:
    """Deployments of the shop's functions (the ones with a Dapr sidecar)."""
    return [
        d
        for d in find(docs, "Deployment")
        if d["spec"]["template"]["metadata"].get("annotations", {}).get("dapr.io/enabled") == "true"
    ]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def metadata_items(component: dict) -> dict[str, dict]:
    """A Dapr Component's spec.metadata as name -> item."""
    return {item["name"]: item for item in component["spec"]["metadata"]}


def config_refs(docs: list[dict]) -> Iterator[tuple[str, str, str, str]]:
    """Every (kind, name, key, where) that a manifest reads from a Secret or a ConfigMap."""
    for workload in workloads(docs):
        where = f"{workload['kind']} {workload['metadata']['name']}"
        for container in containers(workload):
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    yield "Secret", ref["name"], ref["key"], f"{where} env {env['name']}"
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    yield "ConfigMap", ref["name"], ref["key"], f"{where} env {env['name']}"
            for env_from in container.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if field in env_from:
                        yield kind, env_from[field]["name"], "", f"{where} envFrom"
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            for kind, field, name_field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
                if field in volume:
                    source = volume[field]
                    for key in [item["key"] for item in source.get("items", [])] or [""]:
                        yield kind, source[name_field], key, f"{where} volume {volume['name']}"
    for component in find(docs, "Component"):
        for item in component["spec"].get("metadata", []):
            if "secretKeyRef" in item:
                ref = item["secretKeyRef"]
                where = f"Component {component['metadata']['name']} {item['name']}"
                yield "Secret", ref["name"], ref.get("key", ref["name"]), where
