"""Answering from the cache on the event loop, with no thread hop, when nothing needs the database.

Under ASGI every sync view costs a hop to a worker thread, a large share of a
cache hit's time. ``call`` first runs the sync function on the loop in
*hits-only* mode: a cache miss raises ``CacheMiss`` and any database access
raises Django's ``SynchronousOnlyOperation`` before doing I/O. Either way the
function runs again, from the start, in a thread; it must therefore have no
side effects before its first database access. While the cache itself is
failing (a slow or unreachable Redis would block the loop), the inline attempt
pauses for ``PAUSE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation

T = TypeVar("T")

PAUSE_SECONDS = 5.0

HITS_ONLY: ContextVar[bool] = ContextVar("reactive_hits_only", default=False)
_paused_until = 0.0


class CacheMiss(Exception):
    """Raised in hits-only mode where the answer would have to be computed."""


class CacheUnavailable(CacheMiss):
    """Raised in hits-only mode when the cache itself failed."""


# Makes the thread fallback: sync_to_async, or Channels-style database_sync_to_async.
ThreadHop = Callable[[Callable[..., T]], Callable[..., Awaitable[T]]]


async def call(func: Callable[..., T], *args: Any, thread: ThreadHop[T] = sync_to_async) -> T:
    """`func(*args)`: on the event loop when the cache answers it all, else in a thread.

    `thread` makes the fallback: long-lived streams pass Channels'
    ``database_sync_to_async``, which hands the connection back afterwards.
    """
    global _paused_until
    if time.monotonic() >= _paused_until:
        token = HITS_ONLY.set(True)
        try:
            return func(*args)
        except CacheUnavailable:
            _paused_until = time.monotonic() + PAUSE_SECONDS
        except (CacheMiss, SynchronousOnlyOperation):
            pass
        finally:
            HITS_ONLY.reset(token)
    return await thread(func)(*args)
