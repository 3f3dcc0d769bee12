"""The per-process hub: gap filling from the log, duplicates dropped, order kept.

And writes that do not wait for their audience: a writer's response goes out
before this process's connections get its events (held back, then delivered).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref

import pytest
from asgiref.sync import sync_to_async

from reactive import fanout
from reactive.events import GLOBAL_TENANT, Event
from reactive.fanout import Stream, get_hub, hold_back
from reactive.log import get_log
from tests.asgi import http_scope

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("hub")]
WAIT = 5  # seconds an expected event may take


@pytest.fixture(autouse=True)
def no_holds_left():
    """A test's holds end with it (a hold left behind would delay the next test's events)."""
    yield
    with fanout._holds_lock:
        fanout._holds.clear()


async def next_event(stream: Stream, wait: float = WAIT) -> Event:
    """The stream's next event (heartbeats skipped), bounded in time."""
    while True:
        item = await asyncio.wait_for(stream.get(), wait)
        if item is not None:
            return item


def queued(stream: Stream) -> list[str]:
    """The ids of the events in the stream's queue now (heartbeats skipped)."""
    return [e.id for e in list(stream.queue._queue) if e is not None]


async def fresh_stream(*tenants: str) -> tuple[Stream, int]:
    """A stream of `tenants` with nothing queued, and an id above any the hub has seen."""
    hub = get_hub()
    stream = await hub.open(set(tenants))
    while not stream.queue.empty():
        stream.queue.get_nowait()
    return stream, max(int(hub.last[t]) for t in tenants) + 1000


def event(event_id: int, tenant: str) -> Event:
    return Event(str(event_id), tenant, [f"tag-{event_id}"], 1)


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


# --- writes that do not wait for their audience ---------------------------------------


async def test_held_events_wait_for_the_writer_then_go_in_order(monkeypatch):
    monkeypatch.setattr(fanout, "HOLD_SECONDS", 30.0)  # only the writer ends it here
    hub = get_hub()
    stream, base = await fresh_stream("tenant-h1", "tenant-h2")
    hold = hold_back()
    assert hold is not None  # the process has a hub
    hub.dispatch(event(base + 1, "tenant-h1"))  # its writer's append has not returned yet
    assert queued(stream) == []
    hold.appended(event(base + 2, "tenant-h1"))  # older than the writer's first event: it goes
    assert (await next_event(stream)).id == str(base + 1)
    for n, tenant in [(2, "tenant-h1"), (3, "tenant-h2"), (4, "tenant-h1")]:
        hub.dispatch(event(base + n, tenant))  # the writer's own, then whatever follows it
    await asyncio.sleep(0.05)
    assert queued(stream) == []  # the response is not out: nothing from its event on
    hold.release()
    got = [(await next_event(stream)).id for _ in range(3)]
    assert got == [str(base + n) for n in (2, 3, 4)]  # in the order dispatched, every tenant
    hub.dispatch(event(base + 5, "tenant-h2"))  # no hold left: delivered at once
    assert queued(stream) == [str(base + 5)]
    stream.close()


async def test_a_response_that_never_goes_out_holds_nothing_for_long(monkeypatch):
    monkeypatch.setattr(fanout, "HOLD_SECONDS", 0.05)
    hub = get_hub()
    stream, base = await fresh_stream("tenant-e")
    hold = hold_back()
    assert hold is not None
    hold.appended(event(base + 1, "tenant-e"))
    hub.dispatch(event(base + 1, "tenant-e"))
    assert queued(stream) == []
    started = time.monotonic()
    assert (await next_event(stream, 2)).id == str(base + 1)  # never released: it expired
    assert time.monotonic() - started < 1
    hold.release()  # late: nothing left to do
    stream.close()


async def test_only_a_process_with_connections_holds_anything(monkeypatch):
    monkeypatch.setattr(fanout, "_hubs", weakref.WeakKeyDictionary())  # no hub, no connection
    assert hold_back() is None


class Audience(Stream):
    """A slow connection: its delivery holds the event loop until the response is out (2 s at most).

    As the fan-out to a large audience does: the loop serves nothing else meanwhile.
    """

    def __init__(self, hub: fanout.Hub, tenants: set[str], response_out: threading.Event):
        super().__init__(hub, tenants)
        self.response_out = response_out
        self.seen: list[tuple[str, bool]] = []  # (event id, whether the response was out)
        self.at = 0.0  # when the last delivery began

    def deliver(self, event: Event) -> None:
        self.seen.append((event.id, self.response_out.is_set()))
        self.at = time.monotonic()
        self.response_out.wait(2)  # blocks the loop: nothing else it serves runs meanwhile
        super().deliver(event)


async def call_asgi(app, path: str, body: dict, headers: list, response_out: threading.Event):
    """POST `body` through the ASGI application: status, body, seconds to respond, when sent."""
    raw = json.dumps(body).encode()
    scope = http_scope("POST", path, b"", [(b"content-type", b"application/json"), *headers])
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # the client stays: no disconnect

    status, chunks = 0, []

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                response_out.set()
                sent_at.append(time.monotonic())

    started, sent_at = time.monotonic(), []
    await app(scope, receive, send)
    return status, b"".join(chunks), sent_at[0] - started, sent_at[0]


@pytest.mark.django_db(transaction=True)
async def test_a_mutation_responds_before_its_event_fans_out(alice, org_a, agent_a, monkeypatch):
    """The response waits for the commit and the log, not for this process's connections."""
    from django.core.handlers.asgi import ASGIHandler

    from agency.models import ApiToken

    monkeypatch.setattr(fanout, "HOLD_SECONDS", 30.0)  # released by the response, not by time
    hub = get_hub()
    response_out = threading.Event()
    audience = Audience(hub, {str(org_a.pk)}, response_out)
    await hub.attach(audience, audience.tenants | {GLOBAL_TENANT})
    token = (await sync_to_async(ApiToken.issue)(alice, "writer"))[1]
    status, body, took, sent_at = await call_asgi(
        ASGIHandler(),
        "/api/rx/agents.update",
        {"id": str(agent_a.pk), "data": {"role": "reviewer"}},
        [(b"authorization", f"Bearer {token}".encode())],
        response_out,
    )
    assert status == 200, body
    assert json.loads(body)["data"]["role"] == "reviewer"
    got = await next_event(audience)  # delivered all the same, after the response
    assert f"agency.agent:id={agent_a.pk}" in got.tags
    assert audience.seen == [(got.id, True)]  # the response was out before the delivery began
    assert took < 1.5  # it did not wait for the slow audience (2 s)
    assert audience.at - sent_at < 1.5  # delivered once the response was out (not at expiry)
    later = await sync_to_async(get_log().read)([str(org_a.pk)], int(got.id) - 1)
    assert [e.id for e in later] == [got.id]  # the log holds it, the one event of the write
    audience.close()
