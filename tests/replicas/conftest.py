"""The replica cluster (tests/replicas/cluster.py), started once for this folder's tests."""

from collections.abc import Iterator

import pytest

from tests.replicas.cluster import ReplicaCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[ReplicaCluster]:
    started = ReplicaCluster()
    try:
        started.start()
    except BaseException:
        print(started.log_tails())
        started.stop()
        raise
    yield started
    started.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed and "cluster" in item.fixturenames:
        report.sections.append(("replica cluster logs (tail)", item.funcargs["cluster"].log_tails()))
    return report
