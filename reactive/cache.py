"""The server cache: versioned tags on Django's cache framework, single flight.

Each tag has a version token. A cached entry stores the versions of its tags as
read *before* its handler ran; it is a hit only while every one of them is
unchanged. A writer replaces the tokens of the tags it touched after commit, so
a reader that raced it stores an entry nobody will ever hit (no stale set). A
hit is one ``get_many`` (one MGET on Redis). Any cache failure degrades to
computing the result, never to an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from django.core.cache import caches

from .conf import reactive_settings
from .inline import HITS_ONLY, CacheMiss, CacheUnavailable

logger = logging.getLogger("reactive")

VERSION_PREFIX = "rx:v:"
ENTRY_PREFIX = "rx:e:"
_SPACE = re.compile(r"\s")
FOLLOWER_WAIT = 30.0  # seconds a follower waits for the leader of a flight


def new_token() -> str:
    return uuid.uuid4().hex[:16]


@lru_cache(maxsize=65_536)
def version_key(tag: str) -> str:
    """The cache key holding a tag's version token (hashed when unsafe as a key)."""
    if len(tag) > 180 or _SPACE.search(tag):
        return VERSION_PREFIX + hashlib.sha1(tag.encode()).hexdigest()
    return VERSION_PREFIX + tag


_UNREAD = object()


def dumps(data: Any) -> str:
    """The one JSON encoding of results: compact, UTF-8."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Lookup:
    """The result of a fetch: its JSON text (and data), the log position it was read at, hit or miss.

    Entries hold the JSON text, so an HTTP hit sends it as is; `data` decodes it
    only for callers that want Python objects.
    """

    json: str
    cursor: str
    hit: bool
    stale: bool = False  # a miss because an entry existed but was invalidated
    _data: Any = field(default=_UNREAD, repr=False)

    @property
    def data(self) -> Any:
        if self._data is _UNREAD:
            self._data = json.loads(self.json)
        return self._data


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.failed = False
        self.followers = 0


class SingleFlight:
    """Run one computation per key at a time in this process; others share its result."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flights: dict[Any, _Flight] = {}

    def run(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self.lock:
            flight = self.flights.get(key)
            leader = flight is None
            if leader:
                flight = self.flights[key] = _Flight()
            else:
                flight.followers += 1
        if not leader:
            if flight.done.wait(FOLLOWER_WAIT) and not flight.failed:
                return flight.result
            return compute()  # the leader failed or is stuck: do not fail with it
        try:
            flight.result = compute()
            return flight.result
        except BaseException:
            flight.failed = True
            raise
        finally:
            with self.lock:
                del self.flights[key]
            flight.done.set()


class ReactiveCache:
    """Versioned-tag cache over one Django cache alias."""

    def __init__(self, alias: str):
        self.alias = alias
        self.flights = SingleFlight()
        # Tags whose bump failed (cache down during a write): until they are bumped,
        # this process must not trust any entry, or it could serve data older than
        # that committed write once the cache is back.
        self.unbumped: set[str] = set()
        self.lock = threading.Lock()

    @property
    def backend(self):
        return caches[self.alias]

    def fetch(
        self,
        key: str,
        tags: list[str],
        compute: Callable[[], Any],
        position: Callable[[], str],
        ttl: int | None = None,
    ) -> Lookup:
        """The cached result for `key` if its tags are unchanged, else compute and store it."""
        vkeys = [version_key(t) for t in tags]
        try:
            if self.unbumped and not self.retry_bumps():
                raise ConnectionError("tag versions from a failed write are not bumped yet")
            got = self.backend.get_many([key, *vkeys])
        except Exception:
            if HITS_ONLY.get():
                raise CacheUnavailable() from None
            logger.warning("reactive: cache unavailable, computing %s", key, exc_info=True)
            data = compute()
            return Lookup(dumps(data), _safe(position), hit=False, _data=data)
        entry = got.get(key)
        current = [got.get(vk) for vk in vkeys]
        if entry is not None and None not in current and entry["v"] == current:
            return Lookup(entry["j"], entry["c"], hit=True)
        if HITS_ONLY.get():
            raise CacheMiss()
        versions = self._ensure(vkeys, current)
        cursor = _safe(position)  # read before the handler, like the versions
        data, text = self.flights.run((key, tuple(versions)), lambda: _computed(compute))
        try:
            self.backend.set(key, {"v": versions, "j": text, "c": cursor}, ttl)
        except Exception:
            logger.warning("reactive: could not store %s", key, exc_info=True)
        return Lookup(text, cursor, hit=False, stale=entry is not None, _data=data)

    def _ensure(self, vkeys: list[str], current: list[str | None]) -> list[str]:
        versions = list(current)
        for i, token in enumerate(current):
            if token is None:
                fresh = new_token()
                try:
                    if self.backend.add(vkeys[i], fresh, None):
                        token = fresh
                    else:
                        token = self.backend.get(vkeys[i])
                except Exception:
                    token = None
                # Evicted again at once, or no cache: a token nobody holds
                # makes the stored entry a future miss, never a wrong hit.
                versions[i] = token or "!" + fresh
        return versions

    def bump(self, tags: Iterable[str]) -> None:
        """Give each tag a new version, so every entry that read the old one misses."""
        tags = set(tags)
        with self.lock:
            tags |= self.unbumped
        try:
            self.backend.set_many({version_key(t): new_token() for t in tags}, None)
        except Exception:
            logger.error(
                "reactive: could not bump tag versions; bypassing the cache until they are",
                exc_info=True,
            )
            with self.lock:
                self.unbumped |= tags
            return
        with self.lock:
            self.unbumped -= tags

    def retry_bumps(self) -> bool:
        """Bump what failed earlier; True once nothing is left pending."""
        with self.lock:
            pending = set(self.unbumped)
        if pending:
            self.bump(pending)
        return not self.unbumped

    def clear(self) -> None:
        """Forget every entry and version (tests and operations)."""
        self.backend.clear()


def _computed(compute: Callable[[], Any]) -> tuple[Any, str]:
    data = compute()
    return data, dumps(data)


def _safe(position: Callable[[], str]) -> str:
    try:
        return position()
    except Exception:
        logger.warning("reactive: event log unavailable for a cursor", exc_info=True)
        return ""


@cache
def reactive_cache() -> ReactiveCache:
    """The process's reactive cache, on ``REACTIVE["CACHE_ALIAS"]``."""
    return ReactiveCache(reactive_settings()["CACHE_ALIAS"])


def cached(key: str, tags: list[str], compute: Callable[[], Any], ttl: int | None = None) -> Any:
    """Cache any computation under versioned tags (for helpers such as membership lookups)."""
    return reactive_cache().fetch(ENTRY_PREFIX + key, tags, compute, lambda: "", ttl).data
