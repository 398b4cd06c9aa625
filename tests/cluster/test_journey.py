"""The customer journey on a real Kubernetes cluster: register → welcome e-mail → cart → order →
invoiced → invoice e-mail, through the functions' Services; every event crosses the pods' daprd
sidecars and the cluster's Kafka, and every record lands in the cluster's database."""

import os

import pytest

from tests.e2e.shop import emails, eventually, new_customer
from tests.e2e.test_shop_flows import paid_order_is_invoiced_and_mailed

# Only `task k8s:e2e` (k8s/tools/e2e.py) runs it: it deploys the shop on a cluster and says where
# each function's Service answers.
pytestmark = pytest.mark.skipif(not os.environ.get("SHOP_API_URLS"), reason="runs on a cluster only: task k8s:e2e")


def test_a_customer_registers_orders_and_gets_the_invoice_email() -> None:
    customer = new_customer()
    welcome = lambda: [m for m in emails(customer["token"]) if m["topic"] == "welcome_flow"]  # noqa: E731
    eventually(welcome, "the welcome e-mail", 120)
    paid_order_is_invoiced_and_mailed(customer)
