"""`seed_demo`: the demo data, its logins, idempotence and larger seeds."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from agency.models import (
    Agent,
    Cron,
    Membership,
    Message,
    MessageType,
    Organization,
    Tool,
    ToolType,
    User,
)
from agency.provisioning import sqlite_path

pytestmark = pytest.mark.django_db

MODELS = (User, Organization, Membership, Agent, Tool, Message, ToolType, MessageType, Cron)


@pytest.fixture(autouse=True)
def fast_and_isolated(settings, tmp_path):
    """Cheap password hashing (the command sets four), and a scratch data directory."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.DATA_DIR = tmp_path


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    found = {model.__name__: model.objects.count() for model in MODELS}
    found["agent tools"] = Agent.tools.through.objects.count()
    return found


def role(username: str, database_name: str) -> str:
    return Membership.objects.get(
        user__username=username, organization__database_name=database_name
    ).role


def test_seed_creates_the_demo_data():
    output = seed()
    found = counts()
    assert {name: found[name] for name in ("User", "Organization", "Membership", "Agent")} == {
        "User": 4,
        "Organization": 2,
        "Membership": 4,
        "Agent": 8,
    }
    assert (found["Tool"], found["ToolType"], found["MessageType"]) == (6, 3, 3)
    assert found["Message"] >= 8
    assert found["agent tools"] > 0
    acme = Organization.objects.get(database_name="acme")
    globex = Organization.objects.get(database_name="globex")
    assert (acme.name, acme.owner.username) == ("Acme Robotics", "alice")
    assert (globex.name, globex.owner.username) == ("Globex Labs", "bob")
    assert role("alice", "acme") == "owner"
    assert role("bob", "acme") == "member"
    assert role("bob", "globex") == "owner"
    assert role("carol", "globex") == "member"
    assert not Membership.objects.filter(user__username="carol", organization=acme).exists()
    assert set(ToolType.objects.values_list("slug", flat=True)) == {"http", "python", "search"}
    assert set(MessageType.objects.values_list("slug", flat=True)) == {"chat", "task", "result"}
    assert "org 2/2" in output


def test_seed_data_is_consistent_per_organization():
    seed()
    for org in Organization.objects.all():
        agents = set(Agent.objects.filter(organization=org))
        assert len(agents) == 4
        assert all(agent.system_prompt and agent.role and agent.model for agent in agents)
        messages = Message.objects.filter(organization=org).select_related("from_agent", "to_agent")
        assert messages.exists()
        for message in messages:
            assert message.from_agent in agents
            assert message.to_agent is None or message.to_agent in agents
            assert message.message_type is not None and message.content
        tools = Tool.objects.filter(organization=org)
        linked = Tool.objects.filter(agents__organization=org).distinct()
        assert set(linked) <= set(tools)
        assert all(tool.tool_type is not None for tool in tools)
    # Organizations are rows only: no database is provisioned for them.
    assert not sqlite_path("acme").exists()
    assert not sqlite_path("globex").exists()


def test_seed_twice_creates_nothing_new():
    seed()
    first = counts()
    ids = {model: set(model.objects.values_list("pk", flat=True)) for model in MODELS}
    output = seed()
    assert counts() == first
    assert {model: set(model.objects.values_list("pk", flat=True)) for model in MODELS} == ids
    assert "created: 0 users, 0 organizations, 0 memberships, 0 agents, 0 tools, 0 messages" in (
        output
    )


def test_seed_runs_again_after_people_used_the_demo():
    """What users do through the API (a tool named like a demo tool, renames,
    deletions) never stops the next `make run` from seeding."""
    seed()
    org = Organization.objects.order_by("created_at").first()
    demo_tool = Tool.objects.filter(organization=org).order_by("created_at").first()
    Tool.objects.create(organization=org, name=demo_tool.name, tool_type=demo_tool.tool_type)
    Agent.objects.filter(organization=org).first().delete()
    renamed = Agent.objects.filter(organization=org).first()
    renamed.name = "Renamed by a user"
    renamed.save()
    Tool.objects.filter(organization=org).exclude(name=demo_tool.name).first().delete()
    seed()
    seed()
    assert Tool.objects.filter(organization=org, name=demo_tool.name).count() == 2


