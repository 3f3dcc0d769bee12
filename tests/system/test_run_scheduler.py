"""``manage.py run_scheduler`` as a process of its own: it stops cleanly on SIGTERM and
SIGINT, ``--once`` fires what is due, and its writes reach a live server's SSE streams and
reads (the change triggers and drainers carry them, in both modes)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agency.models import ApiToken, Cron
from tests.agency.test_scheduler import make_cron, runs
from tests.live import ROOT, SSE, LiveServer, server_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

WAIT = 15.0  # seconds a process may take to start, fire or stop


def command(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_scheduler", *args],
        cwd=ROOT,
        env=server_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def read_until(proc: subprocess.Popen, text: str) -> list[str]:
    """The command's output lines up to the first holding `text` (bounded by WAIT)."""
    lines: list[str] = []
    timer = threading.Timer(WAIT, proc.kill)  # a line that never comes ends the process
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                return lines
    finally:
        timer.cancel()
    raise AssertionError(f"no {text!r} in the output: {''.join(lines)[-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_cleanly_on_a_signal(sig):
    proc = command("--max-sleep", "600")
    try:
        read_until(proc, "Scheduler running")
        stopped = time.monotonic()
        proc.send_signal(sig)
        output = proc.communicate(timeout=WAIT)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0, output
    assert "Scheduler stopped." in output and "Traceback" not in output
    assert time.monotonic() - stopped < 5  # the 600 s sleep was cut short


def test_the_command_once_fires_what_is_due(agent_a):
    cron = make_cron(agent_a, armed_at=datetime.now(UTC) - timedelta(minutes=3))
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_scheduler", "--once"],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=WAIT * 4,
    )
    assert done.returncode == 0, done.stderr
    assert "Fired 1 cron slot(s)." in done.stdout
    assert len(runs(cron)) == 1


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("scheduler"))
    yield srv
    srv.stop()


async def event_with(sse: SSE, tags: set[str]) -> dict:
    """The first `invalidate` event carrying every one of `tags`, within WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no event with {tags} within {WAIT}s")
        event = await asyncio.wait_for(sse.next(), left)
        if tags <= set(event["json"]["tags"]):
            return event


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "scheduler")[1]


@pytest.fixture
def due_cron(agent_a) -> Cron:
    """A cron whose slot is due as soon as a scheduler starts."""
    return make_cron(agent_a, "* * * * *", datetime.now(UTC) - timedelta(minutes=2))


@pytest.mark.asyncio
async def test_a_run_in_another_process_reaches_clients_live(server, token, org_a, due_cron):
    """The scheduler's write (a message and the cron's lastRunAt) is seen by a live server:
    an SSE event naming both, and fresh reads, though the server did not make it."""
    cron, agent = due_cron, due_cron.agent_id
    org = {"organizationId": str(org_a.pk)}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT, headers=headers) as client:
        before = await client.get("/api/rx/crons.getAll", params=org)
        assert before.json()["data"][0]["lastRunAt"] is None
        messages = await client.get("/api/rx/messages.getAll", params=org)
        assert messages.json()["data"] == []
        assert (await client.get("/api/rx/crons.getAll", params=org)).headers[
            "X-Reactive-Cache"
        ] == "hit"
        async with SSE(client, {**org, "since": before.json()["cursor"]}) as sse:
            proc = await asyncio.to_thread(command, "--max-sleep", "600")
            try:
                await asyncio.to_thread(read_until, proc, f"cron {cron.pk}")
                tags = {f"agency.cron:id={cron.pk}", f"agency.message:organization_id={org_a.pk}"}
                event = await event_with(sse, tags)
                assert event["json"]["organizationId"] == str(org_a.pk)
            finally:
                proc.send_signal(signal.SIGTERM)
                output = await asyncio.to_thread(proc.communicate, timeout=WAIT)
        assert proc.returncode == 0, output
        after = (await client.get("/api/rx/crons.getAll", params=org)).json()["data"][0]
        messages = (await client.get("/api/rx/messages.getAll", params=org)).json()["data"]
    assert after["lastRunAt"] is not None
    assert datetime.fromisoformat(after["nextRunAt"]) > datetime.fromisoformat(after["lastRunAt"])
    assert [m["metadata"] for m in messages] == [
        {"cronId": str(cron.pk), "slot": after["lastRunAt"]}
    ]
    assert [m["fromAgentId"] for m in messages] == [str(agent)]
