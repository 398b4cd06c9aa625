"""The simulated card processor: test cards, transient failures, one charge per idempotency key."""

import asyncio
import uuid

import pytest

from functions.payments.models import SimulatedCharge
from functions.payments.processor import CardProcessor, SimulatedCardProcessor, TransientPaymentError


def key() -> str:
    return f"order-{uuid.uuid4().hex}"


async def test_test_cards(client):
    processor: CardProcessor = SimulatedCardProcessor()
    visa = await processor.charge(idempotency_key=key(), token="tok_visa", amount_cents=1000, currency="USD")
    declined = await processor.charge(idempotency_key=key(), token="tok_declined", amount_cents=1000, currency="USD")
    unknown = await processor.charge(idempotency_key=key(), token="tok_mastercard", amount_cents=1000, currency="USD")
    assert (visa.approved, visa.reason) == (True, None) and visa.chargeId.startswith("ch_")
    assert (declined.approved, declined.reason) == (False, "Card declined")
    assert (unknown.approved, unknown.reason) == (False, "Unknown card token")


async def fails_transiently(processor: SimulatedCardProcessor, k: str, token: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(TransientPaymentError):
            await processor.charge(idempotency_key=k, token=token, amount_cents=500, currency="USD")
    assert await SimulatedCharge.get(k) is None  # a failed attempt charges nothing


async def test_the_unavailable_card_never_gets_an_answer(client):
    await fails_transiently(SimulatedCardProcessor(transient_failures=2), key(), "tok_unavailable", times=5)


async def test_the_failing_card_fails_transiently_then_pays(client):
    processor, k = SimulatedCardProcessor(transient_failures=2), key()
    await fails_transiently(processor, k, "tok_error", times=2)
    paid = await processor.charge(idempotency_key=k, token="tok_error", amount_cents=500, currency="USD")
    assert paid.approved


async def test_a_key_is_charged_once_and_answers_its_first_result(client):
    processor = SimulatedCardProcessor()
    k = key()
    results = await asyncio.gather(
        *(processor.charge(idempotency_key=k, token="tok_declined", amount_cents=700, currency="USD") for _ in range(5))
    )
    assert len({r.chargeId for r in results}) == 1 and not results[0].approved
    # Even with another card: the key was charged (declined), and that answer stands.
    later = await processor.charge(idempotency_key=k, token="tok_visa", amount_cents=700, currency="USD")
    assert later == results[0]
    # A new processor instance (a restart) remembers it too: charges are stored.
    assert await SimulatedCardProcessor().charge(idempotency_key=k, token="tok_visa", amount_cents=700, currency="USD") == later
    assert await SimulatedCharge.find({"_id": k}).count() == 1
