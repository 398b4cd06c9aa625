"""cart_checkout: the order placed from a cart empties those lines, silently and idempotently."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from functions.cart import checkout as checkout_module
from functions.cart.models import Cart
from functions.cart.subscriptions import empty_checked_out_lines
from functions.common.consumers import EventContext, ProcessedEvent, deliver
from functions.common.contracts import CartCheckedOut
from functions.common.ids import new_id


async def fill(client, shopper, *products, quantity: int = 1) -> Cart:
    for product in products:
        response = await client.post("/api/cart/items", headers=shopper.headers, json={"productId": product["id"], "quantity": quantity})
        assert response.status_code == 201
    return await Cart.get(shopper.id)


def checkout(shopper, *products, cart_updated_at=None) -> CartCheckedOut:
    return CartCheckedOut(
        userId=shopper.id,
        orderId=new_id(),
        productIds=[p["id"] for p in products],
        cartUpdatedAt=cart_updated_at,
    )


def context(event_id: str | None = None) -> EventContext:
    return EventContext(id=event_id or f"evt_{uuid.uuid4().hex}", topic="cart_checkout")


async def test_checkout_removes_the_ordered_lines_without_removal_emails(client, dapr, shopper, catalogue):
    cafe, miel, jabon = catalogue("Café"), catalogue("Miel"), catalogue("Jabón")
    await fill(client, shopper, cafe, miel, jabon)
    published_before = len(dapr.published)

    await empty_checked_out_lines(checkout(shopper, cafe, miel), context())

    cart = await Cart.get(shopper.id)
    assert list(cart.lines) == [jabon["id"]]  # a product not in the order stays
    assert len(dapr.published) == published_before  # no cart_removals, nothing at all
    items = (await client.get("/api/cart/items", headers=shopper.headers)).json()["data"]["items"]
    assert [i["productId"] for i in items] == [jabon["id"]]


async def cart_read_up_to(client, shopper) -> datetime:
    """The cart's version as payments reads it over HTTP: its latest line change."""
    read = (await client.get("/api/cart/items", headers=shopper.headers)).json()["data"]["items"]
    return max(datetime.fromisoformat(item["updatedAt"]) for item in read)


async def test_checkout_is_idempotent_without_an_inbox(client, dapr, shopper, catalogue):
    cafe, miel = catalogue("Café"), catalogue("Miel")
    await fill(client, shopper, cafe, miel)
    event = checkout(shopper, cafe, cart_updated_at=await cart_read_up_to(client, shopper))
    cloud_event = {"id": f"evt_{uuid.uuid4().hex}", "topic": "cart_checkout", "data": event.model_dump(mode="json")}

    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, cloud_event) == "SUCCESS"
    after_first = await Cart.get(shopper.id)
    assert list(after_first.lines) == [miel["id"]]
    # Redelivered (the same id, or re-published under another): the handler runs and changes nothing.
    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, cloud_event) == "SUCCESS"
    await empty_checked_out_lines(event, context())
    assert (await Cart.get(shopper.id)).lines == after_first.lines
    assert await ProcessedEvent.find_all().count() == 0  # no inbox record written

    # The customer puts café back; the same checkout delivered again later leaves it there.
    await fill(client, shopper, cafe)
    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, cloud_event) == "SUCCESS"
    assert sorted((await Cart.get(shopper.id)).lines) == sorted([cafe["id"], miel["id"]])


async def test_racing_deliveries_of_one_checkout_take_each_line_off_once(client, dapr, shopper, catalogue, monkeypatch):
    cafe, miel, jabon = catalogue("Café"), catalogue("Miel"), catalogue("Jabón")
    await fill(client, shopper, cafe, miel, jabon)
    event = checkout(shopper, cafe, miel, cart_updated_at=await cart_read_up_to(client, shopper))
    deliveries = [
        deliver("cart", CartCheckedOut, empty_checked_out_lines,
                {"id": event_id, "topic": "cart_checkout", "data": event.model_dump(mode="json")})
        for event_id in ["evt_same", "evt_same", "evt_republished", "evt_other"]
    ]
    writes = []
    real_update = checkout_module.store.update

    async def counted(model, *args, **kwargs):
        changed = await real_update(model, *args, **kwargs)
        if model is Cart:  # not a write of some other test's app still finishing in the background
            writes.append(changed)
        return changed

    monkeypatch.setattr(checkout_module.store, "update", counted)
    assert await asyncio.gather(*deliveries) == ["SUCCESS"] * 4
    assert list((await Cart.get(shopper.id)).lines) == [jabon["id"]]
    assert writes.count(True) == 1  # one delivery took the lines off; the others changed nothing


