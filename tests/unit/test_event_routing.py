"""Every outbound event type has a receiver and a reason (spec §11.2, §12), and docs/events.md
says exactly what the routing table says."""

from __future__ import annotations

from pathlib import Path

import pytest

from product_shop.events.routing import ROUTES, destinations_of, events_document
from product_shop.events.types import ALL_EVENT_TYPES, EventType

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES, ids=lambda t: t.name)
def test_every_event_type_has_a_receiver_a_reason_and_a_schema(event_type: EventType) -> None:
    assert destinations_of(event_type), f"{event_type.name} goes nowhere"
    for route in ROUTES:
        if route.event_type == event_type:
            assert "§" in route.why  # names the spec clause that asks for it
    assert event_type.schema()["type"] == "object"


def test_every_route_names_a_known_event_type() -> None:
    assert {route.event_type for route in ROUTES} <= set(ALL_EVENT_TYPES)


def test_the_events_document_is_the_routing_table() -> None:
    assert DOC.read_text() == events_document(), (
        "docs/events.md is out of date: regenerate it with "
        "`.venv/bin/python -c 'from product_shop.events.routing import events_document; "
        'open("docs/events.md", "w").write(events_document())\'`'
    )
