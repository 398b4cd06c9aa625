"""What only notifications reads: the e-mail provider and the sender."""

from pydantic import Field

from functions.common.settings import Settings, settings_of


class NotificationsSettings(Settings):
    # Empty: e-mails are recorded, not sent (a local run, the tests); see mailer.configured_mailer.
    sendgrid_api_key: str = Field("", alias="SENDGRID_API_KEY")
    mail_from: str = Field("tienda@shop.local", alias="SHOP_MAIL_FROM")


def get_settings() -> NotificationsSettings:
    return settings_of(NotificationsSettings)
