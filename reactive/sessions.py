"""Who a session cookie belongs to, read from the cache: the fast lane's session identity.

It checks what ``SessionMiddleware`` and ``AuthenticationMiddleware`` check,
in the same order: the cookie names a session the session store holds
(``cache`` and ``cached_db`` engines: the session is read from the cache, as
those engines do, through the same cache alias as the reactive cache, so it
comes in the lane's one fetch), the session names a user of an authentication
backend that is ``ModelBackend``, and that user is active and its session auth
hash matches the one the session recorded at login. Anything else (another
session engine or backend, a hash that only a fallback secret key verifies,
which Django answers by rotating the session) is left to Django.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.http.cookie import parse_cookie
from django.utils.crypto import constant_time_compare

from . import prefetch
from .cache import cached, reactive_cache
from .identity import Identity
from .users import session_hash, user_from, user_lookup

ENGINES = ("django.contrib.sessions.backends.cache", "django.contrib.sessions.backends.cached_db")
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


class SessionIdentity:
    """The user of a Django session cookie (see the module's docstring)."""

    kind = "session"

    def usable(self) -> bool:
        """Whether the project's session setup is one this resolver reproduces exactly."""
        cache = reactive_cache()
        return (
            settings.SESSION_ENGINE in ENGINES
            and cache.alias == settings.SESSION_CACHE_ALIAS
            and not settings.SESSION_SAVE_EVERY_REQUEST  # every answer would set a cookie
            and MODEL_BACKEND in settings.AUTHENTICATION_BACKENDS
        )

    def credential(self, headers: Mapping[str, str]) -> str | None:
        """The session key in the request's session cookie."""
        cookie = headers.get("cookie")
        if not cookie:
            return None
        return parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) or None

    def resolve(self, credential: str) -> Identity | None:
        """The session's active user, or None (no such session, logged out, another backend)."""
        if not self.usable():
            return None
        store = import_module(settings.SESSION_ENGINE).SessionStore(credential)
        if store.session_key is None:  # not a well-formed key
            return None
        data = _session_data(store)
        if not data or SESSION_KEY not in data or data.get(BACKEND_SESSION_KEY) != MODEL_BACKEND:
            return None
        user_id = get_user_model()._meta.pk.to_python(data[SESSION_KEY])  # as get_user reads it
        row = cached(*user_lookup(user_id))
        if row is None or not constant_time_compare(
            str(data.get(HASH_SESSION_KEY, "")), session_hash(row)
        ):
            return None
        user = user_from(row)
        return Identity(user, self.kind) if user.is_active else None


def _session_data(store: Any) -> dict[str, Any] | None:
    """The session's data as the engine would load it: from the cache, else (a thread) the store."""
    found = prefetch.read(reactive_cache().backend, [store.cache_key]).get(store.cache_key)
    if found is None and prefetch.PREFETCHED.get() is None:
        found = store.load() or None  # cached_db reads the database and caches it again
    return found if isinstance(found, dict) else None
