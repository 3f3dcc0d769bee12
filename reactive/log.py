"""The per-tenant event log: append-only, monotonic ids, bounded, replayable.

Ids come from one global sequence, so a position (a query's ``cursor``) is
comparable across tenants. Redis Streams back it when ``REDIS_URL`` is set; an
in-process store otherwise (embedded mode runs one process). The sequence is
seeded from the clock, so ids keep growing across restarts; each log also
remembers its origin, so a position older than what it holds gives a reset.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import cache
from typing import Protocol

from .conf import reactive_settings
from .events import Event


class Gap(Exception):
    """The position asked for is older than the log holds: the client must refetch all."""


def parse_position(position: str | int | None) -> int | None:
    """A position as an integer, or None for 'no position'; ValueError when malformed."""
    if position is None or position == "":
        return None
    value = int(str(position).strip())
    if value < 0:
        raise ValueError("negative position")
    return value


class EventLog(Protocol):
    """What the SSE view, the consumer and the publisher need from a log."""

    def append(self, tenant: str, tags: list[str], at: int) -> Event:
        """Append an event of `tenant` with `tags` committed at `at` (epoch ms); return it."""

    def position(self) -> str:
        """The log's current position: the newest id of the global sequence (a cursor)."""

    def last_id(self, tenant: str) -> str:
        """The id of `tenant`'s newest event, or 0 when it has none."""

    def read(self, tenants: list[str], since: int, limit: int = 1000) -> list[Event]:
        """`tenants`' events after `since`, oldest first, at most `limit` (Gap if not held)."""


class MemoryLog:
    """The embedded log: per-tenant deques under one lock."""

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self.lock = threading.Lock()
        self.seq = time.time_ns() // 1000  # microseconds: grows across restarts
        self.origin = self.seq
        self.streams: dict[str, deque[Event]] = {}
        self.trimmed: dict[str, int] = {}  # tenant -> id of the newest event dropped
        self.last: dict[str, str] = {}

    def append(self, tenant: str, tags: list[str], at: int) -> Event:
        """Append to the tenant's deque, trimming it to `maxlen`."""
        with self.lock:
            self.seq += 1
            event = Event(str(self.seq), tenant, tags, at, self.last.get(tenant, "0"))
            self.last[tenant] = event.id
            stream = self.streams.setdefault(tenant, deque())
            stream.append(event)
            if len(stream) > self.maxlen:
                self.trimmed[tenant] = int(stream.popleft().id)
            return event

    def position(self) -> str:
        """The in-process sequence's current value."""
        return str(self.seq)

    def last_id(self, tenant: str) -> str:
        """The tenant's newest id, or 0."""
        return self.last.get(tenant, "0")

    def read(self, tenants: list[str], since: int, limit: int = 1000) -> list[Event]:
        """Read the tenants' deques under the lock."""
        with self.lock:
            if since < self.origin or since > self.seq:
                raise Gap(since)
            out = []
            for tenant in tenants:
                if since < self.trimmed.get(tenant, 0):
                    raise Gap(since)
                out += [e for e in self.streams.get(tenant, ()) if int(e.id) > since]
        out.sort(key=lambda e: int(e.id))
        return out[:limit]


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


class RedisLog:
    """The shared log: one Redis Stream per tenant, ids ``<seq>-0`` from one counter.

    When Redis does not answer, operations fail fast for a moment (a
    :class:`~reactive.cache.Breaker`) instead of each waiting for its timeout.
    """

    BYPASS_SECONDS = 1.0

    def __init__(self, url: str, maxlen: int, prefix: str = "rx"):
        import redis

        from .cache import Breaker

        self.client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )
        self.breaker = Breaker(self.BYPASS_SECONDS)
        self.unreachable = (redis.ConnectionError, redis.TimeoutError)
        self.maxlen = maxlen
        self.url = url
        self.seq_key, self.origin_key = f"{prefix}:seq", f"{prefix}:origin"
        self.channel = f"{prefix}:events"  # Redis pub/sub: each process's hub subscribes once
        self.prefix = prefix
        self._append = self.client.register_script(_APPEND)
        self._position = self.client.register_script(_POSITION)

    def stream_key(self, tenant: str) -> str:
        """The Redis Stream key of `tenant`'s events."""
        return f"{self.prefix}:log:{tenant}"

    def _guarded(self, operation, *args, **kwargs):
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
        args = [self.maxlen, "\x1f".join(tags), at, time.time_ns() // 1000, tenant]
        seq, prev = self._guarded(self._append, keys=keys, args=args)
        return Event(str(seq), tenant, tags, at, str(prev))

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
        return last[0][0].split("-")[0] if last else "0"

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
            if self.client.exists(key):
                deleted = self.client.xinfo_stream(key).get("max-deleted-entry-id", "0-0")
                if since < int(str(deleted).split("-")[0]):
                    raise Gap(since)
            prev = str(since)
            for entry_id, fields in self.client.xrange(key, min=f"({since}-0", count=limit):
                tags = fields["t"].split("\x1f") if fields["t"] else []
                event_id = entry_id.split("-")[0]
                out.append(Event(event_id, tenant, tags, int(fields["at"]), prev))
                prev = event_id
        out.sort(key=lambda e: int(e.id))
        return out[:limit]


@cache
def get_log() -> EventLog:
    """The process's log, chosen by ``REACTIVE["REDIS_URL"]``."""
    conf = reactive_settings()
    if conf["REDIS_URL"]:
        return RedisLog(conf["REDIS_URL"], conf["LOG_MAXLEN"], prefix=conf.get("KEY_PREFIX", "rx"))
    return MemoryLog(conf["LOG_MAXLEN"])
