"""The cluster's database takes the shop's user only: with the functions' own URI (their Secret)
it answers with the shop's data; without credentials, or with a wrong password, it refuses. Run
by `task k8s:e2e` after the journey, from the cluster's network, told the database pod's address
(the URI's host is a name only the cluster's DNS resolves)."""

import os
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

URI = os.environ.get("SHOP_DATABASE_URI", "")
ADDRESS = os.environ.get("SHOP_DATABASE_ADDRESS", "")

pytestmark = pytest.mark.skipif(not (URI and ADDRESS), reason="runs on a cluster only: task k8s:e2e")


def signing_in(username: str | None, password: str | None) -> str:
    """The functions' URI at the database pod's address, signing in as given (None: anonymously)."""
    parts = urlsplit(URI)
    options = dict(parse_qsl(parts.query), directConnection="true")
    if username is None:  # pymongo refuses a sign-in mechanism without a user
        options = {k: v for k, v in options.items() if k not in ("authMechanism", "authSource")}
    credentials = f"{quote(username, safe='')}:{quote(password or '', safe='')}@" if username else ""
    return urlunsplit((parts.scheme, credentials + ADDRESS, parts.path, urlencode(options), ""))


def users_stored(uri: str) -> int:
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        return client[f"{os.environ.get('SHOP_DB_PREFIX', 'shop')}_users"]["users"].count_documents({})


def the_shops_user() -> tuple[str, str]:
    parts = urlsplit(URI)
    return unquote(parts.username or ""), unquote(parts.password or "")


def test_the_functions_uri_reads_the_shops_data() -> None:
    # The admin account users creates at start-up, and the journey's customer.
    assert users_stored(signing_in(*the_shops_user())) >= 2


def test_a_client_without_credentials_is_refused() -> None:
    with pytest.raises(OperationFailure):
        users_stored(signing_in(None, None))


def test_the_shops_user_with_a_wrong_password_is_refused() -> None:
    username, password = the_shops_user()
    with pytest.raises(OperationFailure):
        users_stored(signing_in(username, password + "-wrong"))
