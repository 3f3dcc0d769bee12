"""TeamHub from its wheel, as a deployment installs it (issue 13, item 17).

The wheel is built from this checkout and installed into a fresh virtualenv;
the server then runs from a folder outside the checkout, so nothing of the
source tree can stand in for a file the wheel forgot. With ``DEBUG=0`` and
``collectstatic`` run, the login page and the admin render, and their static
files have hashed names served with a long, immutable cache lifetime.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.live import free_port
from tests.wheels import build_wheel, fresh_venv, run

pytestmark = [pytest.mark.timeout(600), pytest.mark.packaging]
STARTUP = 60


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv holding TeamHub's wheel and its declared dependencies only."""
    base = tmp_path_factory.mktemp("wheel")
    return fresh_venv(base / "venv", str(build_wheel(".", base)))


def test_the_wheel_carries_the_templates_and_static_files(installed):
    site = run(
        [str(installed / "bin" / "python"), "-c", "import teamhub, os; print(teamhub.__file__)"],
        cwd=installed,
    ).stdout.strip()
    package = Path(site).parent
    assert (package / "templates" / "pages" / "login.html").is_file()
    assert not (package / "templates").is_symlink()
    assert (package.parent / "reactive" / "static" / "reactive" / "client.js").is_file()


def test_installed_wheel_serves_login_and_admin_with_debug_off(installed, tmp_path):
    python = str(installed / "bin" / "python")
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "teamhub.settings",
        "DEBUG": "0",
        "SECRET_KEY": "wheel-test-" + "k" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "TEAMHUB_DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    # Run from a folder outside the checkout: only the installed wheel is importable.
    run([python, "-m", "django", "migrate", "--noinput", "-v", "0"], cwd=tmp_path, env=env)
    run([python, "-m", "django", "collectstatic", "--noinput", "-v", "0"], cwd=tmp_path, env=env)
    assert (tmp_path / "static" / "staticfiles.json").is_file()

    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [python, "-m", "uvicorn", "teamhub.asgi:application", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                httpx.get(base + "/api/auth/me", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)

        login = httpx.get(base + "/login/")
        assert login.status_code == 200, login.text[-2000:]
        assert "<form" in login.text
        admin = httpx.get(base + "/admin/login/")
        assert admin.status_code == 200, admin.text[-2000:]

        css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', admin.text)
        assert css, "the admin links its stylesheet by a hashed name"
        asset = httpx.get(base + css.group(1), headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200
        assert "immutable" in asset.headers["Cache-Control"]
        assert int(re.search(r"max-age=(\d+)", asset.headers["Cache-Control"]).group(1)) >= 86400
        assert asset.headers.get("Content-Encoding") == "gzip"
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()
