import pytest

from functions.users.app import app
from tests.unit.conftest import running


@pytest.fixture
async def client(dapr):
    """The users app, started (database, admin account) for the whole test."""
    async with running(app) as client:
        yield client
