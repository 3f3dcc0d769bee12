"""The admin: every registered model's pages render, tokens are issued once and revocable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from agency.models import (
    Account,
    Agent,
    ApiToken,
    Cron,
    Membership,
    Message,
    MessageType,
    Organization,
    Tool,
    ToolType,
    User,
    VerificationToken,
    hash_token,
)
from reactive.models import FunctionStats

pytestmark = pytest.mark.django_db

REGISTERED = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)
IDS = [model._meta.label for model, _ in REGISTERED]


def url(model: type[models.Model], view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def superuser() -> User:
    # No password: hashing is slow and force_login does not need one.
    return User.objects.create_superuser("root", "root@example.test")


@pytest.fixture
def staff(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def rows(superuser) -> dict[type[models.Model], models.Model]:
    """One row of every model the admin shows (a new registration needs a row here)."""
    org = Organization.objects.create(name="Acme", owner=superuser, database_name="acme")
    tool_type = ToolType.objects.create(slug="http", name="HTTP")
    message_type = MessageType.objects.create(slug="chat", name="Chat")
    tool = Tool.objects.create(organization=org, tool_type=tool_type, name="Web fetch")
    agent = Agent.objects.create(organization=org, name="Atlas", role="Coordinator")
    agent.tools.add(tool)
    other = Agent.objects.create(organization=org, name="Iris", role="Analyst")
    token, _ = ApiToken.issue(superuser, "ci")
    verification, _ = VerificationToken.issue("root@example.test", timedelta(hours=1))
    return {
        User: superuser,
        Account: Account.objects.create(
            user=superuser, provider="github", provider_account_id="42", access_token="secret"
        ),
        VerificationToken: verification,
        ApiToken: token,
        Organization: org,
        Membership: Membership.objects.create(user=superuser, organization=org, role="owner"),
        ToolType: tool_type,
        MessageType: message_type,
        Tool: tool,
        Agent: agent,
        Message: Message.objects.create(
            organization=org,
            from_agent=agent,
            to_agent=other,
            message_type=message_type,
            content="Summarise the launch notes.",
        ),
        Cron: Cron.objects.create(organization=org, agent=agent, schedule="0 9 * * 1-5"),
        FunctionStats: FunctionStats.objects.create(name="agents.getAll", hits=3, misses=1),
    }


# Rows of models outside TeamHub, made only by the tests of that model, so that a
# failure to save one does not break every other test.
OTHER_ROWS = {Group: lambda: Group.objects.create(name="editors")}


def row_of(rows: dict, model: type[models.Model]) -> models.Model:
    """The test row of `model` (every registered model needs one)."""
    if model in OTHER_ROWS:
        return OTHER_ROWS[model]()
    if model not in rows:
        pytest.fail(f"no row for {model._meta.label}: add one to the `rows` fixture")
    return rows[model]


def test_every_agency_model_is_registered():
    agency_models = {m for m in admin.site._registry if m._meta.app_label == "agency"}
    assert agency_models == set(apps.get_app_config("agency").get_models())
    assert FunctionStats in admin.site._registry


@pytest.mark.parametrize(("model", "model_admin"), REGISTERED, ids=IDS)
def test_changelist_renders(staff, rows, model, model_admin):
    row_of(rows, model)
    response = staff.get(url(model, "changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == model._default_manager.count() > 0


@pytest.mark.parametrize(("model", "model_admin"), REGISTERED, ids=IDS)
def test_changelist_search_works(staff, rows, model, model_admin):
    if not model_admin.search_fields:
        pytest.skip("no search_fields")
    response = staff.get(url(model, "changelist"), {"q": "x"})
    assert response.status_code == 200
    assert "cl" in response.context


@pytest.mark.parametrize(("model", "model_admin"), REGISTERED, ids=IDS)
def test_add_page_renders(staff, rows, model, model_admin):
    response = staff.get(url(model, "add"))
    if not model_admin.has_add_permission(response.wsgi_request):
        assert response.status_code == 403
        return
    assert response.status_code == 200


@pytest.mark.parametrize(("model", "model_admin"), REGISTERED, ids=IDS)
def test_change_page_renders(staff, rows, model, model_admin):
    obj = row_of(rows, model)
    response = staff.get(url(model, "change", obj.pk))
    assert response.status_code == 200
    assert escape(str(obj)) in response.content.decode()


WITH_AUTOCOMPLETE = [(model, ma) for model, ma in REGISTERED if ma.autocomplete_fields]


@pytest.mark.parametrize(
    ("model", "model_admin"),
    WITH_AUTOCOMPLETE,
    ids=[model._meta.label for model, _ in WITH_AUTOCOMPLETE],
)
def test_autocomplete_fields_answer(staff, rows, model, model_admin):
    for field in model_admin.autocomplete_fields:
        response = staff.get(
            reverse("admin:autocomplete"),
            {
                "app_label": model._meta.app_label,
                "model_name": model._meta.model_name,
                "field_name": field,
                "term": "a",
            },
        )
        assert response.status_code == 200, field
        assert "results" in response.json()


# --- function stats are read-only ---------------------------------------------------------


def test_function_stats_are_read_only(staff, rows):
    stats = rows[FunctionStats]
    page = staff.get(url(FunctionStats, "change", stats.pk)).content.decode()
    assert "75.0%" in staff.get(url(FunctionStats, "changelist")).content.decode()
    assert 'name="_save"' not in page
    staff.post(url(FunctionStats, "change", stats.pk), {"name": stats.pk, "hits": 999})
    stats.refresh_from_db()
    assert stats.hits == 3
    assert staff.post(url(FunctionStats, "delete", stats.pk), {"post": "yes"}).status_code == 403
    assert FunctionStats.objects.filter(pk=stats.pk).exists()


# --- tokens -------------------------------------------------------------------------


def test_revoke_action_revokes_only_the_selected_tokens(staff, superuser):
    picked, _ = ApiToken.issue(superuser, "picked")
    kept, _ = ApiToken.issue(superuser, "kept")
    earlier = timezone.now() - timedelta(days=3)
    old, _ = ApiToken.issue(superuser, "old")
    ApiToken.objects.filter(pk=old.pk).update(revoked_at=earlier)

    response = staff.post(
        url(ApiToken, "changelist"),
        {"action": "revoke_tokens", "_selected_action": [str(picked.pk), str(old.pk)]},
    )
    assert response.status_code == 302
    for token in (picked, kept, old):
        token.refresh_from_db()
    assert picked.revoked_at is not None
    assert kept.revoked_at is None
    assert old.revoked_at == earlier  # already revoked: left as it was
    assert list(ApiToken.objects.active()) == [kept]
    assert "Revoked 1 token(s)." in [str(m) for m in get_messages(response.wsgi_request)]


def test_adding_a_token_shows_the_raw_token_once_and_stores_its_hash(staff, superuser):
    response = staff.post(
        url(ApiToken, "add"), {"user": superuser.pk, "name": "deploy bot"}, follow=True
    )
    assert response.redirect_chain[0][1] == 302
    token = ApiToken.objects.get(name="deploy bot")
    shown = [str(m) for m in response.context["messages"]]
    raws = [
        word for message in shown for word in message.split() if word.startswith(ApiToken.PREFIX)
    ]
    assert len(raws) == 1
    assert hash_token(raws[0]) == token.token_hash
    assert raws[0] in response.content.decode()
    # Once: no later page shows it again.
    assert raws[0] not in staff.get(url(ApiToken, "change", token.pk)).content.decode()


def test_token_hash_and_owner_are_not_editable(staff, superuser):
    token, _ = ApiToken.issue(superuser, "ci")
    other = User.objects.create_user("other")
    response = staff.post(
        url(ApiToken, "change", token.pk),
        {"name": "renamed", "token_hash": "0" * 64, "user": other.pk},
    )
    assert response.status_code == 302
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.name == "renamed"
    assert stored.token_hash == token.token_hash
    assert stored.user == superuser


def test_adding_a_verification_token_stores_a_hash_of_the_shown_token(staff):
    expires = timezone.now() + timedelta(days=1)
    response = staff.post(
        url(VerificationToken, "add"),
        {
            "identifier": "new@example.test",
            "expires_0": expires.strftime("%Y-%m-%d"),
            "expires_1": expires.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302
    row = VerificationToken.objects.get(identifier="new@example.test")
    (message,) = [str(m) for m in get_messages(response.wsgi_request) if "copy it now" in str(m)]
    raw = message.split(" is ", 1)[1].split()[0]
    assert hash_token(raw) == row.token_hash


# --- cross-organization checks ------------------------------------------------------------


@pytest.fixture
def two_orgs(superuser) -> tuple[Organization, Organization]:
    return (
        Organization.objects.create(name="Acme", owner=superuser, database_name="acme"),
        Organization.objects.create(name="Globex", owner=superuser, database_name="globex"),
    )


def test_agent_cannot_get_tools_of_another_organization(staff, two_orgs):
    acme, globex = two_orgs
    foreign = Tool.objects.create(organization=globex, name="Globex search")
    response = staff.post(
        url(Agent, "add"),
        {
            "organization": acme.pk,
            "name": "Atlas",
            "role": "Coordinator",
            "system_prompt": "",
            "model": "gpt-4o",
            "temperature": "0.5",
            "max_tokens": "",
            "model_settings": "{}",
            "is_active": "on",
            "tools": [foreign.pk],
        },
    )
    assert response.status_code == 200
    assert "Not tools of Acme: Globex search." in response.content.decode()
    assert not Agent.objects.exists()


def test_message_agents_must_belong_to_its_organization(staff, two_orgs):
    acme, globex = two_orgs
    sender = Agent.objects.create(organization=acme, name="Atlas", role="lead")
    stranger = Agent.objects.create(organization=globex, name="Zed", role="spy")
    response = staff.post(
        url(Message, "add"),
        {
            "organization": acme.pk,
            "from_agent": sender.pk,
            "to_agent": stranger.pk,
            "content": "hello",
            "metadata": "{}",
        },
    )
    assert response.status_code == 200
    assert "Zed is not an agent of Acme." in response.content.decode()
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("schedule", "own_agent", "field"),
    [("61 * * * *", True, "schedule"), ("*/5 * * * *", False, "agent")],
)
def test_cron_admin_uses_the_model_validation(staff, two_orgs, schedule, own_agent, field):
    acme, globex = two_orgs
    agent = Agent.objects.create(organization=acme if own_agent else globex, name="A", role="r")
    response = staff.post(
        url(Cron, "add"),
        {
            "organization": acme.pk,
            "agent": agent.pk,
            "name": "nightly",
            "schedule": schedule,
            "payload": "{}",
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert not Cron.objects.exists()


def test_cron_admin_saves_a_valid_job(staff, two_orgs):
    acme, _ = two_orgs
    agent = Agent.objects.create(organization=acme, name="A", role="r")
    data = {"organization": acme.pk, "agent": agent.pk, "name": "nightly", "payload": "{}"}
    response = staff.post(url(Cron, "add"), {**data, "schedule": "0 9 * * 1-5", "enabled": "on"})
    assert response.status_code == 302
    assert Cron.objects.get().schedule == "0 9 * * 1-5"


def test_adding_a_user_sets_the_profile_fields(staff, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    response = staff.post(
        url(User, "add"),
        {
            "username": "dora",
            "usable_password": "true",
            "password1": "a-long-pass-phrase",
            "password2": "a-long-pass-phrase",
            "email": "dora@example.test",
            "display_name": "Dora Explorer",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    dora = User.objects.get(username="dora")
    assert (dora.email, dora.display_name) == ("dora@example.test", "Dora Explorer")
    assert dora.check_password("a-long-pass-phrase")


def test_message_changelist_filters_by_date_and_type(staff, rows):
    message = rows[Message]
    year = message.created_at.year

    def found(query: dict) -> int:
        response = staff.get(url(Message, "changelist"), query)
        assert response.status_code == 200
        return response.context["cl"].result_count

    assert found({"created_at__year": year}) == 1
    assert found({"created_at__year": year - 1}) == 0
    assert found({"message_type__id__exact": message.message_type_id}) == 1
    assert found({"q": "launch notes"}) == 1
    assert found({"q": "nothing like this"}) == 0
