"""Readiness reports a database outage, not a blip (functions/common/db.py, Readiness)."""

from functions.common import db


async def test_readiness_fails_only_once_the_database_failed_for_the_whole_grace(monkeypatch):
    answers, clock = [], [100.0]
    monkeypatch.setattr(db, "ping", lambda: _answer(answers.pop(0)))
    monkeypatch.setattr(db.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(db, "_client", object())  # started
    readiness = db.Readiness(grace=10)

    answers += [True, False]
    assert await readiness.ready() and await readiness.ready()  # a blip: still ready
    clock[0] += 9.9
    answers += [False]
    assert await readiness.ready()
    clock[0] += 0.2
    answers += [False]
    assert not await readiness.ready()  # failed for the whole grace: unready
    answers += [True]
    assert await readiness.ready()  # back at once
    answers += [False]
    assert await readiness.ready()  # and the grace starts over


async def _answer(value: bool) -> bool:
    return value
