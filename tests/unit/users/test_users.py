"""users over HTTP against a real database, with respx as the Dapr sidecar."""

import asyncio
import uuid

import grpc
import jwt
import pytest

from functions.common import outbox
from functions.common.auth import issue_token
from functions.common.outbox import AuditEvent
from functions.common.settings import get_settings, settings_of
from functions.users.app import app
from functions.users.models import User
from functions.users.passwords import verify_password
from functions.users.settings import UsersSettings
from functions.users.setup import ensure_admin
from tests.unit.conftest import running


@pytest.fixture
def admin_email(monkeypatch):
    """Set SHOP_ADMIN_EMAIL for one test; the settings are re-read, and restored after."""

    def use(email: str) -> None:
        monkeypatch.setenv("SHOP_ADMIN_EMAIL", email)
        settings_of.cache_clear()

    yield use
    monkeypatch.undo()
    settings_of.cache_clear()


def new_registration(**overrides) -> dict:
    tag = uuid.uuid4().hex[:10]
    body = {
        "name": "Ana",
        "lastName": "Gómez",
        "email": f"ana.{tag}@example.com",
        "password": "una-clave-larga",
        "phone": f"+57 {int(tag, 16) % 10**10:010d}",
    }
    return {**body, **overrides}


def digits(phone: str) -> str:
    return phone.replace(" ", "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_saves_the_user_and_then_announces_it(client, dapr):
    body = new_registration()
    response = await client.post("/api/users/register", json=body)

    assert response.status_code == 201, response.text
    payload = response.json()
    user = payload["data"]
    assert payload["message"]
    assert set(user) == {"id", "name", "lastName", "email", "phone", "role", "createdAt"}
    assert user["email"] == body["email"] and user["role"] == "customer"
    assert user["phone"] == digits(body["phone"])
    assert "password" not in response.text.lower() and "argon2" not in response.text

    stored = await User.get(user["id"])
    assert await verify_password(stored.passwordHash, body["password"])
    assert stored.passwordHash.startswith("$argon2")
    assert stored.outbox == []  # relayed right after the save

    [event] = [e for e in dapr.events("welcome_flow") if e["data"]["userId"] == user["id"]]
    assert event["data"]["verificationUrl"].startswith("http://127.0.0.1:8001/api/users/verify?token=")
    assert {k: v for k, v in event["data"].items() if k != "verificationUrl"} == {
        "userId": user["id"], "email": body["email"], "name": "Ana", "lastName": "Gómez"}
    assert event["source"] == "users" and event["type"] == "shop.welcome_flow.v1"
    assert "password" not in str(event).lower() and "argon2" not in str(event)
    audit = await AuditEvent.get(event["id"])
    assert audit is not None and audit.topic == "welcome_flow" and audit.data == event["data"]


async def test_email_is_case_insensitive_and_phone_format_does_not_matter(client, dapr):
    body = new_registration(email=f"Ana.{uuid.uuid4().hex[:8]}@Example.COM")
    first = await client.post("/api/users/register", json=body)
    assert first.status_code == 201, first.text
    assert first.json()["data"]["email"] == body["email"].lower()

    same_email = await client.post("/api/users/register", json=new_registration(email=body["email"].upper()))
    number = digits(body["phone"])  # +57 and ten digits
    reformatted = f"{number[:3]} ({number[3:6]}) {number[6:9]}-{number[9:]}"
    same_phone = await client.post("/api/users/register", json=new_registration(phone=reformatted))

    assert same_email.status_code == 409 and "email" in same_email.json()["message"].lower()
    assert same_phone.status_code == 409 and "phone" in same_phone.json()["message"].lower(), same_phone.text
    assert await User.find(User.email == body["email"].lower()).count() == 1
    assert [e["data"]["email"] for e in dapr.events("welcome_flow")] == [body["email"].lower()]


async def test_concurrent_registrations_of_one_email_cannot_both_win(client, dapr):
    email = f"race.{uuid.uuid4().hex[:8]}@example.com"
    bodies = [new_registration(email=email) for _ in range(4)]
    responses = await asyncio.gather(*(client.post("/api/users/register", json=b) for b in bodies))

    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409], [r.text for r in responses]
    assert await User.find(User.email == email).count() == 1
    assert len(dapr.events("welcome_flow")) == 1


