"""The e-mail templates: Jinja2 files in templates/, Spanish, as the original's."""

from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from functions.notifications.models import Template

_MONTHS = (
    "enero", "febrero", "marzo", "abril", "mayo", "junio",
    "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
)  # fmt: skip


def nl2br(text: str) -> Markup:
    """Plain text (an invoice's content) as HTML lines, escaped."""
    return Markup("<br>\n").join(escape(line) for line in str(text).splitlines())


def spanish_date(moment: datetime) -> str:
    return f"{moment.day} de {_MONTHS[moment.month - 1]} de {moment.year}"


_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    # A variable the template needs and the event lacks is a bug to see, not a blank to send.
    undefined=StrictUndefined,
)
_environment.filters["nl2br"] = nl2br


def render(template: Template, subject: str, moment: datetime, **variables: object) -> str:
    return _environment.get_template(f"{template}.html").render(
        subject=subject, date=spanish_date(moment), year=moment.year, **variables
    )
