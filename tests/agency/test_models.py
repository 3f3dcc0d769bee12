"""Model-level rules: database names, cron schedules, tenancy of jobs, memberships, tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agency.models import (
    Agent,
    ApiToken,
    Cron,
    Membership,
    Organization,
    User,
    VerificationToken,
    hash_token,
    validate_cron,
)

pytestmark = pytest.mark.django_db

NAME_RULE = "Database name must start with a lowercase letter"


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("owner", "owner@example.test")  # no password: hashing is slow


def new_org(owner: User, database_name: str, name: str = "Org") -> Organization:
    return Organization.objects.create(name=name, owner=owner, database_name=database_name)


def table_values(table: str) -> list[str]:
    """Every value of every row of `table`, as text (to look for leaked secrets)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
        return [str(value) for row in cursor.fetchall() for value in row]


# --- database names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("database_name", "expected"),
    [
        ("Bad-Name", NAME_RULE),
        ("1abc", NAME_RULE),
        ("x; drop", NAME_RULE),
        ("_abc", NAME_RULE),
        ("abc def", NAME_RULE),
        ('acme"; DROP DATABASE x; --', NAME_RULE),
        ("a" * 64, "at most 63 characters"),
        ("", "cannot be blank"),
    ],
)
def test_bad_database_name_is_rejected_naming_the_field(owner, database_name, expected):
    org = Organization(name="Bad", owner=owner, database_name=database_name)
    with pytest.raises(ValidationError) as caught:
        org.full_clean()
    errors = caught.value.message_dict
    assert list(errors) == ["database_name"]
    assert any(expected in message for message in errors["database_name"]), errors


@pytest.mark.parametrize("database_name", ["acme", "a", "org_1", "demo_org_3", "a" * 63])
def test_good_database_name_passes(owner, database_name):
    Organization(name="Good", owner=owner, database_name=database_name).full_clean()


def test_database_name_with_trailing_newline_is_rejected(owner):
    with pytest.raises(ValidationError):
        Organization(name="Bad", owner=owner, database_name="acme\n").full_clean()


def test_database_name_is_unique(owner):
    new_org(owner, "acme")
    with pytest.raises(ValidationError) as caught:
        Organization(name="Other", owner=owner, database_name="acme").full_clean()
    assert "database_name" in caught.value.message_dict


# --- cron schedules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("not a cron", "five fields"),
        ("* * *", "five fields"),
        ("0 0 * * * *", "five fields"),
        ("@daily", "five fields"),
        ("61 * * * *", "Bad minute"),
        ("0 25 * * *", "Bad hour"),
        ("* * * * 8", "Bad day-of-week"),
    ],
)
def test_validate_cron_rejects_bad_schedules(schedule, expected):
    with pytest.raises(ValidationError) as caught:
        validate_cron(schedule)
    assert caught.value.code == "invalid_cron"
    assert expected in caught.value.messages[0]


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 9 * * 1-5", "30 2 1 * *", "0 0 * * 0"])
def test_validate_cron_accepts_good_schedules(schedule):
    validate_cron(schedule)


@pytest.fixture
def agent(owner) -> Agent:
    return Agent.objects.create(organization=new_org(owner, "acme"), name="Atlas", role="lead")


@pytest.mark.parametrize("schedule", ["not a cron", "* * *", "61 * * * *"])
def test_cron_full_clean_reports_bad_schedule_on_the_schedule_field(agent, schedule):
    job = Cron(organization=agent.organization, agent=agent, schedule=schedule)
    with pytest.raises(ValidationError) as caught:
        job.full_clean()
    errors = caught.value.message_dict
    assert list(errors) == ["schedule"]
    assert "cron expression" in errors["schedule"][0].lower()


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 9 * * 1-5"])
def test_cron_full_clean_accepts_good_schedule(agent, schedule):
    Cron(organization=agent.organization, agent=agent, schedule=schedule).full_clean()


def test_cron_rejects_agent_of_another_organization(owner, agent):
    other = new_org(owner, "globex", name="Globex")
    job = Cron(organization=other, agent=agent, schedule="*/5 * * * *")
    with pytest.raises(ValidationError) as caught:
        job.full_clean()
    assert caught.value.message_dict == {"agent": ["The agent belongs to another organization."]}


# --- memberships --------------------------------------------------------------------


def test_membership_is_unique_per_user_and_organization(owner):
    acme, globex = new_org(owner, "acme"), new_org(owner, "globex")
    Membership.objects.create(user=owner, organization=acme, role=Membership.Role.OWNER)
    Membership.objects.create(user=owner, organization=globex)  # another org: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(user=owner, organization=acme, role=Membership.Role.MEMBER)
    assert Membership.objects.filter(user=owner).count() == 2
    assert Membership.objects.get(user=owner, organization=acme).role == "owner"


# --- tokens -------------------------------------------------------------------------


def test_api_token_issue_stores_only_the_hash(owner):
    row, raw = ApiToken.issue(owner, "ci")
    assert raw.startswith(ApiToken.PREFIX)
    assert len(raw) > len(ApiToken.PREFIX) + 30
    row.refresh_from_db()
    assert row.token_hash == hash_token(raw)
    assert row.token_hash != raw
    stored = table_values(ApiToken._meta.db_table)
    assert row.token_hash in stored
    assert not any(raw in value for value in stored)
    assert ApiToken.objects.get(token_hash=hash_token(raw)) == row


def test_api_tokens_are_distinct(owner):
    (_, first), (_, second) = ApiToken.issue(owner, "a"), ApiToken.issue(owner, "b")
    assert first != second
    assert hash_token(first) != hash_token(second)


def test_revoke_sets_revoked_at_and_active_excludes_it(owner):
    kept, _ = ApiToken.issue(owner, "kept")
    gone, _ = ApiToken.issue(owner, "gone")
    assert set(ApiToken.objects.active()) == {kept, gone}
    before = timezone.now()
    gone.revoke()
    gone.refresh_from_db()
    assert gone.revoked_at is not None and gone.revoked_at >= before
    assert list(ApiToken.objects.active()) == [kept]


def test_active_excludes_tokens_of_inactive_users(owner):
    token, _ = ApiToken.issue(owner, "ci")
    owner.is_active = False
    owner.save()
    assert not ApiToken.objects.active().filter(pk=token.pk).exists()


def test_verification_token_issue_stores_a_hash(owner):
    before = timezone.now()
    row, raw = VerificationToken.issue("someone@example.test", timedelta(hours=1))
    row.refresh_from_db()
    assert row.token_hash == hash_token(raw)
    assert row.identifier == "someone@example.test"
    assert before + timedelta(minutes=59) < row.expires <= timezone.now() + timedelta(hours=1)
    assert not any(raw in value for value in table_values(VerificationToken._meta.db_table))