async def test_concurrent_registrations_of_one_phone_cannot_both_win(client, dapr):
    phone = new_registration()["phone"]
    bodies = [new_registration(phone=phone) for _ in range(3)]
    responses = await asyncio.gather(*(client.post("/api/users/register", json=b) for b in bodies))

    assert sorted(r.status_code for r in responses) == [201, 409, 409], [r.text for r in responses]
    assert await User.find(User.phone == digits(phone)).count() == 1
    assert len(dapr.events("welcome_flow")) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "ana@shop.local"}, "email"),
        ({"password": "short7!"}, "password"),
        ({"phone": "12ab"}, "phone"),
        ({"name": "   "}, "name"),
        ({"lastName": None}, "lastName"),
    ],
)
async def test_invalid_registrations_are_422_and_leave_nothing(client, dapr, change, field):
    body = new_registration(**change)
    response = await client.post("/api/users/register", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]
    assert response.json()["errors"]
    assert dapr.published == []
    assert await User.find(User.email == str(body["email"]).lower()).count() == 0


async def test_missing_fields_and_malformed_bodies_are_422(client, dapr):
    missing = await client.post("/api/users/register", json={"email": "x@example.com"})
    malformed = await client.post(
        "/api/users/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert missing.status_code == 422
    for field in ("name", "lastName", "password", "phone"):
        assert field in missing.json()["message"]
    assert malformed.status_code == 422 and malformed.json()["message"]
    assert dapr.published == []


async def test_a_registration_survives_the_sidecar_being_down_and_is_announced_later(dapr):
    body = new_registration()
    dapr.publish_failure = (grpc.StatusCode.UNAVAILABLE, "pubsub unavailable")
    async with running(app) as client:
        response = await client.post("/api/users/register", json=body)
        assert response.status_code == 201, response.text
        assert [asked["topic"] for asked in dapr.publish_requests] == ["welcome_flow"]
        stored = await User.get(response.json()["data"]["id"])
        [pending] = stored.outbox
        assert pending.topic == "welcome_flow"
        assert await AuditEvent.get(pending.id) is None  # not published, so not in the log

        dapr.publish_failure = None  # the sidecar is back; the sweep relays what was left
        assert await outbox.OutboxRelay([User], 3600).sweep() >= 1

        assert pending.id in [event["id"] for event in dapr.events("welcome_flow")]  # the same CloudEvent id
        assert (await User.get(stored.id)).outbox == []
        assert (await AuditEvent.get(pending.id)).topic == "welcome_flow"


async def test_login_returns_a_token_and_publishes_user_login(client, dapr):
    body = new_registration()
    registered = (await client.post("/api/users/register", json=body)).json()["data"]
    response = await client.post(
        "/api/users/login", json={"email": body["email"].upper(), "password": body["password"]}
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["user"] == registered
    claims = jwt.decode(data["token"], get_settings().jwt_secret, algorithms=["HS256"], audience="the-shop/api")
    assert claims["sub"] == registered["id"] and claims["email"] == body["email"] and claims["role"] == "customer"
    assert claims["exp"] - claims["iat"] == 3600
    [event] = [e for e in dapr.events("user_login") if e["data"]["userId"] == registered["id"]]
    assert event["data"]["email"] == body["email"]
    stored = await User.get(registered["id"])
    assert stored.lastLoginAt is not None and stored.outbox == []


async def test_wrong_password_and_unknown_email_get_the_same_401(client, dapr):
    body = new_registration()
    await client.post("/api/users/register", json=body)
    wrong = await client.post("/api/users/login", json={"email": body["email"], "password": "not-the-password"})
    unknown = await client.post(
        "/api/users/login", json={"email": f"nobody.{uuid.uuid4().hex}@example.com", "password": body["password"]}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() and wrong.json()["message"]
    assert dapr.events("user_login") == []


async def test_login_with_a_missing_field_is_422(client):
    response = await client.post("/api/users/login", json={"email": "ana@example.com"})
    assert response.status_code == 422 and "password" in response.json()["message"]


async def test_me_returns_the_caller(client):
    body = new_registration()
    await client.post("/api/users/register", json=body)
    token = (await client.post("/api/users/login", json=body)).json()["data"]["token"]

    me = await client.get("/api/users/me", headers=bearer(token))
    anonymous = await client.get("/api/users/me")
    forged = await client.get("/api/users/me", headers=bearer("not.a.jwt"))
    deleted = await client.get("/api/users/me", headers=bearer(issue_token("0" * 24, "x@example.com", "customer")))
    odd_subject = await client.get(
        "/api/users/me", headers=bearer(issue_token("not-an-id", "x@example.com", "customer"))
    )

    assert me.status_code == 200 and me.json()["data"]["email"] == body["email"]
    assert anonymous.status_code == 401 and anonymous.json()["message"]
    assert forged.status_code == 401
    assert deleted.status_code == 404 and odd_subject.status_code == 404


async def test_the_admin_account_exists_after_start_and_can_log_in(client, dapr):
    settings = settings_of(UsersSettings)
    response = await client.post(
        "/api/users/login", json={"email": settings.admin_email, "password": settings.admin_password}
    )
    assert response.status_code == 200, response.text
    user = response.json()["data"]["user"]
    assert user["role"] == "admin" and user["email"] == settings.admin_email and user["phone"] is None
    token = response.json()["data"]["token"]
    assert jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], audience="the-shop/api")["role"] == "admin"
    assert [e["data"]["email"] for e in dapr.events("user_login")] == [settings.admin_email]
    raw = await User.get_pymongo_collection().find_one({"email": settings.admin_email})
    assert "phone" not in raw  # absent, so the sparse unique index leaves every phone free


async def test_admin_creation_is_idempotent_also_when_replicas_start_together(client, dapr, admin_email):
    email = f"boss.{uuid.uuid4().hex[:8]}@example.com"
    admin_email(email)
    await asyncio.gather(ensure_admin(), ensure_admin(), ensure_admin())
    await ensure_admin()
    admins = await User.find(User.email == email).to_list()
    assert [a.role for a in admins] == ["admin"]
    assert dapr.published == []  # the admin gets no welcome e-mail


async def test_an_admin_email_taken_by_a_customer_is_not_promoted(client, admin_email):
    body = new_registration()
    assert (await client.post("/api/users/register", json=body)).status_code == 201
    admin_email(body["email"])
    await ensure_admin()
    [user] = await User.find(User.email == body["email"]).to_list()
    assert user.role == "customer"


async def test_concurrent_logins_each_announce_themselves(client, dapr):
    body = new_registration()
    user_id = (await client.post("/api/users/register", json=body)).json()["data"]["id"]
    logins = await asyncio.gather(*(client.post("/api/users/login", json=body) for _ in range(5)))

    assert [r.status_code for r in logins] == [200] * 5
    events = [e for e in dapr.events("user_login") if e["data"]["userId"] == user_id]
    assert len({e["id"] for e in events}) == 5
    assert (await User.get(user_id)).outbox == []


async def test_health_readiness_and_docs(client):
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/api/users/register", "/api/users/login", "/api/users/me"} <= set(paths)


async def test_a_taken_email_and_a_taken_phone_get_the_same_answer(client):
    """Registration does not tell which of the two has an account."""
    first = new_registration()
    assert (await client.post("/api/users/register", json=first)).status_code == 201
    by_email = await client.post("/api/users/register", json=new_registration(email=first["email"]))
    by_phone = await client.post("/api/users/register", json=new_registration(phone=first["phone"]))
    assert by_email.status_code == by_phone.status_code == 409
    assert by_email.json() == by_phone.json()


@pytest.mark.parametrize("name", ["Ana\r\nBcc: x@example.com", "Ana\x00", "Ana\x1b[31m", "An\ta"])
async def test_a_name_with_control_characters_is_refused_and_saves_nothing(client, dapr, name):
    """Names flow into e-mail subjects and logs: one line of printable text only."""
    for field in ("name", "lastName"):
        body = new_registration(**{field: name})
        response = await client.post("/api/users/register", json=body)
        assert response.status_code == 422 and "control characters" in response.json()["message"], response.text
        assert await User.find_one(User.email == body["email"]) is None
    assert dapr.published == []


async def test_a_changed_admin_password_in_the_environment_replaces_the_old_one(client, admin_email, monkeypatch):
    """Rotating the admin's password is changing SHOP_ADMIN_PASSWORD and restarting users."""
    email = f"boss.{uuid.uuid4().hex[:8]}@example.com"
    admin_email(email)
    await ensure_admin()
    monkeypatch.setenv("SHOP_ADMIN_PASSWORD", "a-rotated-admin-password")
    settings_of.cache_clear()
    await ensure_admin()

    old = await client.post("/api/users/login", json={"email": email, "password": "admin-local-password"})
    new = await client.post("/api/users/login", json={"email": email, "password": "a-rotated-admin-password"})
    assert (old.status_code, new.status_code) == (401, 200)
    assert new.json()["data"]["user"]["role"] == "admin"
