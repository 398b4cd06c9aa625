"""Typed settings, read from the environment (k8s Secrets in a cluster): the base every function
shares, extended by each function's own (functions/<function>/settings.py) with what only it reads.

The defaults are for a local run only; a deployment sets every secret, and outside a local run
(`SHOP_ENV` other than `local`) a function refuses to start with a missing or default one.
"""

from functools import lru_cache
from typing import ClassVar, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_JWT_SECRET = "local-dev-only-jwt-secret-change-me-0123456789"
MIN_JWT_SECRET_LENGTH = 32  # HS256 keys: at least the hash's 256 bits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # Each secret this function needs: its field, its variable and the committed local value it
    # must not keep outside a local run ("" when there is none). A function's settings add its own.
    SECRETS: ClassVar[dict[str, tuple[str, str]]] = {
        "jwt_secret": ("SHOP_JWT_SECRET", LOCAL_JWT_SECRET),
        "dapr_api_token": ("DAPR_API_TOKEN", ""),
        "app_api_token": ("APP_API_TOKEN", ""),
    }

    # "local" (the default: `task up`, the tests, a dev cluster) accepts the committed local
    # secrets; anything else refuses them (`secret_problems`).
    env: str = Field("local", alias="SHOP_ENV")
    mongodb_uri: str = Field("mongodb://127.0.0.1:27017", alias="MONGODB_URI")
    # Each function owns its database: "<prefix>_<app id>".
    db_prefix: str = Field("shop", alias="SHOP_DB_PREFIX")

    # Every function verifies the sessions users signs (functions/common/auth.py).
    jwt_secret: str = Field(LOCAL_JWT_SECRET, alias="SHOP_JWT_SECRET")
    jwt_ttl_seconds: int = Field(3600, alias="SHOP_JWT_TTL_SECONDS")

    # The largest request body an app port reads (an API call or an event delivery): far above
    # any the shop makes (an order of 100 lines as an event is ~25 KiB), far below a flood.
    max_body_bytes: int = Field(256 * 1024, ge=1024, alias="SHOP_MAX_BODY_BYTES")
    pubsub_name: str = Field("pubsub", alias="SHOP_PUBSUB_NAME")
    dapr_host: str = Field("127.0.0.1", alias="DAPR_HOST")
    dapr_http_port: int = Field(3500, alias="DAPR_HTTP_PORT")
    # Set by `dapr run` and by Dapr's sidecar injector, as DAPR_HTTP_PORT is.
    dapr_grpc_port: int = Field(50001, alias="DAPR_GRPC_PORT")
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

    def secret_problems(self) -> list[str]:
        """What is wrong with this function's secrets here, one line each (empty: all fine)."""
        problems = []
        if len(self.jwt_secret) < MIN_JWT_SECRET_LENGTH:
            problems.append(f"SHOP_JWT_SECRET is shorter than {MIN_JWT_SECRET_LENGTH} characters")
        if self.env != "local":
            for field, (variable, local_value) in self.SECRETS.items():
                value = getattr(self, field)
                if not value or value == local_value:
                    problems.append(
                        f"{variable} is {'the committed local default' if value else 'not set'} (SHOP_ENV={self.env})"
                    )
        return problems


S = TypeVar("S", bound=Settings)


@lru_cache
def settings_of(kind: type[S]) -> S:
    """The settings of one kind, read once (tests clear the cache to read them again)."""
    return kind()


def get_settings() -> Settings:
    """The settings every function shares."""
    return settings_of(Settings)


def check_secrets(kind: type[Settings] = Settings) -> None:
    """Refuse to start, in one line naming each variable, rather than run with unsafe secrets."""
    if problems := settings_of(kind).secret_problems():
        raise SystemExit("the shop refuses to start: " + "; ".join(problems))
