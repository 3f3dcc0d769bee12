"""Publishing a committed transaction's changes: bump cache versions, log, fan out.

The write is committed before any of this runs, so nothing here may fail it.
When Redis is unreachable the changes are kept in this process and published
once it answers again (by the cache's repair thread, or by the next write): the
versions are bumped first, then the event is appended, so that a client that
refetches on the event cannot be answered from an entry older than the write.
If the process dies first they are lost: docs/operations.md says what then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
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


# Changes whose event could not be appended (or whose tags could not be bumped yet):
# tenant -> tags, published with the next write or by the cache's repair thread.
_unpublished: dict[str | None, set[str]] = defaultdict(set)
_unpublished_lock = threading.Lock()


def publish(changes: Mapping[str | None, set[str]]) -> list[Event]:
    """Make committed `changes` visible: cache first, then the durable log and live fan-out.

    Never raises: the write is already committed, and a failing cache or log
    must not turn a successful request into an error.
    """
    from .cache import reactive_cache

    changes = {tenant: set(tags) for tenant, tags in changes.items() if tags}
    if not changes:
        return []
    all_tags = set().union(*changes.values())
    cache = reactive_cache()
    bumped = cache.bump(all_tags)
    metrics.record_invalidation(len(all_tags))
    if not bumped or cache.unbumped:
        # No event before the bump: a client refetching on it could hit the old entry.
        _keep(changes)
        return []
    with _unpublished_lock:  # what failed earlier rides along
        for tenant, tags in _unpublished.items():
            changes.setdefault(tenant, set()).update(tags)
        _unpublished.clear()
    return _append(changes)


def _append(changes: Mapping[str | None, set[str]]) -> list[Event]:
    """Append and fan out one event per tenant; keep what fails for later."""
    from .cache import complain
    from .fanout import broadcast
    from .log import get_log

    at = int(time.time() * 1000)
    published, failed, error = [], {}, None
    for tenant, tags in changes.items():
        try:
            event = get_log().append(GLOBAL_TENANT if tenant is None else tenant, sorted(tags), at)
        except Exception as exc:
            failed[tenant], error = tags, exc
            continue
        published.append(event)
        try:
            broadcast(event)
        except Exception:
            logger.exception("reactive: could not fan out event %s", event.id)
    if failed:
        complain(
            "append",
            "could not append %d event(s); kept to publish later",
            len(failed),
            error=error,
        )
        _keep(failed)
    return published


def _keep(changes: Mapping[str | None, set[str]]) -> None:
    """Hold `changes` until the cache is repaired and the log answers."""
    from .cache import reactive_cache

    with _unpublished_lock:
        for tenant, tags in changes.items():
            _unpublished[tenant] |= tags
    cache = reactive_cache()
    if _republish not in cache.after_repair:
        cache.after_repair.append(_republish)
    cache.start_repairs()


def _republish() -> bool:
    """Run by the cache's repair thread once it is repaired: publish what was kept."""
    from .cache import reactive_cache

    if reactive_cache().unbumped:
        return False
    with _unpublished_lock:
        pending = dict(_unpublished)
        _unpublished.clear()
    if pending:
        _append(pending)
    return not _unpublished
