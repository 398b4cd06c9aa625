"""End-to-end fixtures: the real stack (Kafka, FerretDB, daprd, the five functions), started once
per session or reused when already running, with a packet capture around all of it."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.capture import Capture
from tests.stack import stack

CAPTURE_TEST = "test_no_packet_left_loopback"
CHAOS_MODULE = "test_chaos.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chaos run goes after every other end-to-end test (the faults it heals cannot disturb
    them), and the capture verdict, which covers all of them, right after it, before other suites
    (the k8s checks fetch their tools) can add traffic of their own."""
    e2e = Path(__file__).parent
    for last in ([i for i in items if Path(i.path).name == CHAOS_MODULE and e2e in Path(i.path).parents],
                 [i for i in items if i.name == CAPTURE_TEST]):
        for item in last:
            items.remove(item)
            last_e2e = max((i for i, it in enumerate(items) if e2e in Path(it.path).parents), default=len(items) - 1)
            items.insert(last_e2e + 1, item)


@pytest.fixture(scope="session")
def capture() -> Iterator[Capture | None]:
    """Started before the stack, so start-up traffic is captured too."""
    if not Capture.available():
        if os.environ.get("SHOP_REQUIRE_CAPTURE"):
            pytest.fail("SHOP_REQUIRE_CAPTURE is set but tcpdump is missing or we are not root")
        yield None
        return
    cap = Capture(stack.STATE / "capture")
    cap.start()
    yield cap
    if cap.processes:
        cap.stop()


@pytest.fixture(scope="session", autouse=True)
def shop(capture: Capture | None) -> Iterator[None]:
    """The running shop. Reuses a stack that is already up; otherwise starts it and stops it after."""
    started_here = not all(stack.functions_ready().values())
    if started_here:
        stack.up()
    yield
    if started_here and not os.environ.get("SHOP_KEEP_STACK"):
        stack.down()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed:
        # The tail of each function's app and sidecar log, and of the broker and database.
        tails = []
        for path in stack.log_files():
            lines = path.read_text(errors="replace").splitlines()[-40:]
            tails.append(f"===== {path.name}\n" + "\n".join(lines))
        report.sections.append(("stack logs (tail)", "\n".join(tails)))
    return report
