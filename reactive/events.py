"""The event: one committed invalidation, as the log stores it and clients receive it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import TypedDict

GLOBAL_TENANT = ""  # events of rows that belong to no tenant go to every subscriber
SILENT = "!silent"  # a stream whose tags are bumped with no event (changes.row_changes)


class InvalidatePayload(TypedDict):
    """The ``invalidate`` frame's data, as SSE and WebSocket clients receive it."""

    id: str
    organizationId: str | None  # the wire contract's camelCase
    tags: list[str]
    at: int


@dataclass(frozen=True)
class Event:
    """One invalidation: a log position, the tenant it belongs to, its tags, its commit time."""

    id: str
    tenant: str
    tags: list[str]
    at: int  # epoch milliseconds of the commit
    prev: str = "0"  # id of the tenant's previous event: a process detects gaps with it

    def payload(self) -> InvalidatePayload:
        """What clients see (the wire contract's names)."""
        return {
            "id": self.id,
            "organizationId": self.tenant or None,
            "tags": self.tags,
            "at": self.at,
        }

    @cached_property
    def tag_set(self) -> frozenset[str]:
        """The tags as a set, built once and shared by every connection that matches them."""
        return frozenset(self.tags)

    @cached_property
    def sse(self) -> bytes:
        """The SSE frame, built once and shared by every connection."""
        data = json.dumps(self.payload(), separators=(",", ":"))
        return f"id: {self.id}\nevent: invalidate\ndata: {data}\n\n".encode()
