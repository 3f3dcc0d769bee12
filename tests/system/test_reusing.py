"""`reactive` in another Django project, installed from its own wheel (docs/reusing.md).

A fresh virtualenv gets the wheel of ``distributions/reactive`` and nothing
else; ``django-admin startproject`` makes a new project, which declares a
function over a model of its own. Its system checks refuse the SQLite default
that reactive cannot rely on, and once the setting is made, a write invalidates
the function's cached result, be it made through the ORM, in raw SQL, or by
another process with no Django at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from tests.wheels import build_wheel, fresh_venv, run

pytestmark = [pytest.mark.timeout(600), pytest.mark.packaging]

# What the wheel may bring: Django, pydantic and asgiref with their own dependencies.
ALLOWED = {
    "annotated-types",
    "asgiref",
    "django",
    "django-reactive-layer",
    "pip",
    "pydantic",
    "pydantic-core",
    "setuptools",
    "sqlparse",
    "typing-extensions",
    "typing-inspection",
}

MODELS = """
from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=100)
"""

FUNCTIONS = """
from reactive import NoInput, query

from .models import Product


@query("products.getAll", input=NoInput, dependencies=["shop.product"], public=True)
def products(ctx, inp):
    return [p.name for p in Product.objects.order_by("name")]
"""

APPS = """
from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import functions  # noqa: F401
"""

SCRIPT = """
import json, sqlite3, subprocess, sys, time

from django.conf import settings
from reactive import Context, registry, start_drainer
from shop.models import Product

fn = registry["products.getAll"]
seen = []

def call():
    result = fn.call({}, Context())
    seen.append({"data": result.data, "hit": result.hit})
    return result

call(); call()                                  # a miss, then a hit
Product.objects.create(name="pen"); call()      # the ORM
from django.db import connection
with connection.cursor() as cursor:             # raw SQL
    cursor.execute("UPDATE shop_product SET name = 'ink'")
call()
start_drainer()                                 # publishes what other processes write
path = settings.DATABASES["default"]["NAME"]
subprocess.run([sys.executable, "-c",
    f"import sqlite3; c = sqlite3.connect({str(path)!r}); "
    "c.execute(\\"INSERT INTO shop_product (name) VALUES ('cap')\\"); c.commit()"], check=True)
deadline = time.monotonic() + 10
while call().data != ["cap", "ink"] and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("reactive-wheel")
    return fresh_venv(base / "venv", str(build_wheel("distributions/reactive", base)))


def test_the_wheel_brings_only_reactive_and_its_dependencies(venv):
    listed = run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"]).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert "django-reactive-layer" in names
    assert names <= ALLOWED, names - ALLOWED


def test_a_new_project_declares_a_function_and_writes_invalidate_it(venv, tmp_path):
    # The new project's own settings, not this test run's.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    python = str(venv / "bin" / "python")
    run([str(venv / "bin" / "django-admin"), "startproject", "demo", str(tmp_path)])
    manage = [python, str(tmp_path / "manage.py")]
    run([*manage, "startapp", "shop"], cwd=tmp_path, env=env)
    (tmp_path / "shop" / "models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "shop" / "functions.py").write_text(textwrap.dedent(FUNCTIONS))
    (tmp_path / "shop" / "apps.py").write_text(textwrap.dedent(APPS))
    settings = tmp_path / "demo" / "settings.py"
    text = settings.read_text().replace(
        "INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "reactive",\n    "shop",'
    )
    settings.write_text(text)

    refused = run_failing([*manage, "check"], cwd=tmp_path, env=env)
    assert "reactive.E005" in refused and "transaction_mode" in refused

    settings.write_text(
        text + '\nDATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}\n'
    )
    run([*manage, "check"], cwd=tmp_path, env=env)
    run([*manage, "makemigrations", "shop", "-v", "0"], cwd=tmp_path, env=env)
    run([*manage, "migrate", "-v", "0"], cwd=tmp_path, env=env)
    out = run([*manage, "shell", "-c", SCRIPT], cwd=tmp_path, env=env).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen[:4] == [
        {"data": [], "hit": False},
        {"data": [], "hit": True},
        {"data": ["pen"], "hit": False},
        {"data": ["ink"], "hit": False},
    ]
    assert seen[-1]["data"] == ["cap", "ink"], "another process's write was not published"


def run_failing(cmd: list[str], **kwargs) -> str:
    """Run a command that must fail; its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr
