"""Cache reads answered from values fetched beforehand, in one round trip.

The fast lane (``reactive.fastlane``) runs the same code as a Django request
(identity, access check, the function's cached lookup) but reads the cache once,
up front: it fetches every key the request will read with one MGET, then runs
that code with :data:`PREFETCHED` set, so that each cache read is answered
from memory. A read of a key that was not fetched raises ``CacheMiss`` and
names the key (:attr:`Prefetch.wanted`): the lane fetches it and tries again,
and remembers the whole set for the next request of the same shape.

:func:`aget_many` is the one read that leaves the event loop: an ``MGET`` on
one pipelined connection per loop (``reactive.pipeline``, hiredis-parsed,
shared by every request) for django-redis, and the backend itself, in memory,
for the process-local cache.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import weakref
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from django.core.cache import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from .entries import MAGIC
from .inline import CacheMiss


class Prefetch:
    """The values fetched for one request: what was asked, what came back, what was wanted."""

    def __init__(self) -> None:
        self.asked: set[str] = set()
        self.got: dict[str, Any] = {}
        self.wanted: set[str] = set()
        self.reads: list[str] | None = None  # a list: the keys read are noted in it
        self.heads: set[str] = set()  # entries fetched for their header alone (empty body)

    def add(self, asked: Iterable[str], got: dict[str, Any]) -> None:
        """Note a fetch of `asked` that returned `got` (absent keys left out)."""
        self.asked.update(asked)
        self.got.update(got)

    def read(self, keys: Iterable[str]) -> dict[str, Any]:
        """``get_many`` from memory; CacheMiss (keys noted in `wanted`) for keys not fetched."""
        keys = list(keys)
        if self.reads is not None:
            self.reads.extend(keys)
        unasked = [k for k in keys if k not in self.asked]
        if unasked:
            self.wanted.update(unasked)
            raise CacheMiss()
        return {k: self.got[k] for k in keys if k in self.got}


PREFETCHED: ContextVar[Prefetch | None] = ContextVar("reactive_prefetched", default=None)


def read(backend: BaseCache, keys: list[str]) -> dict[str, Any]:
    """``backend.get_many(keys)``, from the prefetched values when a fast-lane attempt runs."""
    prefetched = PREFETCHED.get()
    if prefetched is not None:
        return prefetched.read(keys)
    return backend.get_many(keys)


class Unsupported(Exception):
    """The cache backend has no way to read without blocking the event loop."""


def _is_local(backend: BaseCache) -> bool:
    return isinstance(backend, LocMemCache | DummyCache)


def _redis_client(backend: Any) -> Any:
    """django-redis's plain client (not sharded, herd or sentinel: their keys go elsewhere)."""
    client = getattr(backend, "client", None)
    if client is None or type(client).__name__ != "DefaultClient":
        return None
    return client


def supports(backend: BaseCache) -> bool:
    """Whether :func:`aget_many` can read `backend` without blocking the loop."""
    return _is_local(backend) or _redis_client(backend) is not None


# One pipelined connection per event loop (a connection belongs to the loop it was opened on).
_connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Any]] = (
    weakref.WeakKeyDictionary()
)
_CONNECTION_OPTIONS = {
    "host",
    "port",
    "db",
    "username",
    "password",
    "path",
    "socket_timeout",
    "socket_connect_timeout",
}


async def _connection(sync_client: Any) -> Any:
    from . import pipeline

    loop = asyncio.get_running_loop()
    opening = _connections.get(loop)
    if opening is not None and opening.done() and (opening.exception() or opening.result().lost):
        opening = None
    if opening is None:
        # The server, database and timeouts of the pool django-redis made from the cache's
        # LOCATION and OPTIONS.
        pool = sync_client.get_client(write=False).connection_pool
        if pool.connection_class.__name__ not in ("Connection", "UnixDomainSocketConnection"):
            raise Unsupported(pool.connection_class.__name__)  # TLS: not spoken here
        options = {k: v for k, v in pool.connection_kwargs.items() if k in _CONNECTION_OPTIONS}
        opening = _connections[loop] = loop.create_task(pipeline.connect(options))
    return await opening


