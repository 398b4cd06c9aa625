"""kubectl as `task k8s:e2e` tells the cluster tests to call it (SHOP_KUBECTL: its argv, as JSON),
against the shop's namespace (SHOP_NAMESPACE)."""

import json
import os
import subprocess

KUBECTL = json.loads(os.environ.get("SHOP_KUBECTL", "[]"))
NAMESPACE = os.environ.get("SHOP_NAMESPACE", "shop")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout
