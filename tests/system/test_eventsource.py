"""A real EventSource client (npm `eventsource`) across a server restart.

The node script (tests/js/eventsource_client.mjs) follows an organization's
stream on a live uvicorn server. The test writes, restarts the server on the
same port (SIGTERM: the stream ends cleanly, see tests/system/test_shutdown.py),
writes again, and checks that the client reconnected by itself with
``Last-Event-ID`` and received every event exactly once, in order.

Embedded, the event log lives in the server process and goes with it: on
reconnect the stream answers ``reset`` (documented: refetch everything), and
events resume after it. With Redis the log outlives the process: events
written while the server was down are replayed on reconnect, no reset.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time

import httpx
import pytest

from agency.models import Agent, ApiToken
from tests import live
from tests.conftest import SERVICES
from tests.node import NODE_DIR, install

pytestmark = pytest.mark.django_db(transaction=True)

EVENTSOURCE = "4.1.1"  # the npm package, pinned (4.x supports Node 20)
WAIT = 15  # seconds any expected line from the client may take


@pytest.fixture(scope="module")
def node_modules():
    """The pinned `eventsource` package under .cache/node (installed once if missing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("needs node and npm")
    install({"eventsource": EVENTSOURCE}, "the EventSource test")
    return NODE_DIR / "node_modules"


class Client:
    """The node EventSource process; its output lines, read by a thread."""

    def __init__(self, url: str, token: str, modules, log):
        script = live.ROOT / "tests" / "js" / "eventsource_client.mjs"
        self.proc = subprocess.Popen(
            ["node", str(script), url, token, str(modules), "120"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"kind": "exit"})

    def until(self, predicate, what: str) -> dict:
        """Lines up to the first that satisfies `predicate` (that one returned)."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {what} within {WAIT} s; saw {self.seen}") from None
            self.seen.append(line)
            if line["kind"] in ("exit", "timeout"):
                raise AssertionError(f"client ended waiting for {what}; saw {self.seen}")
            if predicate(line):
                return line

    def events(self, count: int) -> None:
        for _ in range(count):
            self.until(lambda line: line["kind"] == "event", "an event")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(log_dir, port: int) -> live.LiveServer:
    """A LiveServer on `port` (the same one again after a restart)."""
    original = live.free_port
    live.free_port = lambda: port
    try:
        return live.LiveServer(log_dir)
    finally:
        live.free_port = original


def create(server: live.LiveServer, token: str, org, name: str) -> str:
    resp = httpx.post(
        server.url + "/api/rx/agents.create",
        json={"organizationId": str(org.pk), "name": name, "role": "r"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["id"]


def agent_of(event: dict) -> str:
    (agent,) = [
        tag.split("=", 1)[1] for tag in event["data"]["tags"] if tag.startswith("agency.agent:id=")
    ]
    return agent


def test_eventsource_resumes_across_a_restart_with_every_event_once(
    alice, org_a, node_modules, tmp_path
):
    token = ApiToken.issue(alice, "eventsource")[1]
    port = live.free_port()
    server = start_server(tmp_path, port)
    url = f"{server.url}/api/events?organizationId={org_a.pk}"
    client = Client(url, token, node_modules, tmp_path / "node.log")
    try:
        assert client.until(lambda x: x["kind"] == "version", "its version")["version"] == (
            EVENTSOURCE
        )
        client.until(lambda x: x["kind"] == "open", "the stream")
        written = [create(server, token, org_a, f"before {i}") for i in range(3)]
        client.events(3)

        started = time.monotonic()
        server.stop()  # SIGTERM: the stream ends, the process exits
        stopped_in = time.monotonic() - started
        client.until(lambda x: x["kind"] == "error", "the end of the stream")
        if SERVICES:  # the Redis log outlives the server: these are replayed on reconnect
            written += [
                str(Agent.objects.create(organization=org_a, name=f"down {i}", role="r").pk)
                for i in range(2)
            ]

        server = start_server(tmp_path, port)
        client.until(lambda x: x["kind"] == "open", "the reconnected stream")
        if SERVICES:
            client.events(2)
        else:  # the in-process log went with the old server: refetch everything
            reset = client.until(lambda x: x["kind"] == "event", "the reset")
            assert reset["type"] == "reset" and reset["data"]["reason"] == "gap"
        after = [create(server, token, org_a, f"after {i}") for i in range(3)]
        written += after
        client.events(3)
    finally:
        client.stop()
        server.stop()

    assert stopped_in < 5, stopped_in
    events = [x for x in client.seen if x["kind"] == "event"]
    invalidations = [x for x in events if x["type"] == "invalidate"]
    assert [agent_of(x) for x in invalidations] == written  # each once, in order
    ids = [int(x["id"]) for x in events]
    assert ids == sorted(set(ids))  # strictly increasing
    assert all(x["id"] == x["data"]["id"] for x in invalidations)
    assert [x["type"] for x in events].count("reset") == (0 if SERVICES else 1)
    # Reconnected by itself, resuming from the last event it had seen.
    connects = [x["lastEventId"] for x in client.seen if x["kind"] == "connect"]
    assert connects[0] is None and len(connects) >= 2
    assert set(connects[1:]) == {invalidations[2]["id"]}, connects
