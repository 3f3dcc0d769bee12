"""Live fan-out: one listener per process, local dispatch to its connections.

The event log's backend carries each event to every process's :class:`Hub`
(:meth:`reactive.log.EventLog.listen`: Redis pub/sub, or a hand-off within the
process), and the hub hands it to its own connections: an event costs one
message per process, whatever the number of connections. The SSE frame is
built once per event. Each event names its tenant's previous event (``prev``),
so a hub that sees a hole (a message lost or reordered) reads the log to fill
it before dispatching: connections receive every event, in order.

Shutdown: an ASGI server waits for open connections to finish before it tells
the application (uvicorn sends ``lifespan.shutdown`` only after they close),
and a stream never finishes by itself. So the hub chains the server's SIGTERM
and SIGINT handlers (see :func:`install_shutdown_hook`): on either signal every
stream of the process ends (:meth:`Stream.end`), SSE responses complete and
WebSockets close with 1012, and the server's graceful shutdown goes on at once.
:func:`shutdown` does the same for servers that signal otherwise.

Writes do not wait for their audience: the connections of a process share its
event loop with the requests it serves, so fanning an event out to N of them
as soon as it arrives would put N connections' work ahead of the rest of the
writer's own response. A writer that publishes while serving a request holds
its events back instead (:func:`hold_back`, by :mod:`reactive.publishing`):
the hubs of its process keep every event from its first one on, in order,
until its response went out (``request_finished``) or ``HOLD_SECONDS`` passed,
then deliver them. Only this process's fan-out waits: the events are in the log
and on the live path (other processes) before the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from asgiref.sync import sync_to_async

from .cache import reactive_cache
from .conf import reactive_settings
from .events import GLOBAL_TENANT, Event
from .log import Gap, get_log

logger = logging.getLogger("reactive")

QUEUE_SIZE = 1000  # events a slow connection may lag before it is told to reset
RETRY_MAX_SECONDS = 5.0  # the listener's reconnect backoff, from 0.1 s
HOLD_SECONDS = 0.25  # the longest a local writer's response holds back its events' fan-out


class Hold:
    """A writer's response not sent yet: this process's hubs keep its events back until then.

    Made by the writing thread before its first append (:func:`hold_back`), so
    that no live path can bring its events to a hub first; `own` is then the id
    of its first event. It holds back every event from that id on, of any
    tenant, since a connection follows several tenants and must get their
    events in the log's order; before the id is known, it holds back all.
    """

    __slots__ = ("deadline", "own")

    def __init__(self) -> None:
        self.own: int | None = None
        self.deadline = time.monotonic() + HOLD_SECONDS

    def blocks(self, event_id: int) -> bool:
        """Whether the event `event_id` must wait for this hold."""
        return self.own is None or self.own <= event_id

    def appended(self, event: Event) -> None:
        """The writer appended `event`: events older than its first one may go."""
        with _holds_lock:
            if self.own is None or int(event.id) < self.own:
                self.own = int(event.id)
        _wake()

    def release(self) -> None:
        """The writer's response went out (or its publish failed): its events may go."""
        with _holds_lock:
            if self in _holds:
                _holds.remove(self)
        _wake()


_holds: list[Hold] = []  # this process's writers whose responses are not out yet
_holds_lock = threading.Lock()


def hold_back() -> Hold | None:
    """Hold this process's fan-out from the caller's next event on, until :meth:`Hold.release`.

    None when the process serves no connection (no hub): there is nothing to hold.
    """
    if not _hubs:
        return None
    hold = Hold()
    with _holds_lock:
        _holds.append(hold)
    return hold


def held_back(event_id: int) -> bool:
    """Whether a local writer's response holds back the event `event_id` (expired holds go)."""
    if not _holds:
        return False
    now = time.monotonic()
    with _holds_lock:
        _holds[:] = [h for h in _holds if h.deadline > now]
        return any(h.blocks(event_id) for h in _holds)


def next_expiry() -> float | None:
    """When the soonest hold expires (time.monotonic()), or None when none is left."""
    with _holds_lock:
        return min((h.deadline for h in _holds), default=None)


def _wake() -> None:
    """Let every hub holding events back look again (from any thread)."""
    try:
        hubs = list(_hubs.items())
    except RuntimeError:  # changed size meanwhile (a loop went away): once more
        hubs = list(_hubs.items())
    for loop, hub in hubs:
        if hub.held and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(hub.flush)


