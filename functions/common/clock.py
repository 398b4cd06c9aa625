"""The shop's clock: aware UTC datetimes."""

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def stored_now() -> datetime:
    """Now, to the millisecond MongoDB keeps: the API answers the same before and after a save."""
    moment = now()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
