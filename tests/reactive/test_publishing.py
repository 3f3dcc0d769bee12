"""Publishing committed changes (reactive/publishing.py): bump first, then one event per stream."""

from __future__ import annotations

import logging

import pytest

from reactive import fanout, metrics, publishing
from reactive.cache import reactive_cache, version_key
from reactive.events import GLOBAL_TENANT, SILENT, Event
from reactive.log import get_log


class FakeCache:
    """The reactive cache's publishing side: bumps, and the tags still pending."""

    def __init__(self, calls: list, works: bool = True):
        self.calls, self.works = calls, works
        self.unbumped: set[str] = set()

    def bump(self, tags) -> bool:
        self.calls.append(("bump", set(tags)))
        return self.works


class FakeLog:
    """An event log that records appends and announcements, and can fail either."""

    def __init__(self, calls: list):
        self.calls = calls
        self.seq = 0
        self.fail_append = self.fail_announce = False

    def append(self, tenant: str, tags: list[str], at: int) -> Event:
        if self.fail_append:
            raise ConnectionError("log down")
        self.seq += 1
        self.calls.append(("append", tenant, tags))
        return Event(str(self.seq), tenant, tags, at)

    def announce(self, event: Event) -> None:
        self.calls.append(("announce", event.id))
        if self.fail_announce:
            raise ConnectionError("no hub")


@pytest.fixture
def calls() -> list:
    return []


@pytest.fixture
def cache(calls, monkeypatch) -> FakeCache:
    fake = FakeCache(calls)
    monkeypatch.setattr(publishing, "reactive_cache", lambda: fake)
    return fake


@pytest.fixture
def log(calls, monkeypatch) -> FakeLog:
    fake = FakeLog(calls)
    monkeypatch.setattr(publishing, "get_log", lambda: fake)
    return fake


def test_every_tag_is_bumped_once_before_any_event(cache, log, calls):
    assert publishing.publish({"org-1": {"b", "a"}, None: {"g"}}, {"org-1": {"a", "c"}})
    assert calls[0] == ("bump", {"a", "b", "c", "g"})
    appends = [c for c in calls if c[0] == "append"]
    assert appends == [
        ("append", "org-1", ["a", "b"]),  # sorted, one per batch and stream
        ("append", GLOBAL_TENANT, ["g"]),  # no stream: the global one
        ("append", "org-1", ["a", "c"]),
    ]
    assert [c for c in calls if c[0] == "announce"] == [("announce", str(i)) for i in (1, 2, 3)]


def test_a_failed_bump_appends_nothing(cache, log, calls):
    cache.works = False
    assert publishing.publish({"org-1": {"a"}}) is False
    assert [c[0] for c in calls] == ["bump"]


def test_bumps_pending_from_an_earlier_failure_hold_back_the_event(cache, log, calls):
    cache.unbumped.add("older")
    assert publishing.publish({"org-1": {"a"}}) is False
    assert [c[0] for c in calls] == ["bump"]


def test_a_silent_stream_is_bumped_without_an_event(cache, log, calls):
    assert publishing.publish({SILENT: {"hidden"}, "org-1": {"seen"}})
    assert calls[0] == ("bump", {"hidden", "seen"})
    assert [c for c in calls if c[0] == "append"] == [("append", "org-1", ["seen"])]


def test_nothing_to_publish_touches_nothing(cache, log, calls):
    assert publishing.publish() is True
    assert publishing.publish({}, {"org-1": set()}) is True
    assert calls == []


def test_a_failed_append_is_reported_not_raised(cache, log, calls):
    log.fail_append = True
    assert publishing.publish({"org-1": {"a"}}) is False
    assert [c[0] for c in calls] == ["bump"]


def test_a_failed_announcement_loses_no_event(cache, log, calls, caplog):
    log.fail_announce = True
    with caplog.at_level(logging.ERROR, logger="reactive"):
        assert publishing.publish({"org-1": {"a"}, "org-2": {"b"}}) is True
    assert [c[1] for c in calls if c[0] == "append"] == ["org-1", "org-2"]
    assert "could not fan out" in caplog.text


def test_a_published_change_counts_as_an_invalidation(cache, log):
    before = metrics.process_totals()
    publishing.publish({"org-1": {"a", "b"}})
    after = metrics.process_totals()
    assert after.get("events", 0) - before.get("events", 0) == 1
    assert after.get("tags", 0) - before.get("tags", 0) == 2


def test_the_real_cache_and_log_see_the_change():
    backend = reactive_cache().backend
    tag = "testapp.book:id=publishing-test"
    backend.set(version_key(tag), "old-token", None)
    log = get_log()
    start = log.position()
    assert publishing.publish({"tenant-publishing": {tag}})
    assert backend.get(version_key(tag)) not in (None, "old-token")
    (event,) = log.read(["tenant-publishing"], int(start))
    assert event.tags == [tag]


# --- a request's events wait for its response, in this process's hubs -------------------


class FakeHold:
    """What publishing tells the hubs: the writer's events, then that its response is out."""

    def __init__(self, calls: list):
        self.calls = calls
        self.calls.append(("hold",))

    def appended(self, event: Event) -> None:
        self.calls.append(("appended", event.id))

    def release(self) -> None:
        self.calls.append(("release",))


@pytest.fixture
def holds(calls, monkeypatch) -> list:
    monkeypatch.setattr(fanout, "hold_back", lambda: FakeHold(calls))
    yield calls
    publishing.responded()


def test_a_request_holds_its_events_back_until_its_response_is_out(cache, log, holds):
    publishing.responding()  # request_started
    assert publishing.publish({"org-1": {"a"}, SILENT: {"s"}}, {"org-2": {"b"}})
    # One hold, taken before the first append (the live path may be faster than the reply).
    steps = [c[0] for c in holds]
    assert steps == ["bump", "hold", *["append", "appended", "announce"] * 2]
    assert publishing.publish({"org-1": {"c"}})  # a second transaction of the same request
    assert ("release",) not in holds
    publishing.responded()  # request_finished: the response went out
    assert holds.count(("release",)) == 2
    publishing.responded()  # twice is harmless
    assert holds.count(("release",)) == 2


def test_outside_a_request_nothing_is_held(cache, log, holds):
    assert publishing.publish({"org-1": {"a"}})  # a drainer, a command, a worker
    assert [c[0] for c in holds] == ["bump", "append", "announce"]


def test_a_failed_append_releases_its_hold_at_once(cache, log, holds):
    publishing.responding()
    log.fail_append = True
    assert publishing.publish({"org-1": {"a"}}) is False
    assert [c[0] for c in holds] == ["bump", "hold", "release"]


def test_a_request_that_never_finished_releases_at_the_next_one(cache, log, holds):
    publishing.responding()
    assert publishing.publish({"org-1": {"a"}})
    publishing.responding()  # the thread serves another request: the first one is over
    assert holds[-1] == ("release",)
