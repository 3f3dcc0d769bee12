"""Server-Sent Events: ``GET /api/events?organizationId=&since=`` and the ack endpoint.

A stream replays the log after ``Last-Event-ID`` (or ``since``) before live
events, says ``reset`` when that position is older than the log, sends a
heartbeat comment every ``HEARTBEAT_SECONDS``, and re-checks the caller's
identity and access when an event touches their memberships, tokens or user
row (and at least every ``RECHECK_SECONDS``, by a timer of its own): a
removed member, a revoked token, a logged-out session or a deactivated user
ends the stream without reconnecting. When the server shuts down the stream
ends cleanly (a last ``retry``, then the response completes), and
``EventSource`` reconnects by itself with ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import identity, inline
from .capture import user_stream
from .conf import authorize_tenant, reactive_settings
from .errors import FieldError, Forbidden, InvalidInput, NotAuthenticated, ReactiveError
from .events import GLOBAL_TENANT
from .fanout import Stream, get_hub
from .http import check_csrf, error_response, json_body, json_response
from .log import Gap, get_log, parse_position
from .threads import database_sync_to_async

logger = logging.getLogger("reactive")

RETRY_MS = 1000


class MissingTenant(ReactiveError):
    """The stream needs an organization."""

    status, code, default_message = 400, "missing_organization", "organizationId is required."


async def request_user(request: HttpRequest) -> Any:
    """The request's user, resolved without blocking the event loop."""
    if hasattr(request, "auser"):
        return await request.auser()
    return await sync_to_async(lambda: request.user)()


def access_tags(user: Any) -> set[str]:
    """The tags whose events make a stream of `user` re-check its access."""
    return {t.format(user=user.pk) for t in reactive_settings()["ACCESS_TAGS"]}


def shutdown_frame() -> bytes:
    """The last frame of a stream whose server shuts down, before the response completes.

    A comment, and a ``retry`` spread over 1-3 s: the clients of a stopping
    worker reconnect (with ``Last-Event-ID``) over a few seconds, not all at once.
    """
    return f": shutdown\nretry: {random.randint(RETRY_MS, 3 * RETRY_MS)}\n\n".encode()


def reset_frame(position: str, reason: str) -> bytes:
    """``event: reset``: drop cached queries and refetch (no ``id`` when the log is unreachable)."""
    data = json.dumps({"id": position or None, "reason": reason, "at": int(time.time() * 1000)})
    head = f"id: {position}\n" if position else ""
    return f"{head}event: reset\ndata: {data}\n\n".encode()


async def replay(tenants: list[str], since: int) -> tuple[list[bytes], int]:
    """The frames of the events after `since` (or one reset), and the position they reach.

    A reset when the log no longer holds that position or cannot be read at all
    (Redis down): the client refetches, and the stream goes on from the log's
    current position, so one outage costs one reset, not one per followed tenant.
    """
    log = get_log()
    try:
        missed = await sync_to_async(log.read)(tenants, since, 100_000)
    except Gap:
        reason = "gap"
    except Exception:
        logger.warning("reactive: event log unavailable for a replay", exc_info=True)
        reason = "unavailable"
    else:
        return [e.sse for e in missed], int(missed[-1].id) if missed else since
    try:
        position = await sync_to_async(log.position)()
    except Exception:
        position = ""
    return [reset_frame(position, reason)], int(position) if position.isdigit() else since


def still_allowed(reauthenticate: identity.Reauthenticator, tenant: str) -> bool:
    """Whether the caller is still who they were and may still follow `tenant`."""
    user = reauthenticate()
    return user is not None and authorize_tenant(user, tenant)


async def event_stream(
    user: Any,
    tenant: str,
    since: int | None,
    reauthenticate: identity.Reauthenticator | None = None,
) -> AsyncIterator[bytes]:
    """The frames of one SSE connection, until the client leaves or loses access."""
    hub = get_hub()
    reauthenticate = reauthenticate or (lambda: user)
    # The user's own stream carries their membership, token and user-row events:
    # they trigger re-checks but are not the organization's, so they are not sent.
    own = user_stream(user.pk)
    stream: Stream = await hub.open({tenant, own})
    watched = access_tags(user)
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        last = since or 0
        if since is not None:
            frames, last = await replay([tenant, GLOBAL_TENANT], since)
            for frame in frames:
                yield frame
        stream.recheck_in(identity.recheck_delay())
        while True:
            event = await stream.get()
            if stream.ended:  # the server shuts down: EventSource reconnects elsewhere
                yield shutdown_frame()
                return
            if stream.overflowed:  # `event` too is in the log, after `last`
                stream.overflowed = False
                frames, last = await replay([tenant, GLOBAL_TENANT], last)
                for frame in frames:
                    yield frame
            elif event is None:
                if not stream.due:  # else the re-check's timer woke the stream
                    yield b": heartbeat\n\n"
            elif event.tenant != own and int(event.id) > last:
                yield event.sse
                last = int(event.id)
            touched = event is not None and not watched.isdisjoint(event.tag_set)
            if touched or stream.due:
                stream.recheck_in(identity.recheck_delay())
                allowed = await inline.call(
                    still_allowed, reauthenticate, tenant, thread=database_sync_to_async
                )
                if not allowed:
                    yield b"event: forbidden\ndata: {}\n\n"
                    return
    finally:
        stream.close()


@require_GET
async def events_view(request: HttpRequest) -> HttpResponseBase:
    """The SSE endpoint."""
    user = await request_user(request)
    try:
        if not user.is_authenticated:
            raise NotAuthenticated()
        tenant = request.GET.get("organizationId", "").strip()
        if not tenant:
            raise MissingTenant()
        raw = request.headers.get("Last-Event-ID") or request.GET.get("since")
        try:
            since = parse_position(raw)
        except ValueError:
            since = 0  # a bogus position: replay cannot be trusted, so the stream resets
        # database_sync_to_async hands this request's connections back: an open
        # stream must not hold a pooled connection for its whole life.
        if not await database_sync_to_async(authorize_tenant)(user, tenant):
            raise Forbidden()
    except ReactiveError as exc:
        return error_response(exc)
    response = StreamingHttpResponse(
        event_stream(user, tenant, since, identity.for_request(request)),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@require_POST
@csrf_exempt  # checked below, so that a failure answers in JSON like the rest of the API
def ack_view(request: HttpRequest) -> HttpResponse:
    """Record a client's delivery position: ``{"eventId", "clientId"?, "organizationId"?}``."""
    from .models import ClientPosition

    try:
        if not request.user.is_authenticated:
            raise NotAuthenticated()
        check_csrf(request)
        body = json_body(request)
        errors: list[FieldError] = []
        try:
            event_id = parse_position(body.get("eventId"))
        except (ValueError, TypeError):
            event_id = None
        if event_id is None:
            errors.append({"field": "eventId", "message": "An event id (a log position)."})
        client_id = str(body.get("clientId") or request.headers.get("X-Client-Id") or "default")
        if len(client_id) > 100:
            errors.append({"field": "clientId", "message": "At most 100 characters."})
        if errors:
            raise InvalidInput(errors=errors)
    except ReactiveError as exc:
        return error_response(exc)
    tenant = str(body.get("organizationId") or "")[:100]
    ClientPosition.objects.update_or_create(
        user=request.user,
        client_id=client_id,
        defaults={"event_id": str(event_id), "tenant": tenant},
    )
    return json_response({"eventId": str(event_id), "clientId": client_id})
