"""The WebSocket consumer, driven through Channels' communicator in this process."""

from __future__ import annotations

import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from agency.models import Agent, ApiToken, Membership
from teamhub.asgi import application
from tests.conftest import client_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("hub"),
]
WAIT = 5  # seconds any expected message may take


async def connect(
    user=None, *, origin: bytes | None = None, token: str | None = None, cookie: str | None = None
):
    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
        user = None
    if user is not None and token is None:
        token = (await sync_to_async(ApiToken.issue)(user, "ws"))[1]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = WebsocketCommunicator(application, "/ws/reactive/", headers=headers)
    connected, code = await comm.connect(timeout=WAIT)
    return comm, connected, code


async def refused(comm, connected) -> int:
    """A refusal completes the handshake, then closes at once: the close code."""
    assert connected  # not an HTTP 403 on the upgrade, which a browser sees as 1006
    closed = await comm.receive_output(WAIT)
    assert closed["type"] == "websocket.close"
    return closed["code"]


async def subscribe(comm, sub_id, name, data=False, since=None, **inp):
    message = {"type": "subscribe", "id": sub_id, "name": name, "input": inp, "data": data}
    if since is not None:
        message["since"] = since
    await comm.send_json_to(message)
    return await comm.receive_json_from(WAIT)


async def session_of(user):
    """A stored session of `user` (logged in as a browser would be)."""
    from importlib import import_module

    client = await sync_to_async(client_for)(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return import_module(settings.SESSION_ENGINE).SessionStore(key)


def create_agent(org, name="new"):
    return sync_to_async(Agent.objects.create)(organization=org, name=name, role="r")


async def test_anonymous_is_refused():
    comm, connected, _ = await connect()
    assert await refused(comm, connected) == 4401


async def test_bad_token_is_refused():
    comm, connected, _ = await connect(token="not-a-token")
    assert await refused(comm, connected) == 4401


async def test_logged_out_session_is_refused(alice):
    session = await session_of(alice)
    await sync_to_async(session.delete)()
    comm, connected, _ = await connect(cookie=session.session_key)
    assert await refused(comm, connected) == 4401


async def test_foreign_origin_is_refused(alice):
    comm, connected, _ = await connect(alice, origin=b"https://evil.example")
    assert await refused(comm, connected) == 1008
    comm, connected, _ = await connect(alice, origin=b"http://localhost")
    assert connected
    await comm.disconnect()


async def test_subscribe_then_invalidate_only_own_subscriptions(alice, bob, org_a, org_b, agent_a):
    comm, connected, _ = await connect(alice)
    assert connected
    reply = await subscribe(comm, "s1", "agents.getAll", organizationId=str(org_a.pk))
    assert reply["type"] == "subscribed" and reply["id"] == "s1"
    assert f"agency.agent:organization_id={org_a.pk}" in reply["tags"]
    await create_agent(org_b, "elsewhere")  # another organization: nothing for alice
    await create_agent(org_a, "here")
    message = await comm.receive_json_from(WAIT)
    assert message["type"] == "invalidate" and message["id"] == "s1"
    assert message["tags"] == [f"agency.agent:organization_id={org_a.pk}"]
    assert await comm.receive_nothing(0.2)
    await comm.disconnect()


async def test_non_member_subscription_is_forbidden(bob, org_a):
    comm, _, _ = await connect(bob)
    reply = await subscribe(comm, "x", "agents.getAll", organizationId=str(org_a.pk))
    assert reply["type"] == "error" and reply["status"] == 403 and reply["id"] == "x"
    reply = await subscribe(comm, "y", "agents.nothing")
    assert reply["status"] == 404
    reply = await subscribe(comm, "z", "agents.getAll", organizationId="nope")
    assert reply["status"] == 422
    await comm.disconnect()


async def test_fresh_result_pushed_on_request(alice, org_a, agent_a):
    comm, _, _ = await connect(alice)
    reply = await subscribe(comm, "d", "agents.getAll", data=True, organizationId=str(org_a.pk))
    assert [a["name"] for a in reply["data"]] == ["Agent A"]
    await create_agent(org_a, "pushed")
    message = await comm.receive_json_from(WAIT)
    assert message["type"] == "result"
    assert {a["name"] for a in message["data"]} == {"Agent A", "pushed"}
    await comm.disconnect()


async def test_unsubscribe_stops_invalidations(alice, org_a):
    comm, _, _ = await connect(alice)
    await subscribe(comm, "u", "agents.getAll", organizationId=str(org_a.pk))
    await subscribe(comm, "t", "tools.getAll", organizationId=str(org_a.pk))
    await comm.send_json_to({"type": "unsubscribe", "id": "u"})
    assert (await comm.receive_json_from(WAIT))["type"] == "unsubscribed"
    await create_agent(org_a)
    from agency.models import Tool

    await sync_to_async(Tool.objects.create)(organization=org_a, name="t")
    message = await comm.receive_json_from(WAIT)
    assert message["type"] == "invalidate" and message["id"] == "t"  # not "u"
    await comm.disconnect()


async def test_removed_member_loses_subscription_without_reconnecting(alice, bob, org_a):
    await sync_to_async(Membership.objects.create)(user=bob, organization=org_a)
    comm, _, _ = await connect(bob)
    reply = await subscribe(comm, "m", "agents.getAll", organizationId=str(org_a.pk))
    assert reply["type"] == "subscribed"
    await sync_to_async(Membership.objects.filter(user=bob, organization=org_a).delete)()
    message = await comm.receive_json_from(WAIT)
    while message["type"] == "invalidate":  # the membership change may invalidate first
        message = await comm.receive_json_from(WAIT)
    assert message["type"] == "error" and message["status"] == 403 and message["id"] == "m"
    await create_agent(org_a, "secret")
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_resume_from_cursor_replays_missed_change(alice, org_a):
    comm, _, _ = await connect(alice)
    reply = await subscribe(comm, "r", "agents.getAll", organizationId=str(org_a.pk))
    cursor = reply["cursor"]
    await comm.disconnect()
    await create_agent(org_a, "while away")
    comm, _, _ = await connect(alice)
    reply = await subscribe(comm, "r", "agents.getAll", since=cursor, organizationId=str(org_a.pk))
    assert reply["type"] == "subscribed"
    message = await comm.receive_json_from(WAIT)
    assert message["type"] == "invalidate" and int(message["eventId"]) > int(cursor)
    reply = await subscribe(comm, "old", "agents.getAll", since="1", organizationId=str(org_a.pk))
    assert (await comm.receive_json_from(WAIT))["type"] == "reset"
    await comm.disconnect()


async def test_garbage_frames_and_limits(alice, org_a, settings):
    settings.REACTIVE = {**settings.REACTIVE, "MAX_SUBSCRIPTIONS": 2, "MAX_MESSAGES_PER_SECOND": 5}
    comm, _, _ = await connect(alice)
    await comm.send_to(text_data="{not json")
    assert (await comm.receive_json_from(WAIT))["status"] == 400
    await comm.send_json_to({"type": "launch"})
    assert (await comm.receive_json_from(WAIT))["status"] == 400
    for i in range(2):
        await subscribe(comm, f"s{i}", "tools.getAll", organizationId=str(org_a.pk))
    reply = await subscribe(comm, "s3", "tools.getAll", organizationId=str(org_a.pk))
    assert reply["status"] == 429 and reply["error"]["code"] == "too_many_subscriptions"
    statuses = []
    limited = None
    for _ in range(20):
        await comm.send_json_to({"type": "ping"})
        reply = await comm.receive_json_from(WAIT)
        statuses.append(reply.get("status"))
        limited = reply if reply.get("status") == 429 else limited
    assert 429 in statuses  # the flood is throttled, the connection stays up
    assert {k: limited[k] for k in ("type", "id", "status")} == {
        "type": "error",
        "id": None,
        "status": 429,
    }
    await comm.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 70_000}))
    closed = await comm.receive_output(WAIT)
    assert closed["type"] == "websocket.close" and closed["code"] == 1009


