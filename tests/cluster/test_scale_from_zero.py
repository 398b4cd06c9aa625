"""Notifications scaled to zero by KEDA still sends every e-mail: a burst of registrations while
no notifications pod runs wakes it (its consumer group's lag on welcome_flow), and each new
customer gets exactly one welcome e-mail. `task k8s:e2e` runs it once KEDA has taken notifications
to zero (k8s/overlays/e2e-scaling), and watches the replicas come and go around it."""

import os

import httpx
import pytest

from tests.e2e.shop import api, emails, eventually, new_customer

pytestmark = pytest.mark.skipif(
    os.environ.get("SHOP_SCALED_TO_ZERO") != "1", reason="runs on a cluster with notifications at zero: task k8s:e2e"
)

BURST = int(os.environ.get("SHOP_SCALE_BURST", "12"))


def welcome_emails(customer: dict) -> list[dict] | None:
    """The customer's welcome e-mails, or None while notifications has no replica to answer."""
    try:
        return [m for m in emails(customer["token"]) if m["topic"] == "welcome_flow"]
    except (httpx.HTTPError, AssertionError):
        return None


def nothing_answers() -> bool:
    """True when no notifications replica answers: its Service has no endpoint left."""
    try:
        with api("notifications") as notifications:
            notifications.get("/healthz", timeout=5)
    except httpx.TransportError:
        return True
    return False


def test_a_burst_of_registrations_wakes_notifications_from_zero_and_every_welcome_email_is_sent() -> None:
    eventually(nothing_answers, "no notifications replica answering (the node's proxy catching up)", 30)
    customers = [new_customer() for _ in range(BURST)]
    for customer in customers:
        eventually(lambda: welcome_emails(customer), f"the welcome e-mail of {customer['email']}", 300, every=2)
    # Once each: waking up, rebalancing the group and scaling do not deliver an event twice.
    assert all(len(welcome_emails(customer) or []) == 1 for customer in customers)
