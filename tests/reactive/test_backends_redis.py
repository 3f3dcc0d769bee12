"""The shared event log (reactive/backends/redis.py): Redis Streams, and pub/sub as its live path.

Each test has a key prefix of its own, as two projects sharing one Redis
would, and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from django.conf import settings

from reactive.backends.redis import RedisLog
from reactive.events import Event
from reactive.log import Gap

pytestmark = pytest.mark.services
WAIT = 5  # seconds any wait of these tests may take at most


@pytest.fixture
def prefix():
    name = f"rxtest:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_log(prefix):
    """A log of this test's prefix: one per 'process'."""

    def make(maxlen: int = 100) -> RedisLog:
        return RedisLog(maxlen=maxlen, prefix=prefix, url=settings.REDIS_URL)

    return make


class FakeReceiver:
    """A hub stand-in: records what the live path delivers and how often it resyncs."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.up = asyncio.Event()
        self.resyncs = 0

    async def handle(self, event: Event) -> None:
        await self.events.put(event)

    async def resync(self) -> None:
        self.resyncs += 1

    def connected(self) -> None:
        self.up.set()


def test_two_processes_share_one_sequence_and_one_log(make_log):
    one, two = make_log(), make_log()
    start = int(one.position())
    a1 = one.append("a", ["x", "y"], 10)
    b1 = two.append("b", ["z"], 11)
    a2 = two.append("a", [], 12)
    assert start < int(a1.id) < int(b1.id) < int(a2.id)
    assert (a1.prev, b1.prev, a2.prev) == ("0", "0", a1.id)
    assert one.position() == two.position() == a2.id
    assert one.last_id("a") == a2.id and one.last_id("nobody") == "0"
    read = one.read(["a", "b"], start)
    assert [(e.id, e.tenant, e.tags, e.at) for e in read] == [
        (a1.id, "a", ["x", "y"], 10),
        (b1.id, "b", ["z"], 11),
        (a2.id, "a", [], 12),
    ]
    assert [e.id for e in two.read(["a"], int(a1.id))] == [a2.id]
    assert [e.id for e in two.read(["a", "b"], start, limit=1)] == [a1.id]


def test_a_position_outside_what_the_log_holds_is_a_gap(make_log):
    log = make_log()
    event = log.append("a", ["t"], 0)
    with pytest.raises(Gap):
        log.read(["a"], 0)  # before the log's origin
    with pytest.raises(Gap):
        log.read(["a"], int(event.id) + 1)  # ahead of the sequence


def test_a_position_older_than_what_maxlen_trimmed_is_a_gap(make_log):
    log = make_log(maxlen=10)
    start = int(log.position())
    # MAXLEN ~ drops whole nodes of 100 entries: 300 appends drop some for sure.
    events = [log.append("a", [str(i)], 0) for i in range(300)]
    held = log.client.xrange(log.stream_key("a"), count=1)[0][0].split("-")[0]
    assert held != events[0].id  # trimmed
    with pytest.raises(Gap):
        log.read(["a"], start)
    with pytest.raises(Gap):
        log.read(["a"], int(events[0].id))
    newest = events[-1]
    assert [e.id for e in log.read(["a"], int(events[-2].id))] == [newest.id]
    log.read(["b"], start)  # another tenant's log lost nothing


def test_a_position_older_than_a_deleted_entry_is_a_gap(make_log):
    log = make_log()
    start = int(log.position())
    events = [log.append("a", [str(i)], 0) for i in range(3)]
    log.client.xdel(log.stream_key("a"), f"{events[1].id}-0")
    with pytest.raises(Gap):
        log.read(["a"], start)
    assert [e.id for e in log.read(["a"], int(events[1].id))] == [events[2].id]


def test_only_the_append_scripts_messages_parse_as_events():
    event = RedisLog.parse("\x1e".join(["12", "9", "100", "org", "a\x1fb"]))
    assert event == Event("12", "org", ["a", "b"], 100, "9")
    assert RedisLog.parse("\x1e".join(["12", "9", "100", "org", ""])).tags == []
    assert RedisLog.parse("stop\x1e1234") is None


async def test_an_append_anywhere_reaches_each_listener_over_pubsub(make_log):
    listening, writer = make_log(), make_log()
    receiver = FakeReceiver()
    task = asyncio.create_task(listening.listen(receiver))
    await asyncio.wait_for(receiver.up.wait(), WAIT)
    assert receiver.resyncs == 1  # what was published while it subscribed is read back
    appended = await asyncio.to_thread(writer.append, "org", ["agency.agent:id=1", "b"], 5)
    got = await asyncio.wait_for(receiver.events.get(), WAIT)
    assert got == appended
    await listening.stop(receiver)
    await asyncio.wait_for(task, WAIT)  # listen() returned on the message, not cancelled
    assert listening.listeners == {}


async def test_stop_ends_only_its_own_receivers_listen(make_log):
    log = make_log()
    stopped, kept = FakeReceiver(), FakeReceiver()
    stopping = asyncio.create_task(log.listen(stopped))
    keeping = asyncio.create_task(log.listen(kept))
    await asyncio.wait_for(asyncio.gather(stopped.up.wait(), kept.up.wait()), WAIT)
    await log.stop(stopped)
    await asyncio.wait_for(stopping, WAIT)
    assert not keeping.done()
    appended = await asyncio.to_thread(log.append, "org", ["t"], 1)
    assert await asyncio.wait_for(kept.events.get(), WAIT) == appended
    assert stopped.events.empty()
    await log.stop(kept)
    await asyncio.wait_for(keeping, WAIT)


async def test_another_prefix_is_another_log(make_log):
    mine = make_log()
    receiver = FakeReceiver()
    task = asyncio.create_task(mine.listen(receiver))
    await asyncio.wait_for(receiver.up.wait(), WAIT)
    other = RedisLog(maxlen=10, prefix=f"rxtest:{uuid.uuid4().hex[:12]}", url=settings.REDIS_URL)
    try:
        await asyncio.to_thread(other.append, "org", ["theirs"], 1)
        ours = await asyncio.to_thread(mine.append, "org", ["ours"], 1)
        assert await asyncio.wait_for(receiver.events.get(), WAIT) == ours  # not theirs
    finally:
        other.client.delete(other.seq_key, other.origin_key, other.stream_key("org"))
    await mine.stop(receiver)
    await asyncio.wait_for(task, WAIT)
