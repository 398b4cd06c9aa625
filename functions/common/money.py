"""Money is integer cents inside the shop; these are the two ways it is shown."""


def money(cents: int) -> float:
    """Cents as a number with two decimals, as the HTTP API shows prices: 2975 -> 29.75."""
    return round(cents / 100, 2)


def money_text(cents: int) -> str:
    """Cents as text with two decimals, for e-mails: 2975 -> "29.75"."""
    return f"{cents // 100}.{cents % 100:02d}"
