"""Login throttling: per account, per client address, and a bounded wait for the password hash."""

import uuid

import pytest

from functions.common.settings import settings_of
from functions.users import passwords, throttle
from functions.users.app import app
from tests.unit.conftest import running
from tests.unit.users.test_users import new_registration


@pytest.fixture
async def client(dapr, monkeypatch):
    monkeypatch.setenv("SHOP_LOGIN_FAILURES_PER_ACCOUNT", "3")
    monkeypatch.setenv("SHOP_LOGIN_ATTEMPTS_PER_ADDRESS", "4")
    settings_of.cache_clear()
    async with running(app) as client:
        yield client
    monkeypatch.undo()
    settings_of.cache_clear()


async def registered(client) -> dict:
    body = new_registration()
    assert (await client.post("/api/users/register", json=body)).status_code == 201
    return body


async def login(client, email: str, password: str, address: str | None = None):
    headers = {"X-Forwarded-For": f"198.51.100.7, {address}"} if address else {}
    return await client.post("/api/users/login", json={"email": email, "password": password}, headers=headers)


async def test_an_account_is_locked_after_its_failed_logins_even_for_the_right_password(client):
    victim, bystander = await registered(client), await registered(client)
    for _ in range(3):
        assert (await login(client, victim["email"], "guessed-wrong")).status_code == 401
    locked = await login(client, victim["email"].upper(), victim["password"])
    assert locked.status_code == 429 and "account" in locked.json()["message"]
    assert 1 <= int(locked.headers["Retry-After"]) <= 15 * 60
    assert (await login(client, bystander["email"], bystander["password"])).status_code == 200


async def test_a_successful_login_forgets_the_failures(client):
    user = await registered(client)
    for _ in range(2):
        await login(client, user["email"], "guessed-wrong")
    assert (await login(client, user["email"], user["password"])).status_code == 200
    for _ in range(2):
        assert (await login(client, user["email"], "guessed-wrong")).status_code == 401


async def test_an_address_gets_a_bounded_number_of_logins_and_others_are_not_affected(client):
    user = await registered(client)
    flooder = f"203.0.113.{uuid.uuid4().int % 250}"
    answers = [(await login(client, f"n{i}@example.com", "x", flooder)).status_code for i in range(5)]
    assert answers == [401, 401, 401, 401, 429]
    assert (await login(client, user["email"], user["password"], flooder)).status_code == 429
    assert (await login(client, user["email"], user["password"], "192.0.2.55")).status_code == 200
    # Without X-Forwarded-For the call comes from inside (a sidecar): not counted by address.
    assert (await login(client, user["email"], user["password"])).status_code == 200


async def test_a_full_hash_queue_answers_503_at_once(client, monkeypatch):
    user = await registered(client)
    monkeypatch.setenv("SHOP_PASSWORD_HASH_QUEUE", "0")
    settings_of.cache_clear()
    slots = passwords._slots()
    held = 0
    while not slots.locked():  # every slot busy with other hashes
        await slots.acquire()
        held += 1
    try:
        busy = await login(client, user["email"], user["password"])
    finally:
        for _ in range(held):
            slots.release()
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1" and busy.json()["message"]
    assert (await login(client, user["email"], user["password"])).status_code == 200


def test_the_counters_forget_old_windows_and_stay_bounded():
    counter = throttle.WindowCounter(window=60, max_keys=3)
    assert [counter.add("a", at=0), counter.add("a", at=30), counter.add("a", at=61)] == [1, 2, 1]
    assert counter.retry_after("a", at=70) == 52
    for key in ("b", "c", "d"):
        counter.add(key, at=80)
    assert counter.count("a", at=80) == 0  # the oldest key was evicted
    assert throttle.client_address(" 198.51.100.7 , 203.0.113.1 ") == "203.0.113.1"
    assert throttle.client_address(None) is None
