"""Passwords: argon2, salted, verified in constant shape, a bounded number at a time."""

import asyncio
import time

from functions.users import passwords
from functions.users.passwords import hash_password, verify_password
from functions.users.settings import get_settings


async def test_passwords_are_hashed_slowly_salted_and_verified():
    first, second = await hash_password("una-clave-larga"), await hash_password("una-clave-larga")
    assert first.startswith("$argon2id$") and first != second  # salted
    assert await verify_password(first, "una-clave-larga") and await verify_password(second, "una-clave-larga")
    assert not await verify_password(first, "otra-clave")
    assert not await verify_password("not a hash", "una-clave-larga")
    assert not await verify_password(None, "decoy-password-never-matches")  # unknown e-mail


async def test_a_burst_of_hashes_runs_a_bounded_number_at_once(monkeypatch):
    """Each argon2 hash holds 64 MiB while it runs: a burst must not run them all at once."""

    class CountingHasher:
        running = most = 0

        def hash(self, password: str) -> str:
            CountingHasher.running += 1
            CountingHasher.most = max(CountingHasher.most, CountingHasher.running)
            time.sleep(0.05)
            CountingHasher.running -= 1
            return f"hash-of-{password}"

    monkeypatch.setattr(passwords, "_hasher", CountingHasher())
    hashes = await asyncio.gather(*(hash_password(f"clave-{i}") for i in range(12)))
    assert hashes == [f"hash-of-clave-{i}" for i in range(12)]
    assert CountingHasher.most == get_settings().password_hash_concurrency
