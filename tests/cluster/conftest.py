"""The shop on a Kubernetes cluster, black-box: only run by `task k8s:e2e` (k8s/tools/e2e.py), which
deploys it and says where each function's Service answers (SHOP_API_URLS)."""

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.environ.get("SHOP_API_URLS"):
        skip = pytest.mark.skip(reason="runs on a cluster only: task k8s:e2e")
        for item in items:
            item.add_marker(skip)
