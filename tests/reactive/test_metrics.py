"""Counters (reactive/metrics.py): counted in-process, summed into FunctionStats rows."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction

from reactive import metrics
from reactive.models import FunctionStats

WAIT = 5  # seconds any wait of these tests may take at most


@pytest.fixture
def flush_every(settings):
    def set_to(seconds: float) -> None:
        settings.REACTIVE = {**settings.REACTIVE, "METRICS_FLUSH_SECONDS": seconds}

    set_to(3600)  # no flush unless a test asks for one
    return set_to


def stats(name: str) -> FunctionStats:
    return FunctionStats.objects.get(name=name)


@pytest.mark.django_db
def test_counts_are_added_to_the_shared_rows(flush_every):
    metrics.record_call("m.a", hit=True, ms=2.0)
    metrics.record_call("m.a", hit=False, stale=True, ms=6.0)
    metrics.record_call("m.a", hit=False, ms=4.0)
    metrics.record_error("m.a")
    assert not FunctionStats.objects.filter(name="m.a").exists()  # pending until a flush
    metrics.flush()
    row = stats("m.a")
    assert (row.hits, row.misses, row.invalidated, row.errors) == (1, 2, 1, 1)
    assert row.total_ms == pytest.approx(12.0)
    metrics.record_call("m.a", hit=True, ms=1.0)
    metrics.flush()  # another process's flush adds, never overwrites
    assert (stats("m.a").hits, stats("m.a").calls) == (2, 4)


@pytest.mark.django_db
def test_a_snapshot_flushes_and_derives_rates(flush_every):
    metrics.record_call("m.b", hit=True, ms=3.0)
    metrics.record_call("m.b", hit=False, ms=5.0)
    FunctionStats.objects.create(name="m.idle")
    by_name = {row["name"]: row for row in metrics.snapshot()}
    assert by_name["m.b"]["hitRate"] == 0.5 and by_name["m.b"]["avgMs"] == pytest.approx(4.0)
    assert by_name["m.idle"]["hitRate"] is None and by_name["m.idle"]["avgMs"] is None


@pytest.mark.django_db
def test_a_failed_flush_keeps_the_counts_for_the_next(flush_every, monkeypatch):
    metrics.record_call("m.c", hit=True)

    def broken(*args, **kwargs):
        raise ConnectionError("database away")

    monkeypatch.setattr(metrics.transaction, "atomic", broken)
    metrics.flush()
    monkeypatch.undo()
    assert not FunctionStats.objects.filter(name="m.c").exists()
    metrics.flush()
    assert stats("m.c").hits == 1


@pytest.mark.django_db(transaction=True)
def test_due_counts_flush_on_the_next_call_but_never_inside_a_transaction(flush_every):
    flush_every(0)
    with transaction.atomic():
        metrics.record_call("m.d", hit=True)
        assert not FunctionStats.objects.filter(name="m.d").exists()
    metrics.record_call("m.d", hit=False)
    assert (stats("m.d").hits, stats("m.d").misses) == (1, 1)


@pytest.mark.django_db
def test_discarded_counts_are_never_flushed(flush_every):
    metrics.record_call("m.e", hit=True)
    metrics.discard_pending()
    metrics.flush()
    assert not FunctionStats.objects.filter(name="m.e").exists()


def test_invalidations_are_counted_per_process():
    before = metrics.process_totals()
    metrics.record_invalidation(3)
    after = metrics.process_totals()
    assert after["events"] - before.get("events", 0) == 1
    assert after["tags"] - before.get("tags", 0) == 3


@pytest.mark.django_db(transaction=True)
async def test_a_call_counted_on_the_event_loop_flushes_in_a_thread(flush_every):
    flush_every(0)
    metrics.record_call("m.f", hit=True)  # an inline cache hit, on the loop
    (flushing,) = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_flush_in_thread"]
    await asyncio.wait_for(flushing, WAIT)
    assert (await sync_to_async(stats)("m.f")).hits == 1
    await sync_to_async(connections.close_all)()
