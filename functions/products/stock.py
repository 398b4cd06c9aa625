"""Stock reservations for the order saga: all of an order's lines or none, never below zero.

Each product keeps a hold per order in flight (`holds.<order>` = units). Taking units is one
conditional update — enough stock and no hold for this order yet — that decrements the stock
and writes the hold; giving them back is the reverse, conditional on the hold. So an order can
take or give back a product's units only once, however often its events are redelivered and
wherever a crash falls. The order's `StockReservation` records its lines and its outcome, and
carries the outcome event in its outbox.

FerretDB 1.x (the local database) applies an update as read-modify-write without isolation, so
two concurrent updates of one document can lose one of them; MongoDB makes each conditional
update atomic. Every update of a product or a reservation here therefore holds that document's
`outbox.write_lock` (the lock the outbox relay's pull takes too), which makes one replica
correct on either database; across replicas the conditional filters are what keep stock from
going negative, which needs MongoDB.
"""

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from functions.common import outbox
from functions.common.clock import now
from functions.common.contracts import OrderLine, StockRejected, StockReserved
from functions.common.ids import parse_object_id
from functions.common.locks import KeyedLocks
from functions.common.outbox import PendingEvent
from functions.products import APP_ID
from functions.products.models import Product, ReservedLine, StockReservation

log = logging.getLogger(__name__)

# One handler at a time per order in this process: a redelivery racing the first waits.
_order_lock = KeyedLocks()
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class ReservationInProgress(Exception):
    """The order's reservation is still being taken: handling its cancellation must wait (RETRY)."""


def product_lock(product_id: PydanticObjectId) -> asyncio.Lock:
    """Held around every update of one product in this process (see the module docstring)."""
    return outbox.write_lock(Product, product_id)


def _reservation_lock(order_id: str) -> asyncio.Lock:
    return outbox.write_lock(StockReservation, order_id)


def hold_key(order_id: str) -> str:
    """The order's field under `holds`: its id when that is a safe field name, else a digest."""
    if _SAFE_KEY.match(order_id):
        return order_id
    return "sha256_" + hashlib.sha256(order_id.encode()).hexdigest()


def merge_lines(lines: Iterable[OrderLine]) -> list[ReservedLine]:
    """One line per product: two lines of one product are one hold of their sum."""
    merged: dict[str, ReservedLine] = {}
    for line in lines:
        if line.productId in merged:
            merged[line.productId].quantity += line.quantity
        else:
            merged[line.productId] = ReservedLine(productId=line.productId, name=line.name, quantity=line.quantity)
    return list(merged.values())


async def _take(order_id: str, line: ReservedLine) -> bool:
    """Take the line's units for the order; True if the order holds them now."""
    product_id = parse_object_id(line.productId)
    if product_id is None:
        return False
    hold = f"holds.{hold_key(order_id)}"
    products = Product.get_pymongo_collection()
    async with product_lock(product_id):
        taken = await products.update_one(
            {"_id": product_id, "stock": {"$gte": line.quantity}, hold: {"$exists": False}},
            {"$inc": {"stock": -line.quantity}, "$set": {hold: line.quantity, "updatedAt": now()}},
        )
        if taken.matched_count:
            return True
        # An earlier delivery of this order may already have taken them before it stopped.
        return await products.count_documents({"_id": product_id, hold: {"$exists": True}}, limit=1) > 0


async def _drop_hold(order_id: str, line: ReservedLine, *, restock: bool) -> None:
    """End the order's hold on this product, if it holds one: `restock` returns its units (the
    order was cancelled); otherwise they stay sold (the order was paid)."""
    product_id = parse_object_id(line.productId)
    if product_id is None:
        return
    hold = f"holds.{hold_key(order_id)}"
    update = {"$unset": {hold: ""}}
    if restock:
        update |= {"$inc": {"stock": line.quantity}, "$set": {"updatedAt": now()}}
    async with product_lock(product_id):
        await Product.get_pymongo_collection().update_one({"_id": product_id, hold: {"$exists": True}}, update)


