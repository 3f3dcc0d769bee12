"""The shared event log: Redis Streams for storage, Redis pub/sub for the live path.

The append script also PUBLISHes each event, in the same round trip as the
XADD, and every process's hub holds one pub/sub subscription: a write costs no
extra round trip, and an event costs one message per process, whatever the
number of connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..cache import Breaker
from ..events import Event
from ..log import EventLog, Gap, Receiver

__all__ = ["RedisLog"]

logger = logging.getLogger("reactive")

P = ParamSpec("P")
R = TypeVar("R")
# Stream entries as XRANGE returns them (decode_responses=True): (id, fields), all str.
# redis-py types replies for either setting of decode_responses.
Entries = list[tuple[str, dict[str, str]]]

PING_SECONDS = 1.0  # an idle pub/sub subscription pings Redis this often ...
SILENT_SECONDS = 5.0  # ... and is dropped and made again when Redis stays silent this long

_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[4])
  redis.call('SET', KEYS[2], ARGV[4])
end
redis.call('INCR', KEYS[1])
local id = redis.call('GET', KEYS[1])  -- a string: Lua would print a big number as a float
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local prev = '0'
if last[1] then prev = string.match(last[1][1], '^(%d+)') end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], id .. '-0', 't', ARGV[2], 'at', ARGV[3])
-- the live path: one message to every process's hub, in the same round trip
local sep = string.char(30)
redis.call('PUBLISH', KEYS[4], id .. sep .. prev .. sep .. ARGV[3] .. sep .. ARGV[5] .. sep .. ARGV[2])
return {id, prev}
"""

_POSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[1])
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


