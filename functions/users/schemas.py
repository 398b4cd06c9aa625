import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, EmailStr, Field, StringConstraints, field_validator

from functions.common.auth import Role
from functions.common.text import OneLine
from functions.common.web import DocumentOut

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), OneLine]
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_PHONE = re.compile(r"^\+?[0-9]{7,15}$")


class RegisterRequest(BaseModel):
    name: Name
    lastName: Name
    email: EmailStr
    # The upper bound only keeps a request from making the slow hash slower still.
    password: str = Field(min_length=8, max_length=256)
    phone: str = Field(max_length=32, examples=["+57 300 123 4567"])

    @field_validator("email")
    @classmethod
    def lower_email(cls, email: str) -> str:
        return email.lower()

    @field_validator("phone")
    @classmethod
    def normalise_phone(cls, phone: str) -> str:
        # "+57 300-123 4567" and "+573001234567" are one phone: store digits only, so the
        # unique index sees them as the same.
        digits = _PHONE_SEPARATORS.sub("", phone)
        if not _PHONE.match(digits):
            raise ValueError("must be 7 to 15 digits, optionally starting with +")
        return digits


class LoginRequest(BaseModel):
    # A plain string, not EmailStr: a configured account such as admin@shop.local uses a
    # special-use domain that e-mail validation rejects, and a bad e-mail simply fails to log in.
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class UserOut(DocumentOut):
    name: str
    lastName: str
    email: str
    phone: str | None
    role: Role
    createdAt: datetime


class Session(BaseModel):
    token: str
    user: UserOut
