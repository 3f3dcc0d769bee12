"""The per-tenant event log and its live path, behind one small interface.

Ids come from one global sequence, so a position (a query's ``cursor``) is
comparable across tenants. The sequence is seeded from the clock, so ids keep
growing across restarts; each log also remembers its origin, so a position
older than what it holds gives a reset.

A backend stores events (:meth:`EventLog.append`, :meth:`~EventLog.read`) and
carries them live to every process's hub (:meth:`EventLog.announce`,
:meth:`~EventLog.listen`), so nothing outside it knows which one is in use.
It is chosen by dotted path, as ``SESSION_ENGINE`` chooses a session store::

    REACTIVE = {"LOG_BACKEND": "reactive.backends.redis.RedisLog",
                "LOG_OPTIONS": {"url": "redis://localhost:6379/0"}}

``reactive.backends.memory.MemoryLog`` (the default) serves one process;
``reactive.backends.redis.RedisLog`` any number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cache
from typing import Any, Protocol

from django.utils.module_loading import import_string

from .conf import on_change, reactive_settings
from .events import Event

__all__ = ["EventLog", "Gap", "Receiver", "get_log", "parse_position"]


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


class Receiver(Protocol):
    """What a live path delivers to: a process's hub (:class:`reactive.fanout.Hub`)."""

    async def handle(self, event: Event) -> None:
        """Take one event (the hub fills holes from the log itself)."""

    async def resync(self) -> None:
        """Read from the log whatever may have been missed (after a silence or a reconnect)."""

    def connected(self) -> None:
        """The live path is up: events published from now on will arrive."""


class EventLog(ABC):
    """An event log: storage, read by position, and a live path to every hub."""

    SHARED = True  # several processes see one log (False: it lives in one process)

    def __init__(self, *, maxlen: int, prefix: str, **options: Any):
        self.maxlen = maxlen
        self.prefix = prefix

    @abstractmethod
    def append(self, tenant: str, tags: list[str], at: int) -> Event:
        """Append an event of `tenant` with `tags` committed at `at` (epoch ms); return it."""

    @abstractmethod
    def position(self) -> str:
        """The log's current position: the newest id of the global sequence (a cursor)."""

    @abstractmethod
    def last_id(self, tenant: str) -> str:
        """The id of `tenant`'s newest event, or 0 when it has none."""

    @abstractmethod
    def read(self, tenants: list[str], since: int, limit: int = 1000) -> list[Event]:
        """`tenants`' events after `since`, oldest first, at most `limit` (Gap if not held)."""

    @abstractmethod
    def announce(self, event: Event) -> None:
        """Carry an appended event to every hub (a backend may do so within ``append``)."""

    @abstractmethod
    async def listen(self, receiver: Receiver) -> None:
        """Deliver events to `receiver` until :meth:`stop`; raise when the live path fails."""

    @abstractmethod
    async def stop(self, receiver: Receiver) -> None:
        """Make `receiver`'s :meth:`listen` return soon (by a message, not a cancellation)."""


@cache
def get_log() -> EventLog:
    """The process's log: ``REACTIVE["LOG_BACKEND"]`` with ``LOG_OPTIONS``."""
    conf = reactive_settings()
    backend: type[EventLog] = import_string(conf.LOG_BACKEND)
    return backend(maxlen=conf.LOG_MAXLEN, prefix=conf.KEY_PREFIX, **conf.LOG_OPTIONS)


on_change("LOG_BACKEND", "LOG_OPTIONS", "LOG_MAXLEN", "KEY_PREFIX")(get_log.cache_clear)
