"""The reactive layer's settings, read from ``settings.REACTIVE`` with defaults."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "TENANT_MODEL": None,  # "app.model" whose rows are tenants (events are per tenant)
    "TENANT_FIELD": None,  # the foreign key naming a row's tenant
    "REDIS_URL": "",  # the event log uses Redis Streams when set
    "LOG_MAXLEN": 10_000,  # events kept per tenant log
    "DEFAULT_TTL": 3600,  # seconds a cached result lives at most
    "RELATIONS": {},
    "IGNORED_APPS": ["admin", "contenttypes", "sessions", "migrations", "reactive"],
    "MAX_TRACKED_ROWS": 10_000,  # above this a QuerySet.update invalidates the model wildcard
    "CACHE_ALIAS": "default",
    "METRICS_FLUSH_SECONDS": 5.0,
}


def reactive_settings() -> dict[str, Any]:
    """The effective settings: defaults updated with ``settings.REACTIVE``."""
    return {**DEFAULTS, **getattr(settings, "REACTIVE", {})}
