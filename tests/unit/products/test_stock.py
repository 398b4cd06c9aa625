"""The products side of the order saga, called as plain handlers and through `deliver`."""

import asyncio
import uuid

import pytest

from functions.common import outbox
from functions.common.consumers import EventContext, ProcessedEvent, deliver, inbox_key
from functions.common.contracts import OrderCancelled, OrderCreated, OrderLine, PaymentProcessed
from functions.common.ids import new_id
from functions.products import stock
from functions.products.models import Product, StockReservation
from functions.products.subscriptions import keep_paid_order_stock, release_order_stock, reserve_order_stock

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
USER_1 = new_id()


def order(*lines: tuple[Product | str, int], order_id: str | None = None) -> OrderCreated:
    order_lines = [
        OrderLine(
            productId=str(p.id) if isinstance(p, Product) else p,
            name=p.name if isinstance(p, Product) else "Desconocido",
            unitPriceCents=p.priceCents if isinstance(p, Product) else 100,
            quantity=quantity,
        )
        for p, quantity in lines
    ]
    return OrderCreated(
        orderId=order_id or new_id(),
        userId=USER_1,
        email="ana@example.com",
        lines=order_lines,
        totalCents=sum(line.line_total_cents for line in order_lines),
        currency="USD",
    )


def context(topic: str) -> EventContext:
    return EventContext(id=f"evt_{uuid.uuid4().hex}", topic=topic)


def cloud_event(event, event_id: str | None = None) -> dict:
    return {"id": event_id or f"evt_{uuid.uuid4().hex}", "topic": event.topic, "data": event.model_dump(mode="json")}


async def stock_of(product: Product) -> int:
    return (await Product.get(product.id)).stock


def outcomes(dapr, order_id: str) -> list[tuple[str, dict]]:
    return [(e["topic"], e["data"]) for e in dapr.published if e["data"].get("orderId") == order_id]


async def left_behind(event: OrderCreated, state: str, product: Product, units: int) -> None:
    """What a delivery that stopped half way leaves: the order's reservation in `state` and a
    hold of `units` of `product` taken."""
    await StockReservation(id=event.orderId, state=state, lines=stock.merge_lines(event.lines)).insert()
    await Product.get_pymongo_collection().update_one(
        {"_id": product.id}, {"$inc": {"stock": -units}, "$set": {f"holds.{event.orderId}": units}}
    )


async def test_an_order_reserves_every_line(dapr, make_product):
    cafe, honey = await make_product(10), await make_product(4)
    event = order((cafe, 3), (honey, 4))
    await reserve_order_stock(event, context("order_created"))

    assert (await stock_of(cafe), await stock_of(honey)) == (7, 0)
    assert outcomes(dapr, event.orderId) == [("stock_reserved", {"orderId": event.orderId})]
    reservation = await StockReservation.get(event.orderId)
    # stock_reserved published; it stays on the reservation until the write of the step that
    # answers it (committed or released) takes it off (functions/common/outbox.py).
    assert reservation.state == "reserved" and [p.topic for p in reservation.outbox] == ["stock_reserved"]
    assert outbox.awaiting_answer(StockReservation, event.orderId) == [p.model_dump() for p in reservation.outbox]
    assert [(line.productId, line.quantity) for line in reservation.lines] == [(str(cafe.id), 3), (str(honey.id), 4)]
    assert (await Product.get(cafe.id)).holds == {event.orderId: 3}

    await keep_paid_order_stock(PaymentProcessed(orderId=event.orderId, paymentId="ch_1", amountCents=1), context("payment_processed"))
    reservation = await StockReservation.get(event.orderId)
    assert reservation.state == "committed" and reservation.outbox == [] and not reservation.outboxPending


