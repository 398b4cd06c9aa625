"""What only users reads: password hashing, login throttling, the admin account, link bases."""

from typing import ClassVar

from pydantic import Field

from functions.common.settings import Settings, settings_of

LOCAL_ADMIN_PASSWORD = "admin-local-password"


class UsersSettings(Settings):
    SECRETS: ClassVar[dict[str, tuple[str, str]]] = {
        **Settings.SECRETS,
        "admin_password": ("SHOP_ADMIN_PASSWORD", LOCAL_ADMIN_PASSWORD),
    }

    # Password hashes (argon2, 64 MiB each while it runs) computed at once; see passwords._slots.
    password_hash_concurrency: int = Field(2, ge=1, alias="SHOP_PASSWORD_HASH_CONCURRENCY")
    # Requests that may wait for a hash slot; more are refused at once (503) rather than queued.
    password_hash_queue: int = Field(64, ge=0, alias="SHOP_PASSWORD_HASH_QUEUE")
    # Login throttling (users/throttle.py), per 15 minutes: failed logins per account, and logins
    # per client address (X-Forwarded-For from the Ingress).
    login_failures_per_account: int = Field(10, ge=1, alias="SHOP_LOGIN_FAILURES_PER_ACCOUNT")
    login_attempts_per_address: int = Field(100, ge=1, alias="SHOP_LOGIN_ATTEMPTS_PER_ADDRESS")
    admin_email: str = Field("admin@shop.local", alias="SHOP_ADMIN_EMAIL")
    admin_password: str = Field(LOCAL_ADMIN_PASSWORD, alias="SHOP_ADMIN_PASSWORD")
    # Where customers reach the API (the Ingress in a cluster): the base of the links in e-mails.
    public_url: str = Field("http://127.0.0.1:8001", alias="SHOP_PUBLIC_URL")


def get_settings() -> UsersSettings:
    return settings_of(UsersSettings)
