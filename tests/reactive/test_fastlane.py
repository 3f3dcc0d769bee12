"""The fast lane (reactive.fastlane): hits answered before Django, exactly as Django answers them."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application
from django.test import Client

from agency.models import Agent, ApiToken, Membership
from reactive import prefetch, testing
from teamhub.lane import build
from tests.asgi import http_scope
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast(settings):
    # Sessions the lane can read from the cache (what services mode uses; one process here).
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    with testing.through_fast_lane(build(None)) as lane:
        yield lane


def _token(user) -> str:
    return ApiToken.issue(user, "lane")[1]


def _callers(user):
    """(kind, client, headers) for both identities the lane knows."""
    return [
        ("bearer", Client(), {"HTTP_AUTHORIZATION": f"Bearer {_token(user)}"}),
        ("session", client_for(user), {}),
    ]


def _until_answered(lane, client, url, **headers):
    """GET `url` until the lane answers it (it learns Django's headers first); the response."""
    for _ in range(6):
        before = lane.answered
        response = client.get(url, **headers)
        if lane.answered > before:
            return response
    raise AssertionError(f"the lane never answered {url}")


@pytest.mark.parametrize("kind", ["bearer", "session"])
@pytest.mark.parametrize(
    "path", ["/api/rx/agents.getAll?organizationId={org}", "/api/agents?organizationId={org}"]
)
def test_a_hit_is_answered_by_the_lane_as_django_answers_it(
    fast, kind, path, alice, org_a, agent_a
):
    _, client, headers = next(c for c in _callers(alice) if c[0] == kind)
    url = path.format(org=org_a.pk)
    answered = _until_answered(fast, client, url, **headers)
    fast.enabled = False  # a disabled lane declines everything: Django answers
    django = client.get(url, **headers)
    assert django["X-Reactive-Cache"] == "hit"
    assert answered.status_code == django.status_code == 200
    assert list(answered.items()) == list(django.items())
    assert answered.content == django.content
    data = answered.json()["data"] if "/rx/" in path else answered.json()
    assert [agent["name"] for agent in data] == ["Agent A"]


@pytest.mark.parametrize("kind", ["bearer", "session"])
def test_if_none_match_with_the_current_etag_is_answered_304(fast, kind, alice, org_a, agent_a):
    _, client, headers = next(c for c in _callers(alice) if c[0] == kind)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    etag = _until_answered(fast, client, url, **headers)["ETag"]
    conditional = {**headers, "HTTP_IF_NONE_MATCH": etag}
    not_modified = _until_answered(fast, client, url, **conditional)
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified["ETag"] == etag and not_modified["Cache-Control"] == "private, no-cache"
    fast.enabled = False
    django = client.get(url, **conditional)
    assert list(django.items()) == list(not_modified.items()) and django.content == b""
    fast.enabled = True
    Agent.objects.filter(pk=agent_a.pk).update(name="Renamed")  # a change: a new ETag, a body
    changed = client.get(url, **conditional)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["data"][0]["name"] == "Renamed"


@pytest.mark.parametrize("kind", ["bearer", "session"])
def test_a_stale_etag_gets_the_whole_body_from_the_lane(fast, kind, alice, org_a, agent_a):
    _, client, headers = next(c for c in _callers(alice) if c[0] == kind)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    full = _until_answered(fast, client, url, **headers)
    etag = full["ETag"]
    _until_answered(fast, client, url, HTTP_IF_NONE_MATCH=etag, **headers)  # learns the 304
    for _ in range(3):  # the entry read for its ETag alone, then whole when the ETag is stale
        before = fast.answered
        stale = client.get(url, HTTP_IF_NONE_MATCH='"stale"', **headers)
        assert stale.status_code == 200 and stale.content == full.content
        assert fast.answered == before + 1
        assert client.get(url, HTTP_IF_NONE_MATCH=etag, **headers).status_code == 304


def test_a_stale_etag_gets_the_body(alice, org_a, agent_a):
    client = client_for(alice)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    response = client.get(url, HTTP_IF_NONE_MATCH='"not-the-etag"')
    assert response.status_code == 200 and response.json()["data"]
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"x", {response["ETag"]}').status_code == 304


def test_a_revoked_token_is_refused_at_once(fast, alice, org_a, agent_a):
    token = _token(alice)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    client = Client()
    _until_answered(fast, client, url, HTTP_AUTHORIZATION=f"Bearer {token}")
    ApiToken.objects.get(user=alice).revoke()
    answered = fast.answered
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert fast.answered == answered


@pytest.mark.parametrize("kind", ["bearer", "session"])
def test_a_deactivated_user_is_refused_at_once(fast, kind, alice, org_a, agent_a):
    _, client, headers = next(c for c in _callers(alice) if c[0] == kind)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    _until_answered(fast, client, url, **headers)
    alice.is_active = False
    alice.save()
    answered = fast.answered
    assert client.get(url, **headers).status_code == 401
    assert fast.answered == answered


@pytest.mark.parametrize("kind", ["bearer", "session"])
def test_a_removed_member_is_refused_at_once(fast, kind, make_user, alice, org_a, agent_a):
    bob = make_user("bob")
    Membership.objects.create(user=bob, organization=org_a, role="member")
    _, client, headers = next(c for c in _callers(bob) if c[0] == kind)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    _until_answered(fast, client, url, **headers)
    Membership.objects.filter(user=bob).delete()
    answered = fast.answered
    assert client.get(url, **headers).status_code == 403
    assert fast.answered == answered


def test_a_logged_out_session_is_refused_at_once(fast, alice, org_a, agent_a):
    client = client_for(alice)
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    _until_answered(fast, client, url)
    stolen = client.cookies["sessionid"].value
    client.logout()
    thief = Client()
    thief.cookies["sessionid"] = stolen
    assert thief.get(url).status_code == 401


def test_a_host_django_refuses_is_never_answered(fast, alice, org_a, agent_a):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {_token(alice)}"}
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    _until_answered(fast, client, url, **headers)
    answered = fast.answered
    assert client.get(url, HTTP_HOST="evil.example", **headers).status_code == 400
    assert client.get(url, secure=True, **headers)["X-Reactive-Cache"] == "hit"
    assert fast.answered == answered  # HTTPS: learned anew, as Django may answer it otherwise


def test_a_seen_request_costs_one_cache_round_trip(fast, monkeypatch, alice, org_a, agent_a):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {_token(alice)}"}
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    _until_answered(fast, client, url, **headers)
    trips = []
    real = prefetch.aget_many

    async def counted(backend, keys, heads=()):
        trips.append(keys)
        return await real(backend, keys, heads)

    monkeypatch.setattr(prefetch, "aget_many", counted)
    for _ in range(3):
        _until_answered(fast, client, url, **headers)
    assert len(trips) == 3
    assert any(k.startswith("rx:e:apitoken:") for k in trips[0])  # identity and entry together
    assert any(":agents.getAll:" in k for k in trips[0])


def test_misses_errors_and_a_failed_cache_go_to_django(fast, monkeypatch, alice, org_a, agent_a):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {_token(alice)}"}
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    _until_answered(fast, client, url, **headers)
    answered = fast.answered
    Agent.objects.create(organization=org_a, name="Agent B", role="x")  # invalidates the entry
    response = client.get(url, **headers)
    assert response["X-Reactive-Cache"] == "miss" and len(response.json()["data"]) == 2
    assert client.get(url + "&limit=abc", **headers).status_code == 422
    assert client.get("/api/rx/agents.nope", **headers).status_code == 404

    async def down(backend, keys, heads=()):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(prefetch, "aget_many", down)
    assert client.get(url, **headers).status_code == 200
    assert fast.answered == answered


async def _asgi_get(app, path, query, headers):
    scope = http_scope("GET", path, query.encode(), headers)
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    body = await communicator.receive_output(10)
    await communicator.wait(10)
    return start["status"], start["headers"], body["body"]


@pytest.mark.usefixtures("hub")
async def test_the_asgi_application_answers_hits_itself(alice, org_a, agent_a):
    """The lane as mounted in teamhub/asgi.py: learning from Django's responses, then answering."""
    token = await sync_to_async(_token)(alice)
    django = get_asgi_application()
    lane = build(django)
    lane.templates.clear()  # what earlier tests taught it
    headers = [(b"authorization", f"Bearer {token}".encode())]
    query = f"organizationId={org_a.pk}"
    seen = [await _asgi_get(lane, "/api/rx/agents.getAll", query, headers) for _ in range(5)]
    # Two hits from Django that agree (after the first request's miss) teach it the headers.
    assert lane.answered >= 2
    from_django = await _asgi_get(django, "/api/rx/agents.getAll", query, headers)
    assert seen[-1] == from_django and from_django[0] == 200
    await prefetch.aclose()