async def test_an_order_that_cannot_be_filled_takes_nothing(dapr, make_product):
    plenty, scarce, empty = await make_product(10), await make_product(1), await make_product(0)
    event = order((plenty, 2), (scarce, 2), (empty, 1))
    await reserve_order_stock(event, context("order_created"))

    assert [await stock_of(p) for p in (plenty, scarce, empty)] == [10, 1, 0]  # the first line was given back
    [(topic, data)] = outcomes(dapr, event.orderId)
    assert topic == "stock_rejected"
    assert data["productIds"] == [str(scarce.id), str(empty.id)]
    assert scarce.name in data["reason"] and empty.name in data["reason"] and plenty.name not in data["reason"]
    reservation = await StockReservation.get(event.orderId)
    assert reservation.state == "rejected" and reservation.shortProductIds == data["productIds"]
    assert (await Product.get(plenty.id)).holds == {}


async def test_unknown_and_malformed_products_reject_the_order(dapr, make_product):
    real = await make_product(5)
    event = order((real, 1), ("0" * 24, 1))
    await reserve_order_stock(event, context("order_created"))

    assert await stock_of(real) == 5
    [(topic, data)] = outcomes(dapr, event.orderId)
    assert topic == "stock_rejected" and data["productIds"] == ["0" * 24]

    # An id of another form never reaches the handler: the contract refuses the event (dead letter).
    malformed = cloud_event(order((real, 1)))
    malformed["data"]["lines"][0]["productId"] = "not-an-object-id"
    assert await deliver("products", OrderCreated, reserve_order_stock, malformed) == "DROP"
    assert await stock_of(real) == 5 and outcomes(dapr, malformed["data"]["orderId"]) == []


async def test_lines_of_one_product_are_reserved_together(dapr, make_product):
    soap = await make_product(5)
    fits = order((soap, 2), (soap, 3))
    too_many = order((soap, 1), (soap, 1))
    await reserve_order_stock(fits, context("order_created"))
    await reserve_order_stock(too_many, context("order_created"))

    assert await stock_of(soap) == 0
    assert [t for t, _ in outcomes(dapr, fits.orderId)] == ["stock_reserved"]
    assert [t for t, _ in outcomes(dapr, too_many.orderId)] == ["stock_rejected"]


async def test_the_same_event_twice_changes_nothing_the_second_time(dapr, make_product):
    cafe = await make_product(10)
    event = order((cafe, 4))
    delivered = cloud_event(event)
    assert await deliver("products", OrderCreated, reserve_order_stock, delivered) == "SUCCESS"
    assert await deliver("products", OrderCreated, reserve_order_stock, delivered) == "SUCCESS"

    assert await stock_of(cafe) == 6
    assert len(outcomes(dapr, event.orderId)) == 1
    # The reservation decided it, not an inbox: the saga's handlers keep none (two writes fewer).
    assert await ProcessedEvent.get(inbox_key("products", "order_created", delivered["id"])) is None


async def test_the_same_order_under_a_new_event_id_changes_nothing_either(dapr, make_product):
    # The reservation, keyed by order, makes the handler idempotent whatever the event id.
    cafe = await make_product(10)
    event = order((cafe, 4))
    for _ in range(3):
        assert await deliver("products", OrderCreated, reserve_order_stock, cloud_event(event)) == "SUCCESS"
    assert await stock_of(cafe) == 6
    assert len(outcomes(dapr, event.orderId)) == 1


async def test_a_reservation_interrupted_half_way_resumes_without_taking_twice(dapr, make_product):
    first, second = await make_product(10), await make_product(10)
    event = order((first, 3), (second, 2))
    # A delivery died after its first line.
    await left_behind(event, "reserving", first, 3)

    await reserve_order_stock(event, context("order_created"))

    assert (await stock_of(first), await stock_of(second)) == (7, 8)
    assert outcomes(dapr, event.orderId) == [("stock_reserved", {"orderId": event.orderId})]


