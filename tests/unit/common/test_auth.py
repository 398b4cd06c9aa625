"""JWTs, and the CurrentUser / AdminUser dependencies."""

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI, HTTPException

from functions.common.auth import AdminUser, CurrentUser, decode_token, issue_token
from functions.common.settings import get_settings
from functions.common.web import install_error_handlers


def test_a_token_carries_sub_email_and_role_for_one_hour():
    token = issue_token("u1", "ana@example.com", "admin")
    claims = jwt.decode(token, get_settings().jwt_secret, algorithms=["HS256"], audience="the-shop/api")
    assert (claims["sub"], claims["email"], claims["role"]) == ("u1", "ana@example.com", "admin")
    assert (claims["iss"], claims["aud"]) == ("the-shop/users", "the-shop/api")
    assert claims["exp"] - claims["iat"] == 3600
    principal = decode_token(token)
    assert (principal.id, principal.email, principal.role, principal.token) == ("u1", "ana@example.com", "admin", token)
    assert principal.is_admin


def _token(secret: str | None = None, **claims) -> str:
    issued = datetime.now(UTC)
    payload = {"iss": "the-shop/users", "aud": "the-shop/api", "sub": "u1", "email": "ana@example.com",
               "role": "customer", "iat": issued, "exp": issued + timedelta(hours=1), **claims}  # fmt: skip
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret or get_settings().jwt_secret, algorithm="HS256")


def test_a_well_formed_token_of_ours_is_accepted():
    assert decode_token(_token()).id == "u1"  # the helper's defaults: the bad cases below differ by one claim


@pytest.mark.parametrize(
    "token",
    [
        _token(exp=datetime.now(UTC) - timedelta(seconds=1)),  # expired
        _token(secret="someone-elses-secret-0123456789-abcdef"),  # not ours
        _token(role=None),  # no role
        _token(email=None),  # no email
        _token(role="superuser"),  # no such role
        _token(iss="another-system"),  # signed elsewhere with the same secret
        _token(aud="another-api"),  # ours, but for something else
        _token(iss=None),  # no issuer
        _token(aud=None),  # no audience
        "not-a-jwt",
    ],
)
def test_bad_tokens_are_401(token):
    with pytest.raises(HTTPException) as raised:
        decode_token(token)
    assert raised.value.status_code == 401


def test_a_token_signed_with_none_is_refused():
    unsigned = jwt.encode({"sub": "u1", "email": "a@example.com", "role": "admin", "exp": 9999999999}, None, "none")
    with pytest.raises(HTTPException):
        decode_token(unsigned)


async def test_the_dependencies_answer_401_and_403():
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter()

    @router.get("/mine")
    async def mine(principal: CurrentUser) -> dict:
        return {"id": principal.id}

    @router.get("/admin")
    async def admin_only(principal: AdminUser) -> dict:
        return {"id": principal.id}

    app.include_router(router)
    customer = {"Authorization": f"Bearer {issue_token('c1', 'ana@example.com', 'customer')}"}
    admin = {"Authorization": f"Bearer {issue_token('a1', 'admin@shop.local', 'admin')}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        assert (await client.get("/mine", headers=customer)).json() == {"id": "c1"}
        assert (await client.get("/admin", headers=admin)).json() == {"id": "a1"}
        forbidden = await client.get("/admin", headers=customer)
        anonymous = await client.get("/mine")
        basic = await client.get("/mine", headers={"Authorization": "Basic YTpi"})
    assert forbidden.status_code == 403 and forbidden.json() == {"message": "Administrators only"}
    assert anonymous.status_code == 401 and anonymous.json()["message"]
    assert basic.status_code == 401
