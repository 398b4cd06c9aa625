"""Passwords (argon2, a slow hash) and JWTs (HS256), verified locally by every function."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from functions.common.settings import get_settings

Role = Literal["customer", "admin"]
_hasher = PasswordHasher()
_bearer = HTTPBearer(auto_error=False, description="JWT from POST /api/users/login")


_hash_slots: asyncio.Semaphore | None = None
_queued = 0  # requests waiting for a slot
BUSY = "The server is busy checking passwords; try again in a moment"


def _slots() -> asyncio.Semaphore:
    """argon2 holds 64 MiB (its memory cost) per hash while it runs. Unbounded, a burst of
    logins ran one hash per worker thread and took the users app from 96 to 480 MiB
    (tests/bench/orders.py), near its 512Mi limit in Kubernetes; so at most
    SHOP_PASSWORD_HASH_CONCURRENCY run at once and the other requests wait their turn."""
    global _hash_slots
    if _hash_slots is None:
        _hash_slots = asyncio.Semaphore(get_settings().password_hash_concurrency)
    return _hash_slots


@asynccontextmanager
async def _hash_turn() -> AsyncIterator[None]:
    """A hash slot; 503 at once (Retry-After) when SHOP_PASSWORD_HASH_QUEUE requests already
    wait, so a login flood is refused instead of queueing every real user behind it."""
    global _queued
    slots = _slots()
    if slots.locked() and _queued >= get_settings().password_hash_queue:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BUSY, headers={"Retry-After": "1"})
    _queued += 1
    try:
        await slots.acquire()
    finally:
        _queued -= 1
    try:
        yield
    finally:
        slots.release()


async def hash_password(password: str) -> str:
    async with _hash_turn():
        return await asyncio.to_thread(_hasher.hash, password)


@cache
def _decoy_hash() -> str:
    return _hasher.hash("decoy-password-never-matches")


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _decoy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches. No hash (an unknown e-mail) is checked against a decoy, so
    an unknown e-mail and a wrong password take the same time."""
    async with _hash_turn():
        return await asyncio.to_thread(_verify, password_hash, password)


class Principal(BaseModel):
    """Who is calling, as the token says; `token` is forwarded on service invocation."""

    id: str
    email: str
    role: Role
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# Who signed a token and for whom: a token another system signed with a shared secret, or one
# the shop signs for something else one day, is not a session of the shop's API.
TOKEN_ISSUER = "the-shop/users"
TOKEN_AUDIENCE = "the-shop/api"


def issue_token(user_id: str, email: str, role: Role) -> str:
    settings = get_settings()
    issued = datetime.now(UTC)
    claims = {
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "sub": user_id,
        "email": email,
        "role": role,
        "iat": issued,
        "exp": issued + timedelta(seconds=settings.jwt_ttl_seconds),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def decode_token(token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            get_settings().jwt_secret,
            algorithms=["HS256"],
            issuer=TOKEN_ISSUER,
            audience=TOKEN_AUDIENCE,
            options={"require": ["iss", "aud", "sub", "email", "role", "exp"]},
        )
        return Principal(id=claims["sub"], email=claims["email"], role=claims["role"], token=token)
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid or expired token") from exc


async def current_principal(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Missing bearer token")
    return decode_token(credentials.credentials)


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Administrators only")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
