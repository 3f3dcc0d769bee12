"""Cache hits answered on the event loop; misses, database work and cache failures in a thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agency.models import Agent, ApiToken
from reactive import inline, metrics
from reactive.cache import reactive_cache
from reactive.functions import Context, registry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def threads(monkeypatch):
    """The thread each call of agents.getAll's handler and answer ran on."""
    seen: list[int] = []
    fn = registry["agents.getAll"]
    original = fn.call

    def call(*args, **kwargs):
        seen.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(fn, "call", call)
    return seen


async def test_hit_runs_on_the_loop_and_miss_in_a_thread(alice, org_a, threads):
    await sync_to_async(Agent.objects.create)(organization=org_a, name="a", role="r")
    ctx = Context(user=alice)
    fn = registry["agents.getAll"]
    loop_thread = threading.get_ident()
    first = await inline.call(fn.call, {"organizationId": str(org_a.pk)}, ctx)
    # Tried on the loop, refused (a miss), then run again in a worker thread.
    assert not first.hit and threads[0] == loop_thread and threads[1] != loop_thread
    threads.clear()
    second = await inline.call(fn.call, {"organizationId": str(org_a.pk)}, ctx)
    assert second.hit and threads == [loop_thread]
    assert second.data == first.data


async def test_api_hit_with_token_needs_no_thread(alice, org_a, threads):
    _, raw = await sync_to_async(ApiToken.issue)(alice, "inline")
    client, auth = AsyncClient(), {"Authorization": f"Bearer {raw}"}
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    assert (await client.get(url, headers=auth))["X-Reactive-Cache"] == "miss"
    threads.clear()
    response = await client.get(url, headers=auth)
    assert response.status_code == 200 and response["X-Reactive-Cache"] == "hit"
    assert threads == [threading.get_ident()]


async def test_inline_misses_are_not_counted_as_errors(alice, org_a):
    metrics.discard_pending()
    fn = registry["agents.getAll"]
    await inline.call(fn.call, {"organizationId": str(org_a.pk)}, Context(user=alice))
    totals = metrics._pending["agents.getAll"]
    assert totals["errors"] == 0 and totals["misses"] == 1


async def test_failing_cache_pauses_the_inline_attempt(alice, org_a, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(type(reactive_cache().backend), "get_many", broken)
    monkeypatch.setattr(inline, "_paused_until", 0.0)
    fn = registry["agents.getAll"]
    result = await inline.call(fn.call, {"organizationId": str(org_a.pk)}, Context(user=alice))
    assert result.data == [] and not result.hit  # answered from the database
    assert inline._paused_until > 0  # and the loop is spared further attempts for a while


async def test_metrics_counted_on_the_loop_flush_outside_the_request_context(monkeypatch, settings):
    """The flush runs on a thread of its own, never on the request's (whose connection it
    would close mid-transaction)."""
    import contextvars

    settings.REACTIVE = {**settings.REACTIVE, "METRICS_FLUSH_SECONDS": 0}
    request_var = contextvars.ContextVar("request_var", default="outside")
    request_var.set("inside the request")
    seen = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def flush():
        seen.append(request_var.get())
        loop.call_soon_threadsafe(done.set)

    monkeypatch.setattr(metrics, "flush", flush)
    metrics.record_call("agents.getAll", hit=True)
    await asyncio.wait_for(done.wait(), 5)
    assert seen == ["outside"]
