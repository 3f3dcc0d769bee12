"""Helpers for projects testing their reactive functions (as Channels ships ``channels.testing``).

Plain functions and context managers, usable from pytest fixtures or Django's
``TestCase``::

    @pytest.fixture(autouse=True)
    def clean_reactive():
        reactive.testing.reset()

    def test_rename_invalidates(agent):
        with reactive.testing.capture_published() as published:
            agent.name = "new"
            agent.save()
        assert any("agency.agent:id=" + str(agent.pk) in tags
                   for batch in published for tags in batch.values())
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections

from . import drain, metrics, publishing
from .cache import reactive_cache
from .events import Event
from .log import get_log

__all__ = [
    "capture_published",
    "drain_now",
    "events_after",
    "reset",
    "reset_caches",
    "skip_pending_changes",
]

Batch = dict[str | None, set[str]]


def reset(using: str = DEFAULT_DB_ALIAS) -> None:
    """Start from no cached results, no events and no pending changes (needs the database).

    Change rows left by earlier tests are skipped (:func:`skip_pending_changes`).
    """
    reset_caches()
    skip_pending_changes(using)


def reset_caches() -> None:
    """Start from no cached results and no events, without touching the database.

    A process-local cache (locmem) and the in-memory log are emptied. A shared
    cache and log are left alone: other processes of the run (live servers)
    share them, and every test uses fresh ids anyway.
    """
    if drain.is_local():
        caches[reactive_cache().alias].clear()
    if not get_log().SHARED:
        get_log.cache_clear()
    metrics.discard_pending()
    reactive_cache().unbumped.clear()


def skip_pending_changes(using: str = DEFAULT_DB_ALIAS) -> None:
    """Publish (shared cache) or skip (local cache) the change rows written so far."""
    connection = connections[using]
    if not drain.ready(connection):
        return
    if drain.is_local():
        drain.mark_published(connection)
    else:
        drain.drain(using)


def drain_now(using: str = DEFAULT_DB_ALIAS) -> int:
    """Publish the change rows others wrote, as this process's drainer would; how many."""
    return drain.drain(using)


@contextmanager
def capture_published() -> Iterator[list[Batch]]:
    """The change sets published inside the block: one ``{tenant: tags}`` per transaction."""
    seen: list[Batch] = []
    original = publishing.publish

    def spy(*batches: Any) -> bool:
        seen.extend({tenant: set(tags) for tenant, tags in b.items()} for b in batches)
        return original(*batches)

    publishing.publish = spy
    try:
        yield seen
    finally:
        publishing.publish = original


def events_after(cursor: str, *tenants: str) -> list[Event]:
    """The events the log holds after `cursor` (a query's ``cursor``), for `tenants`."""
    return get_log().read(list(tenants), int(cursor))
