"""Hit, miss, invalidation and latency counters: kept in-process, summed in the database.

Counting is a dictionary update on the request path; every few seconds the
process adds its counts to ``FunctionStats`` rows, so a management command, the
admin and the staff endpoint see the totals of every worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import defaultdict
from typing import TypedDict

from django.db import connection, transaction
from django.db.models import F

from .conf import reactive_settings
from .threads import database_sync_to_async

logger = logging.getLogger("reactive")

_FIELDS = ("hits", "misses", "invalidated", "errors", "total_ms")
_lock = threading.Lock()
_pending: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_FIELDS, 0))
_totals: dict[str, float] = defaultdict(float)  # this process, since start
_last_flush = time.monotonic()
_flushing = False  # a flush scheduled from the event loop is under way


def record_call(name: str, *, hit: bool, stale: bool = False, ms: float = 0.0) -> None:
    """Count one query call."""
    with _lock:
        row = _pending[name]
        row["hits" if hit else "misses"] += 1
        row["invalidated"] += stale
        row["total_ms"] += ms
    _maybe_flush()


def record_error(name: str) -> None:
    """Count one call that ended in an error."""
    with _lock:
        _pending[name]["errors"] += 1


def record_invalidation(tag_count: int) -> None:
    """Count one published change and the tags it bumped (this process only)."""
    with _lock:
        _totals["events"] += 1
        _totals["tags"] += tag_count


def process_totals() -> dict[str, float]:
    """This process's event counters since it started."""
    with _lock:
        return dict(_totals)


def discard_pending() -> None:
    """Forget this process's unflushed counts (tests start from zero)."""
    with _lock:
        _pending.clear()


def _maybe_flush() -> None:
    global _flushing
    if time.monotonic() - _last_flush < reactive_settings()["METRICS_FLUSH_SECONDS"]:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # Never inside the caller's transaction: its rollback would take the counts.
        if not connection.in_atomic_block:
            flush()
        return
    # Counted on the event loop (an inline cache hit): the database is a thread away.
    # A context of its own: the request's would hand the flush that request's
    # thread and database connection, which it would close mid-transaction.
    if not _flushing:
        _flushing = True
        loop.create_task(_flush_in_thread(), context=contextvars.Context())


async def _flush_in_thread() -> None:
    global _flushing
    try:
        await database_sync_to_async(flush)()
    finally:
        _flushing = False


def flush() -> None:
    """Add this process's pending counts to the shared rows."""
    global _last_flush
    from .models import FunctionStats

    with _lock:
        pending = {name: dict(row) for name, row in _pending.items()}
        _pending.clear()
        _last_flush = time.monotonic()
    try:
        with transaction.atomic():
            for name, row in pending.items():
                FunctionStats.objects.get_or_create(name=name)
                FunctionStats.objects.filter(name=name).update(
                    **{field: F(field) + row[field] for field in _FIELDS}
                )
    except Exception:
        logger.warning("reactive: could not flush metrics", exc_info=True)
        with _lock:
            for name, row in pending.items():
                for field in _FIELDS:
                    _pending[name][field] += row[field]


class FunctionTotals(TypedDict):
    """One function's counters summed over every process, as the staff endpoint shows them."""

    name: str
    hits: int
    misses: int
    invalidated: int
    errors: int
    hitRate: float | None  # the JSON's camelCase
    avgMs: float | None  # milliseconds per call (None before any call)


def snapshot() -> list[FunctionTotals]:
    """Every function's totals (after flushing this process), for display."""
    from .models import FunctionStats

    flush()
    out: list[FunctionTotals] = []
    for stats in FunctionStats.objects.all():
        out.append(
            {
                "name": stats.name,
                "hits": stats.hits,
                "misses": stats.misses,
                "invalidated": stats.invalidated,
                "errors": stats.errors,
                "hitRate": stats.hit_rate,
                "avgMs": stats.total_ms / stats.calls if stats.calls else None,
            }
        )
    return out
