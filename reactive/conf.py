"""The reactive layer's settings, read from ``settings.REACTIVE`` with defaults."""

from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    "TENANT_MODEL": None,  # "app.model" whose rows are tenants (events are per tenant)
    "TENANT_FIELD": None,  # the foreign key naming a row's tenant
    "REDIS_URL": "",  # the event log uses Redis Streams when set
    "LOG_MAXLEN": 10_000,  # events kept per tenant log
    "DEFAULT_TTL": 3600,  # seconds a cached result lives at most
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
}


def reactive_settings() -> dict[str, Any]:
    """The effective settings: defaults updated with ``settings.REACTIVE``."""
    return {**DEFAULTS, **getattr(settings, "REACTIVE", {})}


@cache
def _import(path: str) -> Callable:
    return import_string(path)


def authorize_tenant(user: Any, tenant: str) -> bool:
    """Whether `user` may follow `tenant`'s events (the project's hook; members only)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    path = reactive_settings()["AUTHORIZE_TENANT"]
    return bool(path) and bool(_import(path)(user, tenant))
