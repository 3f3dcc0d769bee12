"""Graceful shutdown of a real uvicorn process with open streams (issue 13, item 14).

uvicorn waits for open connections before it stops, and an event stream never
ends by itself: without the hub's signal hook (reactive.fanout) SIGTERM left
the process "Waiting for connections to close" until it was killed. Now the
SSE response completes (EventSource reconnects elsewhere), a WebSocket closes
with 1012, and the process exits in well under uvicorn's graceful timeout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from agency.models import ApiToken
from tests.live import ROOT, SSE, LiveServer, free_port, server_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
WAIT = 10
EXIT_WITHIN = 5.0  # seconds from SIGTERM to the process's exit ("a few seconds")
STARTUP = 60  # seconds a server may take to start on a busy machine


class Workers:
    """`uvicorn --workers 2` as docs/operations.md runs it (a supervisor and its workers)."""

    def __init__(self, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"workers-{self.port}.log"
        cmd = [sys.executable, "-m", "uvicorn", "teamhub.asgi:application"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"]
        cmd += ["--timeout-graceful-shutdown", "5", "--log-level", "warning"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=server_env(),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP
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
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def read_until(lines, wanted: str) -> None:
    async for line in lines:
        if line == wanted:
            return
    raise AssertionError(f"stream ended before {wanted!r}")


async def open_streams(server, token, org):
    """An SSE stream and a subscribed WebSocket, both live."""
    client = httpx.AsyncClient(
        base_url=server.url, timeout=WAIT, headers={"Authorization": f"Bearer {token}"}
    )
    sse = await SSE(client, {"organizationId": str(org.pk)}).__aenter__()
    assert sse.response.status_code == 200
    await asyncio.wait_for(read_until(sse.lines, ": connected"), WAIT)
    ws = await websockets.connect(
        server.url.replace("http", "ws") + "/ws/reactive/",
        additional_headers={"Authorization": f"Bearer {token}"},
    )
    await ws.send(
        json.dumps(
            {
                "type": "subscribe",
                "id": "a",
                "name": "agents.getAll",
                "input": {"organizationId": str(org.pk)},
            }
        )
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "subscribed"
    return client, sse, ws


async def assert_ends_cleanly(proc, client, sse, ws) -> float:
    """SIGTERM: both streams end properly and the process exits; seconds it took."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = []

    async def drain():
        async for line in sse.lines:  # an incomplete chunked body would raise here
            rest.append(line)

    await asyncio.wait_for(drain(), EXIT_WITHIN)
    assert ": shutdown" in rest and any(line.startswith("retry: ") for line in rest)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), EXIT_WITHIN)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    await asyncio.to_thread(proc.wait, EXIT_WITHIN + 5)
    elapsed = time.monotonic() - started
    await ws.close()
    await sse.__aexit__(None, None, None)
    await client.aclose()
    return elapsed


def assert_quiet(log) -> None:
    text = log.read_text()
    for bad in ("timeout graceful shutdown exceeded", "Task was destroyed", "Traceback"):
        assert bad not in text, text[-3000:]


@pytest.fixture
def token(alice):
    return ApiToken.issue(alice, "shutdown")[1]


async def test_sigterm_ends_open_streams_and_the_server_exits(token, org_a, tmp_path):
    # No --timeout-graceful-shutdown here: the streams themselves must end.
    server = await asyncio.to_thread(LiveServer, tmp_path)
    try:
        client, sse, ws = await open_streams(server, token, org_a)
        elapsed = await assert_ends_cleanly(server.proc, client, sse, ws)
    finally:
        await asyncio.to_thread(server.stop)
    assert elapsed < EXIT_WITHIN, elapsed
    assert_quiet(server.log)


async def test_sigterm_to_the_supervisor_of_several_workers(token, org_a, tmp_path):
    server = await asyncio.to_thread(Workers, tmp_path)
    try:
        client, sse, ws = await open_streams(server, token, org_a)
        elapsed = await assert_ends_cleanly(server.proc, client, sse, ws)
    finally:
        await asyncio.to_thread(server.stop)
    assert elapsed < EXIT_WITHIN, elapsed
    assert_quiet(server.log)
