"""The scheduler: one message per due slot, exactly once, on a clock the tests drive.

In process: a :class:`Scheduler` whose ``now`` is a test's clock (no real
waiting), two of them at once on their own connections, the loop woken and
stopped. The command, as a process of its own: tests/system/test_run_scheduler.py.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from agency.models import Agent, Cron, Message
from agency.scheduler import MIN_SLEEP, RETRY, Outcome, Scheduler, message_content

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

T0 = datetime(2030, 1, 7, 10, 30, 20, tzinfo=UTC)  # a Monday; Berlin is UTC+1
WAIT = 15.0  # seconds a thread may take to tick or stop


class Clock:
    """The scheduler's `now`, moved by the test."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def scheduler(clock):
    made: list[Scheduler] = []

    def make(**options) -> Scheduler:
        made.append(Scheduler(now=clock, **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


def make_cron(agent, schedule="* * * * *", armed_at=T0, **extra) -> Cron:
    return Cron.objects.create(
        organization=agent.organization, agent=agent, schedule=schedule, armed_at=armed_at, **extra
    )


def runs(cron: Cron) -> list[str]:
    """The slots the messages of `cron` were posted for, oldest first."""
    found = Message.objects.filter(metadata__cronId=str(cron.pk)).order_by("created_at")
    return [m.metadata["slot"] for m in found]


# --- one scheduler -------------------------------------------------------------------------------


def test_a_due_slot_posts_one_message_and_records_the_run(scheduler, clock, agent_a):
    cron = make_cron(agent_a, payload={"content": "Status, please.", "extra": 1})
    one = scheduler()
    assert one.tick() == 0  # armed at 10:30:20: the first slot is 10:31
    clock.advance(seconds=40)  # 10:31:00
    assert one.tick() == 1
    message = Message.objects.get()
    assert (message.organization_id, message.from_agent_id, message.to_agent_id) == (
        agent_a.organization_id,
        agent_a.pk,
        None,
    )
    assert message.content == "Status, please."
    assert message.metadata == {"cronId": str(cron.pk), "slot": "2030-01-07T10:31:00+00:00"}
    cron.refresh_from_db()
    assert cron.last_run_at == datetime(2030, 1, 7, 10, 31, tzinfo=UTC)
    assert one.tick() == 0  # the same slot never again
    assert Message.objects.count() == 1
    clock.advance(seconds=59)
    assert one.tick() == 0
    clock.advance(seconds=1)
    assert one.tick() == 1
    assert runs(cron) == ["2030-01-07T10:31:00+00:00", "2030-01-07T10:32:00+00:00"]


@pytest.mark.parametrize(
    "payload,content",
    [
        ({"content": "hello"}, "hello"),
        ({"task": "sum", "n": 2}, '{"n":2,"task":"sum"}'),
        ({"content": "  "}, '{"content":"  "}'),
        ({}, "Scheduled run (* * * * *)."),
    ],
)
def test_message_content(payload, content):
    assert message_content(payload, "* * * * *") == content


def test_after_downtime_the_latest_missed_slot_fires_once(scheduler, clock, agent_a):
    cron = make_cron(agent_a, "*/5 * * * *")
    hourly = make_cron(agent_a, "0 * * * *")
    one = scheduler()
    clock.advance(days=3, minutes=2)  # down for three days: 864 slots of */5 missed
    assert one.tick() == 2
    assert runs(cron) == ["2030-01-10T10:30:00+00:00"]
    assert runs(hourly) == ["2030-01-10T10:00:00+00:00"]
    assert one.tick() == 0
    clock.advance(minutes=3)  # 10:35:20
    assert one.tick() == 1
    assert runs(cron)[-1] == "2030-01-10T10:35:00+00:00" and len(runs(hourly)) == 1


def test_slots_fall_in_the_organization_time_zone(scheduler, clock, agent_a):
    org = agent_a.organization
    org.settings = {"timeZone": "Europe/Berlin"}
    org.save()
    cron = make_cron(agent_a, "0 12 * * *")  # noon in Berlin: 11:00 UTC in winter
    one = scheduler()
    clock.at = datetime(2030, 1, 7, 11, 0, tzinfo=UTC)
    assert one.tick() == 1 and runs(cron) == ["2030-01-07T11:00:00+00:00"]
    clock.at = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # noon UTC: nothing
    assert one.tick() == 0


def test_disabled_and_deleted_crons_do_not_fire(scheduler, clock, agent_a):
    off = make_cron(agent_a, enabled=False)
    cron = make_cron(agent_a)
    one = scheduler()
    clock.advance(minutes=5)
    due = one.scan(clock())
    assert [d.cron_id for d in due] == [cron.pk]
    # Disabled (or deleted) after the scan found it due: the lock's re-read sees it.
    Cron.objects.filter(pk=cron.pk).update(enabled=False)
    assert one.fire(due[0], clock()) is Outcome.SKIPPED
    Cron.objects.filter(pk=cron.pk).update(enabled=True)
    Cron.objects.filter(pk=cron.pk).delete()
    assert one.fire(due[0], clock()) is Outcome.SKIPPED
    assert one.tick() == 0 and not Message.objects.exists()
    assert runs(off) == []


def test_a_fired_slot_found_due_by_a_stale_scan_is_skipped(scheduler, clock, agent_a):
    cron = make_cron(agent_a)
    first, second = scheduler(), scheduler()
    clock.advance(minutes=1)
    due = second.scan(clock())
    assert first.tick() == 1
    assert second.fire(due[0], clock()) is Outcome.SKIPPED
    # An agent change since the scan: tried again soon, never with the old agent.
    other = Agent.objects.create(organization=agent_a.organization, name="B", role="r")
    clock.advance(minutes=1)
    due = second.scan(clock())
    Cron.objects.filter(pk=cron.pk).update(agent=other)
    assert second.fire(due[0], clock()) is Outcome.BUSY
    assert second.tick() == 1 and Message.objects.latest("created_at").from_agent_id == other.pk
    assert len(runs(cron)) == 2


def test_reenabled_cron_does_not_fire_what_it_missed(scheduler, clock, agent_a):
    cron = make_cron(agent_a, enabled=False)
    one = scheduler()
    clock.advance(hours=2)
    assert one.tick() == 0
    cron.enabled = True
    cron.save()  # re-armed now (real time, after the test clock's T0)
    cron.refresh_from_db()
    clock.at = cron.armed_at
    assert one.tick() == 0
    clock.at = cron.armed_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert one.tick() == 1 and runs(cron) == [clock().isoformat()]


def test_it_sleeps_until_the_next_slot_at_most_max_sleep(scheduler, clock, agent_a):
    one = scheduler(max_sleep=30)
    one.tick()
    assert one.next_at is None and one.seconds_to_wait(clock()) == 30
    make_cron(agent_a, "* * * * *")  # next slot 10:31:00, 40 s away
    make_cron(agent_a, "0 * * * *")
    one.tick()
    assert one.seconds_to_wait(clock()) == 30
    clock.advance(seconds=25)
    one.tick()
    assert one.seconds_to_wait(clock()) == pytest.approx(15)
    clock.advance(seconds=15)
    assert one.tick() == 1  # fired at 10:31: next 10:32
    assert one.next_at == datetime(2030, 1, 7, 10, 32, tzinfo=UTC)
    assert one.seconds_to_wait(clock()) == 30
    clock.advance(seconds=59.999)
    assert one.seconds_to_wait(clock()) == MIN_SLEEP
    one.retry = True
    assert one.seconds_to_wait(clock()) == RETRY


def test_the_loop_wakes_early_and_stops_after_its_tick(scheduler, clock, agent_a):
    one = scheduler(max_sleep=600)  # a long sleep: only wake() ends it in time
    ticks: list[datetime] = []
    original = one.tick

    def tick() -> int:
        ticks.append(clock())
        return original()

    one.tick = tick
    thread = threading.Thread(target=lambda: (one.run(), connections.close_all()), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not ticks:
        assert time.monotonic() < deadline, "the loop did not tick"
        time.sleep(0.01)
    cron = make_cron(agent_a)
    clock.advance(minutes=1)
    one.wake()
    while not runs(cron):
        assert time.monotonic() < deadline, "wake() did not end the sleep"
        time.sleep(0.01)
    one.stop()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(runs(cron)) == 1


# --- two schedulers at once ----------------------------------------------------------------------

CRONS = 40
ROUNDS = 3


def test_two_schedulers_fire_each_slot_once(scheduler, clock, org_a):
    """Two schedulers, each on its own connection (a thread each), tick at the same moment
    over the same due crons, round after round: one message per cron and slot."""
    agents = [Agent.objects.create(organization=org_a, name=f"a{i}", role="r") for i in range(4)]
    crons = [make_cron(agents[i % 4]) for i in range(CRONS)]
    pair = [scheduler(), scheduler()]
    counts = [0, 0]
    problems: list[str] = []

    def work(index: int, gate: threading.Barrier) -> None:
        try:
            gate.wait(WAIT)
            counts[index] += pair[index].tick()
        except Exception as exc:  # reported below, with the other thread's result
            problems.append(repr(exc))
        finally:
            connections.close_all()

    for _ in range(ROUNDS):
        clock.advance(minutes=1)
        gate = threading.Barrier(2)
        threads = [threading.Thread(target=work, args=(i, gate)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 4)
        assert not any(t.is_alive() for t in threads) and problems == []
    print(f"\ntwo schedulers, {CRONS} crons x {ROUNDS} slots: fired {counts}")
    assert sum(counts) == CRONS * ROUNDS == Message.objects.count()
    for cron in crons:
        slots = runs(cron)
        assert len(slots) == len(set(slots)) == ROUNDS, (cron.pk, slots)
        cron.refresh_from_db()
        assert cron.last_run_at.isoformat() == slots[-1]


def test_a_run_that_fails_is_rolled_back_and_tried_again(scheduler, clock, agent_a, monkeypatch):
    cron = make_cron(agent_a)
    one = scheduler()
    clock.advance(minutes=1)
    failures = [RuntimeError("the database went away")]

    def content(payload: dict, schedule: str) -> str:
        if failures:
            raise failures.pop()
        return message_content(payload, schedule)

    monkeypatch.setattr("agency.scheduler.message_content", content)
    assert one.tick() == 0 and one.retry and one.seconds_to_wait(clock()) == RETRY
    assert runs(cron) == [] and Cron.objects.get().last_run_at is None
    assert one.tick() == 1 and not one.retry
    assert runs(cron) == ["2030-01-07T10:31:00+00:00"]
