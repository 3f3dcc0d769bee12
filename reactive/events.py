"""Publishing a committed transaction's changes: bump cache versions, log, fan out."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

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

    def as_dict(self) -> dict:
        return asdict(self)


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
