"""The embedded event log (reactive/backends/memory.py): storage by position and its live path."""

from __future__ import annotations

import asyncio

import pytest

from reactive.backends.memory import MemoryLog
from reactive.events import Event
from reactive.log import Gap

WAIT = 5  # seconds any wait of these tests may take at most


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog(maxlen=3)


class FakeReceiver:
    """A hub stand-in: records what the live path delivers."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.up = asyncio.Event()

    async def handle(self, event: Event) -> None:
        await self.events.put(event)

    async def resync(self) -> None:
        pass

    def connected(self) -> None:
        self.up.set()


def test_appends_take_growing_ids_and_chain_each_tenant(log):
    start = int(log.position())
    a1 = log.append("a", ["x"], 10)
    b1 = log.append("b", ["y"], 11)
    a2 = log.append("a", ["z"], 12)
    assert start < int(a1.id) < int(b1.id) < int(a2.id)
    assert (a1.prev, b1.prev, a2.prev) == ("0", "0", a1.id)
    assert (a2.tenant, a2.tags, a2.at) == ("a", ["z"], 12)
    assert log.position() == a2.id
    assert (log.last_id("a"), log.last_id("b"), log.last_id("c")) == (a2.id, b1.id, "0")


def test_read_returns_the_tenants_events_after_a_position_oldest_first(log):
    start = int(log.position())
    a1 = log.append("a", ["1"], 0)
    log.append("other", ["2"], 0)
    b1 = log.append("b", ["3"], 0)
    a2 = log.append("a", ["4"], 0)
    assert [e.id for e in log.read(["b", "a"], start)] == [a1.id, b1.id, a2.id]
    assert [e.id for e in log.read(["a"], int(a1.id))] == [a2.id]
    assert [e.id for e in log.read(["a", "b"], start, limit=2)] == [a1.id, b1.id]
    assert log.read(["a"], int(a2.id)) == []
    assert log.read(["nobody"], start) == []


def test_a_position_before_the_log_or_from_the_future_is_a_gap(log):
    event = log.append("a", ["t"], 0)
    with pytest.raises(Gap):
        log.read(["a"], 0)  # older than this log (a restart)
    with pytest.raises(Gap):
        log.read(["a"], int(event.id) + 1)  # newer than this log (another log's position)


def test_a_position_older_than_what_was_trimmed_is_a_gap(log):
    start = int(log.position())
    events = [log.append("a", [str(i)], 0) for i in range(5)]  # maxlen 3: two dropped
    with pytest.raises(Gap):
        log.read(["a"], start)
    with pytest.raises(Gap):
        log.read(["a"], int(events[0].id))  # events[1] was dropped too
    held = log.read(["a"], int(events[1].id))
    assert [e.id for e in held] == [e.id for e in events[2:]]
    log.read(["b"], start)  # another tenant's log lost nothing


def test_it_lives_in_one_process():
    assert MemoryLog.SHARED is False


async def test_announced_events_reach_every_listening_receiver(log):
    first, second = FakeReceiver(), FakeReceiver()
    tasks = [asyncio.create_task(log.listen(r)) for r in (first, second)]
    await asyncio.wait_for(asyncio.gather(first.up.wait(), second.up.wait()), WAIT)
    event = log.append("a", ["t"], 1)
    await asyncio.to_thread(log.announce, event)  # as a writer's thread does after commit
    for receiver in (first, second):
        assert await asyncio.wait_for(receiver.events.get(), WAIT) is event
    for receiver in (first, second):
        await log.stop(receiver)
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)


async def test_stop_ends_only_that_receivers_listen(log):
    stopped, kept = FakeReceiver(), FakeReceiver()
    stopping = asyncio.create_task(log.listen(stopped))
    keeping = asyncio.create_task(log.listen(kept))
    await asyncio.wait_for(asyncio.gather(stopped.up.wait(), kept.up.wait()), WAIT)
    await log.stop(stopped)
    await asyncio.wait_for(stopping, WAIT)  # listen() returned, not cancelled
    assert stopped not in log.receivers and not keeping.done()
    event = log.append("a", ["t"], 1)
    log.announce(event)
    assert await asyncio.wait_for(kept.events.get(), WAIT) is event
    assert stopped.events.empty()
    await log.stop(kept)
    await asyncio.wait_for(keeping, WAIT)
    assert log.receivers == {}


async def test_stopping_a_receiver_that_does_not_listen_does_nothing(log):
    await log.stop(FakeReceiver())
    log.announce(log.append("a", [], 0))  # no receivers: nobody to hand it to
