"""Text that ends up in a header, a subject or a log line must stay on one line."""

import re

from pydantic import AfterValidator

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def refuse_control_characters(value: str | None) -> str | None:
    if value is not None and _CONTROL.search(value):
        raise ValueError("must not contain control characters (line breaks, tabs, NUL, escape)")
    return value


# A name, a category, a search filter: one line of printable text (422 otherwise).
OneLine = AfterValidator(refuse_control_characters)
