"""Invoice numbers: sequential, no duplicates or gaps under concurrency, one per order."""

import asyncio
import uuid
from datetime import UTC, datetime

from functions.common.consumers import EventContext
from functions.common.contracts import StockReserved
from functions.common.ids import new_id
from functions.payments.invoicing import allocate_invoice_number
from functions.payments.models import InvoiceNumber, InvoiceSequence, Order, OrderedLine, Payment, Transition
from functions.payments.subscriptions import charge_reserved_order

# A year of its own, so other tests' invoices (this year's) do not interleave.
YEAR = 2091


async def charged_order(price_cents: int = 1000) -> Order:
    """An order whose charge is recorded as approved, still stock_reserved, straight into the
    database (the earlier steps are tested elsewhere): its stock_reserved then invoices it."""
    at = datetime.now(UTC)
    order = Order(
        id=new_id(),
        userId=uuid.uuid4().hex[:24],
        email="ana@example.com",
        lines=[OrderedLine(productId=uuid.uuid4().hex[:24], name="Café", unitPriceCents=price_cents, quantity=1)],
        subtotalCents=price_cents,
        taxRate=0.19,
        taxCents=round(price_cents * 0.19),
        totalCents=price_cents + round(price_cents * 0.19),
        currency="USD",
        status="stock_reserved",
        history=[Transition(status=s, at=at) for s in ("pending", "stock_reserved")],
        paymentToken="tok_visa",
        idempotencyKey=f"auto:{uuid.uuid4().hex}",
    )
    await order.insert()
    await Payment(id=order.id, provider="simulated", chargeId="ch_test", status="approved",
                  amountCents=order.totalCents, currency="USD").insert()
    return order


async def charge_step(order: Order) -> None:
    await charge_reserved_order(StockReserved(orderId=order.id),
                                EventContext(id=f"evt_{uuid.uuid4().hex}", topic="stock_reserved"))


def seq(number: str) -> int:
    return int(number.rsplit("-", 1)[1])


async def test_concurrent_allocations_are_sequential_without_duplicates_or_gaps(client, dapr):
    order_ids = [new_id() for _ in range(40)]
    numbers = await asyncio.gather(*(allocate_invoice_number(order_id, YEAR) for order_id in order_ids))

    assert len(set(numbers)) == 40
    assert all(n.startswith(f"INV-{YEAR}-") and len(n) == len("INV-2026-000001") for n in numbers)
    issued = sorted(seq(n) for n in numbers)
    assert issued == list(range(issued[0], issued[0] + 40))
    # The whole year's ledger has no gap either: 1..N, each number naming one order.
    ledger = await InvoiceNumber.find(InvoiceNumber.year == YEAR).sort(+InvoiceNumber.seq).to_list()
    assert [entry.seq for entry in ledger] == list(range(1, len(ledger) + 1))
    assert {entry.orderId: entry.id for entry in ledger if entry.orderId in order_ids} == dict(zip(order_ids, numbers))


async def test_an_order_keeps_its_number_however_often_it_asks(client, dapr):
    order_id = new_id()
    first = await allocate_invoice_number(order_id, YEAR)
    other = await allocate_invoice_number(new_id(), YEAR)
    again = await asyncio.gather(*(allocate_invoice_number(order_id, YEAR) for _ in range(5)))
    assert set(again) == {first} and seq(other) == seq(first) + 1
    assert await InvoiceNumber.find(InvoiceNumber.orderId == order_id).count() == 1


async def test_a_lagging_sequence_hint_costs_collisions_never_a_gap(client, dapr):
    year = YEAR + 1
    issued = [await allocate_invoice_number(new_id(), year) for _ in range(3)]
    assert [seq(n) for n in issued] == [1, 2, 3]
    assert (await InvoiceSequence.get(year)).next == 4  # one read by _id finds the next number
    # As after a lost write of the hint: it points at a number long issued.
    await InvoiceSequence.get_pymongo_collection().update_one({"_id": year}, {"$set": {"next": 1}})

    following = await allocate_invoice_number(new_id(), year)

    assert seq(following) == 4
    assert (await InvoiceSequence.get(year)).next == 5


async def test_numbers_issued_by_another_replica_meanwhile_leave_no_gap(client, dapr):
    year = YEAR + 2
    first = await allocate_invoice_number(new_id(), year)
    # Another replica issues the next three numbers and raises the stored hint past them: this
    # process's own next start (seq 2) is taken now.
    for seq_taken in (2, 3, 4):
        await InvoiceNumber(id=f"INV-{year}-{seq_taken:06d}", year=year, seq=seq_taken, orderId=new_id()).insert()
    await InvoiceSequence.get_pymongo_collection().update_one({"_id": year}, {"$set": {"next": 5}})

    following = [await allocate_invoice_number(new_id(), year) for _ in range(2)]

    assert seq(first) == 1 and [seq(n) for n in following] == [5, 6]
    ledger = await InvoiceNumber.find(InvoiceNumber.year == year).sort(+InvoiceNumber.seq).to_list()
    assert [entry.seq for entry in ledger] == [1, 2, 3, 4, 5, 6]
    assert (await InvoiceSequence.get(year)).next == 7


async def test_many_orders_invoiced_at_once_get_distinct_consecutive_numbers(client, dapr):
    orders = [await charged_order(1000 + n) for n in range(25)]
    await asyncio.gather(*(charge_step(o) for o in orders))
    invoiced = [await Order.get(o.id) for o in orders]
    assert {o.status for o in invoiced} == {"invoiced"}
    numbers = [o.invoiceNumber for o in invoiced]
    assert len(set(numbers)) == 25
    issued = sorted(seq(n) for n in numbers)
    assert issued == list(range(issued[0], issued[0] + 25))
    assert [o.invoice.number for o in invoiced] == numbers
    assert len({e["id"] for e in dapr.events("invoice_processing") if e["data"]["orderId"] in {str(o.id) for o in orders}}) == 25


async def test_a_crash_between_the_number_and_the_invoice_leaves_no_gap(client, dapr):
    """The charge is recorded and the number issued, then the process dies before the order is
    invoiced: the redelivered stock_reserved finishes the invoice with that same number."""
    order = await charged_order()
    number = await allocate_invoice_number(str(order.id), datetime.now(UTC).year)
    assert (await Order.get(order.id)).invoiceNumber is None  # the "crash": nothing else happened

    await charge_step(order)
    invoiced = await Order.get(order.id)
    assert (invoiced.status, invoiced.invoiceNumber) == ("invoiced", number)
