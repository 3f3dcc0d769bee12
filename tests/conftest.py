"""Shared fixtures: users, organizations, a clean reactive state per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from agency.models import Agent, Membership, Organization, User
from reactive import testing
from tests import report

SERVICES = bool(settings.REDIS_URL)


def pytest_report_header(config):
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return [
        f"teamhub mode: {'services' if SERVICES else 'embedded'} ({db}, "
        f"{settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]})"
    ]


def pytest_terminal_summary(terminalreporter):
    """Print the fault and abuse report (tests/report.py) when any test recorded to it."""
    if LANE_ANSWERED:
        answered = sum(a for a, _ in LANE_ANSWERED)
        compared = sum(c for _, c in LANE_ANSWERED)
        engaged = sum(1 for a, c in LANE_ANSWERED if a or c)
        terminalreporter.write_line(
            f"fast lane: {answered} reads answered by the lane, {compared} of Django's hits "
            f"answered the same by it, in {engaged} of {len(LANE_ANSWERED)} tests run through it"
        )
    table = report.lines()
    if table:
        terminalreporter.write_sep("=", "fault and abuse report")
        for line in table:
            terminalreporter.write_line(line)


SYSTEM = Path(__file__).resolve().parent / "system"


def pytest_collection_modifyitems(config, items):
    """Mark tests/system/ as `system` (-m "not system" is the quick loop); skip services-only."""
    skip = pytest.mark.skip(reason="needs DATABASE_URL and REDIS_URL (services mode)")
    for item in items:
        if SYSTEM in item.path.parents:
            item.add_marker(pytest.mark.system)
        if not SERVICES and "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Hashing a password the production way costs ~0.3 s; tests make hundreds."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def reactive_state(request):
    """Every test starts with no cached results, events or pending changes (reactive.testing).

    The database is reset only for tests that use it: the change rows of the
    previous test's flush are published (shared cache) or skipped (locmem).
    """
    if request.node.get_closest_marker("django_db") is None:
        testing.reset_caches()
    else:
        request.getfixturevalue("django_db_setup")
        with request.getfixturevalue("django_db_blocker").unblock():
            testing.reset()
    yield


@pytest.fixture
def published():
    """The change sets published (one per committed transaction)."""
    with testing.capture_published() as seen:
        yield seen


@pytest.fixture
def make_user(db):
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, **extra) -> User:
        name = username or f"user{next(counter)}"
        return User.objects.create_user(name, f"{name}@example.test", "pw-" + name, **extra)

    return make


@pytest.fixture
def make_org(db):
    counter = iter(range(1, 10_000))

    def make(owner: User, *members: User, name: str | None = None) -> Organization:
        n = next(counter)
        org = Organization.objects.create(
            name=name or f"Org {n}", owner=owner, database_name=f"test_org_{n}_{owner.pk.hex[:6]}"
        )
        Membership.objects.create(user=owner, organization=org, role="owner")
        for member in members:
            Membership.objects.create(user=member, organization=org, role="member")
        return org

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def org_a(make_org, alice):
    return make_org(alice, name="Org A")


@pytest.fixture
def org_b(make_org, bob):
    return make_org(bob, name="Org B")


@pytest.fixture
def agent_a(org_a):
    return Agent.objects.create(organization=org_a, name="Agent A", role="helper")


@pytest.fixture
def agent_b(org_b):
    return Agent.objects.create(organization=org_b, name="Agent B", role="helper")


def client_for(user: User | None) -> Client:
    """A browser-like client (CSRF enforced), logged in as `user`."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get("/api/auth/me")
    return client


@pytest.fixture
def api():
    return client_for


@pytest.fixture(params=["django", "fast lane"])
def lane(request):
    """Run the test twice: Django alone, then with the fast lane in front (as in production).

    With the lane, the test clients offer every request to TeamHub's fast lane
    first (reactive.testing.through_fast_lane): hits it answers, the rest Django.
    """
    if request.param == "django":
        yield None
        return
    from teamhub.lane import build

    with testing.through_fast_lane(build(None), functions=True) as fast:
        yield fast
    LANE_ANSWERED.append((fast.answered, fast.compared))


# per test run through the lane: (what it answered itself, Django's hits it was checked against)
LANE_ANSWERED: list[tuple[int, int]] = []


@pytest.fixture
async def hub():
    """Async tests that open streams stop this loop's hub before the loop closes."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    from reactive.fanout import close_hub

    await close_hub()
    # the sync thread's connection would otherwise outlive the test database
    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="session", autouse=True)
def close_database_pools(django_db_setup):
    """Pooled PostgreSQL connections would keep the test database from being dropped."""
    yield
    from django.db import connections

    for conn in connections.all():
        if hasattr(conn, "close_pool"):
            conn.close_pool()
