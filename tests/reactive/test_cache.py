"""The versioned-tag cache: hits, precise invalidation, no stale set, single flight, failures."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from agency.models import Agent
from reactive.cache import ReactiveCache, SingleFlight, reactive_cache
from reactive.functions import Context, registry

pytestmark = pytest.mark.django_db(transaction=True)
WAIT = 10  # seconds any cross-thread wait may take at most


def get_agents(user, org):
    return registry["agents.getAll"].call({"organizationId": str(org.pk)}, Context(user=user))


def test_hit_after_miss_and_precise_invalidation(alice, bob, org_a, org_b, agent_a, agent_b):
    assert not get_agents(alice, org_a).hit
    assert get_agents(alice, org_a).hit
    assert not get_agents(bob, org_b).hit
    Agent.objects.create(organization=org_a, name="new", role="r")
    fresh = get_agents(alice, org_a)
    assert not fresh.hit and {a["name"] for a in fresh.data} == {"Agent A", "new"}
    assert get_agents(bob, org_b).hit  # a write in A leaves B cached


def test_rollback_leaves_cache_valid(alice, org_a, agent_a):
    from django.db import transaction

    get_agents(alice, org_a)
    with pytest.raises(RuntimeError), transaction.atomic():
        Agent.objects.filter(pk=agent_a.pk).update(name="never")
        raise RuntimeError
    again = get_agents(alice, org_a)
    assert again.hit and again.data[0]["name"] == "Agent A"


def test_stale_set_race_is_closed(alice, org_a, agent_a):
    """A reader that read the database before a write commits must not poison the cache."""
    fn = registry["agents.getAll"]
    read_done, write_done = threading.Event(), threading.Event()
    original = fn.handler
    results = {}

    def slow_handler(ctx, inp):
        data = original(ctx, inp)  # reads the old row
        read_done.set()
        assert write_done.wait(WAIT)  # the writer commits and invalidates meanwhile
        return data

    def reader():
        try:
            results["stale"] = fn.call({"organizationId": str(org_a.pk)}, Context(user=alice))
        finally:
            connections.close_all()

    fn.handler = slow_handler
    try:
        thread = threading.Thread(target=reader)
        thread.start()
        assert read_done.wait(WAIT)
        Agent.objects.filter(pk=agent_a.pk).update(name="written")  # commit + bump
        write_done.set()
        thread.join(WAIT)
    finally:
        fn.handler = original
    assert results["stale"].data[0]["name"] == "Agent A"  # it did read before the write
    after = get_agents(alice, org_a)
    assert not after.hit, "the entry stored by the racing reader must never hit"
    assert after.data[0]["name"] == "written"


def test_single_flight_runs_handler_once():
    flight = SingleFlight()
    calls = []
    started, release = threading.Event(), threading.Event()
    n = 8
    arrived = threading.Barrier(n + 1)

    def compute():
        calls.append(1)
        started.set()
        assert release.wait(WAIT)
        return {"value": 42}

    results = []

    def worker():
        arrived.wait(WAIT)
        results.append(flight.run("key", compute))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    arrived.wait(WAIT)
    assert started.wait(WAIT)
    # release the leader only once every other caller follows its flight
    pending = flight.flights["key"]
    for _ in range(WAIT * 1000):
        if pending.followers == n - 1:
            break
        threading.Event().wait(0.001)
    assert pending.followers == n - 1
    release.set()
    for t in threads:
        t.join(WAIT)
    assert len(calls) == 1
    assert results == [{"value": 42}] * n


def test_concurrent_misses_through_the_cache_compute_once(settings):
    cache = ReactiveCache("default")
    calls = []
    gate = threading.Event()

    def compute():
        calls.append(1)
        assert gate.wait(WAIT)
        return [1, 2, 3]

    out = []
    threads = [
        threading.Thread(target=lambda: out.append(cache.fetch("rx:e:k", ["t1"], compute, str)))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    while not calls:
        threading.Event().wait(0.001)
    threading.Event().wait(0.05)  # let the others reach the flight (it only helps)
    gate.set()
    for t in threads:
        t.join(WAIT)
    assert [r.data for r in out] == [[1, 2, 3]] * 6
    assert len(calls) <= 2  # one leader; a thread that arrived after it finished may recompute
    assert cache.fetch("rx:e:k", ["t1"], compute, str).hit


def test_leader_failure_does_not_fail_followers():
    flight = SingleFlight()
    with pytest.raises(ZeroDivisionError):
        flight.run("k", lambda: 1 / 0)
    assert flight.run("k", lambda: "ok") == "ok"
    assert flight.flights == {}


def test_per_user_function_keys_by_caller(alice, bob, org_a, org_b):
    fn = registry["organizations.getAll"]
    mine = fn.call({}, Context(user=alice))
    theirs = fn.call({}, Context(user=bob))
    assert mine.key != theirs.key
    assert [o["name"] for o in mine.data] == ["Org A"]
    assert [o["name"] for o in theirs.data] == ["Org B"]


def test_access_is_checked_on_hits(alice, bob, org_a, agent_a):
    from reactive.errors import Forbidden

    assert get_agents(alice, org_a).data
    with pytest.raises(Forbidden):
        get_agents(bob, org_a)  # the entry is cached: still refused


def test_membership_change_takes_effect_at_once(alice, bob, org_a, agent_a):
    from agency.models import Membership
    from reactive.errors import Forbidden

    with pytest.raises(Forbidden):
        get_agents(bob, org_a)
    Membership.objects.create(user=bob, organization=org_a)
    assert get_agents(bob, org_a).data
    Membership.objects.filter(user=bob, organization=org_a).delete()
    with pytest.raises(Forbidden):
        get_agents(bob, org_a)


BROKEN_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


def test_cache_down_degrades_to_database(alice, org_a, agent_a, settings):
    settings.CACHES = BROKEN_REDIS  # Django resets its cache handlers on this change
    assert "RedisCache" in type(reactive_cache().backend).__name__
    first = get_agents(alice, org_a)
    Agent.objects.create(organization=org_a, name="while down", role="r")  # bump fails quietly
    second = get_agents(alice, org_a)
    assert not first.hit and not second.hit
    assert {a["name"] for a in second.data} == {"Agent A", "while down"}


def test_evicted_version_is_a_miss(alice, org_a, agent_a):
    get_agents(alice, org_a)
    result = get_agents(alice, org_a)
    reactive_cache().backend.delete_many([f"rx:v:{t}" for t in result.tags])
    assert not get_agents(alice, org_a).hit


def test_failed_bump_never_lets_a_stale_entry_hit(alice, org_a, agent_a, monkeypatch):
    """A write while the cache cannot be bumped: no read may serve the old entry afterwards."""
    assert get_agents(alice, org_a).data[0]["name"] == "Agent A"  # cached
    backend = reactive_cache().backend
    real_set_many = backend.set_many

    def down(*args, **kwargs):
        raise ConnectionError("cache unreachable")

    monkeypatch.setattr(backend, "set_many", down)
    Agent.objects.filter(pk=agent_a.pk).update(name="written while down")
    still_down = get_agents(alice, org_a)
    assert not still_down.hit and still_down.data[0]["name"] == "written while down"
    monkeypatch.setattr(backend, "set_many", real_set_many)  # the cache is back, entry intact
    back = get_agents(alice, org_a)
    assert not back.hit and back.data[0]["name"] == "written while down"
    assert reactive_cache().unbumped == set()
    assert get_agents(alice, org_a).hit  # and caching resumes


@pytest.fixture
def cache_reads(monkeypatch):
    """A function that starts counting the cache's get_many calls and returns their list."""

    def start() -> list:
        calls: list = []
        backend = type(reactive_cache().backend)
        original = backend.get_many
        monkeypatch.setattr(
            backend, "get_many", lambda self, keys: calls.append(keys) or original(self, keys)
        )
        return calls

    return start