@pytest.mark.parametrize("state", ["reserving", "rejected"])
async def test_an_interrupted_reservation_that_is_then_rejected_gives_back_what_it_took(dapr, make_product, state):
    # "reserving": a delivery died after its first line; "rejected": the rejecting delivery died
    # after its decision, before giving the units back (its outcome event is then still pending).
    first, scarce = await make_product(10), await make_product(1)
    event = order((first, 3), (scarce, 2))
    await left_behind(event, state, first, 3)

    await reserve_order_stock(event, context("order_created"))

    assert (await stock_of(first), await stock_of(scarce)) == (10, 1)
    assert [t for t, _ in outcomes(dapr, event.orderId)] == (["stock_rejected"] if state == "reserving" else [])


async def test_concurrent_orders_never_take_more_than_the_stock(dapr, make_product):
    bracelet = await make_product(5)
    orders = [order((bracelet, 1)) for _ in range(12)]
    await asyncio.gather(*(reserve_order_stock(o, context("order_created")) for o in orders))

    results = [[t for t, _ in outcomes(dapr, o.orderId)] for o in orders]
    assert sorted(results) == [["stock_rejected"]] * 7 + [["stock_reserved"]] * 5
    product = await Product.get(bracelet.id)
    assert product.stock == 0
    assert sorted(product.holds) == sorted(o.orderId for o, r in zip(orders, results) if r == ["stock_reserved"])


async def test_concurrent_multi_line_orders_keep_stock_and_holds_consistent(dapr, make_product):
    # An order that fails on its second line holds its first for a moment, so how many succeed
    # depends on timing; what may not vary: no oversell, and stock + held units add up.
    bracelet, painting = await make_product(5), await make_product(3)
    orders = [order((bracelet, 1), (painting, 1)) for _ in range(6)] + [order((bracelet, 2)) for _ in range(4)]
    await asyncio.gather(*(reserve_order_stock(o, context("order_created")) for o in orders))

    reserved = [o for o in orders if [t for t, _ in outcomes(dapr, o.orderId)] == ["stock_reserved"]]
    rejected = [o for o in orders if [t for t, _ in outcomes(dapr, o.orderId)] == ["stock_rejected"]]
    assert reserved and len(reserved) + len(rejected) == len(orders)
    for product, initial in ((bracelet, 5), (painting, 3)):
        taken = sum(line.quantity for o in reserved for line in o.lines if line.productId == str(product.id))
        stored = await Product.get(product.id)
        assert 0 <= taken <= initial
        assert stored.stock == initial - taken
        assert sum(stored.holds.values()) == taken


async def test_a_cancelled_order_gets_back_exactly_what_it_reserved_once(dapr, make_product):
    cafe, honey = await make_product(10), await make_product(5)
    event = order((cafe, 3), (honey, 5))
    other = order((cafe, 2))
    await reserve_order_stock(event, context("order_created"))
    await reserve_order_stock(other, context("order_created"))
    assert (await stock_of(cafe), await stock_of(honey)) == (5, 0)

    cancelled = OrderCancelled(orderId=event.orderId, reason="payment declined")
    await release_order_stock(cancelled, context("order_cancelled"))
    await release_order_stock(cancelled, context("order_cancelled"))  # a new event id: still once
    assert await deliver("products", OrderCancelled, release_order_stock, cloud_event(cancelled)) == "SUCCESS"

    assert (await stock_of(cafe), await stock_of(honey)) == (8, 5)  # the other order keeps its 2
    assert (await StockReservation.get(event.orderId)).state == "released"
    assert (await Product.get(cafe.id)).holds == {other.orderId: 2}


async def test_cancelling_a_rejected_order_gives_back_nothing(dapr, make_product):
    scarce = await make_product(1)
    rejected = order((scarce, 2))
    await reserve_order_stock(rejected, context("order_created"))
    await release_order_stock(OrderCancelled(orderId=rejected.orderId, reason="no stock"), context("order_cancelled"))
    assert await stock_of(scarce) == 1
    assert (await StockReservation.get(rejected.orderId)).state == "rejected"


