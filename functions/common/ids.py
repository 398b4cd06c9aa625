"""Ids as the API shows them: an ObjectId has one form, 24 lower-case hexadecimal digits."""

import re

from beanie import PydanticObjectId

_CANONICAL = re.compile(r"[0-9a-f]{24}")


def parse_object_id(text: str) -> PydanticObjectId | None:
    """The ObjectId `text` spells, or None (the caller answers 404) for anything else. Only the
    canonical form: an upper-case spelling would find the same record under an id that differs
    from the one every answer and event carries."""
    return PydanticObjectId(text) if isinstance(text, str) and _CANONICAL.fullmatch(text) else None
