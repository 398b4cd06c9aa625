"""Fixtures for the manifest checks: kubectl, Dapr's CRDs, every overlay rendered once.

The checks read k8s/ by default; SHOP_K8S_DIR points them at another copy (the breakage tests
run them on deliberately broken copies and expect them to fail).
"""

import os
from pathlib import Path

import pytest
import yaml

from tests.k8s.manifests import kube


def k8s_source() -> Path:
    return Path(os.environ.get("SHOP_K8S_DIR", kube.K8S)).resolve()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "overlays(*names, exclude=()): the overlays a check applies to (default: all)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "overlay" in metafunc.fixturenames:
        names = kube.overlays(k8s_source())
        marker = metafunc.definition.get_closest_marker("overlays")
        if marker:  # a check of one overlay's shape runs for it alone, rather than skipping the others
            names = [n for n in names if (n in marker.args if marker.args else n not in marker.kwargs["exclude"])]
        metafunc.parametrize("overlay", names)


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return kube.kubectl()


@pytest.fixture(scope="session")
def dapr_crds_dir() -> Path:
    return kube.dapr_crds()


@pytest.fixture(scope="session")
def keda_crds_dir() -> Path:
    return kube.keda_crds()


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kube.prepare_tree(k8s_source(), tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="session")
def rendered_text(tree: Path, kubectl_bin: str) -> dict[str, str]:
    """overlay name -> `kubectl kustomize` output; an overlay that fails to render is absent."""
    out = {}
    for name in kube.overlays(tree):
        try:
            out[name] = kube.render(kubectl_bin, tree / "overlays" / name)
        except RuntimeError as exc:
            out[name] = exc
    return out


@pytest.fixture
def docs(overlay: str, rendered_text: dict) -> list[dict]:
    """The rendered objects of one overlay."""
    text = rendered_text[overlay]
    if isinstance(text, Exception):
        pytest.fail(str(text))
    return [d for d in yaml.safe_load_all(text) if d]
