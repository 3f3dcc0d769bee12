"""System checks: what ``reactive`` needs from the host project, refused at start-up if missing.

Django runs them before ``runserver``, ``migrate`` and ``check``;
:class:`reactive.lifespan.Lifespan` runs them when an ASGI server starts, and a
server with errors does not start.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from .conf import reactive_settings

__all__ = ["check_cache", "check_databases", "check_log", "check_settings", "check_urls"]

TAG = "reactive"

# Cache backends that keep entries in one process: versions bumped by a write in
# another process would not reach them.
PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every key of ``REACTIVE`` is one of :data:`reactive.conf.DEFAULTS` (a typo is seen)."""
    return [
        Warning(
            f"REACTIVE[{key!r}] is not a setting of reactive, and is ignored.",
            hint="The settings are listed in reactive/conf.py (DEFAULTS).",
            id="reactive.W001",
        )
        for key in reactive_settings().unknown
    ]


@register(TAG, Tags.caches)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The cache alias exists, and is shared by every process when the log is."""
    alias = reactive_settings().CACHE_ALIAS
    caches = getattr(settings, "CACHES", {})
    if alias not in caches:
        return [
            Error(
                f"REACTIVE['CACHE_ALIAS'] is {alias!r}, which is not in CACHES.",
                hint="Add a cache of reactive's own to CACHES, e.g. CACHES['reactive'].",
                id="reactive.E001",
            )
        ]
    backend = caches[alias].get("BACKEND", "")
    try:
        shared_log = import_string(reactive_settings().LOG_BACKEND).SHARED
    except (ImportError, AttributeError):
        return []  # check_log says why
    if backend in PROCESS_LOCAL_CACHES and shared_log:
        return [
            Error(
                f"The event log ({reactive_settings().LOG_BACKEND}) is shared between processes, "
                f"but the cache {alias!r} ({backend}) lives in one: a write in one process "
                "would leave stale entries in the others.",
                hint="Point REACTIVE['CACHE_ALIAS'] at a shared cache (Redis, Memcached).",
                id="reactive.E002",
            )
        ]
    return []


@register(TAG)
def check_log(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The event log backend can be imported and made from its options."""
    conf = reactive_settings()
    try:
        backend = import_string(conf.LOG_BACKEND)
    except ImportError as exc:
        return [
            Error(
                f"REACTIVE['LOG_BACKEND'] {conf.LOG_BACKEND!r} cannot be imported: {exc}",
                hint="reactive.backends.memory.MemoryLog or reactive.backends.redis.RedisLog "
                "(pip install 'django-reactive[redis]').",
                id="reactive.E003",
            )
        ]
    required = getattr(backend, "REQUIRED_OPTIONS", ())
    missing = [name for name in required if name not in conf.LOG_OPTIONS]
    if missing:
        return [
            Error(
                f"REACTIVE['LOG_OPTIONS'] lacks {', '.join(missing)} for {conf.LOG_BACKEND}.",
                id="reactive.E004",
            )
        ]
    return []


# Not tagged Tags.database: Django 6 runs those only with `check --database`, and this
# one reads settings only, connecting to nothing.
@register(TAG)
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """SQLite databases begin their transactions IMMEDIATE.

    A deferred SQLite transaction takes the write lock at its first write; if
    another connection holds it then, SQLite fails at once with "database is
    locked" instead of waiting out the busy timeout. The change capture adds
    rows to every writing transaction and runs a drainer thread that writes
    beside the requests, so with deferred transactions such failures would
    be common.
    """
    return [
        Error(
            f"DATABASES[{alias!r}] is SQLite without OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
            hint="Set DATABASES[...]['OPTIONS']['transaction_mode'] = 'IMMEDIATE' (Django 5.1+).",
            id="reactive.E005",
        )
        for alias, db in settings.DATABASES.items()
        if db.get("ENGINE", "").endswith("sqlite3")
        and str(db.get("OPTIONS", {}).get("transaction_mode", "")).upper() != "IMMEDIATE"
    ]


# The URL names the browser client is configured with (templatetags/reactive.py) and
# live fragments are fetched from (fragments.py).
CLIENT_URLS = {
    "reactive-events": (),
    "reactive-ack": (),
    "reactive-fragment": ("name",),
}


@register(TAG, Tags.urls)
def check_urls(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The URLs the browser client needs are routed (else live pages never update)."""
    missing = []
    for name, args in CLIENT_URLS.items():
        try:
            reverse(name, args=args)
        except NoReverseMatch:
            missing.append(name)
    if not missing:
        return []
    return [
        Warning(
            f"No URL is named {', '.join(missing)}: pages using reactive's template tags "
            "will render, but never update live.",
            hint='Route reactive.events_view as "reactive-events", reactive.ack_view as '
            '"reactive-ack", and include("reactive.fragments") (docs/reusing.md).',
            id="reactive.W002",
        )
    ]