async def test_a_checkout_without_the_carts_version_keeps_lines_changed_after_the_order(client, dapr, shopper, catalogue):
    cafe, miel = catalogue("Café"), catalogue("Miel")
    await fill(client, shopper, cafe, miel)
    placed_at = datetime.now(UTC)
    event = checkout(shopper, cafe, miel)  # no cartUpdatedAt: the event's time stands in for it
    await asyncio.sleep(0.01)
    await fill(client, shopper, miel)  # changed after the order was placed
    cloud_event = {"id": f"evt_{uuid.uuid4().hex}", "time": placed_at.isoformat(), "data": event.model_dump(mode="json")}
    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, cloud_event) == "SUCCESS"
    assert list((await Cart.get(shopper.id)).lines) == [miel["id"]]
    # Without a version or a time (a bare event), the named lines go.
    bare = {"id": f"evt_{uuid.uuid4().hex}", "time": "not a time", "data": event.model_dump(mode="json")}
    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, bare) == "SUCCESS"
    assert (await Cart.get(shopper.id)).lines == {}


async def test_a_line_changed_after_the_cart_was_read_stays(client, dapr, shopper, catalogue):
    cafe, miel = catalogue("Café"), catalogue("Miel")
    await fill(client, shopper, cafe, miel)
    # Payments reads the cart over HTTP and sends back the latest line change it saw.
    read_up_to = await cart_read_up_to(client, shopper)
    event = checkout(shopper, cafe, miel, cart_updated_at=read_up_to)

    # While the order is being placed, the customer adds another café.
    await fill(client, shopper, cafe)
    cloud_event = {"id": f"evt_{uuid.uuid4().hex}", "data": event.model_dump(mode="json")}  # through JSON, as delivered
    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, cloud_event) == "SUCCESS"
    await empty_checked_out_lines(event, context())  # redelivered under another id: still the same

    cart = await Cart.get(shopper.id)
    assert list(cart.lines) == [cafe["id"]] and cart.lines[cafe["id"]].quantity == 2
    assert read_up_to < cart.lines[cafe["id"]].updatedAt <= read_up_to + timedelta(minutes=1)


async def test_checkout_of_a_user_without_a_cart_or_with_odd_ids_changes_nothing(client, dapr, shopper, catalogue):
    cafe = catalogue("Café")
    await empty_checked_out_lines(checkout(shopper, cafe), context())
    assert await Cart.get(shopper.id) is None
    await fill(client, shopper, cafe)
    # Product ids become field names (`lines.<id>`): an id of another form never reaches the
    # handler, the event is dropped (to the dead letters) as the contract refuses it.
    for odd in (["$where"], ["lines.x"], [""], [cafe["id"].upper()], [cafe["id"], "x"]):
        data = {"userId": shopper.id, "orderId": new_id(), "productIds": odd}
        assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, {"id": f"evt_{uuid.uuid4().hex}", "data": data}) == "DROP"
    assert list((await Cart.get(shopper.id)).lines) == [cafe["id"]]


async def test_a_malformed_checkout_event_is_dropped(client, dapr):
    assert await deliver("cart", CartCheckedOut, empty_checked_out_lines, {"id": "evt_bad", "data": {"userId": "u"}}) == "DROP"


async def test_lines_ordered_as_they_are_go_in_one_write(client, dapr, shopper, catalogue, monkeypatch):
    cafe, miel, jabon = catalogue("Café"), catalogue("Miel"), catalogue("Jabón")
    await fill(client, shopper, cafe, miel, jabon)
    writes = []
    real_update = checkout_module.store.update

    async def counted(*args, **kwargs):
        writes.append(args[2])
        return await real_update(*args, **kwargs)

    monkeypatch.setattr(checkout_module.store, "update", counted)
    await empty_checked_out_lines(checkout(shopper, cafe, miel, jabon), context())

    assert len(writes) == 1
    assert (await Cart.get(shopper.id)).lines == {}
