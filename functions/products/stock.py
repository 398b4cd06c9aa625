"""Stock reservations for the order saga: all of an order's lines or none, never below zero.

Each product keeps a hold per order in flight (`holds.<order>` = units). Taking units is one
conditional update (enough stock and no hold for this order yet) that decrements the stock and
writes the hold; giving them back is the reverse, conditional on the hold. So an order takes or
gives back a product's units only once, however often its events are redelivered.

The order's `StockReservation` decides: one conditional update from "reserving" to "reserved" or
"rejected" (carrying the outcome event in its outbox), which exactly one delivery wins however many
race, on one replica or several. The rules that keep stock right whatever interleaves:
- while the reservation is "reserving" nobody gives holds back, so a "reserved" decision, taken
  after every line was found held, is backed by every hold;
- a delivery gives holds back only once the reservation says the order holds nothing
  (`HOLDS_NOTHING`): the rejecter after winning, a cancellation after deciding "released" or
  "cancelled", and any delivery that finds such a state (the loser of a race, a late redelivery)
  — holds are given back by conditional updates, so doing it twice gives back nothing more;
- a paid order drops its holds (units stay sold; the paid orders of one product together, in
  one write per round) before its reservation says "committed", so a hold found after that is a
  stray one taken by a stale delivery, and goes back to stock.
The database applies each conditional update atomically (MongoDB); on FerretDB (the local
database, which does not isolate updates) the in-process locks make up for it (common/locks.py).
"""

import asyncio
import logging
from collections.abc import Iterable

from pymongo.errors import DuplicateKeyError

from functions.common import outbox, store
from functions.common.clock import now
from functions.common.contracts import OrderLine, StockRejected, StockReserved
from functions.common.locks import KeyedLocks
from functions.common.outbox import PendingEvent
from functions.common.rounds import GroupCommit
from functions.products import APP_ID
from functions.products.models import Product, ReservedLine, StockReservation

log = logging.getLogger(__name__)

# One handler at a time per order in this process: a redelivery racing the first waits (spares
# work only; across replicas the rules above hold without it).
_order_lock = KeyedLocks()
# Reservation states in which the order may hold no units: any hold found then goes back.
HOLDS_NOTHING = ("rejected", "cancelled", "released", "committed")


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
    hold = f"holds.{order_id}"  # ids are checked where they enter (ids.py): a safe field name
    if await store.update(
        Product,
        line.productId,
        {"$inc": {"stock": -line.quantity}, "$set": {hold: line.quantity, "updatedAt": now()}},
        where={"stock": {"$gte": line.quantity}, hold: {"$exists": False}},
    ):
        return True
    # An earlier delivery of this order may already have taken them before it stopped.
    return await Product.find_one({"_id": line.productId, hold: {"$exists": True}}) is not None


async def _give_back(order_id: str, line: ReservedLine) -> None:
    """End the order's hold on this product, if it holds one, and return its units to stock."""
    hold = f"holds.{order_id}"
    await store.update(
        Product, line.productId, {"$unset": {hold: ""}, "$inc": {"stock": line.quantity}, "$set": {"updatedAt": now()}},
        where={hold: {"$exists": True}},
    )


async def _drop_sold_holds(product_id: str, order_ids: list[str]) -> None:
    """One round: the holds of paid orders on one product end (their units stay sold)."""
    await store.update(Product, product_id, {"$unset": {f"holds.{order_id}": "" for order_id in order_ids}})


# Paid orders of one product drop their holds together: one write per product and round (a
# product in demand has many orders paid at once).
_sold = GroupCommit(_drop_sold_holds)


async def _available(line: ReservedLine) -> bool:
    return await Product.find_one({"_id": line.productId, "stock": {"$gte": line.quantity}}) is not None


async def _give_back_holds(order_id: str, reservation: StockReservation) -> None:
    """The order holds nothing: every hold of it still on a product goes back to stock."""
    for line in reservation.lines:
        await _give_back(order_id, line)


async def _set_state(order_id: str, expected: str, state: str) -> bool:
    return await store.update(
        StockReservation, order_id, {"$set": {"state": state, "updatedAt": now()}}, where={"state": expected}
    )