async def test_a_cancellation_that_overtakes_its_order_means_the_order_reserves_nothing(dapr, make_product):
    cafe = await make_product(10)
    event = order((cafe, 2))
    await release_order_stock(OrderCancelled(orderId=event.orderId, reason="timeout"), context("order_cancelled"))
    await reserve_order_stock(event, context("order_created"))

    assert await stock_of(cafe) == 10
    assert outcomes(dapr, event.orderId) == []
    assert (await StockReservation.get(event.orderId)).state == "cancelled"


async def test_a_cancellation_during_a_reservation_wins_and_the_order_reserves_nothing(dapr, make_product):
    cafe = await make_product(10)
    event = order((cafe, 2))
    # A delivery is half way: the reservation "reserving", one hold taken.
    await left_behind(event, "reserving", cafe, 2)
    cancelled = cloud_event(OrderCancelled(orderId=event.orderId, reason="payment failed"))

    assert await deliver("products", OrderCancelled, release_order_stock, cancelled) == "SUCCESS"
    assert await stock_of(cafe) == 10
    await reserve_order_stock(event, context("order_created"))  # the delivery resumes: too late
    assert await stock_of(cafe) == 10
    assert (await StockReservation.get(event.orderId)).state == "cancelled"
    assert outcomes(dapr, event.orderId) == []


async def race_with_a_decision(monkeypatch, order_id: str, decided: str) -> None:
    """Make another delivery decide `order_id` as `decided` just before this one takes its units
    (what a second replica handling a redelivery of the same event can do)."""
    take = stock._take

    async def decided_meanwhile(oid, line):
        await StockReservation.get_pymongo_collection().update_one(
            {"_id": oid, "state": "reserving"}, {"$set": {"state": decided}}
        )
        return await take(oid, line)

    monkeypatch.setattr(stock, "_take", decided_meanwhile)


async def test_a_delivery_that_loses_to_a_rejection_gives_back_what_it_took(dapr, make_product, monkeypatch):
    cafe, honey = await make_product(10), await make_product(10)
    event = order((cafe, 2), (honey, 1))
    await race_with_a_decision(monkeypatch, event.orderId, "rejected")

    await reserve_order_stock(event, context("order_created"))

    assert (await stock_of(cafe), await stock_of(honey)) == (10, 10)
    assert (await Product.get(cafe.id)).holds == {} and (await Product.get(honey.id)).holds == {}
    assert outcomes(dapr, event.orderId) == []  # the winner announces; this delivery does not


async def test_a_delivery_that_loses_to_a_reservation_keeps_the_holds(dapr, make_product, monkeypatch):
    cafe = await make_product(10)
    event = order((cafe, 2))
    await race_with_a_decision(monkeypatch, event.orderId, "reserved")

    await reserve_order_stock(event, context("order_created"))

    assert await stock_of(cafe) == 8
    assert (await Product.get(cafe.id)).holds == {event.orderId: 2}
    assert outcomes(dapr, event.orderId) == []


async def test_stray_holds_go_back_and_live_ones_stay(dapr, make_product):
    cafe = await make_product(20)
    states = {"reserving": 1, "reserved": 2, "rejected": 3, "released": 4, "committed": 5}
    ids = {state: new_id() for state in states}
    for state, units in states.items():
        await StockReservation(id=ids[state], state=state, lines=[]).insert()
        await Product.get_pymongo_collection().update_one(
            {"_id": cafe.id}, {"$inc": {"stock": -units}, "$set": {f"holds.{ids[state]}": units}}
        )
    assert await stock_of(cafe) == 5

    assert await stock.return_stray_holds() == 3 + 4 + 5
    assert await stock.return_stray_holds() == 0
    product = await Product.get(cafe.id)
    assert product.stock == 17
    assert product.holds == {ids["reserving"]: 1, ids["reserved"]: 2}


