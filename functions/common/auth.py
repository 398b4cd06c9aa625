"""Sessions: JWTs (HS256) that users signs and every function verifies locally."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import jwt
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from functions.common.settings import get_settings

Role = Literal["customer", "admin"]
_bearer = HTTPBearer(auto_error=False, description="JWT from POST /api/users/login")


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
