"""Invoices: gap-free sequential numbers and the invoice itself (notifications renders its e-mail).

Numbers come from a ledger (`InvoiceNumber`), not a counter document. A number is issued by
inserting its ledger record, `INV-<year>-<seq>` with seq = the year's lowest free number, under two
unique indexes: (year, seq) so two orders can never get one number, and orderId so an order can
never get two. Why not `$inc` on a counter with find_one_and_update:
- a counter increment and the write that records who got the number are two documents; without
  a multi-document transaction a crash between them burns a number (a gap), and a redelivery
  would take a second one. Here the single insert both takes the number and names its order:
  a redelivery finds it by orderId, and a number exists only once it belongs to an order.
- FerretDB 1.x (the local database) does not isolate updates: 50 concurrent `$inc`s through
  find_one_and_update returned 8 distinct values. Unique indexes it does enforce.
So numbers never repeat (the index), and never skip: the search starts at the year's
`InvoiceSequence.next`, below which every number is issued, and moves up one number per
collision, so a number is written only after every lower one. `next` is raised (`$max`) to one
past each number issued; it may lag, never lead. A number belongs to its order from the moment it
is issued; if that order's invoicing could never finish (dead letter) the number still names it
in the ledger, and re-driving the order's stock_reserved event (its charge is on record) finishes
the same invoice.

Within one process an asyncio lock per year serialises the allocations, so concurrent orders do
not collide on the index, and the process remembers where its next search starts (the stored
`next` is read at its first allocation of a year, and after a collision); across replicas a
collision moves up to the stored `next`, or to the next number.
"""

import logging
from datetime import datetime

from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.common.locks import KeyedLocks
from functions.payments.models import Invoice, InvoiceNumber, InvoiceSequence, Order

log = logging.getLogger(__name__)

_year_lock = KeyedLocks()
# One past the last number this process issued, per year: where its next search starts, so the
# stored `next` is read only at the first allocation of a year and after a collision. Below it
# every number is issued (this process issued it after all lower ones), so it never leads.
_next_seq: dict[int, int] = {}
# Collisions only come from other replicas allocating at the same moment; this many in a row
# means something else is wrong, and the handler's RETRY is the better answer.
MAX_ATTEMPTS = 100


def format_invoice_number(year: int, seq: int) -> str:
    return f"INV-{year}-{seq:06d}"


async def allocate_invoice_number(order_id: str, year: int) -> str:
    """The order's invoice number: the one it already has, or the next of `year`."""
    async with _year_lock(year):
        seq = _next_seq.get(year) or await _stored_next(year)
        for _ in range(MAX_ATTEMPTS):
            try:
                await store.insert(InvoiceNumber(id=format_invoice_number(year, seq), year=year, seq=seq, orderId=order_id))
            except DuplicateKeyError:
                # The number is taken, or the order has one (the orderId index): a redelivery, or
                # another replica numbered it meanwhile. Looked up only on a collision.
                owned = await InvoiceNumber.find_one(InvoiceNumber.orderId == order_id)
                if owned is not None:
                    return owned.id
                log.info("invoice number %s taken; trying the next", format_invoice_number(year, seq))
                # Another replica numbers orders too: its numbers are below the stored `next`.
                seq = max(seq + 1, await _stored_next(year)) if year in _next_seq else seq + 1
                _next_seq.pop(year, None)
                continue
            _next_seq[year] = seq + 1
            await _advance(year, seq + 1)
            return format_invoice_number(year, seq)
    raise RuntimeError(f"could not allocate an invoice number for order {order_id} in {MAX_ATTEMPTS} attempts")


async def _stored_next(year: int) -> int:
    sequence = await InvoiceSequence.get(year)
    return sequence.next if sequence else 1


async def _advance(year: int, next_seq: int) -> None:
    try:
        await store.update(InvoiceSequence, year, {"$max": {"next": next_seq}}, upsert=True)
    except DuplicateKeyError:
        pass  # two first upserts of the year raced; the hint may lag by one, which is safe


def build_invoice(order: Order, number: str, issued_at: datetime) -> Invoice:
    """The invoice repeats the amounts fixed when the order was placed: what was charged."""
    return Invoice(
        number=number,
        issuedAt=issued_at,
        lines=order.lines,
        **order.amounts(),
    )
