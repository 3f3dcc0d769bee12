"""The ORM from async code (reactive/threads.py): stale connections closed around each call."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from reactive import threads
from reactive.threads import database_sync_to_async


@pytest.fixture
def seen(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(threads, "close_old_connections", lambda: calls.append("close"))
    return calls


async def test_stale_connections_are_closed_before_and_after_the_call(seen):
    def work(a, b=0):
        seen.append("call")
        return a + b, threading.get_ident()

    total, thread = await database_sync_to_async(work)(2, b=3)
    assert total == 5 and thread != threading.get_ident()  # ran off the event loop
    assert seen == ["close", "call", "close"]


async def test_they_are_closed_after_a_failing_call_too(seen):
    def fails():
        seen.append("call")
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await database_sync_to_async(fails)()
    assert seen == ["close", "call", "close"]


@pytest.mark.django_db(transaction=True)
async def test_the_orm_works_through_it():
    def count():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()[0]

    assert await database_sync_to_async(count)() == 1
    await database_sync_to_async(connections.close_all)()  # the worker thread's connection
