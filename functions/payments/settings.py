"""What only payments reads: prices' tax and currency, charge attempts, the order deadline."""

from pydantic import Field

from functions.common.settings import Settings, settings_of


class PaymentsSettings(Settings):
    tax_rate: float = Field(0.19, ge=0, le=1, alias="SHOP_TAX_RATE")
    currency: str = Field("USD", alias="SHOP_CURRENCY")
    # Charges of one order that may fail transiently before its payment fails for good (and its
    # stock is released). Keep it within the deliveries dapr/resiliency.yaml gives an event
    # (1 + pubsubRetry's maxRetries), so the saga, not the dead letter, ends an outage.
    payment_max_attempts: int = Field(4, ge=1, alias="SHOP_PAYMENT_MAX_ATTEMPTS")
    # An order still waiting on an event this long after its last change is settled: expired and
    # its stock released, or (paid) invoiced (payments/saga.py). Far beyond the redelivery
    # window of dapr/resiliency.yaml, so only an event lost for good (a dead letter) meets it.
    order_deadline_seconds: float = Field(900.0, gt=0, alias="SHOP_ORDER_DEADLINE_SECONDS")


def get_settings() -> PaymentsSettings:
    return settings_of(PaymentsSettings)
