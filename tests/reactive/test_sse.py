"""Server-Sent Events: replay, reset, heartbeats, isolation, access loss, and the ack."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agency.models import Agent, ApiToken, Membership
from reactive.log import get_log
from reactive.models import ClientPosition
from reactive.sse import event_stream
from tests.conftest import client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]
WAIT = 5


def parse(frame: bytes) -> dict:
    fields: dict = {}
    for line in frame.decode().splitlines():
        if line.startswith(":"):
            fields.setdefault("comment", line[1:].strip())
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


async def next_frame(stream, kind: str | None = None) -> dict:
    """The next frame (of `kind`: an event type, or 'comment'), bounded in time."""
    while True:
        frame = parse(await asyncio.wait_for(stream.__anext__(), WAIT))
        if kind is None or frame.get("event") == kind or (kind == "comment" and "comment" in frame):
            return frame


def make_agent(org, name):
    return sync_to_async(Agent.objects.create)(organization=org, name=name, role="r")


@pytest.mark.asyncio
async def test_live_invalidation_and_isolation(alice, org_a, org_b):
    stream = event_stream(alice, str(org_a.pk), None)
    assert "connected" in (await next_frame(stream))["comment"]
    await make_agent(org_b, "not for alice")
    agent = await make_agent(org_a, "for alice")
    frame = await next_frame(stream, "invalidate")
    data = json.loads(frame["data"])
    assert frame["id"] == data["id"] and data["organizationId"] == str(org_a.pk)
    assert f"agency.agent:id={agent.pk}" in data["tags"]
    assert str(org_b.pk) not in frame["data"]
    await stream.aclose()


@pytest.mark.asyncio
async def test_replay_delivers_exactly_the_missed_events_in_order(alice, org_a, org_b):
    first = await make_agent(org_a, "before")
    cursor = await sync_to_async(get_log().position)()
    missed = [await make_agent(org_a, f"missed {i}") for i in range(3)]
    await make_agent(org_b, "elsewhere")
    stream = event_stream(alice, str(org_a.pk), int(cursor))
    frames = [await next_frame(stream, "invalidate") for _ in range(3)]
    ids = [int(f["id"]) for f in frames]
    assert ids == sorted(ids) and all(i > int(cursor) for i in ids)
    for frame, agent in zip(frames, missed, strict=True):
        assert f"agency.agent:id={agent.pk}" in json.loads(frame["data"])["tags"]
    assert f"agency.agent:id={first.pk}" not in json.dumps(frames)
    live = await make_agent(org_a, "live")  # then live events, no duplicates
    frame = await next_frame(stream, "invalidate")
    assert f"agency.agent:id={live.pk}" in frame["data"] and int(frame["id"]) > ids[-1]
    await stream.aclose()


@pytest.mark.asyncio
async def test_position_older_than_the_log_resets(alice, org_a):
    stream = event_stream(alice, str(org_a.pk), 1)
    frame = await next_frame(stream, "reset")
    assert int(frame["id"]) >= 0 and json.loads(frame["data"])["reason"] == "gap"
    await stream.aclose()


@pytest.mark.asyncio
async def test_heartbeat_comments(alice, org_a, settings):
    settings.REACTIVE = {**settings.REACTIVE, "HEARTBEAT_SECONDS": 0.05}
    stream = event_stream(alice, str(org_a.pk), None)
    await next_frame(stream)
    assert (await next_frame(stream, "comment"))["comment"] == "heartbeat"
    await stream.aclose()


@pytest.mark.asyncio
async def test_removed_member_stream_ends(alice, bob, org_a):
    await sync_to_async(Membership.objects.create)(user=bob, organization=org_a)
    stream = event_stream(bob, str(org_a.pk), None)
    await next_frame(stream)
    await sync_to_async(Membership.objects.filter(user=bob, organization=org_a).delete)()
    assert (await next_frame(stream, "forbidden"))["event"] == "forbidden"
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(stream.__anext__(), WAIT)


@pytest.mark.asyncio
async def test_refusals(alice, bob, org_a):
    client = AsyncClient()
    assert (await client.get("/api/events", {"organizationId": str(org_a.pk)})).status_code == 401
    await sync_to_async(client.force_login)(bob)
    assert (await client.get("/api/events")).status_code == 400
    assert (await client.get("/api/events", {"organizationId": str(org_a.pk)})).status_code == 403
    assert (await client.get("/api/events", {"organizationId": "garbage"})).status_code == 403


def test_ack_records_position_per_user_and_client(alice, bob):
    for user, client_id, event_id in [
        (alice, "tab-1", "10"),
        (alice, "tab-2", "20"),
        (bob, "tab-1", "5"),
        (alice, "tab-1", "12"),
    ]:
        client = client_for(user)
        resp = client.post(
            "/api/events/ack",
            json.dumps({"eventId": event_id, "clientId": client_id}),
            content_type="application/json",
            HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
        )
        assert resp.status_code == 200, resp.content
    rows = {(p.user.username, p.client_id): p.event_id for p in ClientPosition.objects.all()}
    assert rows == {("alice", "tab-1"): "12", ("alice", "tab-2"): "20", ("bob", "tab-1"): "5"}


def test_ack_validation_and_identity(alice):
    anon = client_for(None)
    assert (
        anon.post(
            "/api/events/ack",
            "{}",
            content_type="application/json",
            HTTP_X_CSRFTOKEN=anon.cookies["csrftoken"].value,
        ).status_code
        == 401
    )
    client = client_for(alice)
    token = client.cookies["csrftoken"].value
    bad = client.post(
        "/api/events/ack",
        json.dumps({"eventId": "abc"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "eventId"
    no_csrf = client.post(
        "/api/events/ack", json.dumps({"eventId": "1"}), content_type="application/json"
    )
    assert no_csrf.status_code == 403


@pytest.mark.asyncio
async def test_closed_streams_leave_nothing_behind(alice, org_a):
    from reactive.fanout import get_hub

    streams = [event_stream(alice, str(org_a.pk), None) for _ in range(3)]
    for stream in streams:
        await next_frame(stream)
    hub = get_hub()
    assert hub.connections == 3
    for stream in streams:
        await stream.aclose()
    assert hub.connections == 0 and dict(hub.streams) == {}


async def open_stream(client: AsyncClient, org, **headers):
    response = await client.get("/api/events", {"organizationId": str(org.pk)}, headers=headers)
    assert response.status_code == 200
    stream = response.streaming_content
    await next_frame(stream)
    return stream


async def assert_ends_forbidden(stream) -> None:
    assert (await next_frame(stream, "forbidden"))["event"] == "forbidden"
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(stream.__anext__(), WAIT)


@pytest.mark.asyncio
async def test_revoked_token_ends_its_open_stream(alice, org_a):
    row, raw = await sync_to_async(ApiToken.issue)(alice, "sse")
    stream = await open_stream(AsyncClient(), org_a, Authorization=f"Bearer {raw}")
    await sync_to_async(row.revoke)()
    await assert_ends_forbidden(stream)


@pytest.mark.asyncio
async def test_deactivated_user_stream_ends(alice, org_a):
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    stream = await open_stream(client, org_a)
    alice.is_active = False
    await sync_to_async(alice.save)()
    await assert_ends_forbidden(stream)


@pytest.mark.asyncio
async def test_logged_out_session_stream_ends_at_next_check(alice, org_a, settings):
    settings.REACTIVE = {**settings.REACTIVE, "RECHECK_SECONDS": 0}
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    stream = await open_stream(client, org_a)
    await client.post("/api/auth/logout")  # deletes the session from the store
    await make_agent(org_a, "wakes the stream")  # any event makes it check again
    await assert_ends_forbidden(stream)


@pytest.mark.asyncio
async def test_logged_out_session_stream_ends_within_the_recheck_interval(alice, org_a, settings):
    """No event wakes it: the stream re-checks on its own, within RECHECK_SECONDS."""
    settings.REACTIVE = {**settings.REACTIVE, "RECHECK_SECONDS": 0.5, "HEARTBEAT_SECONDS": 60}
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    stream = await open_stream(client, org_a)
    await client.post("/api/auth/logout")  # deletes the session: no event, only the clock
    started = time.monotonic()
    await assert_ends_forbidden(stream)
    # Within the interval (and a busy machine's slack): the next heartbeat is a minute away.
    assert time.monotonic() - started <= 0.5 + 1.0


@pytest.mark.asyncio
async def test_recheck_deadlines_stay_within_the_promise(settings):
    from reactive import identity

    settings.REACTIVE = {**settings.REACTIVE, "RECHECK_SECONDS": 30}
    delays = [identity.recheck_delay() for _ in range(1000)]
    assert min(delays) >= 15 and max(delays) <= 27  # spread, yet never late
    assert max(delays) - min(delays) > 5


@pytest.mark.asyncio
async def test_shutdown_ends_streams_cleanly(alice, org_a):
    from reactive.fanout import get_hub

    stream = event_stream(alice, str(org_a.pk), None)
    await next_frame(stream)
    get_hub().shutdown()  # what SIGTERM does under uvicorn (reactive.fanout.shutdown)
    last = await next_frame(stream)
    assert last["comment"] == "shutdown" and 1000 <= int(last["retry"]) <= 3000
    with pytest.raises(StopAsyncIteration):  # the response completes: EventSource reconnects
        await asyncio.wait_for(stream.__anext__(), WAIT)
    late = event_stream(alice, str(org_a.pk), None)  # opened during the shutdown
    assert "connected" in (await next_frame(late))["comment"]
    assert (await next_frame(late))["comment"] == "shutdown"
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(late.__anext__(), WAIT)
