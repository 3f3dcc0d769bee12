"""The embedded event log: per-tenant deques in this process, handed to its hubs directly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from ..events import Event
from ..log import EventLog, Gap, Receiver

__all__ = ["MemoryLog"]


class MemoryLog(EventLog):
    """Per-tenant deques under one lock; the live path hands each event to this process's hubs.

    Everything lives in this process, so it serves one process (embedded mode):
    other processes would neither see its events nor hand theirs over.
    """

    SHARED = False

    def __init__(self, *, maxlen: int, prefix: str = "rx", **options: Any):
        super().__init__(maxlen=maxlen, prefix=prefix)
        self.lock = threading.Lock()
        self.seq = time.time_ns() // 1000  # microseconds: grows across restarts
        self.origin = self.seq
        self.streams: dict[str, deque[Event]] = {}
        self.trimmed: dict[str, int] = {}  # tenant -> id of the newest event dropped
        self.last: dict[str, str] = {}
        # receiver -> (its loop, the event that ends its listen())
        self.receivers: dict[Receiver, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

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

    def announce(self, event: Event) -> None:
        """Hand the event to each hub's loop, without waiting for any of them."""
        for receiver, (loop, _stopped) in list(self.receivers.items()):
            if not loop.is_closed():
                asyncio.run_coroutine_threadsafe(receiver.handle(event), loop)

    async def listen(self, receiver: Receiver) -> None:
        """Receive what :meth:`announce` hands over until :meth:`stop`."""
        stopped = asyncio.Event()
        self.receivers[receiver] = (asyncio.get_running_loop(), stopped)
        try:
            receiver.connected()
            await stopped.wait()
        finally:
            self.receivers.pop(receiver, None)

    async def stop(self, receiver: Receiver) -> None:
        """End `receiver`'s :meth:`listen`."""
        entry = self.receivers.get(receiver)
        if entry is not None:
            entry[1].set()