async def aclose() -> None:
    """Close this event loop's connection (before the loop closes: tests run one loop each)."""
    opening = _connections.pop(asyncio.get_running_loop(), None)
    if opening is not None and opening.done() and not opening.exception():
        opening.result().fail(ConnectionError("closed"))


def _local_get_many(backend: Any, keys: list[str]) -> dict[str, Any]:
    """LocMemCache's ``get_many`` under one lock, without re-validating keys made by reactive.

    (Django's checks every character of every key for memcached's sake: a
    third of a hit's time, for keys reactive made safe when it stored them.)
    """
    now, out = time.time(), {}
    with backend._lock:
        for key in keys:
            made = backend.make_key(key)
            expires = backend._expire_info.get(made, -1)
            if expires is None or expires > now:
                out[key] = backend._cache[made]
    return {key: pickle.loads(pickled) for key, pickled in out.items()}


HEAD_BYTES = 1024  # of an entry read for its header alone (its versions: the ETag)


async def aget_many(
    backend: BaseCache, keys: list[str], heads: Collection[str] = ()
) -> dict[str, Any]:
    """``backend.get_many(keys)`` without blocking the event loop: one MGET on Redis.

    The entries named in `heads` are read for their header alone where the
    backend allows it (a ``GETRANGE`` in the same round trip): enough to
    compare an ETag, without the body. One whose header is longer comes back
    absent.
    """
    if isinstance(backend, LocMemCache):
        return _local_get_many(backend, keys)
    if _is_local(backend):
        return backend.get_many(keys)
    client = _redis_client(backend)
    if client is None:
        raise Unsupported(type(backend).__name__)
    connection = await _connection(client)
    made = _made_keys(client)
    whole = [k for k in keys if k not in heads]
    parts = [k for k in keys if k in heads]
    replies = await connection.commands(
        ("MGET", *[made(k) for k in whole]) if whole else ("PING",),
        *[("GETRANGE", made(k), "0", str(HEAD_BYTES - 1)) for k in parts],
    )
    # Entries are stored as they are (reactive.serializers); the rest as django-redis does.
    decode = _decoder(client)
    values = replies[0] if whole else []
    out = {k: decode(v) for k, v in zip(whole, values, strict=True) if v is not None}
    for key, part in zip(parts, replies[1:], strict=True):
        end = part.find(b"\n") if part.startswith(MAGIC) else -1
        if end >= 0:
            out[key] = part[: end + 1]  # the header, and an empty body
    return out


_per_client: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _made_keys(client: Any) -> Any:
    """``client.make_key``, remembered (the same few keys are made on every request)."""
    return _helpers(client)[0]


def _decoder(client: Any) -> Any:
    return _helpers(client)[1]


def _helpers(client: Any) -> tuple[Any, Any]:
    found = _per_client.get(client)
    if found is None:
        found = _per_client[client] = (lru_cache(maxsize=65_536)(client.make_key), _decode(client))
    return found


def _decode(client: Any) -> Any:
    """django-redis's ``decode``, with a shortcut for entries and plain pickles.

    Its own tries ``int()`` first, which raises for every version token; with
    no compression and a pickle serializer a pickle is simply unpickled.
    """
    from django_redis.compressors.identity import IdentityCompressor  # type: ignore[import-untyped]
    from django_redis.serializers.pickle import PickleSerializer  # type: ignore[import-untyped]

    plain = isinstance(getattr(client, "_compressor", None), IdentityCompressor) and isinstance(
        getattr(client, "_serializer", None), PickleSerializer
    )

    def decode(value: bytes) -> Any:
        if value.startswith(MAGIC):
            return value
        if plain and value[:1] == b"\x80":
            return pickle.loads(value)
        return client.decode(value)

    return decode
