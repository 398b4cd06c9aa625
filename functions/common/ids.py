"""One id form per entity, end to end: 24 lower-case hexadecimal digits (the text of a new
ObjectId, so ids sort by creation), the same string in the database's `_id`, in every answer and
in every event. Users, products, orders and e-mails get theirs from `new_id`; a cart, a payment
and a stock reservation are stored under the id of the user or order they belong to."""

import re
from typing import Annotated

from bson import ObjectId
from pydantic import Field, StringConstraints

ID_PATTERN = r"^[0-9a-f]{24}$"
_ID = re.compile(ID_PATTERN)

# An id as contracts and stored models declare it: anything else is refused where it enters (an
# event with another form is dropped to the dead letters), so an id is always a safe field name.
EntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def new_id() -> str:
    return str(ObjectId())


# The `id` of a document whose function creates the entity.
NewEntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN), Field(default_factory=new_id)]


def is_id(text: object) -> bool:
    """True for an id's one form. A path or a link with anything else names nothing (the caller
    answers 404 or 400); an upper-case spelling is refused too, as it differs from the id every
    answer and event carries."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None
