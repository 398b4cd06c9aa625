"""Passwords (argon2, a slow hash) and JWTs (HS256), verified locally by every function."""

from datetime import UTC, datetime, timedelta
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


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class Principal(BaseModel):
    """Who is calling, as the token says; `token` is forwarded on service invocation."""

    id: str
    email: str
    role: Role
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def issue_token(user_id: str, email: str, role: Role) -> str:
    settings = get_settings()
    issued = datetime.now(UTC)
    claims = {
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
            options={"require": ["sub", "email", "role", "exp"]},
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
