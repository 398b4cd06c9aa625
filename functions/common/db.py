"""Database start-up: each function owns one database on the shared MongoDB-wire server."""

import asyncio
import time

from beanie import Document, init_beanie
from beanie.odm.settings.document import IndexModelField
from beanie.odm.utils.pydantic import get_model_fields
from beanie.odm.utils.typing import get_index_attributes
from pymongo import AsyncMongoClient, IndexModel

from functions.common.outbox import OUTBOX_INDEX, HasOutbox
from functions.common.settings import get_settings

_client: AsyncMongoClient | None = None


def database_name(app_id: str) -> str:
    return f"{get_settings().db_prefix}_{app_id}"


async def init_db(app_id: str, models: list[type[Document]]) -> AsyncMongoClient:
    global _client
    settings = get_settings()
    _client = AsyncMongoClient(settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    # FerretDB 1.24 panics (dropping the connection) when one createIndexes command repeats two
    # or more existing indexes, as Beanie's does on every start after the first. So Beanie skips
    # indexes and each index gets a command of its own, which is idempotent on both databases.
    await init_beanie(database=_client[database_name(app_id)], document_models=models, skip_indexes=True)
    for model in models:
        for index in declared_indexes(model):
            await model.get_pymongo_collection().create_indexes([index])
    return _client


def declared_indexes(model: type[Document]) -> list[IndexModel]:
    """The indexes Beanie would create for `model` (its Indexed() fields and Settings.indexes),
    and the outbox sweep's index for a document with an outbox."""
    fields = [
        IndexModelField(IndexModel([(info.alias or name, attrs[0])], **attrs[1]))
        for name, info in get_model_fields(model).items()
        if (attrs := get_index_attributes(info)) is not None
    ]
    declared = IndexModelField.merge_indexes(fields, model.get_settings().indexes or [])
    outbox = [OUTBOX_INDEX] if issubclass(model, HasOutbox) else []
    return IndexModelField.list_to_index_model(declared) + outbox


# A health probe must answer fast whatever the database does (a paused server never replies).
PING_TIMEOUT_SECONDS = 1.0


async def ping() -> bool:
    if _client is None:
        return False
    try:
        await asyncio.wait_for(_client.admin.command("ping"), PING_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 - readiness only reports, it never raises
        return False
    return True


class Readiness:
    """The database as the app's readiness reports it: unready only once every ping has failed
    for `grace` seconds, so a blip does not take every replica out of its Service (and out of
    Dapr's deliveries) at once, while an outage does."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.failing_since: float | None = None

    async def ready(self) -> bool:
        if _client is None:
            return False  # not started, or shut down: no blip to ride out
        if await ping():
            self.failing_since = None
            return True
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        return now - self.failing_since < self.grace


async def close_db() -> None:
    global _client
    if _client is not None:
        await _client.close()
        _client = None
