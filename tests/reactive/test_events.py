"""The event (reactive/events.py): what the log stores and what clients receive of it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from reactive.events import GLOBAL_TENANT, Event


def test_the_payload_uses_the_wire_names():
    event = Event("42", "org-1", ["a", "b"], 1_700_000_000_000, prev="41")
    assert event.payload() == {
        "id": "42",
        "organizationId": "org-1",
        "tags": ["a", "b"],
        "at": 1_700_000_000_000,
    }


def test_a_global_event_names_no_organization():
    assert Event("1", GLOBAL_TENANT, ["t"], 5).payload()["organizationId"] is None


def test_the_sse_frame_carries_the_id_the_event_name_and_the_payload():
    event = Event("7", "org-1", ["agency.agent:id=3"], 12)
    frame = event.sse.decode()
    assert frame.endswith("\n\n")
    lines = frame.rstrip("\n").split("\n")
    assert lines[0] == "id: 7" and lines[1] == "event: invalidate"
    assert lines[2].startswith("data: ") and len(lines) == 3
    assert json.loads(lines[2].removeprefix("data: ")) == event.payload()
    assert event.sse is event.sse  # built once, shared by every connection


def test_tags_as_a_set_are_built_once():
    event = Event("1", "t", ["x", "y", "x"], 0)
    assert event.tag_set == frozenset({"x", "y"})
    assert event.tag_set is event.tag_set


def test_an_event_is_immutable_and_starts_a_tenant_log_by_default():
    event = Event("1", "t", [], 0)
    assert event.prev == "0"
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "2"  # type: ignore[misc]
