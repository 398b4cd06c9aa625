"""Background jobs of a function app (the outbox sweep, the inbox pruning): one coroutine run
every few seconds from start-up to shutdown."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Run `job` every `seconds`. A round that raises is logged and the next round retries: one
    line for the `expected` errors (a dependency down), a traceback for anything else.
    `wait_first`: the first round comes one period after start-up, not at it (a job looking for
    work minutes old has nothing to gain at start, and nothing then runs beside a test's own call)."""

    def __init__(
        self,
        name: str,
        job: Callable[[], Awaitable[object]],
        seconds: float,
        expected: tuple[type[Exception], ...] = (),
        wait_first: bool = False,
    ) -> None:
        self.name = name
        self.wait_first = wait_first
        self.job = job
        self.seconds = seconds
        self.expected = expected
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        if self.wait_first:
            await asyncio.sleep(self.seconds)
        while True:
            try:
                await self.job()
            except self.expected as exc:
                log.warning("%s failed, retrying in %.0fs: %s", self.name, self.seconds, exc)
            except Exception:  # noqa: BLE001 - keep running; the next round retries
                log.exception("%s failed", self.name)
            await asyncio.sleep(self.seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        # Cancel until it ends: a cancellation that lands inside a round can be swallowed by the
        # driver (seen with pymongo's async client), and the loop then sleeps on, so a single
        # cancel() and await could hang shutdown forever.
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.5)
        if not self._task.cancelled() and self._task.exception() is not None:
            log.error("%s ended with an error", self.name, exc_info=self._task.exception())
