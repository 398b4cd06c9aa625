"""Passwords: argon2 (a slow, salted hash), computed a bounded number at a time."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, status

from functions.users.settings import get_settings

_hasher = PasswordHasher()
_hash_slots: asyncio.Semaphore | None = None
_queued = 0  # requests waiting for a slot
BUSY = "The server is busy checking passwords; try again in a moment"


def _slots() -> asyncio.Semaphore:
    """argon2 holds 64 MiB (its memory cost) per hash while it runs. Unbounded, a burst of
    logins ran one hash per worker thread and took the users app from 96 to 480 MiB
    (tests/bench/orders.py), near its 512Mi limit in Kubernetes; so at most
    SHOP_PASSWORD_HASH_CONCURRENCY run at once and the other requests wait their turn."""
    global _hash_slots
    if _hash_slots is None:
        _hash_slots = asyncio.Semaphore(get_settings().password_hash_concurrency)
    return _hash_slots


@asynccontextmanager
async def _hash_turn() -> AsyncIterator[None]:
    """A hash slot; 503 at once (Retry-After) when SHOP_PASSWORD_HASH_QUEUE requests already
    wait, so a login flood is refused instead of queueing every real user behind it."""
    global _queued
    slots = _slots()
    if slots.locked() and _queued >= get_settings().password_hash_queue:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BUSY, headers={"Retry-After": "1"})
    _queued += 1
    try:
        await slots.acquire()
    finally:
        _queued -= 1
    try:
        yield
    finally:
        slots.release()


async def hash_password(password: str) -> str:
    async with _hash_turn():
        return await asyncio.to_thread(_hasher.hash, password)


@cache
def _decoy_hash() -> str:
    return _hasher.hash("decoy-password-never-matches")


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _decoy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches. No hash (an unknown e-mail) is checked against a decoy, so
    an unknown e-mail and a wrong password take the same time."""
    async with _hash_turn():
        return await asyncio.to_thread(_verify, password_hash, password)
