"""The CI-sized chaos run (tests/chaos/run.py; `task chaos` runs the full one): 300 orders while
Kafka is stopped, a sidecar and an app are SIGKILLed, the database and every sidecar are paused,
and events are re-published; then every invariant must hold. Run last of the end-to-end tests
(conftest.py), so the faults it leaves healed cannot disturb another test."""

from tests.chaos.run import run


def test_300_orders_through_every_fault_keep_every_invariant() -> None:
    figures = run(orders=300, customers=30, concurrency=10, quiet_timeout=600)
    assert len(figures.faults) == 5, figures.faults
    assert sum(figures.duplicates.values()) > 0
    assert figures.statuses.get("invoiced") and figures.statuses.get("rejected") and figures.statuses.get("payment_failed")
    assert not figures.violations, figures.violations
