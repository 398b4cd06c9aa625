"""E-mail verification: a signed link in the welcome e-mail proves the address is the user's.

The link carries a token (HS256 with SHOP_JWT_SECRET, like sessions, but for another audience,
so it is never a session and a session is never a verification) naming the user and the address,
valid for VERIFY_TTL. Following it marks the user verified and publishes `email_verified`, on
which notifications sends the e-mails it held for that address: no mail but the welcome (which
carries the link) reaches an address its owner has not confirmed.
"""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import jwt

from functions.common.auth import TOKEN_ISSUER
from functions.users.settings import get_settings

VERIFY_AUDIENCE = "the-shop/verify-email"
VERIFY_TTL = timedelta(days=7)


class InvalidLink(Exception):
    pass


def verification_url(user_id: str, email: str) -> str:
    settings = get_settings()
    issued = datetime.now(UTC)
    token = jwt.encode(
        {"iss": TOKEN_ISSUER, "aud": VERIFY_AUDIENCE, "sub": user_id, "email": email, "iat": issued,
         "exp": issued + VERIFY_TTL},
        settings.jwt_secret,
        algorithm="HS256",
    )
    return f"{settings.public_url.rstrip('/')}/api/users/verify?{urlencode({'token': token})}"


def read(token: str) -> tuple[str, str]:
    """(user id, e-mail) the token vouches for; InvalidLink if it is not a live verification token."""
    try:
        claims = jwt.decode(token, get_settings().jwt_secret, algorithms=["HS256"], issuer=TOKEN_ISSUER,
                            audience=VERIFY_AUDIENCE, options={"require": ["iss", "aud", "sub", "email", "exp"]})
    except jwt.InvalidTokenError as exc:
        raise InvalidLink(str(exc)) from exc
    return claims["sub"], claims["email"]