async def _available(line: ReservedLine) -> bool:
    product_id = parse_object_id(line.productId)
    if product_id is None:
        return False
    return await Product.find_one({"_id": product_id, "stock": {"$gte": line.quantity}}) is not None


async def reserve(order_id: str, lines: list[OrderLine]) -> StockReservation:
    """Reserve every line of the order or none, and stage `stock_reserved` / `stock_rejected`."""
    async with _order_lock(order_id):
        reservation = StockReservation(id=order_id, state="reserving", lines=merge_lines(lines))
        try:
            await reservation.insert()
        except DuplicateKeyError:
            reservation = await StockReservation.get(order_id)
            if reservation.state != "reserving":
                # Decided already (or cancelled before it arrived): nothing changes; only make
                # sure the outcome event left.
                await outbox.flush(StockReservation, order_id)
                return reservation
            # "reserving": an earlier delivery stopped half way; its holds are found and kept.

        short: list[str] = []
        for line in reservation.lines:
            if short:
                # Already rejected: take nothing more, only find which other lines are short.
                if not await _available(line):
                    short.append(line.productId)
            elif not await _take(order_id, line):
                short.append(line.productId)

        if not reservation.lines:
            state, reason = "rejected", "The order has no lines"
            outcome = StockRejected(orderId=order_id, reason=reason)
        elif short:
            for line in reservation.lines:  # compensate: give back whatever this order took
                await _drop_hold(order_id, line, restock=True)
            names = [line.name for line in reservation.lines if line.productId in short]
            state, reason = "rejected", "Not enough stock for: " + ", ".join(names)
            outcome = StockRejected(orderId=order_id, reason=reason, productIds=short)
        else:
            state, reason = "reserved", None
            outcome = StockReserved(orderId=order_id)

        pending = PendingEvent.of(outcome, source=APP_ID, key=order_id)
        async with _reservation_lock(order_id):
            decided = await StockReservation.get_pymongo_collection().update_one(
                {"_id": order_id, "state": "reserving"},
                outbox.with_event(
                    {"$set": {"state": state, "reason": reason, "shortProductIds": short, "updatedAt": now()}}, pending
                ),
            )
        if not decided.matched_count:
            # Only another replica handling the same order at the same moment gets here (this
            # process serialises an order's handlers); its outcome stands, and is what is announced.
            log.error("reservation %s was decided by another delivery; this outcome (%s) is dropped", order_id, state)
        await outbox.flush(StockReservation, order_id, [pending] if decided.matched_count else None)
        return await StockReservation.get(order_id)


async def release(order_id: str) -> None:
    """The order was cancelled: give back exactly what it holds, once."""
    async with _order_lock(order_id):
        reservation = await StockReservation.get(order_id)
        if reservation is None:
            # The cancellation overtook its order_created: leave a marker so that, when the
            # order arrives, it reserves nothing.
            try:
                await StockReservation(id=order_id, state="cancelled", lines=[]).insert()
                return
            except DuplicateKeyError:
                reservation = await StockReservation.get(order_id)
        if reservation.state == "reserving":
            raise ReservationInProgress(f"order {order_id} is still reserving stock")
        if reservation.state == "committed":
            log.warning("order %s was cancelled after it was paid; its sold stock stays sold", order_id)
        if reservation.state != "reserved":
            return  # rejected orders already gave back their units; released ones did too
        for line in reservation.lines:
            await _drop_hold(order_id, line, restock=True)
        async with _reservation_lock(order_id):
            await StockReservation.get_pymongo_collection().update_one(
                {"_id": order_id, "state": "reserved"}, {"$set": {"state": "released", "updatedAt": now()}}
            )


async def commit(order_id: str) -> None:
    """The order was paid: its reserved units are sold; drop its holds."""
    async with _order_lock(order_id):
        reservation = await StockReservation.get(order_id)
        if reservation is None or reservation.state != "reserved":
            return
        for line in reservation.lines:
            await _drop_hold(order_id, line, restock=False)
        async with _reservation_lock(order_id):
            await StockReservation.get_pymongo_collection().update_one(
                {"_id": order_id, "state": "reserved"}, {"$set": {"state": "committed", "updatedAt": now()}}
            )
