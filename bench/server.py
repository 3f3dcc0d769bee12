"""A throwaway TeamHub server for benchmarks: fresh database, one org, one token, uvicorn."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import json
from agency.models import Agent, ApiToken, Membership, Organization, User
user = User.objects.create_user("bench", password=None)
org = Organization.objects.create(name="Bench", owner=user, database_name="bench_org")
Membership.objects.create(user=user, organization=org, role="owner")
agents = Agent.objects.bulk_create(
    [Agent(organization=org, name=f"agent {i}", role="worker", system_prompt="x" * 400)
     for i in range(AGENTS)])
print("BENCH:" + json.dumps({"org": str(org.pk), "agent": str(agents[0].pk),
                             "token": ApiToken.issue(user, "bench")[1]}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchServer:
    """Context manager: `with BenchServer(workers=1) as srv: srv.url, srv.token, srv.org`."""

    def __init__(self, workers: int = 1, agents: int = 50, server: str = "uvicorn"):
        self.workers, self.agents, self.server = workers, agents, server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="teamhub-bench-"))
        self.env = {
            **os.environ,
            "LOG_LEVEL": "ERROR",
            "PYTHONUNBUFFERED": "1",
            "TEAMHUB_DATA_DIR": str(self.tmp),
        }
        self.db_name: str | None = None

    def __enter__(self) -> BenchServer:
        if os.environ.get("DATABASE_URL"):
            import psycopg

            self.db_name = f"teamhub_bench_{secrets.token_hex(4)}"
            admin = os.environ["DATABASE_URL"]
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
            parts = urlsplit(admin)
            self.env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + self.db_name))
            self.env["CACHE_KEY_PREFIX"] = self.db_name
        else:
            self.env["SQLITE_PATH"] = str(self.tmp / "bench.sqlite3")
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        out = subprocess.run(
            [py, "manage.py", "shell", "-c", SETUP.replace("AGENTS", str(self.agents))],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        data = json.loads(
            next(line for line in out.stdout.splitlines() if line.startswith("BENCH:"))[6:]
        )
        self.org, self.agent, self.token = data["org"], data["agent"], data["token"]
        if self.server == "daphne":
            cmd = [
                str(Path(py).parent / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "teamhub.asgi:application",
            ]
        else:
            cmd = [
                py,
                "-m",
                "uvicorn",
                "teamhub.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                # compressing every small event frame per connection costs more than it saves
                "--ws-per-message-deflate",
                "false",
                "--workers",
                str(self.workers),
            ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=(self.tmp / "server.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urlopen(self.url + "/api/auth/me", timeout=1)
            except Exception as exc:
                if getattr(exc, "code", None) == 401:
                    return self
                time.sleep(0.2)
        raise RuntimeError("bench server did not start: " + (self.tmp / "server.log").read_text())

    def rss_kb(self) -> int:
        """Resident memory of the server (all its processes), in KiB."""
        pids = subprocess.run(
            ["pgrep", "-g", str(os.getpgid(self.proc.pid))], capture_output=True, text=True
        ).stdout.split()
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def __exit__(self, *exc) -> None:
        os.killpg(os.getpgid(self.proc.pid), signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
        if self.db_name:
            import psycopg

            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
