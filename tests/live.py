"""A real ASGI server process for end-to-end tests, sharing the test database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, its connections dropped by the kernel."""
        self.proc.kill()
        self.proc.wait(10)


class RedisServer:
    """A private, disposable `redis-server` on a free port (nothing kept on disk).

    For fault tests only: it can be killed, restarted empty on the same port,
    or paused (SIGSTOP: connections stay open, nothing answers, data is kept).
    """

    def __init__(self, log_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--protected-mode", "no", "--dir", str(self.log.parent)]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: everything it held is gone; clients see refused connections."""
        self.resume()
        self.proc.kill()
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: a partition, as clients see it: connections hang, data is kept."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        self.proc.kill()
        self.proc.wait(10)


class Partition:
    """A TCP proxy in front of a server that can drop every byte: a network partition.

    Unlike a paused Redis (SIGSTOP), which executes the commands it received
    once it resumes, what is sent during a cut is lost for good, as when packets
    are dropped and the client gives up on the connection.
    """

    def __init__(self, target_port: int):
        self.target = target_port
        self.cut = False
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)

    def drop(self) -> None:
        self.cut = True

    def heal(self) -> None:
        self.cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:  # nothing answers a connection made during the cut
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.cut:
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        async def stop():
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


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
