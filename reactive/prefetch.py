"""Cache reads answered from values fetched beforehand, in one round trip.

The fast lane (``reactive.fastlane``) runs the same code as a Django request
(identity, access check, the function's cached lookup) but reads the cache once,
up front: it fetches every key the request will read with one MGET, then runs
that code with :data:`PREFETCHED` set, so that each cache read is answered
from memory. A read of a key that was not fetched raises ``CacheMiss`` and
names the key (:attr:`Prefetch.wanted`): the lane fetches it and tries again,
and remembers the whole set for the next request of the same shape.

:func:`aget_many` is the one read that leaves the event loop: an asyncio
Redis client (hiredis-parsed, one per loop, shared by every request) for
django-redis, and the backend itself for the process-local cache.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from django.core.cache import BaseCache

from .inline import CacheMiss


class Prefetch:
    """The values fetched for one request: what was asked, what came back, what was wanted."""

    def __init__(self) -> None:
        self.asked: set[str] = set()
        self.got: dict[str, Any] = {}
        self.wanted: set[str] = set()

    def add(self, asked: Iterable[str], got: dict[str, Any]) -> None:
        """Note a fetch of `asked` that returned `got` (absent keys left out)."""
        self.asked.update(asked)
        self.got.update(got)

    def read(self, keys: Iterable[str]) -> dict[str, Any]:
        """``get_many`` from memory; CacheMiss (keys noted in `wanted`) for keys not fetched."""
        keys = list(keys)
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
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.locmem import LocMemCache

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


# One asyncio client per event loop (a connection belongs to the loop it was opened on).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _async_client(sync_client: Any) -> Any:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        import redis.asyncio

        # The same server and timeouts as the sync pool django-redis made from the
        # cache's LOCATION and OPTIONS; hiredis parses the replies when installed.
        pool = sync_client.get_client(write=False).connection_pool
        kind = getattr(redis.asyncio.connection, pool.connection_class.__name__, None)
        if kind is None:
            raise Unsupported(pool.connection_class.__name__)
        options = {
            k: v
            for k, v in pool.connection_kwargs.items()
            if k in _CONNECTION_OPTIONS or k.startswith("ssl_")
        }
        # Blocking: a burst beyond the pool waits for a connection instead of failing.
        client = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool(
                connection_class=kind,
                max_connections=MAX_CONNECTIONS,
                timeout=options.get("socket_timeout") or 5,
                **options,
            )
        )
        _clients[loop] = client
    return client


MAX_CONNECTIONS = 256
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


async def aclose() -> None:
    """Close this event loop's client (before the loop closes: tests run one loop each)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def aget_many(backend: BaseCache, keys: list[str]) -> dict[str, Any]:
    """``backend.get_many(keys)`` without blocking the event loop: one MGET on Redis."""
    if _is_local(backend):
        return backend.get_many(keys)
    client = _redis_client(backend)
    if client is None:
        raise Unsupported(type(backend).__name__)
    raw = await _async_client(client).mget([client.make_key(k) for k in keys])
    return {k: client.decode(v) for k, v in zip(keys, raw, strict=True) if v is not None}
