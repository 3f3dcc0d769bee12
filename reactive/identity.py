"""Who is still behind a long-lived stream: logout, revocation and deactivation end it.

A stream authenticates once, when it opens. Whenever it re-checks its
authorization it also asks its *re-authenticator* for the caller's user as of
now: ``None`` ends the stream. A project's token authentication sets its own
re-authenticator on the request (``request.reactive_reauthenticate``) or the
ASGI scope (``scope["reactive_reauthenticate"]``); otherwise the caller's
session is read again from the session store.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import SimpleNamespace
from typing import Any, Protocol, cast

from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest

from .conf import reactive_settings

ATTRIBUTE = "reactive_reauthenticate"

Reauthenticator = Callable[[], Any]


RECHECK_SPREAD = (0.5, 0.9)  # of RECHECK_SECONDS: spread out, and never later than promised


def recheck_delay() -> float:
    """Seconds until an open stream re-checks its caller next: within ``RECHECK_SECONDS``.

    Spread over 50-90 % of the interval: connections opened together (a deploy,
    a reconnect wave) would otherwise all re-check in the same instant, every
    time; and the 10 % left keep the promise on a busy loop (the re-check itself,
    a thread hop to the database). A stream's timer wakes it at that moment,
    whether or not events or heartbeats arrive (:meth:`reactive.fanout.Stream.recheck_in`).
    """
    low, high = RECHECK_SPREAD
    interval: float = reactive_settings()["RECHECK_SECONDS"]
    return interval * random.uniform(low, high)


def session_user(session_key: str | None) -> Any:
    """The active user a stored session belongs to now, or None (logged out, expired, inactive)."""
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # get_user also verifies the session's auth hash, so a password change ends the stream;
    # it reads nothing of the request but its session.
    user = auth.get_user(cast(HttpRequest, SimpleNamespace(session=store)))
    return user if user.is_authenticated and user.is_active else None


def for_request(request: Any) -> Reauthenticator:
    """The re-authenticator of an HTTP request (SSE)."""
    custom: Reauthenticator | None = getattr(request, ATTRIBUTE, None)
    if custom is not None:
        return custom
    key = getattr(getattr(request, "session", None), "session_key", None)
    return lambda: session_user(key)


def for_scope(scope: Mapping[str, Any]) -> Reauthenticator:
    """The re-authenticator of an ASGI scope (WebSocket)."""
    custom: Reauthenticator | None = scope.get(ATTRIBUTE)
    if custom is not None:
        return custom
    key = getattr(scope.get("session"), "session_key", None)
    return lambda: session_user(key)


@dataclass
class Identity:
    """Who a request's credential names, for the fast lane (``reactive.fastlane``).

    `kind` ("bearer", "session") keys the response headers the lane replays;
    `attributes` are set on the request the lane builds (a project's access
    checks may read what its identity lookup already found there).
    """

    user: Any
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)


class IdentityResolver(Protocol):
    """Turns a request's credential into an :class:`Identity`, from the cache alone if it can.

    ``resolve`` runs on the event loop with every cache read answered from the
    lane's one fetch; it may also run in a thread (with real cache and database
    access) when that read missed, so that the next request finds it cached.
    It must do what the project's own authentication does, and nothing with
    side effects before its first database access.
    """

    kind: str

    def credential(self, headers: Mapping[str, str]) -> str | None:
        """The credential this resolver reads from the request headers, if present."""

    def resolve(self, credential: str) -> Identity | None:
        """The identity, or None where the project's authentication would refuse."""