def test_cached_many_reads_every_hit_in_one_round_trip(cache_reads):
    from reactive.cache import cached_many
    from reactive.tags import table_tag

    computed = []
    lookups = [
        (f"many:{n}", [table_tag(Agent)], lambda n=n: computed.append(n) or {"n": n})
        for n in range(3)
    ]
    assert cached_many(lookups) == [{"n": 0}, {"n": 1}, {"n": 2}] and computed == [0, 1, 2]
    calls = cache_reads()
    assert cached_many(lookups) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len(calls) == 1 and computed == [0, 1, 2]  # one read, nothing computed again
    reactive_cache().bump([table_tag(Agent)])
    assert cached_many(lookups) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert computed == [0, 1, 2, 0, 1, 2]  # a bumped tag: each recomputed


def test_token_request_checks_membership_without_another_cache_read(
    alice, org_a, agent_a, cache_reads
):
    """The token lookup brings the caller's memberships: a hit is three reads, not four."""
    from django.test import Client

    from agency.models import ApiToken

    _, raw = ApiToken.issue(alice, "reads")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    url = f"/api/rx/agents.getAll?organizationId={org_a.pk}"
    assert client.get(url)["X-Reactive-Cache"] == "miss"
    calls = cache_reads()
    response = client.get(url)
    assert response.status_code == 200 and response["X-Reactive-Cache"] == "hit"
    assert len(calls) == 3, calls  # the token; the user and memberships; the entry
