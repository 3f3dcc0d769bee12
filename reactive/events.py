"""Publishing a committed transaction's changes: bump cache versions, log, fan out.

The write is committed before any of this runs, so nothing here may fail it.
The versions are bumped first, then the event is appended, so that a client
that refetches on the event cannot be answered from an entry older than the
write. When Redis is unreachable nothing is lost: the change rows stay in the
database until a drainer (of any process) publishes them.
"""

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
SILENT = "!silent"  # a stream whose tags are bumped with no event (changes.row_changes)


@dataclass(frozen=True)
class Event:
    """One invalidation: a log position, the tenant it belongs to, its tags, its commit time."""

    id: str
    tenant: str
    tags: list[str]
    at: int  # epoch milliseconds of the commit
    prev: str = "0"  # id of the tenant's previous event: a process detects gaps with it

    def as_dict(self) -> dict:
        """The event as a plain dict (what the channel layer carries)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "tags": self.tags,
            "at": self.at,
            "prev": self.prev,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Event:
        """Rebuild an event from :meth:`as_dict`'s output."""
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
    def tag_set(self) -> frozenset[str]:
        """The tags as a set, built once and shared by every connection that matches them."""
        return frozenset(self.tags)

    @cached_property
    def sse(self) -> bytes:
        """The SSE frame, built once and shared by every connection."""
        data = json.dumps(self.payload(), separators=(",", ":"))
        return f"id: {self.id}\nevent: invalidate\ndata: {data}\n\n".encode()


def publish(*batches: Mapping[str | None, set[str]]) -> bool:
    """Make committed changes visible: bump every tag once, then one event per batch and stream.

    A batch is one transaction's changes (stream -> tags). Never raises: the
    writes are committed, and a failing cache or log must not turn a successful
    request into an error. False when anything failed: the caller keeps the
    change rows, and a drainer publishes them again once the cache and log answer
    (bumping twice costs one miss; no event is ever lost).
    """
    from .cache import reactive_cache

    batches = tuple(b for b in ({s: set(t) for s, t in b.items() if t} for b in batches) if b)
    if not batches:
        return True
    all_tags = set().union(*(tags for batch in batches for tags in batch.values()))
    cache = reactive_cache()
    if not cache.bump(all_tags) or cache.unbumped:
        return False  # no event before the bump: a client refetching on it could hit the old entry
    metrics.record_invalidation(len(all_tags))
    return _append(batches)


def _append(batches: tuple[Mapping[str | None, set[str]], ...]) -> bool:
    """Append and fan out one event per batch and stream."""
    from .cache import complain
    from .fanout import broadcast
    from .log import get_log

    at = int(time.time() * 1000)
    for batch in batches:
        for stream, tags in batch.items():
            if stream == SILENT:
                continue
            try:
                event = get_log().append(
                    GLOBAL_TENANT if stream is None else stream, sorted(tags), at
                )
            except Exception as exc:
                complain("append", "could not append an event; its changes wait", error=exc)
                return False
            try:
                broadcast(event)
            except Exception:
                logger.exception("reactive: could not fan out event %s", event.id)
    return True
