"""Background jobs: run every interval, survive a failing round, stop promptly."""

import asyncio
import logging

from functions.common.periodic import Periodic
from functions.common.sidecar import SidecarError


async def test_a_failing_round_is_logged_and_the_next_round_runs(caplog):
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise SidecarError("no sidecar")
        if len(rounds) == 2:
            raise RuntimeError("a bug")

    periodic = Periodic("test job", job, seconds=0.01, expected=(SidecarError,))
    with caplog.at_level(logging.WARNING, logger="functions.common.periodic"):
        periodic.start()
        while len(rounds) < 4:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(periodic.stop(), timeout=5)

    expected, unexpected = caplog.records[0], caplog.records[1]
    assert expected.levelno == logging.WARNING and expected.exc_info is None and "no sidecar" in expected.getMessage()
    assert unexpected.levelno == logging.ERROR and unexpected.exc_info is not None
    assert periodic._task.cancelled()
