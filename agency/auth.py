"""Identity for non-browser clients (Bearer API tokens) and login throttling."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from reactive.errors import NotAuthenticated, ReactiveError
from reactive.http import error_response

from .models import ApiToken, User, hash_token

LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often
LOGIN_FAILURES = 10  # failed logins per username and address ...
LOGIN_WINDOW = 300  # ... within this many seconds lock further tries out


def user_for_token(raw: str) -> User | None:
    """The active user an API token belongs to, or None (unknown, revoked, inactive)."""
    token = (
        ApiToken.objects.active().select_related("user").filter(token_hash=hash_token(raw)).first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def bearer(request_headers) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = request_headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


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
            failure = self.authenticate(request, user_for_token(raw))
            if failure is not None:
                return failure
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest):
        raw = bearer(request.headers)
        if raw is not None:
            failure = self.authenticate(request, await sync_to_async(user_for_token)(raw))
            if failure is not None:
                return failure
        return await self.get_response(request)

    @staticmethod
    def authenticate(request: HttpRequest, user: User | None):
        if user is None:
            return error_response(NotAuthenticated("Invalid or revoked API token."))
        request.user = user
        request.auser = _resolved(user)
        request.csrf_processing_done = True  # no cookie identity, so no CSRF risk
        return None


class Throttled(ReactiveError):
    """Too many failed logins."""

    status, code, default_message = 429, "throttled", "Too many failed logins; try again later."


def _throttle_key(request: HttpRequest, username: str) -> str:
    return f"login-failures:{request.META.get('REMOTE_ADDR', '')}:{username.lower()[:150]}"


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
            raw = parse_qs(scope.get("query_string", b"").decode()).get("token", [None])[0]
        if raw:
            user = await database_sync_to_async(user_for_token)(raw)
            scope = {**scope, "user": user or AnonymousUser()}
        return await self.app(scope, receive, send)