async def test_binary_frame_closes(alice):
    comm, _, _ = await connect(alice)
    await comm.send_to(bytes_data=b"\x00\x01")
    closed = await comm.receive_output(WAIT)
    assert closed["type"] == "websocket.close" and closed["code"] == 1008


async def test_revoked_token_cannot_connect(alice):
    row, raw = await sync_to_async(ApiToken.issue)(alice, "ws")
    await sync_to_async(row.revoke)()
    comm, connected, _ = await connect(token=raw)
    assert await refused(comm, connected) == 4401


async def test_revoked_token_closes_open_connection(alice, org_a):
    row, raw = await sync_to_async(ApiToken.issue)(alice, "ws")
    comm, connected, _ = await connect(token=raw)
    assert connected
    assert (await subscribe(comm, "a", "agents.getAll", organizationId=str(org_a.pk)))["type"]
    await sync_to_async(row.revoke)()
    closed = await comm.receive_output(WAIT)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_deactivated_user_connection_closes(alice, org_a):
    comm, connected, _ = await connect(alice)
    assert connected
    alice.is_active = False
    await sync_to_async(alice.save)()
    closed = await comm.receive_output(WAIT)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_logged_out_session_closes_within_the_recheck_interval(alice, org_a, settings):
    """No event wakes it: the connection re-checks on its own, within RECHECK_SECONDS."""
    settings.REACTIVE = {**settings.REACTIVE, "RECHECK_SECONDS": 0.5, "HEARTBEAT_SECONDS": 60}
    session = await session_of(alice)
    comm, connected, _ = await connect(cookie=session.session_key)
    assert connected
    reply = await subscribe(comm, "a", "agents.getAll", organizationId=str(org_a.pk))
    assert reply["type"] == "subscribed"
    await sync_to_async(session.delete)()  # logged out elsewhere: no event, only the clock
    started = time.monotonic()
    closed = await comm.receive_output(WAIT)
    assert closed == {"type": "websocket.close", "code": 4401}
    # Within the interval (and a busy machine's slack): the next heartbeat is a minute away.
    assert time.monotonic() - started <= 0.5 + 1.0


async def test_shutdown_closes_with_1012_and_refuses_new_streams(alice, org_a):
    from reactive.fanout import get_hub

    comm, connected, _ = await connect(alice)
    assert connected
    await subscribe(comm, "a", "agents.getAll", organizationId=str(org_a.pk))
    get_hub().shutdown()  # what SIGTERM does under uvicorn (reactive.fanout.shutdown)
    assert await comm.receive_output(WAIT) == {"type": "websocket.close", "code": 1012}
    late, connected, _ = await connect(alice)  # opened during the shutdown: closed at once
    assert connected
    assert await late.receive_output(WAIT) == {"type": "websocket.close", "code": 1012}
