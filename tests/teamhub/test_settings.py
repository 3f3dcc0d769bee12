"""Settings: the environment picks the mode; production settings pass check --deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRINT = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'db': settings.DATABASES['default']['ENGINE'], "
    "'pool': 'pool' in settings.DATABASES['default'].get('OPTIONS', {}), "
    "'cache': settings.CACHES['default']['BACKEND'], "
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], "
    "'sqlite_options': settings.DATABASES['default'].get('OPTIONS', {})}))"
)


def run(code_or_args: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, *code_or_args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "teamhub.settings", **env},
        timeout=120,
    )


def settings_for(**env: str) -> dict:
    proc = run(["-c", PRINT], **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_embedded_by_default(tmp_path):
    found = settings_for(TEAMHUB_DATA_DIR=str(tmp_path))
    assert found["db"].endswith("sqlite3")
    assert found["cache"].endswith("LocMemCache")
    assert found["layer"] == "channels.layers.InMemoryChannelLayer"
    options = found["sqlite_options"]
    assert options["transaction_mode"] == "IMMEDIATE" and options["timeout"] >= 5
    assert "journal_mode=WAL" in options["init_command"]


def test_services_from_environment():
    found = settings_for(
        DATABASE_URL="postgresql://u@db.example:5432/th", REDIS_URL="redis://cache.example:6379/1"
    )
    assert found["db"] == "django.db.backends.postgresql" and found["pool"]
    assert found["cache"] == "django_redis.cache.RedisCache"
    assert found["layer"] == "channels_redis.core.RedisChannelLayer"


def test_production_requires_secret_key():
    proc = run(["-c", PRINT], DEBUG="0", SECRET_KEY="")
    assert proc.returncode != 0 and "SECRET_KEY" in proc.stderr


def test_production_settings_pass_check_deploy(tmp_path):
    proc = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DEBUG="0",
        SECRET_KEY="x" * 20 + "-production-only-9f3c1a7e5b2d4c6a8e0f-" + "y" * 20,
        ALLOWED_HOSTS="teamhub.example",
        TEAMHUB_DATA_DIR=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.django_db(transaction=True)
def test_concurrent_sqlite_writers_never_fail(alice, org_a, settings):
    """Several requests writing at once on SQLite wait for the lock instead of failing."""
    import threading

    from django.db import connections

    from reactive.functions import registry

    errors, done = [], []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                registry["agents.create"].execute(
                    {"organizationId": str(org_a.pk), "name": f"w{n}-{i}", "role": "r"}, user=alice
                )
            done.append(n)
        except Exception as exc:  # any failure is the bug this test is for
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(done) == 6
    from agency.models import Agent

    assert Agent.objects.filter(organization=org_a).count() == 60
