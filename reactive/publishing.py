"""Publishing a committed transaction's changes: bump cache versions, log, fan out.

The write is committed before any of this runs, so nothing here may fail it.
The versions are bumped first, then the event is appended, so that a client
that refetches on the event cannot be answered from an entry older than the
write. When Redis is unreachable nothing is lost: the change rows stay in the
database until a drainer (of any process) publishes them.

That is all a writer waits for: its request's response goes out once the
versions are bumped and the event is in the log (and on the live path to every
process). The fan-out to this process's own connections runs on the event
loop, after the response: a thread that publishes while serving a request
(between ``request_started`` and ``request_finished``, see :func:`responding`)
holds its events back in this process's hubs (:func:`reactive.fanout.hold_back`)
until :func:`responded`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from . import fanout, metrics
from .cache import complain, reactive_cache
from .events import GLOBAL_TENANT, SILENT
from .log import get_log

__all__ = ["publish", "responded", "responding"]

logger = logging.getLogger("reactive")

# The holds of the request this thread serves (None: it serves none). A request's
# sync code (its view, its commit hooks, its response's close) runs on one thread,
# under WSGI and under ASGI (asgiref's thread-sensitive executor of the request).
_request = threading.local()


def responding() -> None:
    """``request_started``: this thread serves a request; its writes' fan-out waits for it."""
    responded()  # what a request that never finished held (a view that raised in a test)
    _request.holds = []


def responded() -> None:
    """``request_finished``: the response went out; this process's hubs deliver its events."""
    holds: list[fanout.Hold] | None = getattr(_request, "holds", None)
    _request.holds = None
    for hold in holds or ():
        hold.release()


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
    """Append and announce one event per batch and stream, held back while a response is due."""
    holds: list[fanout.Hold] | None = getattr(_request, "holds", None)
    hold: fanout.Hold | None = None
    at = int(time.time() * 1000)
    for batch in batches:
        for stream, tags in batch.items():
            if stream == SILENT:
                continue
            if holds is not None and hold is None:
                # Before the append: the live path may bring the event to a hub first.
                hold = fanout.hold_back()
                if hold is not None:
                    holds.append(hold)
            try:
                event = get_log().append(
                    GLOBAL_TENANT if stream is None else stream, sorted(tags), at
                )
            except Exception as exc:
                complain("append", "could not append an event; its changes wait", error=exc)
                if hold is not None:
                    hold.release()  # what it did append goes out now
                return False
            if hold is not None:
                hold.appended(event)
            try:
                get_log().announce(event)
            except Exception:
                logger.exception("reactive: could not fan out event %s", event.id)
    return True
