"""reactive's settings object and system checks (reactive/conf.py, reactive/checks.py)."""

from __future__ import annotations

import asyncio

import pytest

from reactive import checks
from reactive.cache import reactive_cache
from reactive.conf import DEFAULTS, reactive_settings
from reactive.lifespan import Lifespan
from reactive.log import get_log

REDIS_LOG = "reactive.backends.redis.RedisLog"


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_every_default_is_a_setting_and_overrides_win(settings):
    settings.REACTIVE = {**settings.REACTIVE, "HEARTBEAT_SECONDS": 1.5}
    conf = reactive_settings()
    assert set(DEFAULTS) <= set(conf)
    assert conf.HEARTBEAT_SECONDS == conf["HEARTBEAT_SECONDS"] == 1.5
    with pytest.raises(AttributeError):
        conf.NO_SUCH_SETTING  # noqa: B018


def test_a_changed_setting_resets_what_was_derived_from_it(settings):
    log, cache = get_log(), reactive_cache()
    settings.REACTIVE = {**settings.REACTIVE, "RECHECK_SECONDS": 12.0}
    assert get_log() is log and reactive_cache() is cache  # unrelated keys reset nothing
    settings.REACTIVE = {**settings.REACTIVE, "LOG_MAXLEN": 17}
    assert get_log() is not log and get_log().maxlen == 17
    settings.CACHES = {
        **settings.CACHES,
        "other": {"BACKEND": settings.CACHES["default"]["BACKEND"]},
    }
    settings.REACTIVE = {**settings.REACTIVE, "CACHE_ALIAS": "other"}
    assert reactive_cache() is not cache and reactive_cache().alias == "other"


def test_an_unknown_key_is_reported(settings):
    assert "reactive.W001" not in ids(checks.check_settings())
    settings.REACTIVE = {**settings.REACTIVE, "CACHE_ALIASES": "typo"}
    (warning,) = checks.check_settings()
    assert warning.id == "reactive.W001" and "CACHE_ALIASES" in warning.msg


def test_the_cache_alias_must_exist(settings):
    settings.REACTIVE = {**settings.REACTIVE, "CACHE_ALIAS": "nowhere"}
    assert ids(checks.check_cache()) == ["reactive.E001"]


def test_a_shared_log_needs_a_shared_cache(settings):
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    settings.CACHES = {**settings.CACHES, "local": locmem}
    settings.REACTIVE = {
        **settings.REACTIVE,
        "CACHE_ALIAS": "local",
        "LOG_BACKEND": REDIS_LOG,
        "LOG_OPTIONS": {"url": "redis://127.0.0.1:6379/15"},
    }
    assert ids(checks.check_cache()) == ["reactive.E002"]
    settings.REACTIVE = {**settings.REACTIVE, "LOG_BACKEND": "reactive.backends.memory.MemoryLog"}
    assert checks.check_cache() == []


def test_the_log_backend_must_import_and_have_its_options(settings):
    settings.REACTIVE = {**settings.REACTIVE, "LOG_BACKEND": "reactive.backends.nothing.Log"}
    assert ids(checks.check_log()) == ["reactive.E003"]
    settings.REACTIVE = {**settings.REACTIVE, "LOG_BACKEND": REDIS_LOG, "LOG_OPTIONS": {}}
    assert ids(checks.check_log()) == ["reactive.E004"]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # a copy, never connected
def test_sqlite_must_begin_immediate(settings):
    deferred = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:", "OPTIONS": {}}
    settings.DATABASES = {**settings.DATABASES, "deferred": deferred}
    assert ids(checks.check_databases()) == ["reactive.E005"]
    deferred["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
    assert checks.check_databases() == []


def test_the_project_passes_every_check():
    assert checks.check_settings() + checks.check_cache() + checks.check_log() == []
    assert checks.check_databases() + checks.check_urls() == []


def test_unrouted_client_urls_are_reported(settings):
    settings.ROOT_URLCONF = "tests.testapp.urls"  # none of reactive's routes
    (warning,) = checks.check_urls()
    assert warning.id == "reactive.W002" and "reactive-events" in warning.msg


def lifespan_startup(app) -> list[dict]:
    """Drive an ASGI lifespan startup; the messages the app sent."""
    sent: list[dict] = []
    incoming = iter([{"type": "lifespan.startup"}])

    async def receive():
        return next(incoming)

    async def send(message):
        sent.append(message)

    async def run():
        await asyncio.wait_for(app({"type": "lifespan"}, receive, send), 10)

    asyncio.run(run())
    return sent


def test_a_server_does_not_start_on_a_check_error(settings):
    settings.REACTIVE = {**settings.REACTIVE, "CACHE_ALIAS": "nowhere"}
    (message,) = lifespan_startup(Lifespan(app=None))
    assert message["type"] == "lifespan.startup.failed"
    assert "reactive.E001" in message["message"]
