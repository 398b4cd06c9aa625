import uuid

import httpx
import pytest

from functions.common.settings import settings_of
from functions.notifications import sending
from functions.notifications.app import app
from functions.notifications.mailer import SENDGRID_SEND_URL
from tests.unit.conftest import running

SENDGRID_KEY = "SG.unit-test-key"


@pytest.fixture
async def client(dapr):
    """The notifications app, started for the whole test; respx (via `dapr`) catches every call."""
    async with running(app) as client:
        yield client


@pytest.fixture(autouse=True)
def addresses_verified(request, monkeypatch):
    """Every address counts as verified, for the tests about rendering and sending; a test about
    holding mail for unverified addresses asks for `unverified` and gets the shop's real rule."""
    if "unverified" in request.fixturenames:
        return

    async def verified(address: str) -> bool:
        return True

    monkeypatch.setattr(sending, "_verified", verified)


@pytest.fixture
def unverified() -> None:
    """Addresses are verified only by `email_verified`, as in the shop."""


@pytest.fixture
def sendgrid(client, dapr, monkeypatch):
    """SENDGRID_API_KEY set, and SendGrid's v3 mail/send mocked: answers 202 with a message id."""
    monkeypatch.setenv("SENDGRID_API_KEY", SENDGRID_KEY)
    settings_of.cache_clear()
    route = dapr.router.post(SENDGRID_SEND_URL).mock(
        side_effect=lambda request: httpx.Response(202, headers={"X-Message-Id": f"sg-{uuid.uuid4().hex[:12]}"})
    )
    yield route
    monkeypatch.undo()
    settings_of.cache_clear()


def new_address() -> str:
    return f"ana.{uuid.uuid4().hex[:10]}@example.com"