def test_seed_makes_one_demo_cron_and_leaves_the_users_crons_alone():
    """One every-minute cron in the first organization (`make run` runs the scheduler), made
    only while that organization has no cron: a disabled or changed one stays as it is."""
    seed()
    cron = Cron.objects.get()
    acme = Organization.objects.get(database_name="acme")
    assert (cron.organization, cron.agent.name, cron.schedule) == (acme, "Atlas", "* * * * *")
    assert cron.enabled and cron.payload["content"]
    cron.enabled = False
    cron.schedule = "0 9 * * *"
    cron.save()
    seed()
    assert list(Cron.objects.values_list("pk", "enabled", "schedule")) == [
        (cron.pk, False, "0 9 * * *")
    ]
    cron.delete()
    seed()
    assert Cron.objects.filter(organization=acme, schedule="* * * * *").count() == 1


def test_output_lists_the_logins_and_they_work(client):
    output = seed()
    assert "Log in at http://127.0.0.1:8000/ with:" in output
    assert "alice / teamhub-demo   (owner of Acme Robotics)" in output
    assert "bob   / teamhub-demo   (member of Acme Robotics, owner of Globex Labs)" in output
    assert "carol / teamhub-demo   (member of Globex Labs)" in output
    assert "admin / teamhub-demo   (superuser)" in output
    for username in ("alice", "bob", "carol", "admin"):
        assert client.login(username=username, password="teamhub-demo"), username
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert not User.objects.get(username="alice").is_staff


def test_password_option_sets_every_demo_password():
    seed()
    output = seed("--password", "s3cret-pass")
    assert "alice / s3cret-pass" in output
    assert "teamhub-demo" not in output
    for username in ("alice", "bob", "carol", "admin"):
        user = User.objects.get(username=username)
        assert user.check_password("s3cret-pass")
        assert not user.check_password("teamhub-demo")


def test_more_orgs_and_agents_with_progress():
    output = seed("--orgs", "3", "--agents", "5")
    orgs = Organization.objects.annotate(n=Count("agents")).order_by("database_name")
    assert [(org.database_name, org.n) for org in orgs] == [
        ("acme", 5),
        ("demo_org_3", 5),
        ("globex", 5),
    ]
    third = Organization.objects.get(database_name="demo_org_3")
    assert third.name == "Demo Org 3"
    assert third.memberships.filter(role="owner").count() == 1
    assert Message.objects.filter(organization=third).exists()
    for n in (1, 2, 3):
        assert f"org {n}/3:" in output
    assert "org 3/3: Demo Org 3 (demo_org_3): 5 agents" in output
    before = counts()
    assert (before["Organization"], before["Agent"], before["Tool"]) == (3, 15, 9)
    seed("--orgs", "3", "--agents", "5")
    assert counts() == before


def test_many_agents_get_unique_names_and_growing_adds_only_the_missing():
    seed("--orgs", "1", "--agents", "2")
    messages = Message.objects.count()
    seed("--orgs", "1", "--agents", "20")
    names = list(Agent.objects.values_list("name", flat=True))
    assert len(names) == len(set(names)) == 20
    assert {"Atlas", "Atlas 2", "Atlas 3"} <= set(names)
    assert Organization.objects.count() == 1
    assert Message.objects.count() == messages  # the org already had messages


@pytest.mark.parametrize("args", [("--orgs", "0"), ("--agents", "0"), ("--password", "")])
def test_rejects_bad_options(args):
    with pytest.raises(CommandError):
        seed(*args)
    assert not Organization.objects.exists()
