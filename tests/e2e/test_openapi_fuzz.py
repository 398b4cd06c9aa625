"""Every function's OpenAPI document, fuzzed against the running shop by schemathesis.

Each operation gets examples, boundary (coverage) cases, 15 generated requests and, where the
document links operations, stateful sequences. Every answer must be no 5xx, a status code the
document declares, and a body that matches the declared schema. The /api routes run as a
customer and as the admin; the subscription routes run with the app token Dapr sends, so what is
fuzzed there is the handling of a delivery (a malformed event is dropped, never a 5xx), not the
token check (tests/e2e/test_forged_events.py).
"""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.shop import admin_token, new_customer
from tests.stack import stack

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Functions with subscription routes (users only publishes).
SUBSCRIBERS = ("products", "cart", "payments", "notifications")


def fuzz(function: str, workdir: Path, *options: str) -> None:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"http://127.0.0.1:{stack.FUNCTIONS[function]}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "15",
        "--request-timeout",
        "30",
        "--no-color",
        *options,
    ]
    # Hypothesis keeps its example database and schemathesis its reports in the working folder.
    ran = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, f"schemathesis found failures in {function}'s API:\n{ran.stdout[-12000:]}{ran.stderr[-2000:]}"


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    return {"customer": new_customer()["token"], "admin": admin_token()}


@pytest.mark.parametrize("role", ["customer", "admin"])
@pytest.mark.parametrize("function", list(stack.FUNCTIONS))
def test_api_routes_fuzzed(function: str, role: str, tokens: dict[str, str], tmp_path: Path) -> None:
    fuzz(
        function,
        tmp_path,
        "--exclude-path-regex",
        "^/(events|dead-letters)/",
        "--header",
        f"Authorization: Bearer {tokens[role]}",
        # Its own client address for the login throttle (per address), so the fuzzer's logins do
        # not count against the other tests' (a header only: nothing leaves the loopback).
        "--header",
        f"X-Forwarded-For: 203.0.113.{uuid.uuid4().int % 250 + 1}",
    )


@pytest.mark.parametrize("function", SUBSCRIBERS)
def test_subscription_routes_fuzzed(function: str, tmp_path: Path) -> None:
    fuzz(
        function,
        tmp_path,
        "--include-path-regex",
        "^/(events|dead-letters)/",
        "--header",
        f"dapr-api-token: {stack.api_tokens()['APP_API_TOKEN']}",
    )
