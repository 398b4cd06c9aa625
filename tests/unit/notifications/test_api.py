"""GET /api/notifications: the caller's own e-mails; admins read anyone's."""

import uuid

import pytest

from functions.common.auth import issue_token
from functions.common.consumers import EventContext
from functions.common.contracts import UserRegistered
from functions.common.ids import new_id
from functions.common.settings import settings_of
from functions.notifications.subscriptions import send_welcome_email
from tests.unit.notifications.conftest import new_address

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
PRODUCT_1 = new_id()
USER_1 = new_id()


def bearer(email: str, role: str = "customer") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token('u' * 24, email, role)}"}


async def mail(to: str, name: str = "Ana") -> str:
    event_id = f"evt_{uuid.uuid4().hex}"
    await send_welcome_email(
        UserRegistered(userId=USER_1, email=to, name=name, lastName="X"), EventContext(id=event_id, topic="welcome_flow")
    )
    return event_id


@pytest.fixture
async def two_customers(client):
    ana, luis = new_address(), new_address()
    ana_events = [await mail(ana, "Ana"), await mail(ana, "Ana otra vez")]
    luis_events = [await mail(luis, "Luis")]
    return {"ana": (ana, ana_events), "luis": (luis, luis_events)}


async def test_a_customer_reads_only_their_own_emails_newest_first(client, two_customers):
    ana, ana_events = two_customers["ana"]
    response = await client.get("/api/notifications", headers=bearer(ana.upper()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 2
    assert [m["eventId"] for m in body["data"]] == list(reversed(ana_events))
    mail = body["data"][0]
    assert set(mail) == {
        "id", "to", "subject", "html", "template", "status", "providerMessageId", "eventId", "topic",
        "createdAt", "sentAt", "error",
    }  # fmt: skip
    assert mail["to"] == ana and mail["status"] == "outboxed" and "Ana otra vez" in mail["html"]


async def test_a_customer_cannot_ask_for_someone_elses_emails(client, two_customers):
    ana, _ = two_customers["ana"]
    luis, _ = two_customers["luis"]
    other = await client.get("/api/notifications", params={"to": luis}, headers=bearer(ana))
    own = await client.get("/api/notifications", params={"to": ana}, headers=bearer(ana))
    assert other.status_code == 403 and other.json()["message"]
    assert own.status_code == 200 and own.json()["total"] == 2


async def test_an_admin_reads_anyones_emails_and_filters_by_recipient(client, two_customers):
    luis, luis_events = two_customers["luis"]
    admin = bearer("admin@shop.local", "admin")
    everyone = (await client.get("/api/notifications", params={"limit": 100}, headers=admin)).json()
    assert everyone["total"] >= 3
    filtered = (await client.get("/api/notifications", params={"to": luis.upper()}, headers=admin)).json()
    assert [m["eventId"] for m in filtered["data"]] == luis_events and filtered["total"] == 1


async def test_paging(client, two_customers):
    ana, ana_events = two_customers["ana"]
    page = (await client.get("/api/notifications", params={"limit": 1, "offset": 1}, headers=bearer(ana))).json()
    assert page["total"] == 2 and [m["eventId"] for m in page["data"]] == [ana_events[0]]
    bad = await client.get("/api/notifications", params={"limit": 0}, headers=bearer(ana))
    assert bad.status_code == 422


async def test_reading_emails_needs_a_valid_token(client):
    assert (await client.get("/api/notifications")).status_code == 401
    forged = {"Authorization": "Bearer " + issue_token("u" * 24, "x@example.com", "admin")[:-4] + "AAAA"}
    assert (await client.get("/api/notifications", headers=forged)).status_code == 401


async def test_health_readiness_docs_and_subscriptions(client):
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    assert "/api/notifications" in (await client.get("/openapi.json")).json()["paths"]
    topics = sorted(s["topic"] for s in (await client.get("/dapr/subscribe")).json())
    handled = ["cart_removals", "email_notification", "email_verified", "invoice_processing", "welcome_flow"]
    assert topics == sorted(handled + [f"dlq_notifications_{t}" for t in handled])


async def test_a_delivery_over_http_stores_the_email(client):
    # As Dapr delivers it: a CloudEvent POSTed to the topic's route.
    to, event_id = new_address(), f"evt_{uuid.uuid4().hex}"
    cloud_event = {
        "id": event_id, "topic": "cart_removals", "source": "cart", "type": "shop.cart_removals.v1",
        "data": {"userId": USER_1, "email": to, "productId": PRODUCT_1, "productName": "Jabón Artesanal de Lavanda",
                 "quantity": 1},
    }  # fmt: skip
    response = await client.post(
        "/events/cart_removals", json=cloud_event, headers={"Content-Type": "application/cloudevents+json"}
    )
    assert response.json() == {"status": "SUCCESS"}
    [mail] = (await client.get("/api/notifications", headers=bearer(to))).json()["data"]
    assert mail["eventId"] == event_id and "Jabón Artesanal de Lavanda" in mail["html"] and "1 unidad)" in mail["html"]


@pytest.fixture
def app_token(monkeypatch):
    """APP_API_TOKEN set, as `task up` and the cluster set it: the sidecar's delivery carries it."""
    monkeypatch.setenv("APP_API_TOKEN", "the-sidecars-app-token")
    settings_of.cache_clear()
    yield "the-sidecars-app-token"
    monkeypatch.delenv("APP_API_TOKEN")
    settings_of.cache_clear()


@pytest.mark.parametrize("sent", [None, "a-forged-token"])
async def test_a_delivery_without_the_sidecars_token_is_refused_and_changes_nothing(client, app_token, sent):
    to, event_id = new_address(), f"evt_{uuid.uuid4().hex}"
    forged = {"id": event_id, "topic": "email_notification", "data": {"to": to, "subject": "Hola", "content": "spam"}}
    headers = {"Content-Type": "application/cloudevents+json"} | ({"dapr-api-token": sent} if sent else {})
    response = await client.post("/events/email_notification", json=forged, headers=headers)
    assert response.status_code == 401 and response.json()["message"]
    assert (await client.get("/api/notifications", headers=bearer(to))).json()["data"] == []

    # The same delivery from the sidecar, with its token, is handled.
    headers["dapr-api-token"] = app_token
    assert (await client.post("/events/email_notification", json=forged, headers=headers)).json() == {"status": "SUCCESS"}
    assert len((await client.get("/api/notifications", headers=bearer(to))).json()["data"]) == 1
