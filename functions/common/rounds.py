"""Group commit: writes that arrive together share one database round trip.

A caller hands in its item and waits. One writer per key writes every item waiting, in one round
(`write(key, items)`); items that arrive while a round is being written wait for the next. Under
load one round serves many callers; a caller alone waits for nothing but its own write. Each
caller gets its own outcome: what `write` answers for its item, or what `write` raised.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# For each item of a round, in order: None (written) or the exception its caller raises.
Outcomes = Sequence[BaseException | None] | None


class GroupCommit(Generic[K, T]):
    def __init__(self, write: Callable[[K, list[T]], Awaitable[Outcomes]]) -> None:
        """`write(key, items)` writes one round; it answers an outcome per item, or None if all
        were written."""
        self._write = write
        self._waiting: dict[K, list[tuple[T, asyncio.Future[None]]]] = {}
        self._writers: dict[K, asyncio.Task[None]] = {}

    async def __call__(self, key: K, item: T) -> None:
        """Write `item` in the next round of `key`; raises what its write raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(key, []).append((item, done))
        writer = self._writers.get(key)
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._writers[key] = loop.create_task(self._rounds(key))
        await done

    async def _rounds(self, key: K) -> None:
        try:
            while batch := self._waiting.pop(key, None):
                try:
                    outcomes = await self._write(key, [item for item, _ in batch]) or [None] * len(batch)
                except Exception as exc:  # noqa: BLE001 - every caller of the round raises it
                    outcomes = [exc] * len(batch)
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    if done.done():
                        continue  # its caller stopped waiting (cancelled)
                    if outcome is None:
                        done.set_result(None)
                    else:
                        done.set_exception(outcome)
        finally:
            if self._writers.get(key) is asyncio.current_task():
                del self._writers[key]