class RedisLog(EventLog):
    """One Redis Stream per tenant, ids ``<seq>-0`` from one counter, published as appended.

    When Redis does not answer, operations fail fast for a moment (a
    :class:`~reactive.cache.Breaker`) instead of each waiting for its timeout.
    Options: ``url`` (required).
    """

    BYPASS_SECONDS = 1.0
    REQUIRED_OPTIONS = ("url",)

    def __init__(self, *, maxlen: int, prefix: str = "rx", url: str, **options: Any):
        super().__init__(maxlen=maxlen, prefix=prefix)
        self.client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )
        self.breaker = Breaker(self.BYPASS_SECONDS)
        self.unreachable = (redis.ConnectionError, redis.TimeoutError)
        self.url = url
        self.seq_key, self.origin_key = f"{prefix}:seq", f"{prefix}:origin"
        self.channel = f"{prefix}:events"  # Redis pub/sub: each process's hub subscribes once
        self._append = self.client.register_script(_APPEND)
        self._position = self.client.register_script(_POSITION)
        # receiver -> (its pub/sub client, the message that ends its listen())
        self.listeners: dict[Receiver, tuple[aioredis.Redis, str]] = {}

    def stream_key(self, tenant: str) -> str:
        """The Redis Stream key of `tenant`'s events."""
        return f"{self.prefix}:log:{tenant}"

    def _guarded(self, operation: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        self.breaker.check()
        started = time.monotonic()
        try:
            result = operation(*args, **kwargs)
        except self.unreachable:
            self.breaker.trip(started)
            raise
        self.breaker.reset()
        return result

    def append(self, tenant: str, tags: list[str], at: int) -> Event:
        """Append in one script call, which also publishes the event to every hub."""
        keys = [self.seq_key, self.origin_key, self.stream_key(tenant), self.channel]
        args: list[int | str] = [self.maxlen, "\x1f".join(tags), at, time.time_ns() // 1000, tenant]
        seq, prev = self._guarded(self._append, keys=keys, args=args)
        return Event(str(seq), tenant, tags, at, str(prev))

    def announce(self, event: Event) -> None:
        """Nothing to do: the append script published the event in the same round trip."""

    @staticmethod
    def parse(message: str) -> Event | None:
        """An event published by the append script (None for anything else)."""
        parts = message.split("\x1e")
        if len(parts) != 5:
            return None
        event_id, prev, at, tenant, tags = parts
        return Event(event_id, tenant, tags.split("\x1f") if tags else [], int(at), prev)

    def _bounds(self) -> tuple[int, int]:
        seq, origin = self._guarded(
            self._position, keys=[self.seq_key, self.origin_key], args=[time.time_ns() // 1000]
        )
        return int(seq), int(origin)

    def position(self) -> str:
        """The Redis sequence's current value (seeded from the clock on first use)."""
        return str(self._bounds()[0])

    def last_id(self, tenant: str) -> str:
        """The tenant's newest id from its stream, or 0."""
        last = self._guarded(self.client.xrevrange, self.stream_key(tenant), count=1)
        entries = cast(Entries, last)
        return entries[0][0].split("-")[0] if entries else "0"

    def read(self, tenants: list[str], since: int, limit: int = 1000) -> list[Event]:
        """Read the tenants' streams, through the breaker."""
        return self._guarded(self._read, tenants, since, limit)

    def _read(self, tenants: list[str], since: int, limit: int) -> list[Event]:
        seq, origin = self._bounds()
        if since < origin or since > seq:
            raise Gap(since)
        out: list[Event] = []
        for tenant in tenants:
            key = self.stream_key(tenant)
            if self.client.exists(key) and since < _dropped(self.client.xinfo_stream(key)):
                raise Gap(since)
            prev = str(since)
            entries = self.client.xrange(key, min=f"({since}-0", count=limit)
            for entry_id, fields in cast(Entries, entries):
                tags = fields["t"].split("\x1f") if fields["t"] else []
                event_id = entry_id.split("-")[0]
                out.append(Event(event_id, tenant, tags, int(fields["at"]), prev))
                prev = event_id
        out.sort(key=lambda e: int(e.id))
        return out[:limit]

    async def listen(self, receiver: Receiver) -> None:
        """One pub/sub subscription for the receiver (one per process).

        Its own reconnects (redis-py's retries) are off: a dropped subscription
        must surface to the caller, so that the hub reads what it missed from
        the log. An idle subscription pings Redis, so a partition (a silent
        connection) is noticed too, not only a closed one.
        """
        client = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=SILENT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        pubsub = client.pubsub()
        loop = asyncio.get_running_loop()
        stop_token = f"stop\x1e{id(receiver)}"
        try:
            await pubsub.subscribe(self.channel)
            self.listeners[receiver] = (client, stop_token)
            self.breaker.reset()  # Redis answers: read what was missed now, not in a second
            receiver.connected()
            await receiver.resync()  # anything published while (re)subscribing
            heard = pinged = loop.time()
            while True:
                message = await pubsub.get_message(timeout=PING_SECONDS)
                if message is None:
                    if loop.time() - heard > SILENT_SECONDS:
                        raise ConnectionError("Redis pub/sub is silent (partition?)")
                    if loop.time() - pinged >= PING_SECONDS:
                        pinged = loop.time()
                        await pubsub.ping()
                    continue
                if loop.time() - heard > 2.5 * PING_SECONDS:
                    # Redis was silent a while (a short partition?): messages may have
                    # been lost without the connection dropping. Read the log for them.
                    heard = loop.time()
                    await receiver.resync()
                heard = loop.time()
                if message["type"] != "message":
                    continue  # subscribe confirmations, pongs
                if message["data"] == stop_token:
                    return
                event = self.parse(message["data"])
                if event is not None:
                    await receiver.handle(event)
        finally:
            self.listeners.pop(receiver, None)
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:
                logger.debug("reactive: closing a broken pub/sub connection", exc_info=True)

    async def stop(self, receiver: Receiver) -> None:
        """Publish the receiver's stop token on its own subscription's connection."""
        entry = self.listeners.get(receiver)
        if entry is not None:
            client, stop_token = entry
            await client.publish(self.channel, stop_token)


def _dropped(info: dict[str, Any]) -> int:
    """An id at or above every entry a stream no longer holds (0 when it lost none).

    XDEL records the newest id it deleted, but MAXLEN trimming records nothing:
    what it dropped is older than the first entry held (one sequence orders all ids).
    """
    deleted = int(str(info.get("max-deleted-entry-id", "0-0")).split("-")[0])
    first = info.get("first-entry")
    if first and int(info.get("entries-added", 0)) > int(info.get("length", 0)):
        deleted = max(deleted, int(str(first[0]).split("-")[0]) - 1)
    return deleted
