"""The rows of bench/reads.py and the servers they run against (one configuration's).

Each row (:class:`Endpoint`) names its server (a TeamHub one, once per fast
lane setting, or a floor), its path and its request headers. :class:`Setup`
starts the servers of one configuration: TeamHub with the fast lane on and off
(``TEAMHUB_FAST_LANE``; settings bench/bench_settings.py, which register
bench.agentsMiss), then the floors, which answer the bytes agents.getAll
answered (bench/lean.py, bench/rawasgi.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402
from server import BenchServer, bench_server  # noqa: E402


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str
    target: str = "teamhub"  # or a floor: "raw", "floor"
    auth: str = "bearer"  # or "session"
    scoped: bool = True  # ?organizationId=<the organization>
    nonce: bool = False  # a fresh cache key per request
    etag: bool = False  # If-None-Match: the ETag of the previous response


RX = "/api/rx/agents.getAll"
ENDPOINTS = [
    Endpoint("raw", "raw ASGI floor", "/floor", target="raw"),
    Endpoint("floor", "django floor", "/floor", target="floor"),
    Endpoint("hit", "rx hit, Bearer", RX),
    Endpoint("session", "rx hit, session", RX, auth="session"),
    Endpoint("304", "rx 304", RX, etag=True),
    Endpoint("miss", "rx miss", "/bench/rx-miss/agents", nonce=True),
    Endpoint("rxmiss", "rx miss, /api/rx", "/api/rx/bench.agentsMiss", nonce=True),
    Endpoint("minimal", "minimal view", "/bench/minimal", scoped=False),
    Endpoint("orm", "plain ORM view", "/bench/orm/agents"),
    Endpoint("ninja", "Ninja schema view", "/bench/ninja/agents"),
    Endpoint("rest", "REST route (cached)", "/api/agents"),
]
BY_KEY = {e.key: e for e in ENDPOINTS}
FLOOR = ("floor", "")
NO_ETAG = '"no-etag-in-the-previous-response"'

# A session of the benchmark's user, as django.contrib.auth.login() stores it.
SESSION = """
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from agency.models import User
user = User.objects.get(username="bench")
store = import_module(settings.SESSION_ENGINE).SessionStore()
store[SESSION_KEY] = user._meta.pk.value_to_string(user)
store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
store[HASH_SESSION_KEY] = user.get_session_auth_hash()
store.create()
print("BENCH:" + settings.SESSION_COOKIE_NAME + "=" + store.session_key)
"""


def session_cookie(srv: BenchServer) -> str:
    """A logged-in session of the server's user, as a Cookie header value."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SESSION],
        cwd=ROOT,
        env=srv.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line[6:] for line in out.splitlines() if line.startswith("BENCH:"))


class Setup:
    """The servers of one configuration, and the URL and headers of each row."""

    def __init__(self, stack: contextlib.ExitStack, server: str, workers: int, args, tmp: Path):
        self.servers: dict[str, BenchServer] = {}
        self.cookies: dict[str, str] = {}
        rows = [BY_KEY[k] for k in args.endpoints]
        for lane in args.lanes:
            env = {
                "TEAMHUB_FAST_LANE": "1" if lane == "on" else "0",
                "TEAMHUB_BENCH_VIEWS": "1",
                "DJANGO_SETTINGS_MODULE": "bench.bench_settings",
            }
            srv = stack.enter_context(bench_server(server, workers, env=env))
            self.servers[lane] = srv
            if any(e.auth == "session" for e in rows):
                self.cookies[lane] = session_cookie(srv)
        self.main = self.servers[args.lanes[0]]  # the floors answer its body to its requests
        status, body, _ = probe(self.main.url + RX + self.query(self.main), self.bearer(self.main))
        if status != 200:
            raise RuntimeError(f"agents.getAll answered {status}: {body[:200]!r}")
        body_file = tmp / f"body-{server}-{workers}.json"
        body_file.write_bytes(body)
        floor_env = {"BENCH_BODY_FILE": str(body_file)}
        for key, app in (("raw", "bench.rawasgi:application"), ("floor", "bench.lean:application")):
            if key in args.endpoints:
                self.servers[key] = stack.enter_context(
                    bench_server(
                        server, workers, app=app, seed=False, env=floor_env, ready=("/floor", 200)
                    )
                )
        self.rows = [
            (e, lane) for e in rows for lane in ([""] if e.target != "teamhub" else args.lanes)
        ]

    @staticmethod
    def query(srv: BenchServer) -> str:
        return f"?organizationId={srv.org}"

    @staticmethod
    def bearer(srv: BenchServer) -> dict[str, str]:
        return {"Authorization": f"Bearer {srv.token}"}

    def server(self, e: Endpoint, lane: str) -> BenchServer:
        return self.servers[lane if e.target == "teamhub" else e.target]

    def teamhub(self, e: Endpoint, lane: str) -> BenchServer:
        """The TeamHub server whose organization and token a row's request names."""
        return self.servers[lane] if e.target == "teamhub" else self.main

    def url(self, e: Endpoint, lane: str) -> str:
        query = self.query(self.teamhub(e, lane)) if e.scoped else ""
        return self.server(e, lane).url + e.path + query

    def headers(self, e: Endpoint, lane: str) -> dict[str, str]:
        """The request headers of a row; for a 304 row, the ETag just answered."""
        srv = self.teamhub(e, lane)
        headers = {"Cookie": self.cookies[lane]} if e.auth == "session" else self.bearer(srv)
        if e.etag:
            _, _, got = probe(srv.url + RX + self.query(srv), self.bearer(srv))
            headers["If-None-Match"] = got.get("ETag") or NO_ETAG
        return headers


def probe(url: str, headers: dict[str, str]) -> tuple[int, bytes, Message]:
    """One request: the status, the body and the response headers."""
    try:
        with urlopen(Request(url, headers=headers), timeout=30) as answer:
            return answer.status, answer.read(), answer.headers
    except HTTPError as exc:  # 3xx (a 304 too), 4xx and 5xx
        return exc.code, exc.read(), exc.headers


def describe(setup: Setup) -> None:
    """One request per row before the rounds: what each answers, to see a wrong one at once.

    Twice for a row of fresh keys (the same key): a miss, then a hit, which a fast
    lane may need to have seen before it answers the route itself.
    """
    for e, lane in setup.rows:
        headers = setup.headers(e, lane)
        url = setup.url(e, lane) + (f"&nonce=probe-{e.key}" if e.nonce else "")
        for _ in range(2 if e.nonce else 1):
            status, body, got = probe(url, headers)
            extra = f", If-None-Match {headers['If-None-Match']}" if e.etag else ""
            print(
                f"  probe {e.label:<20} {lane or '-':<3} {status} {len(body):>6} B, "
                f"X-Reactive-Cache {got.get('X-Reactive-Cache', '-')}, "
                f"ETag {got.get('ETag', 'none')}{extra}",
                flush=True,
            )
