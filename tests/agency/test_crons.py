"""The crons functions: who may call them, what they refuse, and when a cron runs next."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from agency.models import PAYLOAD_MAX_CHARS, Agent, ApiToken, Cron, Membership
from reactive.functions import Context, registry
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

JAN = datetime(2030, 1, 7, 10, 30, tzinfo=UTC)  # a Monday in winter (Berlin is UTC+1)
JUL = datetime(2030, 7, 8, 10, 30, tzinfo=UTC)  # a Monday in summer (Berlin is UTC+2)


def post(client: Client, name: str, body: dict, **extra):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(
        f"/api/rx/{name}",
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
        **extra,
    )


def call(name: str, raw: dict, user):
    return registry[name].call(raw, Context(user=user))


def fields_of(resp) -> set[str]:
    assert resp.status_code == 422, resp.content
    return {f["field"] for f in resp.json()["error"]["fields"]}


@pytest.fixture
def org(make_user, make_org):
    owner, member = make_user("owner"), make_user("member")
    org = make_org(owner, member)
    admin = make_user("admin")
    Membership.objects.create(user=admin, organization=org, role="admin")
    return org


@pytest.fixture
def agent(org):
    return Agent.objects.create(organization=org, name="Atlas", role="coordinator")


def make_cron(agent, schedule="0 9 * * *", armed_at=JAN, **extra) -> Cron:
    return Cron.objects.create(
        organization=agent.organization, agent=agent, schedule=schedule, armed_at=armed_at, **extra
    )


# --- the authorization matrix: role x operation ------------------------------------------------

OPERATIONS = [
    ("crons.getAll", lambda o, a, c: {"organizationId": o}),
    ("crons.getAll", lambda o, a, c: {"organizationId": o, "agentId": a}),
    ("crons.create", lambda o, a, c: {"organizationId": o, "agentId": a, "schedule": "* * * * *"}),
    ("crons.update", lambda o, a, c: {"id": c, "data": {"enabled": False}}),
    ("crons.delete", lambda o, a, c: {"id": c}),
]


@pytest.mark.parametrize(
    "who,expected",
    [
        ("owner", 200),
        ("admin", 200),
        ("member", 200),
        ("token", 200),
        ("outsider", 403),
        ("anonymous", 401),
    ],
)
@pytest.mark.parametrize(
    "name,make", OPERATIONS, ids=[f"{op[0]}-{i}" for i, op in enumerate(OPERATIONS)]
)
def test_authorization_matrix(make_user, make_org, org, agent, who, expected, name, make):
    outsider = make_user("outsider")
    make_org(outsider)  # a member of another organization
    cron = make_cron(agent)
    users = {m.role: m.user for m in org.memberships.select_related("user")}
    extra = {}
    if who == "token":
        client = Client(enforce_csrf_checks=True)
        extra["HTTP_AUTHORIZATION"] = "Bearer " + ApiToken.issue(users["member"], "t")[1]
    else:
        client = client_for({**users, "outsider": outsider}.get(who))
    body = make(str(org.pk), str(agent.pk), str(cron.pk))
    resp = post(client, name, body, **extra)
    assert resp.status_code == expected, resp.content
    if expected != 200:
        assert Cron.objects.filter(pk=cron.pk, enabled=True).count() == 1  # nothing changed
        assert Cron.objects.count() == 1
        assert "data" not in resp.json()


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule,says",
    [
        ("* * * *", "five fields"),
        ("* * * * * *", "five fields"),
        ("61 * * * *", "Invalid cron expression"),
        ("0 0 30 2 *", "Invalid cron expression"),
        (" * * * * *", "five fields"),
        ("every minute", "five fields"),
    ],
)
def test_bad_schedule_is_422_naming_it(org, agent, schedule, says):
    client = client_for(org.owner)
    body = {"organizationId": str(org.pk), "agentId": str(agent.pk), "schedule": schedule}
    resp = post(client, "crons.create", body)
    assert fields_of(resp) == {"schedule"}
    assert says in resp.json()["error"]["fields"][0]["message"]
    cron = make_cron(agent)
    resp = post(client, "crons.update", {"id": str(cron.pk), "data": {"schedule": schedule}})
    assert fields_of(resp) == {"data.schedule"}
    assert not Cron.objects.exclude(pk=cron.pk).exists()
    assert Cron.objects.get(pk=cron.pk).schedule == "0 9 * * *"


def test_an_agent_of_another_organization_is_refused(org, agent, make_user, make_org):
    other = Agent.objects.create(organization=make_org(make_user("x")), name="B", role="r")
    client = client_for(org.owner)
    for agent_id in (other.pk, "00000000-0000-0000-0000-000000000000"):
        body = {"organizationId": str(org.pk), "agentId": str(agent_id), "schedule": "* * * * *"}
        assert fields_of(post(client, "crons.create", body)) == {"agentId"}
    cron = make_cron(agent)
    resp = post(client, "crons.update", {"id": str(cron.pk), "data": {"agentId": str(other.pk)}})
    assert fields_of(resp) == {"data.agentId"}
    assert Cron.objects.get(pk=cron.pk).agent_id == agent.pk
    assert Cron.objects.count() == 1


def nested(levels: int) -> dict:
    payload: dict = {}
    for _ in range(levels - 1):
        payload = {"k": payload}
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        {f"k{i}": i for i in range(101)},
        nested(9),
        {"content": "x" * PAYLOAD_MAX_CHARS},
        ["not", "an", "object"],
        "text",
        None,
    ],
    ids=["101 keys", "9 levels", "too large", "a list", "a string", "null"],
)
def test_payload_bounds(org, agent, payload):
    client = client_for(org.owner)
    body = {"organizationId": str(org.pk), "agentId": str(agent.pk), "schedule": "* * * * *"}
    assert fields_of(post(client, "crons.create", {**body, "payload": payload})) == {"payload"}
    cron = make_cron(agent)
    resp = post(client, "crons.update", {"id": str(cron.pk), "data": {"payload": payload}})
    assert fields_of(resp) == {"data.payload"}
    assert Cron.objects.get(pk=cron.pk).payload == {}


def test_payload_at_the_bounds_is_stored(org, agent):
    client = client_for(org.owner)
    body = {"organizationId": str(org.pk), "agentId": str(agent.pk), "schedule": "* * * * *"}
    for payload in (nested(8), {f"k{i}": i for i in range(100)}, {"content": "é" * 16_000}):
        resp = post(client, "crons.create", {**body, "payload": payload})
        assert resp.status_code == 200, resp.content
        assert Cron.objects.get(pk=resp.json()["data"]["id"]).payload == payload


@pytest.mark.parametrize("field", ["schedule", "payload", "enabled", "agentId", "name"])
def test_null_in_an_update_is_422(org, agent, field):
    cron = make_cron(agent)
    resp = post(client_for(org.owner), "crons.update", {"id": str(cron.pk), "data": {field: None}})
    assert fields_of(resp) == {f"data.{field}"}


def test_strict_types_and_unknown_fields(org, agent):
    client = client_for(org.owner)
    body = {"organizationId": str(org.pk), "agentId": str(agent.pk), "schedule": "* * * * *"}
    assert fields_of(post(client, "crons.create", {**body, "enabled": "yes"})) == {"enabled"}
    assert fields_of(post(client, "crons.create", {**body, "every": 5})) == {"every"}
    resp = post(client, "crons.update", {"id": "00000000-0000-0000-0000-000000000000", "data": {}})
    assert resp.status_code == 404


# --- what the functions answer ----------------------------------------------------------------


def test_create_list_update_delete(org, agent):
    client = client_for(org.owner)
    body = {
        "organizationId": str(org.pk),
        "agentId": str(agent.pk),
        "schedule": "*/15 * * * *",
        "name": "check-in",
        "payload": {"content": "Status, please."},
    }
    created = post(client, "crons.create", body)
    assert created.status_code == 200, created.content
    cron = created.json()["data"]
    assert {k: cron[k] for k in ("agentId", "schedule", "name", "payload", "enabled")} == {
        "agentId": str(agent.pk),
        "schedule": "*/15 * * * *",
        "name": "check-in",
        "payload": {"content": "Status, please."},
        "enabled": True,
    }
    assert cron["lastRunAt"] is None
    listed = client.get("/api/rx/crons.getAll", {"organizationId": str(org.pk)}).json()["data"]
    assert listed == [cron]
    other = Agent.objects.create(organization=org, name="Iris", role="analyst")
    by_agent = {"organizationId": str(org.pk), "agentId": str(other.pk)}
    assert client.get("/api/rx/crons.getAll", by_agent).json()["data"] == []
    moved = post(client, "crons.update", {"id": cron["id"], "data": {"agentId": str(other.pk)}})
    assert moved.json()["data"]["agentId"] == str(other.pk)
    assert [c["id"] for c in client.get("/api/rx/crons.getAll", by_agent).json()["data"]] == [
        cron["id"]
    ]
    gone = post(client, "crons.delete", {"id": cron["id"]})
    assert gone.json()["data"] == {"id": cron["id"], "deleted": True}
    assert client.get("/api/rx/crons.getAll", {"organizationId": str(org.pk)}).json()["data"] == []
    assert post(client, "crons.delete", {"id": cron["id"]}).status_code == 404


def next_run_at(org, agent_id=None) -> list[str | None]:
    raw = {"organizationId": str(org.pk)}
    if agent_id:
        raw["agentId"] = str(agent_id)
    return [c["nextRunAt"] for c in call("crons.getAll", raw, org.owner).data]


def iso(dt: datetime) -> str:
    return dt.isoformat()


def test_next_run_is_the_first_slot_after_arming_then_after_the_last_run(org, agent):
    cron = make_cron(agent, "0 9 * * *", armed_at=JAN)  # armed at 10:30 UTC
    assert next_run_at(org) == [iso(datetime(2030, 1, 8, 9, 0, tzinfo=UTC))]
    Cron.objects.filter(pk=cron.pk).update(last_run_at=datetime(2030, 1, 10, 9, 0, tzinfo=UTC))
    assert next_run_at(org) == [iso(datetime(2030, 1, 11, 9, 0, tzinfo=UTC))]
    # An armed_at later than the last run wins (it was re-armed since).
    Cron.objects.filter(pk=cron.pk).update(armed_at=datetime(2030, 1, 20, 12, tzinfo=UTC))
    assert next_run_at(org) == [iso(datetime(2030, 1, 21, 9, 0, tzinfo=UTC))]


@pytest.mark.parametrize(
    "armed_at,expected",
    [
        (JAN, datetime(2030, 1, 8, 8, 0, tzinfo=UTC)),  # 09:00 CET
        (JUL, datetime(2030, 7, 9, 7, 0, tzinfo=UTC)),  # 09:00 CEST
    ],
)
def test_next_run_in_the_organization_time_zone_and_invalidated_by_settings(
    org, agent, armed_at, expected
):
    make_cron(agent, "0 9 * * *", armed_at=armed_at)
    utc = expected.replace(hour=9) if armed_at is JUL else datetime(2030, 1, 8, 9, tzinfo=UTC)
    first = call("crons.getAll", {"organizationId": str(org.pk)}, org.owner)
    again = call("crons.getAll", {"organizationId": str(org.pk)}, org.owner)
    assert again.hit and [c["nextRunAt"] for c in again.data] == [iso(utc)]
    assert "agency.organization:id=" + str(org.pk) in first.tags
    org.settings = {"timeZone": "Europe/Berlin", "other": 1}
    org.save()
    after = call("crons.getAll", {"organizationId": str(org.pk)}, org.owner)
    assert not after.hit
    assert [c["nextRunAt"] for c in after.data] == [iso(expected)]
    assert next_run_at(org, agent.pk) == [iso(expected)]


@pytest.mark.parametrize("name", ["Nowhere/Atlantis", "", 42, "../../etc/passwd", None])
def test_an_unknown_time_zone_counts_in_utc(org, agent, name):
    org.settings = {"timeZone": name}
    org.save()
    make_cron(agent, "0 9 * * *", armed_at=JAN)
    assert next_run_at(org) == [iso(datetime(2030, 1, 8, 9, 0, tzinfo=UTC))]


def test_disabled_has_no_next_run_and_reenabling_counts_from_then(org, agent):
    cron = make_cron(agent, "* * * * *", armed_at=JAN)
    client = client_for(org.owner)
    assert next_run_at(org) == [iso(JAN.replace(minute=31))]  # long past: due now
    off = post(client, "crons.update", {"id": str(cron.pk), "data": {"enabled": False}})
    assert off.json()["data"]["nextRunAt"] is None and next_run_at(org) == [None]
    before = datetime.now(UTC)
    on = post(client, "crons.update", {"id": str(cron.pk), "data": {"enabled": True}})
    upcoming = datetime.fromisoformat(on.json()["data"]["nextRunAt"])
    assert before < upcoming <= before + timedelta(minutes=1)
    assert next_run_at(org) == [on.json()["data"]["nextRunAt"]]


def test_a_new_schedule_counts_from_then_and_other_changes_do_not(org, agent):
    cron = make_cron(agent, "0 9 * * *", armed_at=JAN)
    client = client_for(org.owner)
    renamed = post(client, "crons.update", {"id": str(cron.pk), "data": {"name": "daily"}})
    assert renamed.json()["data"]["nextRunAt"] == iso(datetime(2030, 1, 8, 9, tzinfo=UTC))
    before = datetime.now(UTC)
    moved = post(client, "crons.update", {"id": str(cron.pk), "data": {"schedule": "0 * * * *"}})
    upcoming = datetime.fromisoformat(moved.json()["data"]["nextRunAt"])
    assert before < upcoming <= before + timedelta(hours=1) and upcoming.minute == 0
    assert Cron.objects.get(pk=cron.pk).armed_at >= before


def test_next_run_is_cached_until_a_write(org, agent):
    """Read twice, the second answer is a hit with the same nextRunAt: it never depends on
    the clock. A cron row's write (the scheduler's lastRunAt) is a miss with the new value."""
    cron = make_cron(agent, "*/5 * * * *", armed_at=JAN)
    raw = {"organizationId": str(org.pk)}
    first = call("crons.getAll", raw, org.owner)
    assert call("crons.getAll", raw, org.owner).hit
    cron.last_run_at = datetime(2030, 1, 7, 11, 0, tzinfo=UTC)
    cron.save(update_fields=["last_run_at", "updated_at"])
    after = call("crons.getAll", raw, org.owner)
    assert not after.hit and after.data[0]["lastRunAt"] == iso(cron.last_run_at)
    assert after.data[0]["nextRunAt"] == iso(datetime(2030, 1, 7, 11, 5, tzinfo=UTC))
    assert first.data[0]["nextRunAt"] == iso(datetime(2030, 1, 7, 10, 35, tzinfo=UTC))


def test_the_admin_and_the_model_re_arm_like_the_functions(org, agent):
    """Re-enabling (one cron in its admin page or model, many with the admin action) and a
    new schedule count slots from then; a cron already enabled keeps its count."""
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    off = make_cron(agent, enabled=False)
    on = make_cron(agent)
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("root", "root@example.test"))
    before = datetime.now(UTC)
    selected = {"action": "enable", "_selected_action": [str(off.pk), str(on.pk)]}
    assert staff.post(reverse("admin:agency_cron_changelist"), selected).status_code == 302
    off.refresh_from_db()
    on.refresh_from_db()
    assert off.enabled and off.armed_at >= before
    assert on.armed_at == JAN
    on.schedule = "*/2 * * * *"
    on.save(update_fields=["schedule"])
    on.refresh_from_db()
    assert on.armed_at >= before
    page = staff.get(reverse("admin:agency_cron_changelist")).content.decode()
    assert "next run" in page.lower()
