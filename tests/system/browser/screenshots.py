"""Screenshots of every page with demo data, into docs/screenshots/ (not a test).

    .venv/bin/python tests/system/browser/screenshots.py [--out docs/screenshots]

Migrates a throwaway SQLite database, runs ``seed_demo``, serves it with uvicorn
and drives Debian's Chromium with Playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from chromium import CHROMIUM, CHROMIUM_ARGS  # this script's folder is on sys.path
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "teamhub-demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tmp: Path) -> tuple[subprocess.Popen, str]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "SQLITE_PATH": str(tmp / "demo.sqlite3"),
        "TEAMHUB_DATA_DIR": str(tmp),
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "teamhub.asgi:application", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=(tmp / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/login/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError((tmp / "server.log").read_text())


def log_in(browser, url: str, username: str, shot: Path | None = None):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(url + "/login/")
    if shot:
        page.screenshot(path=shot)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(url + "/")
    return page


def connected(page) -> None:
    page.wait_for_function("document.documentElement.dataset.rxState === 'connected'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="teamhub-shots-") as tmp:
        proc, url = serve(Path(tmp))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                viewer = log_in(browser, url, "bob", out / "login.png")
                connected(viewer)
                viewer.screenshot(path=out / "organizations.png", full_page=True)

                viewer.click("text=Acme Robotics")
                connected(viewer)
                org_url = viewer.url
                viewer.screenshot(path=out / "organization.png", full_page=True)

                viewer.click("#agents a.agent-name >> text=Atlas")
                connected(viewer)
                viewer.click("#id_role")  # the edit form, mid-edit
                viewer.screenshot(path=out / "agent.png", full_page=True)

                viewer.goto(org_url + "agents/new/")
                viewer.fill("#id_name", "Nova")
                viewer.fill("#id_role", "Release manager")
                viewer.screenshot(path=out / "agent_new.png", full_page=True)
                viewer.goto(org_url + "tools/new/")
                viewer.fill("#id_name", "Issue tracker")
                viewer.screenshot(path=out / "tool_new.png", full_page=True)

                viewer.goto(org_url + "live/")
                connected(viewer)
                viewer.wait_for_function(
                    "document.getElementById('live-agents-state').dataset.state === 'fresh'"
                )
                other = log_in(browser, url, "alice")  # changes made by someone else
                other.goto(org_url)
                connected(other)
                for row in range(2):
                    other.click(f"#agents tbody tr >> nth={row} >> button")
                    viewer.wait_for_function(
                        f"document.querySelectorAll('tr.live-event').length > {row}"
                    )
                viewer.screenshot(path=out / "live.png", full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main()
