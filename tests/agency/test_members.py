"""Members and roles, organization settings and the catalogs, through the HTTP API.

The authorization matrix (role x operation, for every new function and the
writes members keep), the last-owner rules, memberships.add's 404 and 409,
leaving, the owner field following the owners, and the settings' limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from agency.models import Agent, Membership, MessageType, Organization, ToolType, User
from tests.conftest import client_for
from tests.system.test_security import call_function

pytestmark = pytest.mark.django_db(transaction=True)
ROLES = ("owner", "admin", "member", "outsider", "anonymous")


@pytest.fixture
def team(make_user, make_org) -> dict[str, Any]:
    """An organization with an owner, an admin, a member, a second member (the target of
    the membership writes) and an agent; an outsider; a newcomer who belongs nowhere."""
    people = {name: make_user(name) for name in ("owner", "admin", "member", "target")}
    people["outsider"] = make_user("outsider")
    people["newcomer"] = make_user("newcomer")
    org = make_org(people["owner"], name="Team")
    for name, role in (("admin", "admin"), ("member", "member"), ("target", "member")):
        Membership.objects.create(user=people[name], organization=org, role=role)
    agent = Agent.objects.create(organization=org, name="Scout", role="r")
    make_org(people["outsider"], name="Elsewhere")
    return {"org": org, "agent": agent, **people}


def membership(team: dict[str, Any], who: str) -> str:
    return str(Membership.objects.get(user=team[who], organization=team["org"]).pk)


def call(team: dict[str, Any], who: str, name: str, body: dict[str, Any]):
    """`name` called over HTTP by `who` (a role of `team`, or "anonymous")."""
    from reactive.functions import registry

    client = client_for(None if who == "anonymous" else team[who])
    return call_function(client, registry[name], body)


def org_id(team: dict[str, Any]) -> str:
    return str(team["org"].pk)


# operation -> (input, expected status per role); each case runs in a fresh team.
Case = tuple[Callable[[dict[str, Any]], dict[str, Any]], dict[str, int]]
READERS = {"owner": 200, "admin": 200, "member": 200, "outsider": 403, "anonymous": 401}
MANAGERS = {"owner": 200, "admin": 200, "member": 403, "outsider": 403, "anonymous": 401}
OWNERS = {"owner": 200, "admin": 403, "member": 403, "outsider": 403, "anonymous": 401}
SIGNED_IN = {"owner": 200, "admin": 200, "member": 200, "outsider": 200, "anonymous": 401}
MATRIX: dict[str, Case] = {
    "memberships.getAll": (lambda t: {"organizationId": org_id(t)}, READERS),
    "memberships.add": (
        lambda t: {"organizationId": org_id(t), "username": "newcomer"},
        MANAGERS,
    ),
    "memberships.add by email as admin": (
        lambda t: {"organizationId": org_id(t), "email": "NEWCOMER@example.test", "role": "admin"},
        MANAGERS,
    ),
    "memberships.add as owner": (
        lambda t: {"organizationId": org_id(t), "username": "newcomer", "role": "owner"},
        OWNERS,
    ),
    "memberships.update": (lambda t: {"id": membership(t, "target"), "role": "admin"}, MANAGERS),
    "memberships.update to owner": (
        lambda t: {"id": membership(t, "target"), "role": "owner"},
        OWNERS,
    ),
    "memberships.update of the admin": (
        lambda t: {"id": membership(t, "admin"), "role": "member"},
        MANAGERS,
    ),
    "memberships.remove": (lambda t: {"id": membership(t, "target")}, MANAGERS),
    "memberships.remove of the admin": (
        lambda t: {"id": membership(t, "admin")},
        MANAGERS,
    ),
    "organizations.update": (lambda t: {"id": org_id(t), "data": {"name": "Renamed"}}, MANAGERS),
    "organizations.update settings": (
        lambda t: {"id": org_id(t), "data": {"settings": {"timeZone": "Europe/Paris"}}},
        MANAGERS,
    ),
    "organizations.getSettings": (lambda t: {"id": org_id(t)}, READERS),
    "organizations.getOne": (lambda t: {"id": org_id(t)}, READERS),
    "toolTypes.getAll": (lambda t: {}, SIGNED_IN),
    "messageTypes.getAll": (lambda t: {}, SIGNED_IN),
    # what members (not only managers) do: agents, tools, messages
    "agents.create": (
        lambda t: {"organizationId": org_id(t), "name": "New", "role": "r"},
        READERS,
    ),
    "agents.update": (lambda t: {"id": str(t["agent"].pk), "data": {"name": "Renamed"}}, READERS),
    "agents.delete": (lambda t: {"id": str(t["agent"].pk)}, READERS),
    "tools.create": (lambda t: {"organizationId": org_id(t), "name": "Tool"}, READERS),
    "messages.create": (
        lambda t: {"organizationId": org_id(t), "fromAgentId": str(t["agent"].pk), "content": "hi"},
        READERS,
    ),
}


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("case", sorted(MATRIX))
def test_authorization_matrix(team, case, who):
    make_input, expected = MATRIX[case]
    name = case.split(" ")[0]
    before = sorted(Membership.objects.values_list("user__username", "role"))
    resp = call(team, who, name, make_input(team))
    assert resp.status_code == expected[who], (case, who, resp.content[:300])
    if resp.status_code != 200 and name.startswith(("memberships.", "organizations.update")):
        assert sorted(Membership.objects.values_list("user__username", "role")) == before
        assert Organization.objects.get(pk=team["org"].pk).name == "Team"


# --- the last owner ------------------------------------------------------------------------------


def owners(team: dict[str, Any]) -> list[str]:
    rows = Membership.objects.filter(organization=team["org"], role="owner")
    return sorted(rows.values_list("user__username", flat=True))


def status(resp) -> tuple[int, list[str]]:
    body = resp.json()
    return resp.status_code, [f["field"] for f in body.get("error", {}).get("fields", [])]


def test_the_only_owner_can_neither_step_down_nor_leave(team):
    mine = membership(team, "owner")
    for role in ("admin", "member"):
        resp = call(team, "owner", "memberships.update", {"id": mine, "role": role})
        assert status(resp) == (409, ["role"]), resp.content
    assert status(call(team, "owner", "memberships.remove", {"id": mine})) == (409, ["id"])
    # setting the role it has is no change, and allowed
    assert (
        call(team, "owner", "memberships.update", {"id": mine, "role": "owner"}).status_code == 200
    )
    assert owners(team) == ["owner"]


def test_with_two_owners_one_may_step_down_then_not_the_other(team):
    target = membership(team, "target")
    assert (
        call(team, "owner", "memberships.update", {"id": target, "role": "owner"}).status_code
        == 200
    )
    assert owners(team) == ["owner", "target"]
    # the owner who is not the organization's `owner` field steps down, then the other cannot
    resp = call(team, "owner", "memberships.update", {"id": target, "role": "member"})
    assert resp.status_code == 200 and resp.json()["data"]["role"] == "member"
    mine = membership(team, "owner")
    assert call(team, "owner", "memberships.remove", {"id": mine}).status_code == 409
    # two owners again: one leaves, the other stays
    call(team, "owner", "memberships.update", {"id": target, "role": "owner"})
    assert call(team, "target", "memberships.remove", {"id": target}).status_code == 200
    assert owners(team) == ["owner"]


def test_only_an_owner_grants_or_removes_owner(team):
    target = membership(team, "target")
    admin = membership(team, "admin")
    assert (
        call(team, "admin", "memberships.update", {"id": target, "role": "owner"}).status_code
        == 403
    )
    assert (
        call(team, "admin", "memberships.update", {"id": admin, "role": "owner"}).status_code == 403
    )
    mine = membership(team, "owner")
    for body in ({"id": mine, "role": "admin"}, {"id": mine, "role": "member"}):
        assert call(team, "admin", "memberships.update", body).status_code == 403
    assert call(team, "admin", "memberships.remove", {"id": mine}).status_code == 403
    # an admin manages admins and members, itself included
    assert (
        call(team, "admin", "memberships.update", {"id": target, "role": "admin"}).status_code
        == 200
    )
    assert (
        call(team, "admin", "memberships.update", {"id": admin, "role": "member"}).status_code
        == 200
    )
    # now a member: it manages nothing, but may still leave
    assert (
        call(team, "admin", "memberships.update", {"id": target, "role": "member"}).status_code
        == 403
    )
    assert call(team, "admin", "memberships.remove", {"id": admin}).status_code == 200
    assert owners(team) == ["owner"]


def test_owner_field_follows_the_owners(team):
    org = team["org"]
    target = membership(team, "target")
    call(team, "owner", "memberships.update", {"id": target, "role": "owner"})
    assert Organization.objects.get(pk=org.pk).owner == team["owner"]
    # the user the field names steps down: it moves to the remaining owner
    resp = call(
        team, "owner", "memberships.update", {"id": membership(team, "owner"), "role": "admin"}
    )
    assert resp.status_code == 200
    assert Organization.objects.get(pk=org.pk).owner == team["target"]
    got = call(team, "target", "organizations.getOne", {"id": str(org.pk)}).json()["data"]
    assert got["ownerId"] == str(team["target"].pk)
    # and again when that owner leaves
    call(team, "target", "memberships.update", {"id": membership(team, "admin"), "role": "owner"})
    assert call(team, "target", "memberships.remove", {"id": target}).status_code == 200
    assert Organization.objects.get(pk=org.pk).owner == team["admin"]


def test_leaving(team):
    for who in ("member", "admin"):
        mine = membership(team, who)
        assert call(team, who, "memberships.remove", {"id": mine}).status_code == 200
        orgs = call(team, who, "organizations.getAll", {}).json()["data"]
        assert orgs == []
        assert call(team, who, "agents.getAll", {"organizationId": org_id(team)}).status_code == 403
    # a member cannot remove another member
    other = membership(team, "target")
    assert (
        call(team, "target", "memberships.getAll", {"organizationId": org_id(team)}).status_code
        == 200
    )
    resp = call(team, "target", "memberships.remove", {"id": membership(team, "owner")})
    assert resp.status_code == 403 and Membership.objects.filter(pk=other).exists()


# --- memberships.add ------------------------------------------------------------------------------


def test_add_answers_the_member_and_lists_it(team):
    resp = call(
        team, "admin", "memberships.add", {"organizationId": org_id(team), "username": "newcomer"}
    )
    assert resp.status_code == 200, resp.content
    added = resp.json()["data"]
    assert set(added) == {"id", "userId", "username", "name", "role", "createdAt"}
    assert added["username"] == "newcomer" and added["role"] == "member"
    listed = call(team, "newcomer", "memberships.getAll", {"organizationId": org_id(team)})
    rows = listed.json()["data"]
    assert [r["username"] for r in rows] == ["owner", "admin", "member", "target", "newcomer"]
    assert rows[-1] == added
    assert [r["role"] for r in rows][:2] == ["owner", "admin"]


def test_add_unknown_user_is_404_naming_the_field(team, make_user):
    org = org_id(team)
    for body, field in [
        ({"username": "nobody"}, "username"),
        ({"email": "nobody@example.test"}, "email"),
    ]:
        resp = call(team, "owner", "memberships.add", {"organizationId": org, **body})
        assert status(resp) == (404, [field]), resp.content
    # an inactive user is not found either
    make_user("sleeper", is_active=False)
    resp = call(team, "owner", "memberships.add", {"organizationId": org, "username": "sleeper"})
    assert status(resp) == (404, ["username"])


def test_add_a_member_again_is_409(team):
    org = org_id(team)
    for body, field in [
        ({"username": "member"}, "username"),
        ({"email": "OWNER@example.test"}, "email"),
    ]:
        resp = call(team, "owner", "memberships.add", {"organizationId": org, **body})
        assert status(resp) == (409, [field]), resp.content
    assert Membership.objects.filter(organization=team["org"]).count() == 4


def test_add_needs_exactly_one_of_username_and_email(team, make_user):
    org = org_id(team)
    for body in ({}, {"username": "newcomer", "email": "newcomer@example.test"}):
        resp = call(team, "owner", "memberships.add", {"organizationId": org, **body})
        assert status(resp) == (422, ["username", "email"]), resp.content
    for body, field in [
        ({"username": "newcomer", "role": "boss"}, "role"),
        ({"email": "not-an-email"}, "email"),
        ({"username": ""}, "username"),
        ({"username": None}, "username"),
    ]:
        resp = call(team, "owner", "memberships.add", {"organizationId": org, **body})
        assert status(resp) == (422, [field]), resp.content
    # two users sharing an email: ambiguous, so the username is asked for
    make_user("twin1"), make_user("twin2")
    User.objects.filter(username__startswith="twin").update(email="twin@example.test")
    resp = call(
        team, "owner", "memberships.add", {"organizationId": org, "email": "twin@example.test"}
    )
    assert status(resp) == (422, ["email"])


def test_update_and_remove_of_unknown_membership_are_404(team):
    zero = "00000000-0000-0000-0000-000000000000"
    assert (
        call(team, "owner", "memberships.update", {"id": zero, "role": "admin"}).status_code == 404
    )
    assert call(team, "owner", "memberships.remove", {"id": zero}).status_code == 404
    # another organization's membership: 403, and it stays
    theirs = Membership.objects.get(user=team["outsider"])
    resp = call(team, "owner", "memberships.remove", {"id": str(theirs.pk)})
    assert resp.status_code == 403 and Membership.objects.filter(pk=theirs.pk).exists()


# --- names, settings, catalogs ------------------------------------------------------------------


def test_member_name_and_rename_invalidates_the_list(team):
    body = {"organizationId": org_id(team)}
    first = call(team, "member", "memberships.getAll", body)
    assert first["X-Reactive-Cache"] == "miss"
    assert call(team, "member", "memberships.getAll", body)["X-Reactive-Cache"] == "hit"
    user = team["target"]
    user.display_name = "Tess Target"
    user.save()
    resp = call(team, "member", "memberships.getAll", body)
    assert resp["X-Reactive-Cache"] == "miss"
    names = {r["username"]: r["name"] for r in resp.json()["data"]}
    assert names["target"] == "Tess Target" and names["owner"] == "owner"
    # a login (last_login only) leaves the cached list alone
    User.objects.get(pk=user.pk).save(update_fields=["last_login"])
    assert call(team, "member", "memberships.getAll", body)["X-Reactive-Cache"] == "hit"


def test_settings_are_replaced_and_read_back(team):
    settings = {"timeZone": "America/New_York", "digest": {"hour": 9, "days": ["mon", "thu"]}}
    resp = call(
        team, "admin", "organizations.update", {"id": org_id(team), "data": {"settings": settings}}
    )
    assert resp.status_code == 200 and resp.json()["data"]["settings"] == settings
    got = call(team, "member", "organizations.getSettings", {"id": org_id(team)})
    assert got.status_code == 200 and got.json()["data"] == settings
    # name alone keeps the settings; an empty `data` changes nothing
    call(team, "owner", "organizations.update", {"id": org_id(team), "data": {"name": "New name"}})
    resp = call(team, "owner", "organizations.update", {"id": org_id(team), "data": {}})
    assert resp.status_code == 200
    org = Organization.objects.get(pk=team["org"].pk)
    assert org.name == "New name" and org.settings == settings


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "value,field",
    [
        ({"blob": "x" * 16_400}, "data.settings"),
        ({f"k{i}": "y" * 160 for i in range(100)}, "data.settings"),  # 100 keys, over 16 KB
        ({f"k{i}": 1 for i in range(101)}, "data.settings"),
        (deep(6), "data.settings"),
        ({"a": [[[[{"b": 1}]]]]}, "data.settings"),
        ({"timeZone": "Mars/Olympus_Mons"}, "data.settings"),
        ({"timeZone": "../../etc/passwd"}, "data.settings"),
        ({"timeZone": ""}, "data.settings"),
        ({"timeZone": 1}, "data.settings"),
        ({"timeZone": None}, "data.settings"),
        ([], "data.settings"),
        (None, "data.settings"),
        ({"name": ""}, "data.name"),
    ],
    ids=lambda v: json.dumps(v)[:30] if not isinstance(v, str) else v,
)
def test_settings_limits(team, value, field):
    data = value if field == "data.name" else {"settings": value}
    resp = call(team, "owner", "organizations.update", {"id": org_id(team), "data": data})
    assert status(resp) == (422, [field]), resp.content[:300]
    assert Organization.objects.get(pk=team["org"].pk).settings == {}


def test_settings_at_the_limits_are_accepted(team):
    for settings in (
        deep(5),
        {"blob": "x" * (16 * 1024 - len('{"blob":""}'))},
        {"timeZone": "UTC"},
        {"timeZone": "America/Argentina/Buenos_Aires"},
    ):
        resp = call(
            team,
            "owner",
            "organizations.update",
            {"id": org_id(team), "data": {"settings": settings}},
        )
        assert resp.status_code == 200, (
            settings if len(str(settings)) < 80 else "blob",
            resp.content[:200],
        )


def test_catalogs(team):
    ToolType.objects.create(slug="http", name="HTTP", description="Calls a URL")
    ToolType.objects.create(slug="code", name="Code")
    MessageType.objects.create(slug="task", name="Task")
    tools = call(team, "outsider", "toolTypes.getAll", {}).json()["data"]
    assert [(t["slug"], t["name"], t["description"]) for t in tools] == [
        ("code", "Code", ""),
        ("http", "HTTP", "Calls a URL"),
    ]
    assert set(tools[0]) == {"id", "slug", "name", "description"}
    kinds = call(team, "member", "messageTypes.getAll", {}).json()["data"]
    assert [(k["slug"], k["name"]) for k in kinds] == [("task", "Task")] and set(kinds[0]) == {
        "id",
        "slug",
        "name",
    }
    ToolType.objects.filter(slug="code").update(name="Code runner")
    tools = call(team, "member", "toolTypes.getAll", {}).json()["data"]
    assert [t["name"] for t in tools] == ["Code runner", "HTTP"]
