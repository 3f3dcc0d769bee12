"""Publishing a committed transaction's changes: bump cache versions, log, fan out.

The write is committed before any of this runs, so nothing here may fail it.
The versions are bumped first, then the event is appended, so that a client
that refetches on the event cannot be answered from an entry older than the
write. When Redis is unreachable nothing is lost: the change rows stay in the
database until a drainer (of any process) publishes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from . import metrics
from .cache import complain, reactive_cache
from .events import GLOBAL_TENANT, SILENT
from .log import get_log

__all__ = ["publish"]

logger = logging.getLogger("reactive")


def publish(*batches: Mapping[str | None, set[str]]) -> bool:
    """Make committed changes visible: bump every tag once, then one event per batch and stream.

    A batch is one transaction's changes (stream -> tags). Never raises: the
    writes are committed, and a failing cache or log must not turn a successful
    request into an error. False when anything failed: the caller keeps the
    change rows, and a drainer publishes them again once the cache and log answer
    (bumping twice costs one miss; no event is ever lost).
    """
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
                get_log().announce(event)
            except Exception:
                logger.exception("reactive: could not fan out event %s", event.id)
    return True
