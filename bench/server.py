"""A throwaway TeamHub server for benchmarks: fresh database, one org, one token.

Production settings (DEBUG=0, bench/production.py). It also serves the
benchmarks' own ASGI applications without a database (the floors of
bench/reads.py: bench/lean.py, bench/rawasgi.py).

uvicorn (``--workers N`` processes sharing one listening socket: whichever
worker wakes first accepts the connections waiting; or, with ``reuse_port``, N
single-process uvicorns on their own SO_REUSEPORT sockets, see reuseport.py) or
daphne (one process: daphne has no workers option).
"""

from __future__ import annotations

import contextlib
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import drop_redis_prefix  # noqa: E402
from production import ENV as PRODUCTION  # noqa: E402

APP = "teamhub.asgi:application"

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


SERVERS = ("uvicorn", "uvicorn-reuseport", "daphne")


def server_configs(servers: list[str], workers: list[int]) -> list[tuple[str, int]]:
    """The (server, workers) pairs to measure, in order, without duplicates.

    daphne runs as one process, so it is measured at 1 worker whatever the list;
    uvicorn-reuseport at 1 worker is uvicorn at 1 worker, measured once when both are asked.
    """
    out: list[tuple[str, int]] = []
    for server in servers:
        for n in workers:
            if server == "daphne":
                n = 1
            if server == "uvicorn-reuseport" and n == 1 and "uvicorn" in servers:
                server_n = ("uvicorn", 1)
            else:
                server_n = (server, n)
            if server_n not in out:
                out.append(server_n)
    return out


def add_server_arguments(parser) -> None:
    """The --workers and --servers options every HTTP benchmark takes."""
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], metavar="N", help="uvicorn worker counts"
    )
    parser.add_argument(
        "--servers",
        "--server",
        nargs="+",
        default=["uvicorn"],
        choices=SERVERS,
        metavar="SERVER",
        help=f"any of {', '.join(SERVERS)} (daphne: 1 process only)",
    )


def bench_server(name: str, workers: int, **options) -> BenchServer:
    """A BenchServer for a configuration named as in SERVERS (`options`: BenchServer's)."""
    if name == "uvicorn-reuseport":
        return BenchServer(workers=workers, server="uvicorn", reuse_port=True, **options)
    return BenchServer(workers=workers, server=name, **options)


class BenchServer:
    """Context manager: `with BenchServer(workers=1) as srv: srv.url, srv.token, srv.org`.

    Production settings (DEBUG=0, bench/production.py) unless the environment says
    otherwise; `env` adds to the server's environment. `app` is the ASGI
    application it serves; `seed=False` makes no database (for an application
    that needs none) and waits for `ready` (a path and the status it answers).
    """

    def __init__(
        self,
        workers: int = 1,
        agents: int = 50,
        server: str = "uvicorn",
        reuse_port: bool = False,
        *,
        app: str = APP,
        seed: bool = True,
        env: dict[str, str] | None = None,
        ready: tuple[str, int] = ("/api/auth/me", 401),
    ):
        if server not in ("uvicorn", "daphne"):
            raise ValueError(f"unknown server {server!r}")
        if server == "daphne" and workers != 1:
            raise ValueError("daphne runs as one process: --workers applies to uvicorn only")
        self.workers, self.agents, self.server = workers, agents, server
        self.app, self.seed, self.ready = app, seed, ready
        self.reuse_port = reuse_port and server == "uvicorn"
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="teamhub-bench-"))
        self.env = {
            **PRODUCTION,  # values already set win
            **os.environ,
            "LOG_LEVEL": "ERROR",
            "PYTHONUNBUFFERED": "1",
            "TEAMHUB_DATA_DIR": str(self.tmp),
            **(env or {}),
        }
        self.db_name: str | None = None

    def __enter__(self) -> BenchServer:
        if not self.seed:
            pass  # no database: the application reads none
        elif os.environ.get("DATABASE_URL"):
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
        try:
            self._start()
        except BaseException:
            self.__exit__()  # stop what started and drop the database
            raise
        return self

    def _start(self) -> None:
        py = sys.executable
        if self.seed:
            self._seed(py)
        self._launch(py)

    def _seed(self, py: str) -> None:
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

    def _launch(self, py: str) -> None:
        if self.server == "daphne":
            cmd = [
                str(Path(py).parent / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-v",
                "0",  # verbosity 1 (the default) writes an access log line per request
                self.app,
            ]
        else:
            cmd = [
                py,
                "-m",
                "uvicorn",
                self.app,
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
                "--ws",
                os.environ.get("BENCH_UVICORN_WS", "auto"),
                "--workers",
                str(self.workers),
            ]
        log = (self.tmp / "server.log").open("wb")
        if self.reuse_port:
            cmd = [py, str(ROOT / "bench" / "reuseport.py"), str(self.port), self.app]
            for _ in range(self.workers):  # one process group: the first's (same session)
                self.procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=ROOT,
                        env=self.env,
                        process_group=self.procs[0].pid if self.procs else 0,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        else:
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=self.env,
                    start_new_session=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        self.proc = self.procs[0]
        deadline = time.monotonic() + 60
        path, expected = self.ready
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            try:
                with urlopen(self.url + path, timeout=1) as answer:
                    status = answer.status
            except Exception as exc:
                status = getattr(exc, "code", None)
            if status == expected and self.listeners() >= len(self.procs):
                self._settle(deadline)
                return
            time.sleep(0.2)
        raise RuntimeError("bench server did not start: " + (self.tmp / "server.log").read_text())

    def _settle(self, deadline: float) -> None:
        """With several workers, give the others the time the first took to load.

        One worker answering does not mean all do: connections opened now would
        all land on the ready ones. Wait for every worker process, then a little.
        """
        if self.workers == 1:
            return
        expected = self.workers + (0 if self.reuse_port else 1)  # uvicorn's supervisor
        while time.monotonic() < deadline and len(self.pids()) < expected:
            time.sleep(0.2)
        time.sleep(2)

    @property
    def name(self) -> str:
        """The configuration's name in reports: uvicorn, uvicorn-reuseport or daphne."""
        return "uvicorn-reuseport" if self.reuse_port else self.server

    def _sockets(self, state: str) -> set[str]:
        """Inodes of the TCP sockets on the server's port in `state` (01 established, 0A listen)."""
        port = f":{self.port:04X}"
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[1].endswith(port) and fields[3] == state:
                    inodes.add(fields[9])
        return inodes

    def listeners(self) -> int:
        return len(self._sockets("0A"))

    def pids(self) -> list[int]:
        """Every process of the server (uvicorn's supervisor and its workers)."""
        out = subprocess.run(
            ["pgrep", "-g", str(self.procs[0].pid)], capture_output=True, text=True
        ).stdout.split()
        return [int(pid) for pid in out]

    def connections(self) -> dict[int, int]:
        """Established client connections to the server's port, per server process."""
        inodes = self._sockets("01")
        counts = {}
        for pid in self.pids():
            n = 0
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    try:
                        link = os.readlink(fd)
                    except OSError:
                        continue
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        n += 1
            except OSError:
                continue
            if n:
                counts[pid] = n
        return counts

    def rss_kb(self) -> int:
        """Resident memory of the server (all its processes), in KiB."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def __exit__(self, *exc) -> None:
        if self.procs:
            group = self.procs[0].pid  # every process of the server is in this process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            try:
                for proc in self.procs:
                    proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                for proc in self.procs:
                    proc.wait(5)
        if self.db_name:
            import psycopg

            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            drop_redis_prefix(self.db_name)
