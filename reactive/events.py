"""Publishing a committed transaction's changes: bump cache versions, log, fan out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from . import metrics

logger = logging.getLogger("reactive")

GLOBAL_TENANT = ""  # events of rows that belong to no tenant go to every subscriber


@dataclass(frozen=True)
class Event:
    """One invalidation: a log position, the tenant it belongs to, its tags, its commit time."""

    id: str
    tenant: str
    tags: list[str]
    at: int  # epoch milliseconds of the commit
    prev: str = "0"  # id of the tenant's previous event: a process detects gaps with it

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "tags": self.tags,
            "at": self.at,
            "prev": self.prev,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Event:
        return cls(
            str(data["id"]),
            data["tenant"],
            list(data["tags"]),
            int(data["at"]),
            str(data.get("prev", "0")),
        )

    def payload(self) -> dict:
        """What clients see (the wire contract's names)."""
        return {
            "id": self.id,
            "organizationId": self.tenant or None,
            "tags": self.tags,
            "at": self.at,
        }

    @cached_property
    def sse(self) -> bytes:
        """The SSE frame, built once and shared by every connection."""
        data = json.dumps(self.payload(), separators=(",", ":"))
        return f"id: {self.id}\nevent: invalidate\ndata: {data}\n\n".encode()


def publish(changes: Mapping[str | None, set[str]]) -> list[Event]:
    """Make committed `changes` visible: cache first, then the durable log and live fan-out.

    Never raises: the write is already committed, and a failing cache or log
    must not turn a successful request into an error.
    """
    from .cache import reactive_cache
    from .fanout import broadcast
    from .log import get_log

    all_tags = set().union(*changes.values()) if changes else set()
    if not all_tags:
        return []
    reactive_cache().bump(all_tags)
    metrics.record_invalidation(len(all_tags))
    at = int(time.time() * 1000)
    published = []
    for tenant, tags in changes.items():
        if not tags:
            continue
        try:
            event = get_log().append(GLOBAL_TENANT if tenant is None else tenant, sorted(tags), at)
        except Exception:
            logger.exception("reactive: could not append to the event log")
            continue
        published.append(event)
        try:
            broadcast(event)
        except Exception:
            logger.exception("reactive: could not fan out event %s", event.id)
    return published
