import pytest
from beanie import Document

from functions.common import db
from functions.common.consumers import InboxPruning, ProcessedEvent
from functions.common.dead_letters import DeadLetter
from functions.common.ids import NewEntityId
from functions.common.outbox import AuditEvent, HasOutbox


class Parcel(Document, HasOutbox):
    """A stand-in for a function's document that announces its changes."""

    id: NewEntityId
    label: str
    weight: int = 0

    class Settings:
        name = "unit_parcels"


@pytest.fixture
async def database():
    """Beanie on the test database with the common collections and `Parcel`, for one test."""
    await db.init_db("common", [Parcel, AuditEvent, ProcessedEvent, InboxPruning, DeadLetter])
    yield
    await db.close_db()
