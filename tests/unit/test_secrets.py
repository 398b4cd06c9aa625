"""A function started outside a local run refuses missing or committed secrets, in one line that
names each variable; with real secrets it starts. Each function needs only its own secrets."""

import os
import subprocess
import sys

import pytest

from functions.common.settings import LOCAL_JWT_SECRET, MIN_JWT_SECRET_LENGTH, Settings

REAL = {
    "SHOP_JWT_SECRET": "x" * 64,
    "SHOP_ADMIN_PASSWORD": "a-real-admin-password",
    "DAPR_API_TOKEN": "a-real-dapr-api-token",
    "APP_API_TOKEN": "a-real-app-api-token",
}


def start(function: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the function's app as uvicorn would, in a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "DAPR_", "APP_API"))}
    return subprocess.run([sys.executable, "-c", f"import functions.{function}.app"], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


COMMON = ("SHOP_JWT_SECRET", "DAPR_API_TOKEN", "APP_API_TOKEN")
NEEDS = {
    "users": (*COMMON, "SHOP_ADMIN_PASSWORD"),
    "products": COMMON,
    "cart": COMMON,
    "payments": COMMON,
    "notifications": COMMON,
}


@pytest.mark.parametrize("function", list(NEEDS))
def test_in_production_without_secrets_a_function_refuses_to_start_naming_them(function):
    refused = start(function, {"SHOP_ENV": "production"})
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("the shop refuses to start:")
    named = {variable for variable in REAL if variable in line}
    assert named == set(NEEDS[function]), line


def test_a_function_starts_without_the_secrets_of_others():
    """payments has no business with the admin password: it starts without it."""
    started = start("payments", {"SHOP_ENV": "production", **{v: REAL[v] for v in COMMON}})
    assert started.returncode == 0, started.stderr


def test_in_production_the_committed_local_secrets_are_refused_too():
    refused = start("users", {"SHOP_ENV": "production", **REAL, "SHOP_JWT_SECRET": LOCAL_JWT_SECRET})
    assert refused.returncode != 0 and "SHOP_JWT_SECRET is the committed local default" in refused.stderr


def test_in_production_with_real_secrets_it_starts():
    started = start("users", {"SHOP_ENV": "production", **REAL})
    assert started.returncode == 0, started.stderr


def test_an_empty_or_short_jwt_secret_is_refused_everywhere():
    short = f"SHOP_JWT_SECRET is shorter than {MIN_JWT_SECRET_LENGTH} characters"
    assert Settings(SHOP_JWT_SECRET="").secret_problems() == [short]
    assert Settings().secret_problems() == []  # a local run with the local defaults
