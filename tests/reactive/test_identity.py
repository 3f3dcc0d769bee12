"""Who is still behind a stream (reactive/identity.py): re-check timing and re-authenticators."""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.test import Client

from reactive import identity
from reactive.identity import ATTRIBUTE, for_request, for_scope, recheck_delay, session_user


@pytest.fixture
def interval(settings) -> float:
    settings.REACTIVE = {**settings.REACTIVE, "RECHECK_SECONDS": 10.0}
    return 10.0


def test_the_delay_is_spread_within_the_promised_interval(interval):
    delays = [recheck_delay() for _ in range(500)]
    assert all(0.5 * interval <= d <= 0.9 * interval for d in delays)
    assert max(delays) - min(delays) > 0.2 * interval  # spread, not one instant for everyone


@pytest.mark.parametrize("pick, expected", [(min, 5.0), (max, 9.0)])
def test_the_delay_reaches_both_ends_of_the_spread(interval, monkeypatch, pick, expected):
    monkeypatch.setattr(identity.random, "uniform", lambda low, high: pick(low, high))
    assert recheck_delay() == pytest.approx(expected)


def store(key: str | None):
    return import_module(django_settings.SESSION_ENGINE).SessionStore(key)


@pytest.fixture
def logged_in(make_user):
    user = make_user()
    client = Client()
    client.force_login(user)
    return user, client


@pytest.mark.django_db
def test_a_session_gives_its_user_until_logout(logged_in):
    user, client = logged_in
    key = client.session.session_key
    reauthenticate = for_request(SimpleNamespace(session=store(key)))
    assert reauthenticate() == user
    client.logout()
    assert reauthenticate() is None


@pytest.mark.django_db
def test_a_deactivated_user_or_a_changed_password_ends_it(logged_in):
    user, client = logged_in
    reauthenticate = for_scope({"session": store(client.session.session_key)})
    assert reauthenticate() == user
    user.set_password("another-password")
    user.save()
    assert reauthenticate() is None  # the session's auth hash no longer matches
    client.force_login(user)
    again = for_scope({"session": store(client.session.session_key)})
    assert again() == user
    user.is_active = False
    user.save()
    assert again() is None


@pytest.mark.django_db
def test_no_session_is_nobody():
    assert session_user(None) is None and session_user("") is None
    assert session_user("no-such-session-key") is None
    assert for_request(SimpleNamespace())() is None
    assert for_scope({})() is None


def test_a_projects_own_reauthenticator_wins():
    def mine():
        return "token-user"

    assert for_request(SimpleNamespace(**{ATTRIBUTE: mine, "session": None})) is mine
    assert for_scope({ATTRIBUTE: mine, "session": None}) is mine
