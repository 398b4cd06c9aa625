"""Group commit: callers that arrive together share a round; each gets its own outcome."""

import asyncio

import pytest

from functions.common.rounds import GroupCommit


class Recorder:
    def __init__(self, fail: set[str] = frozenset(), broken: bool = False) -> None:
        self.rounds: list[tuple[str, list[str]]] = []
        self.fail, self.broken = fail, broken

    async def write(self, key: str, items: list[str]):
        self.rounds.append((key, items))
        await asyncio.sleep(0.01)  # a database round trip: callers arriving now wait for the next round
        if self.broken:
            raise ConnectionError("the database went away")
        return [ValueError(item) if item in self.fail else None for item in items]


async def test_callers_arriving_together_share_rounds_per_key():
    recorder = Recorder()
    commit = GroupCommit(recorder.write)

    await asyncio.gather(*(commit(key, f"{key}{n}") for n in range(5) for key in ("a", "b")))

    assert sorted(recorder.rounds) == [("a", [f"a{n}" for n in range(5)]), ("b", [f"b{n}" for n in range(5)])]


async def test_callers_arriving_during_a_round_share_the_next():
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    first = asyncio.ensure_future(commit("a", "first"))
    await asyncio.sleep(0.002)  # its round is being written

    await asyncio.gather(first, *(commit("a", f"late{n}") for n in range(4)))

    assert recorder.rounds == [("a", ["first"]), ("a", [f"late{n}" for n in range(4)])]


async def test_a_caller_alone_is_written_at_once_and_again_later():
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    await commit("a", "first")
    await commit("a", "second")
    assert recorder.rounds == [("a", ["first"]), ("a", ["second"])]


async def test_each_caller_gets_its_own_outcome():
    commit = GroupCommit(Recorder(fail={"bad"}).write)
    outcomes = await asyncio.gather(commit("a", "good"), commit("a", "bad"), commit("a", "fine"), return_exceptions=True)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)


async def test_a_failed_round_fails_every_caller_of_it_and_the_next_round_runs():
    recorder = Recorder(broken=True)
    commit = GroupCommit(recorder.write)
    outcomes = await asyncio.gather(*(commit("a", str(n)) for n in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)

    recorder.broken = False
    await commit("a", "after")
    assert recorder.rounds[-1] == ("a", ["after"])


async def test_a_caller_that_stops_waiting_does_not_stop_the_round():
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    first = asyncio.ensure_future(commit("a", "first"))
    await asyncio.sleep(0)
    impatient = asyncio.ensure_future(commit("a", "impatient"))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    await first
    await commit("a", "later")
    assert [items for _, items in recorder.rounds][-1] == ["later"]
