"""No mail but the welcome reaches an address its owner has not confirmed: the invoice of an
unverified customer is held, and sent the moment the customer follows the welcome e-mail's link."""

import html
import re

import httpx

from tests.e2e.shop import emails, eventually, new_customer
from tests.e2e.test_shop_flows import add_to_cart, create_product, place_order, settled


def mail(token: str, template: str) -> dict | None:
    return next((m for m in emails(token) if m["template"] == template), None)


def test_an_unverified_customers_invoice_is_held_until_the_welcome_link_is_followed() -> None:
    customer = new_customer()
    welcome = eventually(lambda: mail(customer["token"], "welcome"), "the welcome e-mail")
    assert welcome["status"] == "outboxed"  # the welcome itself goes out: it carries the link
    link = html.unescape(re.search(r'href="([^"]*/api/users/verify\?token=[^"]+)"', welcome["html"]).group(1))

    product = create_product(stock=1)
    add_to_cart(customer["token"], product["id"], 1)
    assert settled(customer["token"], place_order(customer["token"], "tok_visa")["orderId"])["status"] == "invoiced"
    held = eventually(lambda: mail(customer["token"], "invoice"), "the invoice e-mail")
    assert held["status"] == "held"

    followed = httpx.get(link, timeout=15)  # the customer clicks the link
    assert followed.status_code == 200, followed.text
    sent = eventually(lambda: (m := mail(customer["token"], "invoice")) and m["status"] == "outboxed" and m,
                      "the held invoice e-mail to be sent")
    assert sent["id"] == held["id"]
