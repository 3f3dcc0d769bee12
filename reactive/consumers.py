"""The WebSocket consumer at ``/ws/reactive/``: query subscriptions, pushed invalidations.

Messages are JSON objects with a ``type`` (see docs/protocol.md). A client
subscribes to a query by name and input; the server runs it (checking access),
answers with its key, tags and cursor, and from then on pushes an
``invalidate`` (or, with ``"data": true``, a fresh ``result``) only for that
client's own subscriptions. ``since`` resumes from a cursor after a reconnect.
A refused connection is accepted and closed at once (4401 identity, 1008
policy) so that a browser sees why; a shutdown closes with 1012.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import identity, inline
from .capture import user_stream
from .conf import authorize_tenant, reactive_settings
from .errors import NotFound, ReactiveError
from .events import GLOBAL_TENANT, Event
from .fanout import Stream, get_hub
from .functions import Context, ReactiveFunction, Result, registry
from .http import BadRequest, parse_json
from .log import Gap, get_log, parse_position
from .sse import access_tags
from .threads import database_sync_to_async
from .types import Send

logger = logging.getLogger("reactive")

HEARTBEAT = '{"type":"heartbeat"}'
MAX_FRAME = 64 * 1024  # bytes of one client message
CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012  # the server is shutting down (or restarting): reconnect
RAW_SEND = "reactive.raw_send"  # the server's own send, put in the scope by routing.OriginCheck


async def refuse(send: Send, code: int) -> None:
    """Complete the handshake, then close with `code` (4401 no identity, 1008 policy).

    Closing before the handshake would make the server answer HTTP 403, which
    a browser reports as close 1006 whatever the reason: a client could not
    tell "log in again" from "this origin is refused". Nothing is read from
    the connection and nothing else is sent on it.
    """
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code})


@dataclass
class Subscription:
    """One client query: what it is, which tags and tenants can invalidate it."""

    id: str
    fn: ReactiveFunction
    input: Any
    key: str
    tags: set[str]
    tenants: set[str]
    want_data: bool = False
    last: int = 0
    pending: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The invalidate frame's subscription part, encoded once: per event only
        # the matched tags and the event's id and time are added.
        self.frame_head = (
            f'{{"type":"invalidate","id":{json.dumps(self.id)},"key":{json.dumps(self.key)},"tags":'
        )


class RateLimit:
    """A token bucket: `rate` messages a second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def allow(self) -> bool:
        """Take a token if one is left: whether this message may be handled now."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ReactiveConsumer(AsyncWebsocketConsumer):
    """One browser or SPA connection and its subscriptions."""

    # Events come from the process's hub, not the channel layer: without this,
    # Channels would hold a blocking Redis receive open for every connection.
    channel_layer_alias = None  # type: ignore[assignment]  # Channels takes None; its stubs don't

    async def connect(self) -> None:
        """Called when the client connects: authenticate, open the event stream, accept."""
        self.user: Any = self.scope.get("user")  # the project's user model (or a token's user)
        self.subs: dict[str, Subscription] = {}
        # Opened before the connection is accepted: every client message, and the pump, has it.
        self.stream: Stream | None = None
        self.pump: asyncio.Task[None] | None = None
        if self.user is None or not self.user.is_authenticated:
            await refuse(self.base_send, CLOSE_UNAUTHENTICATED)
            return
        rate = reactive_settings()["MAX_MESSAGES_PER_SECOND"]
        self.limit = RateLimit(rate, rate * 2)
        self.watched = access_tags(self.user)
        self.reauthenticate = identity.for_scope(self.scope)
        # Pushed frames go straight to the server, past the session middleware's
        # per-message wrapper (it only acts on accept and HTTP responses).
        # (routing.OriginCheck adds it to the scope, outside the keys Channels' types know)
        self.send_frame: Send = cast("Send | None", self.scope.get(RAW_SEND)) or self.base_send
        self.stream = await get_hub().open({user_stream(self.user.pk)})
        await self.accept()
        self.pump = asyncio.get_running_loop().create_task(self.forward())

    async def disconnect(self, code: int) -> None:
        """Called when the WebSocket closes: stop the pump, the pending pushes and the stream."""
        if self.pump is not None:
            self.pump.cancel()
        for sub in self.subs.values():
            if sub.pending is not None:
                sub.pending.cancel()
        if self.stream is not None:
            self.stream.close()

    async def send_json(self, content: dict[str, Any]) -> None:
        """Send `content` to the client as compact JSON."""
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    # -- client messages ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called when the client sends a message: check size and rate, dispatch by type."""
        if bytes_data is not None or text_data is None:
            await self.close(code=CLOSE_POLICY)
            return
        # A character takes up to 4 bytes: count bytes only when it could matter.
        if len(text_data) > MAX_FRAME // 4 and len(text_data.encode()) > MAX_FRAME:
            await self.close(code=CLOSE_TOO_BIG)
            return
        if not self.limit.allow():
            # Dropped unread (reading it is what a flood should not cost): no id to echo.
            await self.error(None, 429, "rate_limited", "Too many messages; slow down.")
            return
        try:
            message = parse_json(text_data)
        except BadRequest:  # not JSON at all
            message = None
        except ReactiveError as exc:  # JSON, but too deep, out of range or with NUL
            await self.error(None, exc.status, exc.code, exc.message)
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error(None, 400, "bad_message", "Expected a JSON object with a 'type'.")
            return
        handler = {
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "ping": self.ping,
        }.get(message["type"])
        if handler is None:
            await self.error(message.get("id"), 400, "bad_message", "Unknown message type.")
            return
        await handler(message)

    async def ping(self, message: dict[str, Any]) -> None:
        """Called for a ``ping`` message: answer a ``pong`` with the log's position."""
        try:
            cursor = await sync_to_async(get_log().position)()
        except Exception:  # the log is unreachable: the connection itself is fine
            cursor = ""
        await self.send_json({"type": "pong", "cursor": cursor})

    async def subscribe(self, message: dict[str, Any]) -> None:
        """Called for a ``subscribe`` message: run and answer the query, follow its tenants."""
        sub_id, name = message.get("id"), message.get("name")
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= 64:
            await self.error(None, 422, "invalid_input", "'id' must be a string of 1-64 chars.")
            return
        if sub_id not in self.subs and len(self.subs) >= reactive_settings()["MAX_SUBSCRIPTIONS"]:
            await self.error(sub_id, 429, "too_many_subscriptions", "Subscription limit reached.")
            return
        fn = registry.get(name) if isinstance(name, str) else None
        if fn is None or fn.kind != "query":
            await self.error(sub_id, 404, NotFound.code, f"No query named {name!r}.")
            return
        try:
            since = parse_position(message.get("since"))
        except (ValueError, TypeError):
            since = 0  # untrustworthy: replay will answer with a reset
        try:
            sub, result = await database_sync_to_async(self._run)(
                sub_id, fn, message.get("input") or {}
            )
        except ReactiveError as exc:
            await self.send_json(
                {"type": "error", "id": sub_id, "status": exc.status, **exc.as_dict()}
            )
            return
        sub.want_data = bool(message.get("data"))
        self.subs[sub_id] = sub
        assert self.stream is not None
        for tenant in sub.tenants:
            await self.stream.follow(tenant)
        reply = {
            "type": "subscribed",
            "id": sub_id,
            "key": sub.key,
            "tags": sorted(sub.tags),
            "cursor": result.cursor,
        }
        if sub.want_data:
            reply["data"] = result.data
        await self.send_json(reply)
        if since is not None:
            sub.last = min(sub.last, since)  # the client's data is as old as `since`
            await self.replay(sub, since)
        elif sub.last:
            # Events appended after the result was read and before the stream followed
            # its tenants reached no one: the log has them.
            await self.replay(sub, sub.last)

    def _run(self, sub_id: str, fn: ReactiveFunction, raw: Any) -> tuple[Subscription, Result]:
        ctx = Context(user=self.user)
        result = fn.call(raw, ctx)
        inp = fn.parse_input(raw)
        tenants = set(fn.tenants_for(ctx, inp, result.data)) | {
            GLOBAL_TENANT,
            user_stream(self.user.pk),
        }
        last = int(result.cursor) if result.cursor.isdigit() else 0
        sub = Subscription(sub_id, fn, raw, result.key, set(result.tags), tenants, last=last)
        return sub, result

    async def unsubscribe(self, message: dict[str, Any]) -> None:
        """Called for an ``unsubscribe`` message: drop the subscription and its unused tenants."""
        if not isinstance(message.get("id"), str):
            await self.error(None, 422, "invalid_input", "'id' must be a string.")
            return
        sub = self.subs.pop(message["id"], None)
        if sub is not None:
            if sub.pending is not None:
                sub.pending.cancel()
            still = set().union(*(s.tenants for s in self.subs.values())) if self.subs else set()
            assert self.stream is not None
            for tenant in sub.tenants - still - {GLOBAL_TENANT, user_stream(self.user.pk)}:
                self.stream.unfollow(tenant)
        await self.send_json({"type": "unsubscribed", "id": message.get("id")})

    async def error(self, sub_id: Any, status: int, code: str, text: str) -> None:
        """Send the client an error message (about subscription `sub_id`, or None)."""
        await self.send_json(
            {
                "type": "error",
                "id": sub_id,
                "status": status,
                "error": {"code": code, "message": text},
            }
        )

    # -- server events ------------------------------------------------------------------

    async def replay(self, sub: Subscription, since: int) -> None:
        """Invalidate `sub` once if the log has a match after `since`; a reset if it cannot be read."""
        try:
            missed = await sync_to_async(get_log().read)(sorted(sub.tenants), since, 100_000)
        except Exception as exc:  # trimmed (Gap), or the log is unreachable
            if not isinstance(exc, Gap):
                logger.warning("reactive: event log unavailable for a replay", exc_info=True)
            await self.send_json({"type": "reset", "id": sub.id})
            return
        matching = [event for event in missed if not sub.tags.isdisjoint(event.tag_set)]
        if matching:
            # One invalidation is enough (the client refetches once): the newest, so
            # that it covers every event the log holds up to now.
            await self.notify(sub, matching[-1])

    async def forward(self) -> None:
        """Pump hub events into this client's matching subscriptions."""
        assert self.stream is not None
        self.stream.recheck_in(identity.recheck_delay())
        try:
            while True:
                event = await self.stream.get()
                if self.stream.ended:  # the server shuts down: reconnect elsewhere
                    await self.close(code=CLOSE_RESTART)
                    return
                if self.stream.overflowed:
                    self.stream.overflowed = False
                    await self.send_json({"type": "reset", "id": None})
                elif event is not None:
                    for sub in list(self.subs.values()):
                        if event.tenant in sub.tenants and not sub.tags.isdisjoint(event.tag_set):
                            await self.notify(sub, event)
                elif not self.stream.due:  # else the re-check's timer woke the stream
                    await self.send_frame({"type": "websocket.send", "text": HEARTBEAT})
                touched = event is not None and not self.watched.isdisjoint(event.tag_set)
                if touched or self.stream.due:
                    self.stream.recheck_in(identity.recheck_delay())
                    if not await self.recheck():
                        return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reactive: websocket pump failed")
            await self.close(code=1011)

    async def notify(self, sub: Subscription, event: Event) -> None:
        """Called for an event matching `sub`: push an invalidation, or schedule a fresh result."""
        if int(event.id) <= sub.last:
            return
        sub.last = int(event.id)
        if not sub.want_data:
            matched = json.dumps(sorted(sub.tags & event.tag_set), separators=(",", ":"))
            frame = f'{sub.frame_head}{matched},"eventId":"{event.id}","at":{event.at}}}'
            await self.send_frame({"type": "websocket.send", "text": frame})
            return
        if sub.pending is None or sub.pending.done():
            sub.pending = asyncio.get_running_loop().create_task(self.push_result(sub))

    async def push_result(self, sub: Subscription) -> None:
        """Rerun `sub`'s query and push its fresh result (or an error, dropping `sub`)."""
        try:
            result = await database_sync_to_async(sub.fn.call)(sub.input, Context(user=self.user))
        except ReactiveError as exc:
            self.subs.pop(sub.id, None)
            await self.send_json(
                {"type": "error", "id": sub.id, "status": exc.status, **exc.as_dict()}
            )
            return
        await self.send_json(
            {
                "type": "result",
                "id": sub.id,
                "key": result.key,
                "data": result.data,
                "cursor": result.cursor,
            }
        )

    async def recheck(self) -> bool:
        """Close when the caller is gone; drop the subscriptions they may no longer follow."""
        # Cache hits, usually: answered on the loop (1,000 connections re-check every 30 s).
        user = await inline.call(self.reauthenticate, thread=database_sync_to_async)
        if user is None:  # logged out, token revoked or user deactivated
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return False
        self.user = user
        tenants = set().union(*(s.tenants for s in self.subs.values())) if self.subs else set()
        own = {GLOBAL_TENANT, user_stream(self.user.pk)}
        assert self.stream is not None
        for tenant in tenants - own:
            if await inline.call(
                authorize_tenant, self.user, tenant, thread=database_sync_to_async
            ):
                continue
            self.stream.unfollow(tenant)
            for sub in [s for s in self.subs.values() if tenant in s.tenants]:
                if await self.still_answers(sub, tenant):
                    continue
                self.subs.pop(sub.id, None)
                await self.error(sub.id, 403, "forbidden", "You no longer have access.")
        return True

    async def still_answers(self, sub: Subscription, lost: str) -> bool:
        """Whether `sub` still answers the caller without the tenant they lost.

        If it does, it follows the tenants of its answer from now on. A query of
        one organization is refused (403), but one that spans the caller's
        organizations (their list) answers without the lost one and must stay
        subscribed: its own invalidation already went out.
        """
        try:
            fresh, _ = await database_sync_to_async(self._run)(sub.id, sub.fn, sub.input)
        except ReactiveError:
            return False
        sub.tenants = fresh.tenants - {lost}
        return True