class Stream:
    """One connection's view of the hub: the tenants it follows and a queue of events."""

    def __init__(self, hub: Hub, tenants: set[str]):
        self.hub = hub
        self.tenants = set(tenants)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False
        self.ended = False  # the server is shutting down: the connection should end now
        self.due = False  # the connection's access re-check is due (see recheck_in)
        self.timer: asyncio.TimerHandle | None = None

    def deliver(self, event: Event) -> None:
        """Queue `event` for the connection; when the queue is full, mark the stream overflowed."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # the connection resets and replays from the log

    def beat(self) -> None:
        """Queue a heartbeat (None) unless the queue is full."""
        if not self.queue.full():  # a busy stream needs no heartbeat
            self.queue.put_nowait(None)

    def reset(self) -> None:
        """Events were lost for this stream: it must replay from the log (or reset its client)."""
        self.overflowed = True
        self.beat()  # wake the connection now, not at the next event or heartbeat

    def end(self) -> None:
        """The process is shutting down: wake the connection, which sees `ended` and closes."""
        self.ended = True
        self.cancel_timer()
        self.beat()  # a full queue wakes it anyway, at its next event

    def recheck_in(self, delay: float) -> None:
        """Set `due` in `delay` seconds, waking the connection then (with a None).

        One timer per stream and re-check, instead of a timeout around every
        wait for an event (several microseconds each, per event and connection):
        the re-check comes on time whether events flow or not. Each call
        replaces the previous timer and clears `due`.
        """
        self.cancel_timer()
        self.due = False
        self.timer = asyncio.get_running_loop().call_later(delay, self._recheck_due)

    def _recheck_due(self) -> None:
        self.timer = None
        self.due = True
        self.beat()  # a full queue wakes it anyway, at its next event

    def cancel_timer(self) -> None:
        """Forget the pending re-check timer, if any."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def get(self) -> Event | None:
        """The next event, or None for a heartbeat (the hub beats for every stream at once).

        None also when the re-check is due (`due`) or the stream `ended`: the
        connection looks at both after every wake.
        """
        return await self.queue.get()

    async def follow(self, tenant: str) -> None:
        """Also receive `tenant`'s events."""
        if tenant not in self.tenants:
            self.tenants.add(tenant)
            await self.hub.attach(self, {tenant})

    def unfollow(self, tenant: str) -> None:
        """Stop receiving `tenant`'s events."""
        self.tenants.discard(tenant)
        self.hub.detach_tenant(self, tenant)

    def close(self) -> None:
        """Called when the connection ends: detach the stream from the hub."""
        self.cancel_timer()
        self.hub.detach(self)


