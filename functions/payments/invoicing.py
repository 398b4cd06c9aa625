"""Invoices: gap-free sequential numbers, the invoice itself and its e-mail.

Numbers come from a ledger (`InvoiceNumber`), not a counter document. A number is issued by
inserting its ledger record, `INV-<year>-<seq>` with seq = the year's highest + 1, under two
unique indexes: (year, seq) so two orders can never get one number, and orderId so an order can
never get two. Why not `$inc` on a counter with find_one_and_update:
- a counter increment and the write that records who got the number are two documents; without
  a multi-document transaction a crash between them burns a number (a gap), and a redelivery
  would take a second one. Here the single insert both takes the number and names its order:
  a redelivery finds it by orderId, and a number exists only once it belongs to an order.
- FerretDB 1.x (the local database) does not isolate updates: 50 concurrent `$inc`s through
  find_one_and_update returned 8 distinct values. Unique indexes it does enforce.
So numbers never repeat (the index), and never skip: seq is always the highest + 1, so a
number is written only after every lower one. A number belongs to its order from the moment it
is issued; if that order's invoicing could never finish (dead letter) the number still names it
in the ledger, and re-driving the order's payment_processed event finishes the same invoice.

Within one process an asyncio lock per year serialises the allocations, so concurrent orders do
not collide on the index; across replicas a collision just retries with the next number.
"""

import logging
from datetime import datetime

from pymongo.errors import DuplicateKeyError

from functions.common.locks import KeyedLocks
from functions.common.money import money_text
from functions.payments.models import Invoice, InvoiceNumber, Order

log = logging.getLogger(__name__)

_year_lock = KeyedLocks()
# Collisions only come from other replicas allocating at the same moment; this many in a row
# means something else is wrong, and the handler's RETRY is the better answer.
MAX_ATTEMPTS = 100


def format_invoice_number(year: int, seq: int) -> str:
    return f"INV-{year}-{seq:06d}"


async def allocate_invoice_number(order_id: str, year: int) -> str:
    """The order's invoice number: the one it already has, or the next of `year`."""
    async with _year_lock(year):
        for _ in range(MAX_ATTEMPTS):
            owned = await InvoiceNumber.find_one(InvoiceNumber.orderId == order_id)
            if owned is not None:
                return owned.id
            last = await InvoiceNumber.find(InvoiceNumber.year == year).sort(-InvoiceNumber.seq).first_or_none()
            seq = (last.seq if last else 0) + 1
            try:
                await InvoiceNumber(id=format_invoice_number(year, seq), year=year, seq=seq, orderId=order_id).insert()
                return format_invoice_number(year, seq)
            except DuplicateKeyError:
                log.info("invoice number %s taken meanwhile; trying the next", format_invoice_number(year, seq))
    raise RuntimeError(f"could not allocate an invoice number for order {order_id} in {MAX_ATTEMPTS} attempts")


def build_invoice(order: Order, number: str, issued_at: datetime) -> Invoice:
    """The invoice repeats the amounts fixed when the order was placed: what was charged."""
    return Invoice(
        number=number,
        issuedAt=issued_at,
        lines=order.lines,
        **order.amounts(),
    )


def invoice_subject(order_id: str) -> str:
    return f"Factura de tu pedido #{order_id}"  # exactly the original shop's subject


def invoice_content(order_id: str, invoice: Invoice) -> str:
    """The invoice e-mail's text (Spanish, as the original), ending with its "Total: $<total>"."""
    rows = [
        f"{line.quantity} x {line.name} (${money_text(line.unitPriceCents)}): ${money_text(line.line_total_cents)}"
        for line in invoice.lines
    ]
    percent = f"{invoice.taxRate * 100:g}"
    return "\n".join(
        [
            f"Factura {invoice.number}",
            f"Pedido #{order_id}",
            "",
            *rows,
            "",
            f"Subtotal: ${money_text(invoice.subtotalCents)}",
            f"Impuestos ({percent}%): ${money_text(invoice.taxCents)}",
            f"Total: ${money_text(invoice.totalCents)}",
        ]
    )