async def test_a_paid_order_keeps_its_stock_and_drops_its_holds(dapr, make_product):
    cafe = await make_product(10)
    event = order((cafe, 4))
    await reserve_order_stock(event, context("order_created"))
    paid = PaymentProcessed(orderId=event.orderId, paymentId="pay_1", amountCents=4000)
    await keep_paid_order_stock(paid, context("payment_processed"))
    await keep_paid_order_stock(paid, context("payment_processed"))

    product = await Product.get(cafe.id)
    assert product.stock == 6 and product.holds == {}
    assert (await StockReservation.get(event.orderId)).state == "committed"
    # Sold is sold: a late cancellation does not put the units back.
    await release_order_stock(OrderCancelled(orderId=event.orderId, reason="late"), context("order_cancelled"))
    assert await stock_of(cafe) == 6


async def test_orders_paid_at_once_drop_their_holds_on_a_product_together(dapr, make_product, monkeypatch):
    cafe, honey = await make_product(20), await make_product(20)
    events = [order((cafe, 2), (honey, 1)) for _ in range(6)]
    for event in events:
        await reserve_order_stock(event, context("order_created"))
    writes: list[tuple[str, dict]] = []
    real_update = stock.store.update

    async def recorded(model, doc_id, changes, **kwargs):
        if model is Product:
            writes.append((doc_id, changes))
        return await real_update(model, doc_id, changes, **kwargs)

    monkeypatch.setattr(stock.store, "update", recorded)
    await asyncio.gather(*(
        keep_paid_order_stock(PaymentProcessed(orderId=e.orderId, paymentId="pay", amountCents=1), context("payment_processed"))
        for e in events
    ))

    assert (await stock_of(cafe), await stock_of(honey)) == (8, 14)  # sold stays sold
    assert (await Product.get(cafe.id)).holds == {} and (await Product.get(honey.id)).holds == {}
    assert {(await StockReservation.get(e.orderId)).state for e in events} == {"committed"}
    # Fewer writes than holds: the paid orders of one product share a write per round.
    assert len(writes) < 12 and {doc_id for doc_id, _ in writes} == {str(cafe.id), str(honey.id)}
    assert all(set(changes) == {"$unset"} for _, changes in writes)


async def test_an_order_id_of_another_form_is_dropped_and_takes_nothing(dapr, make_product):
    # Order ids become field names (`holds.<order id>`): only an id's one form may get there.
    cafe = await make_product(10)
    for odd in ("order.with $odd/characters", "$where", "", "A" * 24):
        delivered = cloud_event(order((cafe, 1)))
        delivered["data"]["orderId"] = odd
        assert await deliver("products", OrderCreated, reserve_order_stock, delivered) == "DROP"
        assert await deliver("products", OrderCancelled, release_order_stock,
                             {"id": f"evt_{uuid.uuid4().hex}", "data": {"orderId": odd, "reason": "x"}}) == "DROP"
    assert await stock_of(cafe) == 10 and (await Product.get(cafe.id)).holds == {}
    assert dapr.published == []


async def test_a_malformed_event_is_dropped(dapr, make_product):
    await make_product(1)
    assert await deliver("products", OrderCreated, reserve_order_stock, {"id": "evt_bad", "data": {"orderId": "x"}}) == "DROP"
    assert await deliver("products", OrderCreated, reserve_order_stock, {"data": {}}) == "DROP"
    assert dapr.published == []


async def test_an_admin_edit_during_reservations_loses_neither(client, dapr, admin, make_product):
    # A PATCH $sets other fields of the same document the reservations $inc; on FerretDB an
    # unserialised pair of updates would drop one of them.
    lamp = await make_product(20)
    orders = [order((lamp, 2)) for _ in range(5)]
    edits = [client.patch(f"/api/products/{lamp.id}", json={"name": f"Lámpara {i}"}, headers=admin) for i in range(5)]
    results = await asyncio.gather(*edits, *(reserve_order_stock(o, context("order_created")) for o in orders))

    assert all(r.status_code == 200 for r in results[:5])
    stored = await Product.get(lamp.id)
    assert stored.stock == 10 and len(stored.holds) == 5
    assert stored.name.startswith("Lámpara ")
