"""The ASGI callables reactive's server wrappers take and give (as ``starlette.types`` names them).

Typed loosely on purpose, the way Channels' own stubs type middleware: Django
(dict scopes), asgiref and Channels (TypedDict scopes and messages whose every
key is required) and Starlette (mutable mappings) spell the same callables
three ways, and a project passes any of them to :class:`reactive.Lifespan` or
``websocket_application``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope: TypeAlias = Any  # the connection: a mapping with "type", "headers", ...
Message: TypeAlias = Any  # one event: a mapping with "type"
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]


class ASGIApp(Protocol):
    """An ASGI 3 application: Django's handler, a Channels router, a middleware."""

    def __call__(self, scope: Scope, receive: Receive, send: Send, /) -> Awaitable[None]:
        """Serve one connection."""
        ...
