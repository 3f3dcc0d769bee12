"""The WebSocket application: origin check, session identity, the reactive consumer."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.conf import settings
from django.http.request import validate_host
from django.urls import path

from .consumers import CLOSE_POLICY, RAW_SEND, ReactiveConsumer, refuse
from .types import ASGIApp, Receive, Scope, Send


class OriginCheck:
    """Refuse a WebSocket whose Origin header names a host outside ALLOWED_HOSTS.

    Browsers always send Origin, so this stops cross-site pages from riding a
    user's cookies; clients without one (scripts with a token) are let through.
    A refused connection is accepted and closed at once with 1008, before the
    session or any message is read, so that a browser can tell it from 4401.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Close a connection from a foreign origin; hand every other one to the wrapped app."""
        origin = dict(scope.get("headers", [])).get(b"origin")
        if origin is not None and not self.allowed(origin.decode("latin-1")):
            message = await receive()  # websocket.connect (or a disconnect already)
            if message["type"] == "websocket.connect":
                await refuse(send, CLOSE_POLICY)  # a browser sees close 1008, not 1006
            return
        await self.app({**scope, RAW_SEND: send}, receive, send)

    @staticmethod
    def allowed(origin: str) -> bool:
        """Whether `origin` is a trusted CSRF origin or names an allowed host."""
        trusted = {o.rstrip("/") for o in getattr(settings, "CSRF_TRUSTED_ORIGINS", [])}
        if origin.rstrip("/") in trusted:
            return True
        try:
            host = urlsplit(origin).hostname or ""
        except ValueError:  # not a URL at all ("http://[bad"): not an allowed origin
            return False
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = [".localhost", "127.0.0.1", "[::1]"]
        return bool(host) and validate_host(host, hosts)


def websocket_application(identity: Callable[[ASGIApp], ASGIApp] | None = None) -> ASGIApp:
    """The ``websocket`` branch of a ProtocolTypeRouter; `identity` wraps extra auth."""
    # Channels routes consumers with Django's path(), which django-stubs types for views
    # only, and types-channels' URLRouter wants its own pattern type: both ignores.
    route = path("ws/reactive/", ReactiveConsumer.as_asgi())  # type: ignore[arg-type]
    app: ASGIApp = URLRouter([route])  # type: ignore[list-item]
    if identity is not None:
        app = identity(app)
    # types-channels' return type also admits ASGI 2 apps; AuthMiddlewareStack's is ASGI 3.
    return OriginCheck(cast(ASGIApp, AuthMiddlewareStack(app)))