class Hub:
    """This process's listener and its local subscribers, per event loop."""

    def __init__(self) -> None:
        self.streams: dict[str, set[Stream]] = defaultdict(set)
        self.last: dict[str, str] = {}  # tenant -> id of the last event dispatched
        self.task: asyncio.Task[None] | None = None
        self.beats: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.up = False  # the listener is subscribed (its backoff restarts after a failure)
        self.dispatched = 0
        self.stopping = False  # the process is shutting down: streams end, none starts
        self.closing: asyncio.Task[None] | None = None
        self.held: deque[Event] = deque()  # dispatched, kept back by a local writer (Hold)
        self.expiry: asyncio.TimerHandle | None = None  # looks again when a hold expires

    async def open(self, tenants: set[str]) -> Stream:
        """A new stream following `tenants` (and the global tenant); starts the listener.

        While the process shuts down the stream is ended at once (and follows
        nothing): its connection says goodbye, and the client reconnects elsewhere.
        """
        stream = Stream(self, tenants)
        if self.stopping:
            stream.end()
            return stream
        await self.attach(stream, stream.tenants | {GLOBAL_TENANT})
        stream.tenants.add(GLOBAL_TENANT)
        return stream

    async def attach(self, stream: Stream, tenants: set[str]) -> None:
        """Add `stream` to `tenants`' followers, positioning new tenants, and start the listener."""
        if self.stopping:  # its connection is about to end: no listener to start again
            return
        for tenant in tenants:
            if tenant not in self.last:
                # Start from the tenant's newest event (or the log's position if it
                # has none), so that later holes can be read back from the log.
                self.last[tenant] = await self.newest(tenant, unknown="0")
            self.streams[tenant].add(stream)
        loop = asyncio.get_running_loop()
        # The hub outlives the request that starts it: its tasks get a context of
        # their own, not that request's (its thread-sensitive executor, its
        # database connections).
        if self.beats is None or self.beats.done():
            self.beats = loop.create_task(self.heartbeat(), context=contextvars.Context())
        if self.task is None or self.task.done():
            self.ready.clear()
            self.task = loop.create_task(self.listen(), context=contextvars.Context())
        await asyncio.wait_for(self.ready.wait(), 10)

    def detach_tenant(self, stream: Stream, tenant: str) -> None:
        """Remove `stream` from `tenant`'s followers; forget the tenant when none is left."""
        followers = self.streams.get(tenant)
        if followers is not None:
            followers.discard(stream)
            if not followers:
                del self.streams[tenant]
                self.last.pop(tenant, None)

    def detach(self, stream: Stream) -> None:
        """Remove `stream` from every tenant it follows."""
        for tenant in list(stream.tenants):
            self.detach_tenant(stream, tenant)

    @property
    def connections(self) -> int:
        """How many distinct streams the hub serves."""
        return len({s for followers in self.streams.values() for s in followers})

    async def newest(self, tenant: str, unknown: str | None = None) -> str:
        """The id of `tenant`'s newest event (the log's position if it has none).

        With `unknown` given, a log that cannot be read answers it instead of
        raising: a stream opened while Redis is away still opens, and "0" makes
        the hub read the log (and so reset the stream) once events flow again.
        """
        try:
            last = await sync_to_async(get_log().last_id)(tenant)
            if last == "0":
                last = await sync_to_async(get_log().position)()
            return last
        except Exception:
            if unknown is None:
                raise
            logger.warning("reactive: event log unavailable; %s starts unpositioned", tenant)
            return unknown

    async def listen(self) -> None:
        """Receive events until closed; on a failure, retry and fill what was missed from the log."""
        delay = 0.1
        while True:
            try:
                await get_log().listen(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.up:  # it had been working: this is a new outage, retry soon
                    delay, self.up = 0.1, False
                    logger.warning("reactive: fan-out listener lost (%r); reconnecting", exc)
                    # Writes may have failed to bump the cache meanwhile: once it answers
                    # again, the cache bumps its epoch before this process trusts it.
                    reactive_cache().failed(time.monotonic(), "the fan-out listener lost Redis")
                else:
                    logger.debug("reactive: fan-out listener still down (%r)", exc)
                self.ready.set()  # streams still work from the log when they reconnect
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                await self.resync()

    def connected(self) -> None:
        """The log's live path is up (:class:`reactive.log.Receiver`)."""
        self.up = True
        self.ready.set()

    async def heartbeat(self) -> None:
        """One timer for every stream of the process, instead of a timeout per stream."""
        interval = reactive_settings()["HEARTBEAT_SECONDS"]
        while True:
            await asyncio.sleep(interval)
            for stream in {s for followers in self.streams.values() for s in followers}:
                stream.beat()

    def shutdown(self) -> None:
        """End every stream (their connections close) and stop the listener; refuse new ones."""
        if self.stopping:
            return
        self.stopping = True
        streams = {s for followers in self.streams.values() for s in followers}
        logger.info("reactive: shutting down; ending %d stream(s)", len(streams))
        for stream in streams:
            stream.end()
        self.closing = asyncio.get_running_loop().create_task(
            self.close_quietly(), context=contextvars.Context()
        )

    async def close_quietly(self) -> None:
        """:meth:`stop`, logging instead of raising (Redis may be the reason for the shutdown)."""
        try:
            await self.stop()
        except Exception:
            logger.warning("reactive: could not stop the fan-out listener cleanly", exc_info=True)

    async def close(self) -> None:
        """Stop the listener (or wait for :meth:`shutdown`'s stopping it)."""
        if self.closing is not None:
            await self.closing
            return
        await self.stop()

    async def stop(self) -> None:
        """Stop the listener by a message, not a cancellation (which can hang a Redis read)."""
        if self.beats is not None:
            self.beats.cancel()
        if self.expiry is not None:
            self.expiry.cancel()
        if self.task is None or self.task.done():
            return
        await get_log().stop(self)
        try:
            await asyncio.wait_for(self.task, 5)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()

    async def handle(self, event: Event) -> None:
        """Dispatch one event from the live path, filling any hole from the log first."""
        last = self.last.get(event.tenant)
        if last is None or int(event.id) <= int(last):
            return  # nobody here follows the tenant, or it was dispatched already
        if event.prev == last:
            self.dispatch(event)
            return
        await self.catch_up(event.tenant)

    async def catch_up(self, tenant: str) -> None:
        """Dispatch what `tenant` missed from the log, or reset its streams on a gap."""
        last = self.last.get(tenant)
        if last is None:
            return
        try:
            missed = await sync_to_async(get_log().read)([tenant], int(last))
        except Gap:
            # The log no longer holds what was missed (trimmed, or Redis restarted
            # empty): every stream of the tenant resets, and the hub goes on from the
            # log's newest event, so that the events after it are dispatched again
            # (staying behind would turn every later event into another gap).
            newest = await self.newest(tenant)
            if tenant in self.last:
                self.last[tenant] = newest
            for stream in list(self.streams.get(tenant, ())):
                stream.reset()
            return
        for event in missed:
            if int(event.id) > int(self.last.get(tenant, "0")):
                self.dispatch(event)

    async def resync(self) -> None:
        """After a listener failure: read what every followed tenant missed."""
        for tenant in list(self.streams):
            try:
                await self.catch_up(tenant)
            except Exception:
                logger.warning("reactive: could not catch up tenant %s", tenant, exc_info=True)

    def dispatch(self, event: Event) -> None:
        """Record `event` as the tenant's last; deliver it now, or once no writer holds it back.

        Never waits: a held event goes after those held before it, when the
        writer's response is out (:meth:`flush`), in the order dispatched.
        """
        self.last[event.tenant] = event.id
        self.dispatched += 1
        if self.held or held_back(int(event.id)):
            self.held.append(event)
            self.flush()  # the hold may have gone meanwhile; else look again when it expires
            return
        self.deliver(event)

    def deliver(self, event: Event) -> None:
        """Queue `event` for each stream of its tenant."""
        for stream in list(self.streams.get(event.tenant, ())):
            stream.deliver(event)

    def flush(self) -> None:
        """Deliver the held events no hold keeps back any more, oldest first (on the hub's loop)."""
        while self.held and not held_back(int(self.held[0].id)):
            self.deliver(self.held.popleft())
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.held:  # a response that never goes out holds nothing for long
            expiry = next_expiry()
            delay = 0.0 if expiry is None else max(0.0, expiry - time.monotonic())
            self.expiry = asyncio.get_running_loop().call_later(delay, self.flush)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_stopping = False  # shutdown() was called: the process is going away


def get_hub() -> Hub:
    """The hub of the running event loop (one per process under an ASGI server)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
        hub.stopping = _stopping  # a first stream after the signal ends at once too
        install_shutdown_hook()
    return hub


def shutdown() -> None:
    """End every open stream of this process, from any thread or a signal handler.

    SSE responses complete (``EventSource`` reconnects, to another worker or to
    this one restarted, with ``Last-Event-ID``) and WebSockets close with 1012.
    Streams opened afterwards end at once. Idempotent.
    """
    global _stopping
    _stopping = True
    try:
        hubs = list(_hubs.items())
    except RuntimeError:  # changed size while a signal interrupted a change: once more
        hubs = list(_hubs.items())
    for loop, hub in hubs:
        if not loop.is_closed():
            loop.call_soon_threadsafe(hub.shutdown)


SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_shutdown_hook() -> None:
    """Chain :func:`shutdown` before the server's own SIGTERM and SIGINT handlers.

    uvicorn (like most ASGI servers) handles these signals in Python and then
    waits for open connections before anything else, so streams must hear of the
    signal itself. Installed only over a Python handler that a server set (not
    over the default ones: there the signal ends the process anyway), from the
    main thread, once per handler; the server's handler still runs, unchanged.
    uvicorn puts its original handlers back when it stops, which removes this one.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SHUTDOWN_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous) or previous is signal.default_int_handler:
            continue
        if getattr(previous, "reactive_shutdown", False):
            continue
        signal.signal(sig, _ChainedHandler(previous))


class _ChainedHandler:
    """A signal handler that ends this process's streams, then runs the server's own."""

    reactive_shutdown = True  # marks it, so that it is chained once

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        shutdown()
        self.previous(signum, frame)


async def close_hub() -> None:
    """Stop the running loop's hub, if it has one (shutdown and tests)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()
