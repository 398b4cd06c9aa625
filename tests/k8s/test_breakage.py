"""The checks can fail: each case breaks one thing in a copy of k8s/, runs the checks on that
copy (SHOP_K8S_DIR) in a fresh pytest, and expects the named check to fail."""

import os
import subprocess
import sys

import pytest

from tests.k8s.manifests import ROOT, kube

CASES = {
    # name: (file under k8s/, text, replacement, the check that must fail)
    "app-port annotation": (
        "base/functions/users.yaml",
        'dapr.io/app-port: "8001"',
        'dapr.io/app-port: "8011"',
        "test_parity.py::test_app_ids_and_ports_match_the_run_file",
    ),
    "container port": (
        "base/functions/payments.yaml",
        "containerPort: 8004",
        "containerPort: 8040",
        "test_parity.py::test_app_ids_and_ports_match_the_run_file",
    ),
    "dapr config annotation dropped": (
        "base/functions/common.yaml",
        "        dapr.io/config: shop-config\n",
        "",
        "test_parity.py::test_dapr_annotations",
    ),
    "secret key misspelt": (
        "base/functions/common.yaml",
        "key: jwt-secret}",
        "key: jwt_secret}",
        "test_references.py::test_every_secret_and_config_key_exists",
    ),
    "service target port": (
        "base/functions/cart.yaml",
        "targetPort: http",
        "targetPort: web",
        "test_references.py::test_services_select_pods_and_name_their_ports",
    ),
    "component field misspelt": (
        "base/dapr/pubsub.yaml",
        "  version: v1\n",
        "  versoin: v1\n",
        "test_schemas.py::test_dapr_objects_match_dapr_crds",
    ),
    "invoices routed to the wrong function": (
        "base/ingress.yaml",
        "          - path: /api/facture\n            pathType: Prefix\n            backend:\n              service: {name: payments",
        "          - path: /api/facture\n            pathType: Prefix\n            backend:\n              service: {name: cart",
        "test_parity.py::test_every_api_route_is_reachable_through_the_ingress",
    ),
    "a function scaled to zero not woken by one of its dead-letter topics": (
        "overlays/e2e-scaling/scaling.yaml",
        "topic: dlq_notifications_email_verified,",
        "topic: email_verified,",
        "test_parity.py::test_kafka_triggers_read_the_lag_as_dapr_consumes",
    ),
    "broker advertised by a name other namespaces cannot resolve": (
        "overlays/dev/kafka.yaml",
        "PLAINTEXT://kafka.$(POD_NAMESPACE).svc:9092",
        "PLAINTEXT://kafka:9092",
        "test_parity.py::test_keda_reaches_the_broker_whose_lag_it_reads",
    ),
    "dev database without access control": (
        "overlays/dev/mongodb.yaml",
        '"--auth", "--keyFile", "/run/mongodb/keyfile",',
        "",
        "test_security.py::test_the_dev_database_requires_sign_in_and_grants_the_functions_their_databases_only",
    ),
    "the shop's user granted one function's database fewer": (
        "overlays/dev/mongodb-init.js",
        ', "notifications"]',
        "]",
        "test_security.py::test_the_dev_database_requires_sign_in_and_grants_the_functions_their_databases_only",
    ),
    "the dev database's set-up failing on a member that still loads its config": (
        "overlays/dev/mongodb-init.js",
        'if (e.codeName !== "AlreadyInitialized") throw e;',
        "throw e;",
        "test_mongodb_init.py::test_a_member_still_loading_its_config_is_not_initiated_twice",
    ),
    "functions signing in with a password the database never set": (
        "overlays/dev/kustomization.yaml",
        "uri=mongodb://shop:dev-only-mongodb-shop-password-0123456789@",
        "uri=mongodb://shop:another-password@",
        "test_security.py::test_the_functions_sign_in_as_the_user_the_database_makes",
    ),
    "overlay names a missing file": (
        "overlays/dev/kustomization.yaml",
        "  - kafka.yaml\n",
        "  - kafka.yml\n",
        "test_render.py::test_overlay_renders",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_manifest_fails_the_check(case, tmp_path):
    path, text, replacement, check = CASES[case]
    tree = kube.prepare_tree(kube.K8S, tmp_path)
    target = tree / path
    source = target.read_text()
    assert source.count(text) == 1, f"{case}: the text to break is not in {path} once"
    target.write_text(source.replace(text, replacement))

    test_file = check.split("::")[0]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/k8s/{test_file}"],
        cwd=ROOT,
        env={**os.environ, "SHOP_K8S_DIR": str(tree)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    failed = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert any(check in line for line in failed), "\n".join(failed) or result.stdout[-3000:]