async def reserve(order_id: str, lines: list[OrderLine]) -> None:
    """Reserve every line of the order or none, and stage `stock_reserved` / `stock_rejected`."""
    async with _order_lock(order_id):
        reservation = StockReservation(id=order_id, state="reserving", lines=merge_lines(lines))
        try:
            await store.insert(reservation)
        except DuplicateKeyError:
            reservation = await StockReservation.get(order_id)
            if reservation.state != "reserving":
                # Decided already (or cancelled before it arrived): only finish what a delivery
                # that stopped half way may have left: its compensation, its outcome event.
                if reservation.state in HOLDS_NOTHING:
                    await _give_back_holds(order_id, reservation)
                await outbox.flush(StockReservation, order_id)
                return
            # "reserving": an earlier delivery stopped half way, or another is at work; the holds
            # either took are found and kept.

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
            names = [line.name for line in reservation.lines if line.productId in short]
            state, reason = "rejected", "Not enough stock for: " + ", ".join(names)
            outcome = StockRejected(orderId=order_id, reason=reason, productIds=short)
        else:
            state, reason = "reserved", None
            outcome = StockReserved(orderId=order_id)

        decided = await store.update(
            StockReservation,
            order_id,
            {"$set": {"state": state, "reason": reason, "shortProductIds": short, "updatedAt": now()}},
            where={"state": "reserving"},
            events=[PendingEvent.of(outcome, source=APP_ID, key=order_id)],
            # stock_reserved is answered (payment_processed or order_cancelled), on which the
            # reservation is written again (committed, released): that write takes it off.
            answered=state == "reserved",
        )
        if not decided:
            # Another delivery (a redelivery on another replica, a rebalance) or a cancellation
            # decided first: its decision stands and this outcome is dropped.
            state = (await StockReservation.get(order_id)).state
            log.warning("reservation %s was decided (%s) by another delivery; this one's %s is dropped",
                        order_id, state, outcome.topic)
        if state in HOLDS_NOTHING:
            await _give_back_holds(order_id, reservation)


async def release(order_id: str) -> None:
    """The order was cancelled: give back exactly what it holds, once. The reservation says
    "released" (or "cancelled", if it was still being taken) first, then the holds go back:
    a delivery still taking units for it then finds it holds nothing and gives them back too."""
    async with _order_lock(order_id):
        reservation = await StockReservation.get(order_id)
        if reservation is None:
            # The cancellation overtook its order_created: leave a marker so that, when the
            # order arrives, it reserves nothing.
            try:
                await store.insert(StockReservation(id=order_id, state="cancelled", lines=[]))
                return
            except DuplicateKeyError:
                reservation = await StockReservation.get(order_id)
        if reservation.state == "reserving" and not await _set_state(order_id, "reserving", "cancelled"):
            reservation = await StockReservation.get(order_id)  # decided meanwhile
        if reservation.state == "reserved" and not await _set_state(order_id, "reserved", "released"):
            reservation = await StockReservation.get(order_id)  # paid meanwhile
        if reservation.state == "committed":
            log.warning("order %s was cancelled after it was paid; its sold stock stays sold", order_id)
            return
        await _give_back_holds(order_id, reservation)


async def commit(order_id: str) -> None:
    """The order was paid: its reserved units are sold. Its holds are dropped (units stay sold)
    before the reservation says "committed" (see the module docstring)."""
    async with _order_lock(order_id):
        reservation = await StockReservation.get(order_id)
        if reservation is None or reservation.state != "reserved":
            return
        await asyncio.gather(*(_sold(line.productId, order_id) for line in reservation.lines))
        await _set_state(order_id, "reserved", "committed")


# How often products look for holds that no order in flight owns (see return_stray_holds).
STRAY_HOLDS_SWEEP_SECONDS = 60.0


async def return_stray_holds() -> int:
    """Give back every hold whose order holds nothing (its reservation is in `HOLDS_NOTHING`):
    units a stale delivery took after its order was decided, paid or cancelled (a redelivery
    racing on another replica, a process paused mid-handler). Returns the units given back.
    Holds of orders still reserving or reserved are left alone; a hold naming no known order is
    only logged."""
    returned = 0
    async for product in Product.find({"holds": {"$ne": {}}}):
        for key, units in product.holds.items():
            reservation = await StockReservation.get(key)
            if reservation is None or reservation.state not in HOLDS_NOTHING:
                if reservation is None:
                    log.warning("product %s: hold %s (%s units) names no known order", product.id, key, units)
                continue
            hold = f"holds.{key}"
            given = await store.update(
                Product,
                product.id,
                {"$unset": {hold: ""}, "$inc": {"stock": units}, "$set": {"updatedAt": now()}},
                where={hold: units},
            )
            if given:
                log.warning("product %s: gave back %s units of stray hold %s (order %s)",
                            product.id, units, key, reservation.state)
                returned += units
    return returned
