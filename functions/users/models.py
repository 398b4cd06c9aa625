from datetime import datetime

from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from functions.common.auth import Role
from functions.common.clock import stored_now
from functions.common.ids import NewEntityId
from functions.common.outbox import HasOutbox


class User(Document, HasOutbox):
    id: NewEntityId
    name: str
    lastName: str
    email: str  # stored lower-cased, so the unique index ignores case
    # Only the configured admin account has no phone; the field is then absent (not null), which
    # the sparse unique index skips.
    phone: str | None = None
    passwordHash: str
    role: Role = "customer"
    createdAt: datetime = Field(default_factory=stored_now)
    lastLoginAt: datetime | None = None
    # Set when the user follows the link of the welcome e-mail (users/verification.py).
    emailVerifiedAt: datetime | None = None

    class Settings:
        name = "users"
        keep_nulls = False
        # The indexes, not a look-up before the insert, decide which of two concurrent
        # registrations of one e-mail or phone wins.
        indexes = [
            IndexModel("email", unique=True, name="email_unique"),
            IndexModel("phone", unique=True, sparse=True, name="phone_unique"),
        ]
