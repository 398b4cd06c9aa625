"""The pub/sub Component's scopes are the topic table: who publishes (the contracts' `publisher`)
and who subscribes (each function's handlers), each function's dead-letter topics included."""

import importlib
from pathlib import Path

import pytest
import yaml

from functions.common.contracts import IntegrationEvent, StockReserved
from functions.common.dead_letters import dead_letter_topic
from functions.common.ids import new_id
from functions.common.outbox import PendingEvent
from tests.stack import stack

# Ids in their one form (functions/common/ids.py); a contract refuses any other.
ORDER_1 = new_id()

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = [ROOT / "components" / "pubsub.yaml", ROOT / "k8s" / "base" / "dapr" / "pubsub.yaml"]


def contracts() -> list[type[IntegrationEvent]]:
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return [event for event in subclasses(IntegrationEvent) if "topic" in vars(event)]


def handled(app: str) -> list[str]:
    try:
        module = importlib.import_module(f"functions.{app}.subscriptions")
    except ModuleNotFoundError:
        return []  # users subscribes to nothing
    return [event.topic for event, _ in module.subscriptions.handlers]


def expected() -> dict[str, dict[str, set[str]]]:
    publishing, subscription = {}, {}
    for app in stack.FUNCTIONS:
        dead_letters = {dead_letter_topic(app, topic) for topic in handled(app)}
        publishing[app] = {e.topic for e in contracts() if e.publisher == app} | dead_letters
        subscription[app] = set(handled(app)) | dead_letters
    return {"publishingScopes": publishing, "subscriptionScopes": subscription}


def scopes(component: Path, name: str) -> dict[str, set[str]]:
    """Parsed as daprd does: spaces dropped, `app=topic,topic;app=...`."""
    metadata = {m["name"]: m["value"] for m in yaml.safe_load(component.read_text())["spec"]["metadata"]}
    parsed = {}
    for entry in metadata[name].replace(" ", "").split(";"):
        app, _, topics = entry.partition("=")
        parsed[app] = {t for t in topics.split(",") if t}
    return parsed


def test_every_event_has_one_publisher_among_the_functions():
    for event in contracts():
        assert event.publisher in stack.FUNCTIONS, event.__name__


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("name", ["publishingScopes", "subscriptionScopes"])
def test_the_component_scopes_are_the_topic_table(component, name):
    assert scopes(component, name) == expected()[name]


def test_a_function_cannot_stage_another_functions_event():
    with pytest.raises(ValueError, match="stock_reserved is published by products, not cart"):
        PendingEvent.of(StockReserved(orderId=ORDER_1), source="cart")
