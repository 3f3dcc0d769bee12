"""Membership changes, live: a removed (or leaving) member's SSE stream ends and their
WebSocket subscriptions to the organization are refused at once, while their list of
organizations stays subscribed and loses it; others' member lists follow adds, role
changes and renames; and the last-owner rule holds when two owners race.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import AsyncClient

from agency import members
from agency.models import Agent, ApiToken, Membership
from reactive.functions import registry
from tests.reactive.test_consumers import connect, subscribe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]
WAIT = 5  # seconds any expected frame may take; the periodic re-check is every 30 s


def run(name: str, body: dict, user) -> object:
    return sync_to_async(registry[name].execute)(body, user=user)


async def next_message(comm, *, skip: tuple[str, ...] = ("invalidate",)) -> dict:
    """The next WebSocket message whose type is not in `skip`, bounded in time."""
    while True:
        message = await comm.receive_json_from(WAIT)
        if message["type"] not in skip:
            return message


@pytest.fixture
async def bob_in_a(alice, bob, org_a):
    return await sync_to_async(Membership.objects.create)(user=bob, organization=org_a)


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["removed", "leaves"])
async def test_sse_stream_ends_when_the_member_goes(alice, bob, org_a, bob_in_a, how):
    token = (await sync_to_async(ApiToken.issue)(bob, "sse"))[1]
    resp = await AsyncClient().get(
        "/api/events",
        {"organizationId": str(org_a.pk)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200
    frames = resp.streaming_content.__aiter__()
    try:
        assert b"connected" in await asyncio.wait_for(frames.__anext__(), WAIT)
        await run(
            "memberships.remove", {"id": str(bob_in_a.pk)}, alice if how == "removed" else bob
        )
        seen = []
        while not any("event: forbidden" in f for f in seen):
            seen.append((await asyncio.wait_for(frames.__anext__(), WAIT)).decode())
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(frames.__anext__(), WAIT)
    finally:
        await frames.aclose()
    again = await AsyncClient().get(
        "/api/events",
        {"organizationId": str(org_a.pk)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert again.status_code == 403


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["removed", "leaves"])
async def test_websocket_loses_the_organization_and_the_list_follows(
    alice, bob, org_a, org_b, bob_in_a, how
):
    comm, _, _ = await connect(bob)
    mine = await subscribe(comm, "orgs", "organizations.getAll", data=True)
    assert {o["name"] for o in mine["data"]} == {"Org A", "Org B"}
    for sub_id, name, body in [
        ("agents", "agents.getAll", {"organizationId": str(org_a.pk)}),
        ("members", "memberships.getAll", {"organizationId": str(org_a.pk)}),
        ("b", "agents.getAll", {"organizationId": str(org_b.pk)}),
    ]:
        reply = await subscribe(comm, sub_id, name, **body)
        assert reply["type"] == "subscribed", reply
    await run("memberships.remove", {"id": str(bob_in_a.pk)}, alice if how == "removed" else bob)
    refused, lists = set(), []
    while len(refused) < 2 or not lists:
        message = await next_message(comm)
        if message["type"] == "error":
            assert message["status"] == 403, message
            refused.add(message["id"])
        else:
            assert message["type"] == "result" and message["id"] == "orgs", message
            lists.append([o["name"] for o in message["data"]])
    assert refused == {"agents", "members"}  # the subscriptions to org A, not the list
    assert lists[-1] == ["Org B"]
    # org A's writes reach bob no more; org B's still do, and so does his list
    await sync_to_async(Agent.objects.create)(organization=org_a, name="secret", role="r")
    await sync_to_async(Agent.objects.create)(organization=org_b, name="visible", role="r")
    message = await next_message(comm, skip=())
    while message["id"] == "orgs":  # the removal's change reaches the list by two streams
        assert [o["name"] for o in message["data"]] == ["Org B"], message
        message = await next_message(comm, skip=())
    assert message["type"] == "invalidate" and message["id"] == "b", message
    await sync_to_async(Membership.objects.create)(user=bob, organization=org_a, role="member")
    names: set[str] = set()
    while names != {"Org A", "Org B"}:
        message = await next_message(comm)
        assert message["id"] == "orgs", message
        names = {o["name"] for o in message["data"]}
    await comm.disconnect()


@pytest.mark.asyncio
async def test_member_lists_follow_adds_role_changes_and_renames(alice, bob, org_a, make_user):
    carol = await sync_to_async(make_user)("carol")
    await sync_to_async(Membership.objects.create)(user=carol, organization=org_a)
    comm, _, _ = await connect(carol)
    reply = await subscribe(
        comm, "m", "memberships.getAll", data=True, organizationId=str(org_a.pk)
    )
    assert [m["username"] for m in reply["data"]] == ["alice", "carol"]
    mine = await subscribe(comm, "o", "organizations.getAll", data=True)
    assert mine["data"][0]["role"] == "member"

    added = await run(
        "memberships.add", {"organizationId": str(org_a.pk), "username": "bob"}, alice
    )
    message = await next_message(comm)
    assert message["id"] == "m" and [m["username"] for m in message["data"]][-1] == "bob"

    ours = await sync_to_async(Membership.objects.get)(user=carol, organization=org_a)
    await run("memberships.update", {"id": str(ours.pk), "role": "admin"}, alice)
    got: dict[str, dict] = {}
    while set(got) != {"m", "o"}:
        message = await next_message(comm)
        got[message["id"]] = message
    assert {m["username"]: m["role"] for m in got["m"]["data"]}["carol"] == "admin"
    assert got["o"]["data"][0]["role"] == "admin"

    def rename() -> None:
        bob.display_name = "Bob the Builder"
        bob.save()

    await sync_to_async(rename)()
    message = await next_message(comm)
    while message["id"] != "m":
        message = await next_message(comm)
    names = {m["username"]: m["name"] for m in message["data"]}
    assert names["bob"] == "Bob the Builder" and added["name"] == "bob"
    await comm.disconnect()


# --- the last owner, under concurrency --------------------------------------------------------


def _waiting_for_a_lock(timeout: float) -> bool:
    """Whether another session is blocked on a row lock within `timeout` seconds (PostgreSQL)."""
    end = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < end:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False


@pytest.mark.services
@pytest.mark.parametrize("write", ["leave", "demote"])
def test_two_owners_racing_leave_one_owner(alice, bob, org_a, monkeypatch, write):
    """Two owners each leave (or demote the other) at once: one succeeds, the other is refused
    (409 or 403), and the organization keeps an owner. The first holds its locks until the
    second is seen waiting on them, so the race is real, not a matter of timing."""
    assert connection.vendor == "postgresql"
    bob_row = Membership.objects.create(user=bob, organization=org_a, role="owner")
    alice_row = Membership.objects.get(user=alice, organization=org_a)
    first_locked = threading.Event()
    original = members._keep_an_owner

    def hold(target, owners, field):
        if threading.current_thread().name == "first":
            first_locked.set()
            assert _waiting_for_a_lock(WAIT), "the second write never waited for the lock"
        return original(target, owners, field)

    monkeypatch.setattr(members, "_keep_an_owner", hold)
    results: dict[str, object] = {}

    def attempt(user, target_row) -> None:
        name = threading.current_thread().name
        body = (
            {"id": str(target_row.pk)}
            if write == "leave"
            else {"id": str(target_row.pk), "role": "member"}
        )
        fn = "memberships.remove" if write == "leave" else "memberships.update"
        try:
            registry[fn].execute(body, user=user)
            results[name] = 200
        except Exception as exc:  # a ReactiveError: its status
            results[name] = getattr(exc, "status", repr(exc))
        finally:
            connections.close_all()

    pairs = (
        [(alice, alice_row), (bob, bob_row)]
        if write == "leave"
        else [(alice, bob_row), (bob, alice_row)]
    )
    first = threading.Thread(target=attempt, args=pairs[0], name="first")
    second = threading.Thread(target=attempt, args=pairs[1], name="second")
    first.start()
    assert first_locked.wait(WAIT)
    second.start()
    first.join(WAIT * 2)
    second.join(WAIT * 2)
    assert results["first"] == 200
    assert results["second"] in (403, 409), results
    assert Membership.objects.filter(organization=org_a, role="owner").count() == 1
