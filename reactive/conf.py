"""The reactive layer's settings: ``settings.REACTIVE`` over :data:`DEFAULTS`, as one object.

Read a setting as ``reactive_settings().CACHE_ALIAS`` (or ``["CACHE_ALIAS"]``).
The object is built once and rebuilt when ``REACTIVE`` changes (Django's
``setting_changed``, sent by ``override_settings`` and pytest-django's
``settings`` fixture); what was derived from a setting (the cache, the event
log, the table graph) registers with :func:`on_change` and is reset with it,
as Channels resets its layers when ``CHANNEL_LAYERS`` changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

__all__ = ["DEFAULTS", "ReactiveSettings", "authorize_tenant", "on_change", "reactive_settings"]

DEFAULTS: dict[str, Any] = {
    "TENANT_MODEL": None,  # "app.model" whose rows are tenants (events are per tenant)
    "TENANT_FIELD": None,  # the foreign key naming a row's tenant
    # The event log and its live path (reactive.log): "reactive.backends.memory.MemoryLog" hands
    # events to this process's streams; "reactive.backends.redis.RedisLog" shares them between
    # processes through Redis Streams and pub/sub, at LOG_OPTIONS["url"].
    "LOG_BACKEND": "reactive.backends.memory.MemoryLog",
    "LOG_OPTIONS": {},
    "LOG_MAXLEN": 10_000,  # events kept per tenant log
    "KEY_PREFIX": "rx",  # of every Redis key the event log writes
    "DEFAULT_TTL": 3600,  # seconds a cached result lives at most
    "CACHE_VERSION": "1",  # part of every entry's key: change it to orphan every entry at once
    "RELATIONS": {},
    "IGNORED_APPS": ["admin", "contenttypes", "sessions", "migrations", "reactive"],
    # "app.model" -> field names whose values writes emit scoped tags for, beyond the
    # primary key, the foreign keys and the columns declared dependencies name.
    "SCOPED_FIELDS": {},
    # Change capture (triggers.py, drain.py, drainer.py):
    "DRAIN_MODE": "auto",  # "shared" (claim and delete), "local" (every process reads every row)
    "DRAIN_POLL_SECONDS": None,  # the drainer's poll: 0.1 s on SQLite, 2 s with LISTEN/NOTIFY
    "CHANGE_RETENTION_SECONDS": 300,  # local mode: rows older than this are pruned
    "MAX_PENDING_CHANGES": 100_000,  # past this, a drain invalidates by table instead of by row
    "CACHE_ALIAS": "default",
    "METRICS_FLUSH_SECONDS": 5.0,
    # "module.function"(user, tenant) -> bool: may this user follow this tenant's events?
    "AUTHORIZE_TENANT": None,
    # Tags (with {user}) whose events make open streams re-check their authorization.
    "ACCESS_TAGS": [],
    "RECHECK_SECONDS": 30.0,  # re-check authorization of open streams at least this often
    "HEARTBEAT_SECONDS": 15.0,
    "MAX_SUBSCRIPTIONS": 100,  # per WebSocket connection
    "MAX_MESSAGES_PER_SECOND": 50,  # per WebSocket connection, averaged over a few seconds
    # The browser client's options (reactive/templatetags/reactive.py, CLIENT_DEFAULTS).
    "CLIENT": {},
}


class ReactiveSettings(Mapping[str, Any]):
    """The effective settings: every key of :data:`DEFAULTS`, overridden by ``settings.REACTIVE``.

    Keys ``settings.REACTIVE`` names that are not in :data:`DEFAULTS` are kept
    (and reported by the system check ``reactive.W001``), so a typo is seen.
    """

    def __init__(self, overrides: Mapping[str, Any]):
        self._values = {**DEFAULTS, **overrides}
        self.unknown = sorted(set(overrides) - set(DEFAULTS))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


_current: ReactiveSettings | None = None
_hooks: list[tuple[frozenset[str], Callable[[], None]]] = []


def reactive_settings() -> ReactiveSettings:
    """The effective settings object (rebuilt after ``REACTIVE`` changes)."""
    global _current
    if _current is None:
        _current = ReactiveSettings(getattr(settings, "REACTIVE", {}))
    return _current


def on_change(*keys: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register a reset to run when one of `keys` changes (any key when none are named)."""

    def register(reset: Callable[[], None]) -> Callable[[], None]:
        _hooks.append((frozenset(keys), reset))
        return reset

    return register


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _current
    if setting != "REACTIVE":
        return
    before = reactive_settings()
    _current = None
    after = reactive_settings()
    changed = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
    for keys, reset in _hooks:
        if changed and (not keys or keys & changed):
            reset()


@cache
def _import(path: str) -> Callable[..., Any]:
    hook: Callable[..., Any] = import_string(path)
    return hook


on_change("AUTHORIZE_TENANT")(_import.cache_clear)


def authorize_tenant(user: Any, tenant: str) -> bool:
    """Whether `user` may follow `tenant`'s events (the project's hook; members only)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    path = reactive_settings().AUTHORIZE_TENANT
    return bool(path) and bool(_import(path)(user, tenant))
