"""The server cache: versioned tags on Django's cache framework, single flight.

Each tag has a version token. A cached entry stores the versions of its tags as
read *before* its handler ran; it is a hit only while every one of them is
unchanged. A writer replaces the tokens of the tags it touched after commit, so
a reader that raced it stores an entry nobody will ever hit (no stale set). A
hit is one ``get_many`` (one MGET on Redis). Entries are bytes ready to send
(``reactive.entries``). Any cache failure degrades to computing the result,
never to an error.

After a failure the cache is *repaired* before this process trusts it again:
the bumps that failed are made, and the epoch (a version every entry also
records) is bumped, because while the cache was unreachable other processes'
bumps may have failed too, and such a process may die before it retries. A
background thread repairs as soon as the cache answers, so an idle process
does not leave its failed bumps pending (see docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.signals import setting_changed

from . import prefetch
from .conf import on_change, reactive_settings
from .entries import body_etag, etag, pack, unpack
from .inline import HITS_ONLY, CacheMiss, CacheUnavailable

logger = logging.getLogger("reactive")

VERSION_PREFIX = "rx:v:"
ENTRY_PREFIX = "rx:e:"
EPOCH_KEY = VERSION_PREFIX + "*epoch"  # every entry records it too; bumped after an outage
_SPACE = re.compile(r"\s")
FOLLOWER_WAIT = 30.0  # seconds a follower waits for the leader of a flight
REPAIR_FIRST, REPAIR_MAX = 0.1, 0.5  # the repair thread's backoff, in seconds
BYPASS_SECONDS = 2.0  # after a failure, requests skip the cache this long (repairs probe it)
COMPLAIN_EVERY = 10.0  # seconds between two logged tracebacks of the same failure
_complained: dict[str, float] = {}
# tags -> (may read, may store: a bool or a function to ask before storing): capture's
# view of the caller's transaction.
Policy = Callable[[list[str]], tuple[bool, Any]]
_policy: list[Policy] = []


def set_read_policy(policy: Policy | None) -> None:
    """Install (None: remove) the function saying whether a read in a transaction may use the cache."""
    _policy[:] = [policy] if policy is not None else []


def complain(what: str, message: str, *args: Any, error: BaseException | None = None) -> None:
    """Log a failure of `what` with its traceback at most every few seconds (debug otherwise).

    An unreachable Redis fails every request: one traceback per request would
    bury the log.
    """
    last = _complained.get(what, -COMPLAIN_EVERY)
    loud = time.monotonic() - last > COMPLAIN_EVERY
    if loud:
        _complained[what] = time.monotonic()
    exc_info = (error or True) if loud else False
    logger.log(
        logging.WARNING if loud else logging.DEBUG, "reactive: " + message, *args, exc_info=exc_info
    )


class Bypassed(ConnectionError):
    """Not even tried: the server failed a moment ago (see :class:`Breaker`)."""


class Breaker:
    """After a slow failure, fail at once for a while instead of waiting on timeouts each time.

    A partitioned Redis costs a socket timeout per operation, and under ASGI the
    sync work of a request runs on one thread: without this, every request
    during a partition would wait seconds. Once `seconds` pass, the next
    operation tries again (and trips the breaker again if it fails). A failure
    that came at once (connection refused) costs nothing to retry: it does not
    trip the breaker.
    """

    SLOW = 0.2  # seconds: a failure that took longer was a timeout

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.until = 0.0

    def check(self) -> None:
        """Raise :class:`Bypassed` while the breaker is tripped."""
        if self.tripped():
            raise Bypassed("skipped: it failed a moment ago")

    def tripped(self) -> bool:
        """Whether operations are being skipped right now."""
        return bool(self.until) and time.monotonic() < self.until

    def trip(self, started: float) -> None:
        """Note a failure of an operation begun at `started` (``time.monotonic()``)."""
        if time.monotonic() - started > self.SLOW:
            self.until = time.monotonic() + self.seconds

    def reset(self) -> None:
        """Clear the trip: the next operation tries the server again."""
        self.until = 0.0


def new_token() -> str:
    """A fresh random version token (16 hex digits)."""
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
    """The result of a fetch: its JSON (and data), the log position it was read at, hit or miss.

    Entries hold the JSON as UTF-8 bytes, so an HTTP hit sends them as they are;
    `data` decodes them only for callers that want Python objects.
    """

    body: bytes
    cursor: str
    hit: bool
    stale: bool = False  # a miss because an entry existed but was invalidated
    etag: str = ""  # of the entry (its key and versions); of the body when nothing was stored
    _data: Any = field(default=_UNREAD, repr=False)

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = body_etag(self.body)

    @property
    def data(self) -> Any:
        """The result as Python objects, decoded from `body` on first use."""
        if self._data is _UNREAD:
            self._data = json.loads(self.body)
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
        """Run `compute` for `key`, or wait for the run already in flight and share its result."""
        with self.lock:
            running = self.flights.get(key)
            if running is None:
                flight = self.flights[key] = _Flight()
            else:
                running.followers += 1
        if running is not None:
            if running.done.wait(FOLLOWER_WAIT) and not running.failed:
                return running.result
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
        # One backend object for the whole process: Django's `caches[alias]` makes one per
        # thread and per async request, and django-redis builds a client for each.
        self.backend: BaseCache = caches.create_connection(alias)
        self.flights = SingleFlight()
        # Tags whose bump failed (cache down during a write): until they are bumped,
        # this process must not trust any entry, or it could serve data older than
        # that committed write once the cache is back.
        self.unbumped: set[str] = set()
        self.lock = threading.Lock()
        # Failures seen, and how many of them a bump of the epoch has answered: while
        # they differ this process trusts no entry (another's bump may have failed).
        self.failures = 0
        self.repaired = 0
        # More to redo once the cache is repaired (the events whose append failed).
        self.after_repair: list[Callable[[], bool]] = []
        self.repairer: threading.Thread | None = None
        self.breaker = Breaker(BYPASS_SECONDS)

    def fetch(
        self,
        key: str,
        tags: list[str],
        compute: Callable[[], Any],
        position: Callable[[], str],
        ttl: int | None = None,
        got: dict[str, Any] | None = None,
    ) -> Lookup:
        """The cached result for `key` if its tags are unchanged, else compute and store it.

        `got`: the entry and versions already read (``fetch_many``'s one round trip).
        """
        vkeys = [version_key(t) for t in tags] + [EPOCH_KEY]
        may_read, may_store = True, True
        if _policy and not HITS_ONLY.get():
            may_read, may_store = _policy[0](tags)
        if not may_read:  # this transaction wrote what the entry holds
            cursor = _safe(position)
            data = compute()
            return Lookup(_encoded(data), cursor, hit=False, _data=data)
        started = time.monotonic()
        try:
            if got is None:
                got = self._read([key, *vkeys])
        except CacheMiss:
            raise  # a fast-lane attempt that must fetch more keys first
        except Exception as exc:
            if not isinstance(exc, Bypassed):
                self.failed(started, "cache unavailable, computing %s", key)
            if HITS_ONLY.get():
                raise CacheUnavailable() from None
            data = compute()
            return Lookup(_encoded(data), _safe(position), hit=False, _data=data)
        entry = unpack(got.get(key))
        current = [got.get(vk) for vk in vkeys]
        if entry is not None and None not in current and entry.versions == current:
            return Lookup(entry.body, entry.cursor, hit=True, etag=etag(key, entry.header))
        if HITS_ONLY.get():
            raise CacheMiss()
        versions = self._ensure(vkeys, current)
        cursor = _safe(position)  # read before the handler, like the versions
        if callable(may_store):
            may_store = may_store()
        if not may_store:
            data = compute()
            return Lookup(_encoded(data), cursor, hit=False, stale=entry is not None, _data=data)
        data, body = self.flights.run((key, tuple(versions)), lambda: _computed(compute))
        stored = pack(versions, cursor, body)
        started = time.monotonic()
        try:
            self.backend.set(key, stored, ttl)
        except Exception:
            self.failed(started, "could not store %s", key)
        tag = etag(key, stored[: stored.index(b"\n")])
        return Lookup(body, cursor, hit=False, stale=entry is not None, etag=tag, _data=data)

    def fetch_many(
        self, lookups: list[tuple[str, list[str], Callable[[], Any], Callable[[], str]]]
    ) -> list[Lookup]:
        """Several ``fetch(key, tags, compute, position)`` with one read for all of them."""
        keys = {EPOCH_KEY: None}
        for key, tags, *_ in lookups:
            keys.update(dict.fromkeys([key, *(version_key(t) for t in tags)]))
        try:
            got = self._read(list(keys))
        except CacheMiss:
            raise
        except Exception:
            got = None  # each fetch reads (and reports the failure) by itself
        return [self.fetch(*lookup, got=got) for lookup in lookups]

    def _read(self, keys: list[str]) -> dict[str, Any]:
        self.breaker.check()
        if self.needs_repair and not self.repair():
            raise Bypassed("the cache is not repaired yet after a failure")
        return prefetch.read(self.backend, keys)

    def _ensure(self, vkeys: list[str], current: list[str | None]) -> list[str]:
        versions: list[str] = []
        for i, token in enumerate(current):
            if token is None:
                fresh = new_token()
                started = time.monotonic()
                try:
                    if self.backend.add(vkeys[i], fresh, None):
                        token = fresh
                    else:
                        token = self.backend.get(vkeys[i])
                except Exception:
                    self.failed(started, "could not create the version of %s", vkeys[i])
                    token = None
                # Evicted again at once, or no cache: a token nobody holds
                # makes the stored entry a future miss, never a wrong hit.
                token = token or "!" + fresh
            versions.append(token)
        return versions

    def bump(self, tags: Iterable[str]) -> bool:
        """Give each tag a new version, so every entry that read the old one misses.

        False when the cache failed: the tags stay pending, this process bypasses
        the cache, and the repair thread bumps them as soon as it answers.
        """
        tags = set(tags)
        with self.lock:
            tags |= self.unbumped
        if not tags:
            return True
        started = time.monotonic()
        try:
            self.breaker.check()
            self.backend.set_many({version_key(t): new_token() for t in tags}, None)
        except Exception as exc:
            with self.lock:
                self.unbumped |= tags
            if isinstance(exc, Bypassed):
                self.start_repairs()
            else:
                self.failed(
                    started,
                    "could not bump %d tag versions; bypassing the cache until they are",
                    len(tags),
                )
            return False
        with self.lock:
            self.unbumped -= tags
        return True

    def trusted(self) -> bool:
        """Whether entries may be served without asking anything first (no repair, no breaker)."""
        return not self.needs_repair and not self.breaker.tripped()

    @property
    def needs_repair(self) -> bool:
        """Whether failed bumps or failures must be repaired before any entry is trusted."""
        return bool(self.unbumped) or self.failures != self.repaired

    def failed(self, started: float, message: str, *args: Any) -> None:
        """Note a cache failure (of an operation begun at `started`): repair it once it answers."""
        with self.lock:
            self.failures += 1
        self.breaker.trip(started)
        complain("cache", message, *args)
        self.start_repairs()

    def repair(self) -> bool:
        """After failures: bump what failed, then the epoch; True once nothing is left to do.

        It ignores the breaker: it is what finds out that the cache is back.
        """
        with self.lock:
            pending, seen = set(self.unbumped), self.failures
        started = time.monotonic()
        try:
            if pending:
                self.backend.set_many({version_key(t): new_token() for t in pending}, None)
            if seen != self.repaired:
                self.backend.set(EPOCH_KEY, new_token(), None)
        except Exception:
            self.failed(started, "cache still unavailable")
            return False
        with self.lock:
            self.unbumped -= pending
            self.repaired = max(self.repaired, seen)
        self.breaker.reset()
        return not self.needs_repair

    def start_repairs(self) -> None:
        """Run the repair thread unless it runs already."""
        with self.lock:
            if self.repairer is not None:  # set back to None by the thread, under the lock
                return
            self.repairer = threading.Thread(
                target=self._repair_loop, name="reactive-cache-repair", daemon=True
            )
            self.repairer.start()

    def _repair_loop(self) -> None:
        delay = REPAIR_FIRST
        while True:
            time.sleep(delay)
            try:
                done = self.repair() and all([redo() for redo in list(self.after_repair)])
            except Exception:
                logger.exception("reactive: cache repair failed")
                done = False
            if done:
                with self.lock:
                    if not self.needs_repair:
                        self.repairer = None
                        return
            delay = min(delay * 2, REPAIR_MAX)

    def bump_epoch(self) -> None:
        """Make every entry a miss (this process cannot tell what it missed)."""
        try:
            self.backend.set(EPOCH_KEY, new_token(), None)
        except Exception:
            self.failed(time.monotonic(), "could not bump the epoch")


def _encoded(data: Any) -> bytes:
    return dumps(data).encode()


def _computed(compute: Callable[[], Any]) -> tuple[Any, bytes]:
    data = compute()
    return data, _encoded(data)


def _safe(position: Callable[[], str]) -> str:
    try:
        return position()
    except Exception:
        complain("log", "event log unavailable for a cursor")
        return ""


@cache
def reactive_cache() -> ReactiveCache:
    """The process's reactive cache, on ``REACTIVE["CACHE_ALIAS"]``."""
    return ReactiveCache(reactive_settings()["CACHE_ALIAS"])


on_change("CACHE_ALIAS")(reactive_cache.cache_clear)


def _caches_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        reactive_cache.cache_clear()


setting_changed.connect(_caches_changed)


def invalidate_all() -> None:
    """Make every cached result a miss, in every process: "invalidate everything".

    Bumps reactive's epoch key, which every entry records; it clears nothing
    else, so a cache alias shared with sessions or other data keeps them.
    Clients are not told: their next fetch or revalidation gets fresh data.
    """
    reactive_cache().bump_epoch()


def cached(key: str, tags: list[str], compute: Callable[[], Any], ttl: int | None = None) -> Any:
    """Cache any computation under versioned tags (for helpers such as membership lookups)."""
    return reactive_cache().fetch(ENTRY_PREFIX + key, tags, compute, lambda: "", ttl).data


def cached_many(lookups: list[tuple[str, list[str], Callable[[], Any]]]) -> list[Any]:
    """``cached`` for several (key, tags, compute) at once: one cache round trip when all hit."""
    return [
        found.data
        for found in reactive_cache().fetch_many(
            [(ENTRY_PREFIX + key, tags, compute, lambda: "") for key, tags, compute in lookups]
        )
    ]
