"""Typed settings, read from the environment (k8s Secrets in a cluster).

The defaults are for a local run only; a deployment sets every secret, and outside a local run
(`SHOP_ENV` other than `local`) a function refuses to start with a missing or default one.
"""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # "local" (the default: `task up`, the tests, a dev cluster) accepts the committed local
    # secrets below; anything else refuses them (`check_secrets`).
    env: str = Field("local", alias="SHOP_ENV")
    mongodb_uri: str = Field("mongodb://127.0.0.1:27017", alias="MONGODB_URI")
    # Each function owns its database: "<prefix>_<app id>".
    db_prefix: str = Field("shop", alias="SHOP_DB_PREFIX")

    jwt_secret: str = Field("local-dev-only-jwt-secret-change-me-0123456789", alias="SHOP_JWT_SECRET")
    jwt_ttl_seconds: int = Field(3600, alias="SHOP_JWT_TTL_SECONDS")
    # Password hashes (argon2, 64 MiB each while it runs) computed at once; see auth._slots.
    password_hash_concurrency: int = Field(2, ge=1, alias="SHOP_PASSWORD_HASH_CONCURRENCY")
    # Requests that may wait for a hash slot; more are refused at once (503) rather than queued.
    password_hash_queue: int = Field(64, ge=0, alias="SHOP_PASSWORD_HASH_QUEUE")
    # Login throttling (users/throttle.py), per 15 minutes: failed logins per account, and logins
    # per client address (X-Forwarded-For from the Ingress).
    login_failures_per_account: int = Field(10, ge=1, alias="SHOP_LOGIN_FAILURES_PER_ACCOUNT")
    login_attempts_per_address: int = Field(100, ge=1, alias="SHOP_LOGIN_ATTEMPTS_PER_ADDRESS")
    admin_email: str = Field("admin@shop.local", alias="SHOP_ADMIN_EMAIL")
    admin_password: str = Field("admin-local-password", alias="SHOP_ADMIN_PASSWORD")

    # Where customers reach the API (the Ingress in a cluster): the base of the links in e-mails.
    public_url: str = Field("http://127.0.0.1:8001", alias="SHOP_PUBLIC_URL")
    sendgrid_api_key: str = Field("", alias="SENDGRID_API_KEY")
    mail_from: str = Field("tienda@shop.local", alias="SHOP_MAIL_FROM")
    tax_rate: float = Field(0.19, ge=0, le=1, alias="SHOP_TAX_RATE")
    currency: str = Field("USD", alias="SHOP_CURRENCY")
    # Charges of one order that may fail transiently before its payment fails for good (and its
    # stock is released). Keep it within the deliveries dapr/resiliency.yaml gives an event
    # (1 + pubsubRetry's maxRetries), so the saga, not the dead letter, ends an outage.
    payment_max_attempts: int = Field(4, ge=1, alias="SHOP_PAYMENT_MAX_ATTEMPTS")
    # An order still waiting on an event this long after its last change is settled: expired and
    # its stock released, or (paid) invoiced (payments/deadlines.py). Far beyond the redelivery
    # window of dapr/resiliency.yaml, so only an event lost for good (a dead letter) meets it.
    order_deadline_seconds: float = Field(900.0, gt=0, alias="SHOP_ORDER_DEADLINE_SECONDS")

    # The largest request body an app port reads (an API call or an event delivery): far above
    # any the shop makes (an order of 100 lines as an event is ~25 KiB), far below a flood.
    max_body_bytes: int = Field(256 * 1024, ge=1024, alias="SHOP_MAX_BODY_BYTES")
    pubsub_name: str = Field("pubsub", alias="SHOP_PUBSUB_NAME")
    dapr_host: str = Field("127.0.0.1", alias="DAPR_HOST")
    dapr_http_port: int = Field(3500, alias="DAPR_HTTP_PORT")
    dapr_timeout_seconds: float = Field(10.0, alias="SHOP_DAPR_TIMEOUT_SECONDS")
    # Dapr's own names: the token the sidecar requires of callers of its API, and the one it
    # sends the app on every call (checked on the subscription routes). Both secrets.
    dapr_api_token: str = Field("", alias="DAPR_API_TOKEN")
    app_api_token: str = Field("", alias="APP_API_TOKEN")
    # In-process locks around every update of a document: a workaround for FerretDB, which does
    # not isolate updates (functions/common/locks.py). Off only on a database that applies each
    # conditional update atomically (MongoDB), e.g. to prove that several replicas need none.
    document_locks: bool = Field(True, alias="SHOP_DOCUMENT_LOCKS")
    # /readyz fails only once the database has failed every ping for this long (functions/common/db.py).
    db_unready_after_seconds: float = Field(10.0, ge=0, alias="SHOP_DB_UNREADY_AFTER_SECONDS")
    # How often the outbox relay looks for events a crashed process left unpublished.
    outbox_sweep_seconds: float = Field(5.0, alias="SHOP_OUTBOX_SWEEP_SECONDS")
    # How long a handled event's id is remembered (the inbox). Past Kafka's retention (7 days by
    # default) no redelivery can come; every handler is idempotent on its own besides.
    inbox_retention_hours: float = Field(336.0, gt=0, alias="SHOP_INBOX_RETENTION_HOURS")

    @property
    def dapr_url(self) -> str:
        return f"http://{self.dapr_host}:{self.dapr_http_port}"


# Each secret: its variable, and the committed local value it must not keep outside a local run.
_SECRETS = {
    "jwt_secret": ("SHOP_JWT_SECRET", Settings.model_fields["jwt_secret"].default),
    "admin_password": ("SHOP_ADMIN_PASSWORD", Settings.model_fields["admin_password"].default),
    "dapr_api_token": ("DAPR_API_TOKEN", ""),
    "app_api_token": ("APP_API_TOKEN", ""),
}
MIN_JWT_SECRET_LENGTH = 32  # HS256 keys: at least the hash's 256 bits


def secret_problems(settings: Settings) -> list[str]:
    """What is wrong with the secrets for this environment, one line each (empty: all fine)."""
    problems = []
    if len(settings.jwt_secret) < MIN_JWT_SECRET_LENGTH:
        problems.append(f"SHOP_JWT_SECRET is shorter than {MIN_JWT_SECRET_LENGTH} characters")
    if settings.env != "local":
        for field, (variable, local_value) in _SECRETS.items():
            value = getattr(settings, field)
            if not value or value == local_value:
                problems.append(f"{variable} is {'the committed local default' if value else 'not set'} (SHOP_ENV={settings.env})")
    return problems


def check_secrets() -> None:
    """Refuse to start, in one line naming each variable, rather than run with unsafe secrets."""
    if problems := secret_problems(get_settings()):
        raise SystemExit("the shop refuses to start: " + "; ".join(problems))


@lru_cache
def get_settings() -> Settings:
    return Settings()
