"""A real ASGI server process for end-to-end tests, sharing the test database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The environment of a server that uses this test run's database, cache and log."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH")}
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = (
            f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LiveServer:
    """`uvicorn teamhub.asgi:application` on a free port (extra `env` for its settings)."""

    def __init__(self, log_dir: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "teamhub.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**server_env(), **env},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                httpx.get(self.url + "/api/auth/me", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class SSE:
    """An open /api/events stream; `next()` returns the next event as a dict."""

    def __init__(self, client: httpx.AsyncClient, params: dict, headers: dict | None = None):
        self.client, self.params, self.headers = client, params, headers or {}

    async def __aenter__(self) -> SSE:
        self.cm = self.client.stream(
            "GET",
            "/api/events",
            params=self.params,
            headers=self.headers,
            timeout=httpx.Timeout(10, read=None),
        )
        self.response = await self.cm.__aenter__()
        self.lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.cm.__aexit__(None, None, None)

    async def next(self, kind: str = "invalidate") -> dict:
        event: dict = {}
        async for line in self.lines:
            if line == "":
                if event.get("event") == kind:
                    event["json"] = json.loads(event["data"])
                    return event
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
        raise AssertionError("stream closed")
