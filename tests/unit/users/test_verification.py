"""E-mail verification: the welcome event carries a signed link; following it verifies the
address once and announces `email_verified`."""

from urllib.parse import parse_qs, urlsplit

from functions.common.auth import issue_token
from functions.users.models import User
from tests.unit.users.test_users import new_registration


async def registered_with_link(client, dapr) -> tuple[dict, str]:
    body = new_registration()
    user = (await client.post("/api/users/register", json=body)).json()["data"]
    [welcome] = [e for e in dapr.events("welcome_flow") if e["data"]["userId"] == user["id"]]
    return user, welcome["data"]["verificationUrl"]


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


async def test_the_link_of_the_welcome_event_verifies_the_address_once(client, dapr):
    user, link = await registered_with_link(client, dapr)
    assert link.startswith("http://127.0.0.1:8001/api/users/verify?token=")

    first = await client.get("/api/users/verify", params={"token": token_of(link)})
    again = await client.get("/api/users/verify", params={"token": token_of(link)})

    assert first.status_code == again.status_code == 200, first.text
    assert "already" in again.json()["message"]
    [verified] = [e for e in dapr.events("email_verified") if e["data"]["userId"] == user["id"]]
    assert verified["data"] == {"userId": user["id"], "email": user["email"]}
    assert (await User.get(user["id"])).emailVerifiedAt is not None


async def test_a_tampered_expired_or_foreign_token_verifies_nothing(client, dapr):
    user, link = await registered_with_link(client, dapr)
    session = issue_token(user["id"], user["email"], "customer")  # a session is not a verification
    for token in (token_of(link)[:-3] + "xyz", session, "nonsense"):
        refused = await client.get("/api/users/verify", params={"token": token})
        assert refused.status_code == 400 and refused.json()["message"], token
    assert (await client.get("/api/users/verify")).status_code == 422
    assert [e for e in dapr.events("email_verified") if e["data"]["userId"] == user["id"]] == []
    assert (await User.get(user["id"])).emailVerifiedAt is None
