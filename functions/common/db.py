"""Database start-up: each function owns one database on the shared MongoDB-wire server."""

from beanie import Document, init_beanie
from pymongo import AsyncMongoClient

from functions.common.settings import get_settings

_client: AsyncMongoClient | None = None


def database_name(app_id: str) -> str:
    return f"{get_settings().db_prefix}_{app_id}"


async def init_db(app_id: str, models: list[type[Document]]) -> AsyncMongoClient:
    global _client
    settings = get_settings()
    _client = AsyncMongoClient(settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    await init_beanie(database=_client[database_name(app_id)], document_models=models)
    return _client


async def ping() -> bool:
    if _client is None:
        return False
    try:
        await _client.admin.command("ping")
    except Exception:  # noqa: BLE001 - readiness only reports, it never raises
        return False
    return True


async def close_db() -> None:
    global _client
    if _client is not None:
        await _client.close()
        _client = None
