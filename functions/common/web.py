"""The shape every function app shares: envelope bodies, JSON errors, health, start-up."""

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Generic, Self, TypeVar

from beanie import Document
from dapr.ext.fastapi import DaprApp
from fastapi import APIRouter, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.common import db, outbox, sidecar
from functions.common.consumers import (
    INBOX_PRUNE_SECONDS,
    InboxPruning,
    ProcessedEvent,
    Subscriptions,
    forget_old_events,
)
from functions.common.dead_letters import DeadLetter
from functions.common.outbox import AuditEvent, HasOutbox, OutboxRelay
from functions.common.periodic import Periodic
from functions.common.settings import Settings, check_secrets, get_settings

T = TypeVar("T")
log = logging.getLogger(__name__)


class Envelope(BaseModel, Generic[T]):
    """Success body, as the original shop: {"message": ..., "data": ...}."""

    message: str
    data: T


class DocumentOut(BaseModel):
    """A stored document as the API answers it: the fields the subclass declares, read from the
    document by name (so nothing it does not declare, a password hash say, can leak), the id as
    text, and `shown` for the fields that are computed."""

    id: str

    @classmethod
    def of(cls, document: Document, **shown: Any) -> Self:
        names = cls.model_fields.keys() - shown.keys() - {"id"}
        stored = {name: getattr(document, name) for name in names if hasattr(document, name)}
        return cls(id=str(document.id), **stored, **shown)


class ErrorBody(BaseModel):
    message: str
    errors: list[dict[str, Any]] | None = None


# The paging parameters of every list route. An offset is bounded: one past 2**63 reached the
# database driver and failed there (500), and no page that deep is ever meant.
MAX_OFFSET = 100_000
PageLimit = Annotated[int, Query(ge=1, le=100, description="at most this many items")]
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip, newest or first ones first")]

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 503)}


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


# A NUL character, raw or as the JSON escape \u0000 (not itself escaped: an even run of
# backslashes before it). PostgreSQL, under FerretDB, cannot store one in a document and fails
# the query or the insert that carries it (found by schemathesis: a 500 on login and on
# /api/facture); no text the shop takes has a use for it.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
NUL_REFUSED = "Text must not contain control characters such as NUL (\\u0000)"


class InputGuard:
    """Every request, before the app reads it: a body past `limit` bytes is refused (413, as JSON
    like every error) as it arrives, never read whole (by its Content-Length at once, or as the
    bytes come in; Starlette's own limiter answers in plain text); a NUL character in the query
    string or the body is refused (422)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"message": self._too_large()}, 413)(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b""):
            await JSONResponse({"message": NUL_REFUSED}, 422)(scope, receive, send)
            return
        received = 0
        tail = b""  # the end of the previous chunk: an escape may straddle two

        async def receive_checked() -> Message:
            nonlocal received, tail
            message = await receive()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                raise StarletteHTTPException(413, self._too_large())
            window = tail + chunk
            if b"\x00" in chunk or _JSON_NUL.search(window):
                raise StarletteHTTPException(422, NUL_REFUSED)
            tail = window[-64:]
            return message

        await self.app(scope, receive_checked, send)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.limit} bytes"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        message = "Invalid request: " + "; ".join(_describe(e) for e in errors)
        return JSONResponse({"message": message, "errors": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(sidecar.SidecarError)
    async def dependency_down(_: Request, exc: sidecar.SidecarError) -> JSONResponse:
        log.warning("dependency unavailable: %s", exc)
        return JSONResponse({"message": "A service this request needs is unavailable; try again"}, 503)


def create_app(
    *,
    app_id: str,
    title: str,
    description: str,
    models: Sequence[type[Document]],
    routers: Sequence[APIRouter] = (),
    subscriptions: Subscriptions | None = None,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
    jobs: Sequence[Periodic] = (),
    settings_kind: type[Settings] = Settings,
) -> FastAPI:
    """`jobs`: the function's own background jobs, run beside the outbox sweep and inbox pruning.
    `settings_kind`: the function's settings, whose secrets are checked before it starts."""
    check_secrets(settings_kind)
    settings = get_settings()
    jobs = [
        OutboxRelay([m for m in models if issubclass(m, HasOutbox)], settings.outbox_sweep_seconds).periodic,
        Periodic("inbox pruning", forget_old_events, INBOX_PRUNE_SECONDS),
        *jobs,
    ]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.init_db(app_id, [*models, AuditEvent, ProcessedEvent, InboxPruning, DeadLetter])
        for hook in on_startup:
            await hook()
        for job in jobs:
            job.start()
        yield
        for job in jobs:
            await job.stop()
        for hook in on_shutdown:
            await hook()
        await outbox.take_off_unanswered()
        await sidecar.close()
        await db.close_db()

    app = FastAPI(title=title, description=description, lifespan=lifespan, responses=ERRORS)
    app.add_middleware(InputGuard, limit=settings.max_body_bytes)
    app.state.app_id = app_id
    install_error_handlers(app)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    readiness = db.Readiness(settings.db_unready_after_seconds)

    # Kubernetes' readiness probe and Dapr's app health check (dapr/dapr.yaml, the k8s annotation):
    # while it fails, the pod leaves its Service and daprd stops delivering events, which wait in
    # Kafka instead of being retried into their dead letter during a database outage.
    @app.get("/readyz", tags=["health"], summary="Readiness: the database answers (or failed for under a grace)")
    async def readyz() -> JSONResponse:
        if await readiness.ready():
            return JSONResponse({"status": "ready"})
        message = f"database unreachable for {settings.db_unready_after_seconds:g}s or more"
        return JSONResponse({"status": "unavailable", "message": message}, 503)

    for router in routers:
        app.include_router(router)
    if subscriptions is not None:
        subscriptions.mount(DaprApp(app), settings.pubsub_name)
    return app
