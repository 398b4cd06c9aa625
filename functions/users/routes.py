from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, status
from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.auth import CurrentUser, issue_token
from functions.common.clock import now
from functions.common.contracts import EmailVerified, UserLoggedIn, UserRegistered
from functions.common.ids import is_id
from functions.common.outbox import PendingEvent
from functions.common.web import Envelope
from functions.users import APP_ID, throttle, verification
from functions.users.models import User
from functions.users.passwords import hash_password, verify_password
from functions.users.schemas import LoginRequest, RegisterRequest, Session, UserOut
from functions.users.settings import get_settings

router = APIRouter(prefix="/api/users", tags=["users"])

BAD_CREDENTIALS = "Invalid email or password"
TAKEN = "A user with this email or phone already exists"
INVALID_LINK = "This verification link is not valid or has expired"


@router.post("/register", status_code=status.HTTP_201_CREATED, summary="Register a customer")
async def register(body: RegisterRequest) -> Envelope[UserOut]:
    # One answer whichever is taken, so it does not tell which of an e-mail and a phone has an
    # account; checked before the costly hash, and the unique indexes still decide under races.
    if await User.find_one(User.email == body.email) or await User.find_one(User.phone == body.phone):
        raise HTTPException(status.HTTP_409_CONFLICT, TAKEN)

    password_hash = await hash_password(body.password)
    user = User(
        name=body.name,
        lastName=body.lastName,
        email=body.email,
        phone=body.phone,
        passwordHash=password_hash,
    )
    # The welcome event is saved inside the user: it exists only if the user does. It carries
    # the verification link the welcome e-mail shows.
    user.stage(
        UserRegistered(userId=user.id, email=user.email, name=user.name, lastName=user.lastName,
                       verificationUrl=verification.verification_url(user.id, user.email)),
        source=APP_ID,
        key=user.id,
    )
    try:
        await store.insert(user)
    except DuplicateKeyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, TAKEN) from exc
    return Envelope(message="User registered", data=UserOut.of(user))


# What login answers besides 200 and 401 (functions/users/throttle.py).
THROTTLED = {
    429: {"description": "Too many failed logins for the account, or logins from the address"},
    503: {"description": "Too many logins waiting for a password check"},
}


@router.post("/login", summary="Log in; returns a JWT valid for one hour", responses=THROTTLED)
async def login(
    body: LoginRequest, forwarded_for: Annotated[str | None, Header(alias="X-Forwarded-For")] = None
) -> Envelope[Session]:
    account = body.email.strip().lower()
    settings = get_settings()
    try:
        throttle.check(account, throttle.client_address(forwarded_for),
                       max_failures=settings.login_failures_per_account, max_attempts=settings.login_attempts_per_address)
    except throttle.Limited as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after)})
    user = await User.find_one(User.email == account)
    matches = await verify_password(user.passwordHash if user else None, body.password)
    if user is None or not matches:
        throttle.failed(account)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, BAD_CREDENTIALS)
    throttle.succeeded(account)

    logged_in = now()
    pending = PendingEvent.of(UserLoggedIn(userId=user.id, email=user.email), source=APP_ID, key=user.id)
    # The login time and its event in one write, relayed like every other event.
    await store.update(User, user.id, {"$set": {"lastLoginAt": logged_in}}, events=[pending])
    token = issue_token(user.id, user.email, user.role)
    return Envelope(message="Logged in", data=Session(token=token, user=UserOut.of(user)))


@router.get(
    "/verify",
    summary="Verify the caller's e-mail address: the link of the welcome e-mail",
    responses={400: {"description": "The link is not valid (tampered, expired, or for another address)"}},
)
async def verify_email(token: Annotated[str, Query(min_length=1, max_length=2000)]) -> Envelope[None]:
    try:
        user_id, email = verification.read(token)
    except verification.InvalidLink as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, INVALID_LINK) from exc
    user = await User.get(user_id) if is_id(user_id) else None
    if user is None or user.email != email:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, INVALID_LINK)
    if user.emailVerifiedAt is not None:
        return Envelope(message="Your e-mail address is already verified", data=None)
    pending = PendingEvent.of(EmailVerified(userId=user.id, email=user.email), source=APP_ID, key=user.id)
    # Once: only the first click (of one or several at once) verifies and announces it.
    await store.update(
        User, user.id, {"$set": {"emailVerifiedAt": now()}}, where={"emailVerifiedAt": None}, events=[pending]
    )
    return Envelope(message="Your e-mail address is verified", data=None)


@router.get("/me", summary="The caller's own profile")
async def me(principal: CurrentUser) -> Envelope[UserOut]:
    user = await User.get(principal.id) if is_id(principal.id) else None
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    return Envelope(message="Current user", data=UserOut.of(user))
