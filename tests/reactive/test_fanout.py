"""The per-process hub: gap filling from the log, duplicates dropped, order kept."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from reactive.fanout import get_hub
from reactive.log import get_log

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("hub")]


@pytest.mark.django_db(transaction=True)
async def test_a_hole_is_filled_from_the_log_in_order():
    hub = get_hub()
    stream = await hub.open({"tenant-x"})
    append = sync_to_async(get_log().append)
    start = await sync_to_async(get_log().position)()
    # Three commits whose live messages were lost or are late: only the third arrives.
    events = [await append("tenant-x", [f"t{i}"], 1) for i in range(3)]
    while not stream.queue.empty():  # whatever the live path did deliver
        stream.queue.get_nowait()
    hub.last["tenant-x"] = start  # as if none had been dispatched
    await hub.handle(events[2])
    got = [stream.queue.get_nowait() for _ in range(stream.queue.qsize())]
    assert [e.id for e in got] == [e.id for e in events]
    await hub.handle(events[1])  # a late duplicate
    assert stream.queue.empty()
    stream.close()
    assert hub.connections == 0


async def test_events_of_unfollowed_tenants_are_ignored():
    hub = get_hub()
    stream = await hub.open({"tenant-y"})
    other = await sync_to_async(get_log().append)("tenant-z", ["t"], 1)
    await hub.handle(other)
    assert all(e is None or e.tenant != "tenant-z" for e in list(stream.queue._queue))
    stream.close()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_lost_pubsub_connection_misses_nothing():
    """Redis drops the hub's subscription; an event published meanwhile still arrives."""
    import asyncio

    import redis

    log = get_log()
    hub = get_hub()
    stream = await hub.open({"tenant-k"})
    admin = redis.Redis.from_url(log.url)
    await asyncio.to_thread(admin.client_kill_filter, _type="pubsub")
    event = await sync_to_async(log.append)("tenant-k", ["lost?"], 1)  # likely not delivered live
    deadline = asyncio.get_running_loop().time() + 10
    got = []
    while asyncio.get_running_loop().time() < deadline and event.id not in got:
        try:
            item = await asyncio.wait_for(stream.get(), 0.5)
        except TimeoutError:
            await sync_to_async(log.append)("tenant-other", ["nudge"], 1)  # unrelated traffic
            continue
        if item is not None:
            got.append(item.id)
    assert event.id in got
    stream.close()
