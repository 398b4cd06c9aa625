"""Card processing behind an interface a real provider can replace, and the simulated one.

Every charge carries an idempotency key (the order id): a processor must answer a second charge
with the same key with the first result instead of charging again, as real providers do.
"""

import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.payments.models import SimulatedCharge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChargeResult:
    chargeId: str
    approved: bool
    reason: str | None = None  # why it was declined


class TransientPaymentError(Exception):
    """The processor could not answer now (timeout, outage): charging later may succeed."""


class CardProcessor(Protocol):
    name: str

    async def charge(self, *, idempotency_key: str, token: str, amount_cents: int, currency: str) -> ChargeResult:
        """Charge the card once per idempotency key; raise TransientPaymentError when it could
        not be decided now."""
        ...

    async def refund(self, *, idempotency_key: str) -> None:
        """Give back the charge made under this key, if any (once)."""
        ...


class SimulatedCardProcessor:
    """Test cards: `tok_visa` pays, `tok_declined` is declined, `tok_error` fails transiently
    (its first `transient_failures` attempts per key raise, later ones pay), `tok_unavailable`
    meets a processor that stays down (every attempt raises); any other token is declined as
    unknown. Charges are stored by key, so a key is never charged twice."""

    name = "simulated"

    def __init__(self, transient_failures: int = 2) -> None:
        self.transient_failures = transient_failures
        # Attempts per key of the failing card: only the simulated outage needs them, and
        # forgetting them on a restart just makes the outage last a little longer.
        self._attempts: dict[str, int] = {}

    async def charge(self, *, idempotency_key: str, token: str, amount_cents: int, currency: str) -> ChargeResult:
        if token in ("tok_unavailable", "tok_error"):
            # Whether these fail depends on what the key was charged before: look first. For
            # every other card the stored charge's unique id answers that at the insert below.
            first = await SimulatedCharge.get(idempotency_key)
            if first is not None:
                return _result(first)

        if token == "tok_unavailable":
            raise TransientPaymentError(f"simulated processor down (charge {idempotency_key})")
        if token == "tok_error":
            attempt = self._attempts[idempotency_key] = self._attempts.get(idempotency_key, 0) + 1
            if attempt <= self.transient_failures:
                raise TransientPaymentError(f"simulated processor outage (attempt {attempt} for {idempotency_key})")
            approved, reason = True, None
        elif token == "tok_visa":
            approved, reason = True, None
        elif token == "tok_declined":
            approved, reason = False, "Card declined"
        else:
            approved, reason = False, "Unknown card token"

        charge = SimulatedCharge(
            id=idempotency_key,
            chargeId=f"ch_{uuid.uuid4().hex}",
            token=token,
            amountCents=amount_cents,
            currency=currency,
            approved=approved,
            reason=reason,
        )
        try:
            await store.insert(charge)
        except DuplicateKeyError:
            # The key was charged before (a repeat, or a concurrent charge): that result stands.
            charge = await SimulatedCharge.get(idempotency_key)
        self._attempts.pop(idempotency_key, None)
        return _result(charge)


    async def refund(self, *, idempotency_key: str) -> None:
        await store.update(SimulatedCharge, idempotency_key, {"$set": {"refunded": True}}, where={"approved": True})


def _result(charge: SimulatedCharge) -> ChargeResult:
    return ChargeResult(chargeId=charge.chargeId, approved=charge.approved, reason=charge.reason)


_processor: CardProcessor = SimulatedCardProcessor()


def get_processor() -> CardProcessor:
    return _processor


def use_processor(processor: CardProcessor) -> CardProcessor:
    """Install another processor (a real provider, or a test double); returns the previous one."""
    global _processor
    previous, _processor = _processor, processor
    return previous
