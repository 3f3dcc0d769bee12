"""End to end through a real ASGI server process: SSE and WebSocket clients see mutations."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from agency.models import ApiToken
from tests.conftest import SERVICES
from tests.live import SSE, LiveServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
WAIT = 10


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("live"))
    yield srv
    srv.stop()


@pytest.fixture
def token(alice):
    return ApiToken.issue(alice, "live")[1]


def api(server, token) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url, timeout=WAIT, headers={"Authorization": f"Bearer {token}"}
    )


async def create(client, org, name="x"):
    resp = await client.post(
        "/api/rx/agents.create", json={"organizationId": str(org.pk), "name": name, "role": "r"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


async def test_sse_client_sees_a_mutation(server, token, org_a):
    async with api(server, token) as client, SSE(client, {"organizationId": str(org_a.pk)}) as sse:
        assert sse.response.status_code == 200
        agent = await create(client, org_a)
        event = await asyncio.wait_for(sse.next(), WAIT)
    assert event["id"] == event["json"]["id"]
    assert event["json"]["organizationId"] == str(org_a.pk)
    assert f"agency.agent:id={agent['id']}" in event["json"]["tags"]


async def test_reconnect_with_last_event_id_replays_missed_in_order(server, token, org_a):
    async with api(server, token) as client:
        async with SSE(client, {"organizationId": str(org_a.pk)}) as sse:
            await create(client, org_a, "seen")
            last = (await asyncio.wait_for(sse.next(), WAIT))["id"]
        missed = [await create(client, org_a, f"missed{i}") for i in range(3)]
        async with SSE(client, {"organizationId": str(org_a.pk)}, {"Last-Event-ID": last}) as sse:
            events = [await asyncio.wait_for(sse.next(), WAIT) for _ in range(3)]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and ids[0] > int(last)
    for event, agent in zip(events, missed, strict=True):
        assert f"agency.agent:id={agent['id']}" in event["json"]["tags"]


async def test_since_cursor_closes_the_gap_between_fetch_and_subscribe(server, token, org_a):
    async with api(server, token) as client:
        cursor = (
            await client.get("/api/rx/agents.getAll", params={"organizationId": str(org_a.pk)})
        ).json()["cursor"]
        agent = await create(client, org_a, "between")
        async with SSE(client, {"organizationId": str(org_a.pk), "since": cursor}) as sse:
            event = await asyncio.wait_for(sse.next(), WAIT)
    assert f"agency.agent:id={agent['id']}" in event["json"]["tags"]


async def test_other_organization_stream_receives_nothing(server, token, alice, bob, org_a, org_b):
    bob_token = await asyncio.to_thread(lambda: ApiToken.issue(bob, "live")[1])
    async with (
        api(server, token) as client_a,
        api(server, bob_token) as client_b,
        SSE(client_b, {"organizationId": str(org_b.pk)}) as sse,
    ):
        await create(client_a, org_a, "private")
        mine = await create(client_b, org_b, "bobs")
        event = await asyncio.wait_for(sse.next(), WAIT)
    assert f"agency.agent:id={mine['id']}" in event["json"]["tags"]
    assert str(org_a.pk) not in json.dumps(event)


async def test_websocket_client_sees_a_mutation(server, token, org_a):
    ws_url = server.url.replace("http", "ws") + "/ws/reactive/"
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        websockets.connect(ws_url, additional_headers=headers) as ws,
        api(server, token) as client,
    ):
        await ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "id": "a",
                    "name": "agents.getAll",
                    "input": {"organizationId": str(org_a.pk)},
                }
            )
        )
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert reply["type"] == "subscribed"
        await create(client, org_a)
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert message["type"] == "invalidate" and message["id"] == "a"


@pytest.mark.services
async def test_write_on_one_process_reaches_clients_of_another(server, token, org_a, tmp_path):
    assert SERVICES
    second = await asyncio.to_thread(LiveServer, tmp_path)
    try:
        async with (
            api(server, token) as writer,
            api(second, token) as reader,
            SSE(reader, {"organizationId": str(org_a.pk)}) as sse,
        ):
            agent = await create(writer, org_a, "cross-process")
            event = await asyncio.wait_for(sse.next(), WAIT)
    finally:
        await asyncio.to_thread(second.stop)
    assert f"agency.agent:id={agent['id']}" in event["json"]["tags"]


@pytest.mark.services
async def test_open_streams_hold_no_database_connection(token, org_a, tmp_path):
    """Many SSE streams on a server whose pool has 2 connections: queries still answer."""
    small = await asyncio.to_thread(LiveServer, tmp_path, DB_POOL_MIN="1", DB_POOL_MAX="2")
    try:
        async with api(small, token) as client:
            streams = [SSE(client, {"organizationId": str(org_a.pk)}) for _ in range(6)]
            opened = [await asyncio.wait_for(s.__aenter__(), WAIT) for s in streams]
            assert all(s.response.status_code == 200 for s in opened)
            resp = await asyncio.wait_for(
                client.get("/api/rx/agents.getAll", params={"organizationId": str(org_a.pk)}), WAIT
            )
            assert resp.status_code == 200
            for s in opened:
                await s.__aexit__(None, None, None)
    finally:
        await asyncio.to_thread(small.stop)
