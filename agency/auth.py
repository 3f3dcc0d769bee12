"""Identity for non-browser clients (Bearer API tokens) and login throttling."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import timedelta
from functools import partial

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from reactive import (
    REAUTHENTICATE,
    Identity,
    NotAuthenticated,
    ReactiveError,
    cached,
    cached_many,
    call_inline,
    error_response,
    table_tag,
    user_from,
    user_lookup,
)

from .access import PREFETCHED, membership_lookup
from .models import ApiToken, User, hash_token

LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often
LOGIN_FAILURES = 10  # failed logins per username and address ...
LOGIN_WINDOW = 300  # ... within this many seconds lock further tries out
# What ApiToken.issue makes: anything else is refused before the cache or the
# database is asked, so garbage tokens cannot fill the cache with misses.
TOKEN_FORMAT = re.compile(re.escape(ApiToken.PREFIX) + r"[A-Za-z0-9_-]{20,100}")


def user_for_token(raw: str) -> User | None:
    """The active user an API token belongs to, or None (unknown, revoked, inactive)."""
    return token_identity(raw)[0]


def token_identity(raw: str) -> tuple[User | None, dict[str, str]]:
    """An API token's active user and their memberships, or (None, {}).

    The lookups go through the reactive cache, tagged by the rows they read, so
    a revocation, a deactivated user or a membership change takes effect at
    once without a query per request: two round trips, the token's, then the
    user's and their memberships' together.
    """
    if not TOKEN_FORMAT.fullmatch(raw):
        return None, {}
    digest = hash_token(raw)
    token = cached(f"apitoken:{digest}", [table_tag(ApiToken)], lambda: _token_row(digest))
    if token is None:
        return None, {}
    user, roles = _cached_user(token["user"])
    if user is None or not user.is_active:
        return None, {}
    last_used = parse_datetime(token["lastUsed"]) if token["lastUsed"] else None
    now = timezone.now()
    if last_used is None or now - last_used > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token["id"]).update(last_used_at=now)
    return user, roles


def _token_row(digest: str) -> dict | None:
    row = (
        ApiToken.objects.filter(token_hash=digest, revoked_at__isnull=True)
        .values("id", "user_id", "last_used_at")
        .first()
    )
    if row is None:
        return None
    used = row["last_used_at"]
    return {
        "id": str(row["id"]),
        "user": str(row["user_id"]),
        "lastUsed": used.isoformat() if used else None,
    }


def _cached_user(user_id: str) -> tuple[User | None, dict[str, str]]:
    """A User loaded from the cache (password deferred), and their memberships, in one round trip."""
    row, roles = cached_many([user_lookup(user_id), membership_lookup(user_id)])
    return user_from(row), roles


def bearer(request_headers) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = request_headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class TokenIdentity:
    """The fast lane's view of ``ApiTokenMiddleware``: the user and memberships of a Bearer token."""

    kind = "bearer"

    def credential(self, headers: Mapping[str, str]) -> str | None:
        """The token of an ``Authorization: Bearer`` header (any other scheme: not ours)."""
        return bearer(headers)

    def resolve(self, credential: str) -> Identity | None:
        """The token's identity, or None where the middleware answers 401."""
        user, roles = token_identity(credential)
        return None if user is None else Identity(user, self.kind, {PREFETCHED: roles})


def _resolved(user: User):
    async def auser() -> User:
        return user

    return auser


class ApiTokenMiddleware:
    """Authenticate ``Authorization: Bearer`` requests; they need no CSRF token.

    Async-capable, so that requests without a token cross no thread under ASGI.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        raw = bearer(request.headers)
        if raw is not None:
            failure = self.authenticate(request, raw, *token_identity(raw))
            if failure is not None:
                return failure
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest):
        raw = bearer(request.headers)
        if raw is not None:
            failure = self.authenticate(request, raw, *await call_inline(token_identity, raw))
            if failure is not None:
                return failure
        return await self.get_response(request)

    @staticmethod
    def authenticate(request: HttpRequest, raw: str, user: User | None, roles: dict[str, str]):
        if user is None:
            return error_response(NotAuthenticated("Invalid or revoked API token."))
        request.user = user
        request.auser = _resolved(user)
        setattr(request, PREFETCHED, roles)  # this request's access checks need no lookup
        # Open streams ask again on every re-check: a revoked token ends them.
        setattr(request, REAUTHENTICATE, partial(user_for_token, raw))
        request.csrf_processing_done = True  # no cookie identity, so no CSRF risk
        return None


class Throttled(ReactiveError):
    """Too many failed logins."""

    status, code, default_message = 429, "throttled", "Too many failed logins; try again later."


def _throttle_key(request: HttpRequest, username: str) -> str:
    # Hashed: a username may hold spaces or control characters no cache key may.
    who = f"{request.META.get('REMOTE_ADDR', '')}\n{username.lower()[:150]}"
    return "login-failures:" + hashlib.sha256(who.encode("utf-8", "replace")).hexdigest()


def check_login_allowed(request: HttpRequest, username: str) -> None:
    """Raise Throttled after too many recent failures for this username and address."""
    try:
        failures = cache.get(_throttle_key(request, username), 0)
    except Exception:
        return
    if failures >= LOGIN_FAILURES:
        raise Throttled()


def record_login_failure(request: HttpRequest, username: str) -> None:
    """Count one failed login (the window restarts with the first failure)."""
    key = _throttle_key(request, username)
    try:
        if not cache.add(key, 1, LOGIN_WINDOW):
            cache.incr(key)
    except Exception:
        pass


class WebSocketTokenAuth:
    """Authenticate a WebSocket by ``Authorization: Bearer`` or ``?token=`` (scripts only)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        from urllib.parse import parse_qs

        from channels.db import database_sync_to_async
        from django.contrib.auth.models import AnonymousUser

        headers = {k.decode("latin-1").title(): v.decode("latin-1") for k, v in scope["headers"]}
        raw = bearer(headers)
        if raw is None:
            query = scope.get("query_string", b"").decode("latin-1")  # bytes of any kind
            raw = parse_qs(query).get("token", [None])[0]
        if raw:
            user = await database_sync_to_async(user_for_token)(raw)
            scope = {
                **scope,
                "user": user or AnonymousUser(),
                REAUTHENTICATE: partial(user_for_token, raw),
            }
        return await self.app(scope, receive, send)
