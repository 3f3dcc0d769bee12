"""Faults under traffic: Redis killed and restarted empty, Redis paused, an ASGI worker killed.

Real server processes (tests/live.py), real clients: a reader and a writer over
HTTP, an SSE listener and a WebSocket subscriber that reconnect the way the
browser client does (``since`` / ``Last-Event-ID``, backoff). Every write
updates a different agent, so the tags of an event name the one write it is
for. The checks:

- no 5xx and no failed request, ever (the API answers from the database while
  Redis is away);
- no stale read: a read never returns a value older than the last write
  acknowledged before the read started;
- the server recovers by itself: cache hits again, live events again;
- no lost invalidation: each write reaches each listener as an event; for
  writes made while Redis was away a ``reset`` is enough (the client refetches).

The numbers go to the fault report (tests/report.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis
import websockets
from django.conf import settings
from django.db import connection

from agency.models import Agent, ApiToken
from tests.live import LiveServer, Partition, RedisServer
from tests.report import record

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.timeout(120),
]

POOL = 400  # agents per organization: one per write, so an event names its write
TIMEOUT = 30.0  # seconds one request may take (a loaded machine, a paused Redis)
WRITE_EVERY = 0.05
READ_EVERY = 0.02


def now() -> float:
    return time.monotonic()


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = now() + timeout
    while not condition():
        if now() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def tag(agent: str) -> str:
    return f"agency.agent:id={agent}"


# --- the data and what it may be read as ------------------------------------------------------


@dataclass
class Write:
    i: int
    agent: str
    name: str
    start: float
    ack: float | None = None  # when its 200 arrived
    status: int | None = None


@dataclass
class Org:
    id: str
    token: str
    pool: list[str]  # agents the writer updates, one per write
    steady: str  # an agent nobody writes: its reads should hit the cache
    names: dict[str, str]  # initial names


def build_org(make_user, make_org, label: str) -> Org:
    user = make_user(f"{label}-user")
    org = make_org(user, name=f"Faults {label}")
    agents = Agent.objects.bulk_create(
        Agent(organization=org, name=f"{label}-a{k}", role="r") for k in range(POOL + 1)
    )
    token = ApiToken.issue(user, "faults")[1]
    ids = [str(a.pk) for a in agents]
    return Org(str(org.pk), token, ids[:-1], ids[-1], {str(a.pk): a.name for a in agents})


class Truth:
    """Each agent's writes in order; a read is stale if a newer write was acknowledged before it."""

    def __init__(self, names: dict[str, str]):
        base = {a: Write(-1, a, n, -math.inf, -math.inf, 200) for a, n in names.items()}
        self.history: dict[str, list[Write]] = {a: [w] for a, w in base.items()}

    def add(self, write: Write) -> None:
        self.history[write.agent].append(write)

    def check(self, agent: str, name: str, started: float) -> str | None:
        history = self.history.get(agent)
        if history is None:
            return f"read an unknown agent {agent}"
        seen = [k for k, w in enumerate(history) if w.name == name]
        if not seen:
            return f"{agent}: read {name!r}, which was never written"
        newer = [w for w in history[seen[-1] + 1 :] if w.ack is not None and w.ack < started]
        if newer:
            return f"stale read: {name!r} after {newer[-1].name!r} was acknowledged"
        return None

    def latest(self, agent: str) -> set[str]:
        """The names the database may hold now (the last acknowledged and any unanswered after it)."""
        history = self.history[agent]
        last = max(k for k, w in enumerate(history) if w.ack is not None)
        return {w.name for w in history[last:] if w is history[last] or w.status != 200}


# --- clients -----------------------------------------------------------------------------------


class Traffic:
    """A reader and a writer through `base()` (which server a load balancer would pick)."""

    def __init__(self, base: Callable[[], str], org: Org, truth: Truth):
        self.base, self.org, self.truth = base, org, truth
        self.headers = {"Authorization": f"Bearer {org.token}"}
        self.requests = 0
        self.errors: list[str] = []  # 5xx and failed requests
        self.stale: list[str] = []
        self.reads: list[tuple[float, str]] = []  # (started, X-Reactive-Cache)
        self.writes: list[Write] = []
        self.last_written = org.steady

    async def read_loop(self, stop: asyncio.Event) -> None:
        org = self.org
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=self.headers) as client:
            while not stop.is_set():
                for path, params in (
                    ("agents.getOne", {"id": self.last_written}),
                    ("agents.getOne", {"id": org.steady}),
                    ("agents.getAll", {"organizationId": org.id, "limit": 200}),
                ):
                    started = now()
                    self.requests += 1
                    try:
                        resp = await client.get(f"{self.base()}/api/rx/{path}", params=params)
                    except httpx.HTTPError as exc:
                        self.errors.append(f"{path}: {exc!r}")
                        continue
                    if resp.status_code != 200:
                        self.errors.append(f"{path}: {resp.status_code} {resp.text[:200]}")
                        continue
                    self.reads.append((started, resp.headers.get("X-Reactive-Cache", "")))
                    data = resp.json()["data"]
                    for row in data if isinstance(data, list) else [data]:
                        problem = self.truth.check(row["id"], row["name"], started)
                        if problem:
                            self.stale.append(f"{path} at {started:.2f}: {problem}")
                await asyncio.sleep(READ_EVERY)

    async def write_loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=self.headers) as client:
            for i, agent in enumerate(self.org.pool):
                if stop.is_set():
                    return
                write = Write(i, agent, f"w{i}", now())
                self.truth.add(write)
                self.writes.append(write)
                self.requests += 1
                try:
                    resp = await client.post(
                        f"{self.base()}/api/rx/agents.update",
                        json={"id": agent, "data": {"name": write.name}},
                    )
                except httpx.HTTPError as exc:
                    self.errors.append(f"agents.update: {exc!r}")
                    continue
                write.status = resp.status_code
                if resp.status_code == 200:
                    write.ack = now()
                    self.last_written = agent
                else:
                    self.errors.append(f"agents.update: {resp.status_code} {resp.text[:200]}")
                await asyncio.sleep(WRITE_EVERY)

    def hits_after(self, moment: float) -> int:
        return sum(1 for started, cache in self.reads if started > moment and cache == "hit")


@dataclass
class Received:
    at: float
    kind: str  # invalidate | reset
    id: str
    tags: list[str] = field(default_factory=list)
    org: str | None = None


class Listener:
    """Reconnects forever with backoff, resuming from the newest position it saw."""

    def __init__(self, base: Callable[[], str], org: Org, since: str | None = None):
        self.base, self.org, self.last = base, org, since
        self.got: list[Received] = []
        self.connects = 0
        self.drops: list[str] = []
        self.errors: list[str] = []  # 5xx, protocol violations

    def remember(self, position: str | None) -> None:
        if position and (not self.last or int(position) > int(self.last)):
            self.last = position

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self.session()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a real client retries on anything
                self.drops.append(repr(exc)[:200])
            attempt += 1
            await asyncio.sleep(min(0.25 * 2**attempt, 2.0))

    async def session(self) -> None:
        raise NotImplementedError

    def invalidated(self) -> dict[str, Received]:
        """Agent id -> the event that named it."""
        out = {}
        for got in self.got:
            if got.kind == "invalidate":
                for t in got.tags:
                    if t.startswith("agency.agent:id="):
                        out.setdefault(t.split("=", 1)[1], got)
        return out


class SSEListener(Listener):
    async def session(self) -> None:
        headers = {"Authorization": f"Bearer {self.org.token}"}
        params = {"organizationId": self.org.id}
        if self.last:
            params["since"] = self.last  # as the browser client resumes
            headers["Last-Event-ID"] = self.last
        timeout = httpx.Timeout(10, read=40)  # heartbeats come every 15 s
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream(
                "GET", f"{self.base()}/api/events", params=params, headers=headers
            ) as resp,
        ):
            if resp.status_code != 200:
                if resp.status_code >= 500:
                    self.errors.append(f"SSE answered {resp.status_code}")
                raise RuntimeError(f"SSE status {resp.status_code}")
            self.connects += 1
            frame: dict[str, str] = {}
            async for line in resp.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        frame[name] = value.removeprefix(" ")
                    continue
                kind = frame.get("event")
                if kind == "invalidate":
                    data = json.loads(frame["data"])
                    self.got.append(
                        Received(now(), kind, frame["id"], data["tags"], data["organizationId"])
                    )
                elif kind == "reset":
                    self.got.append(Received(now(), kind, frame.get("id", "")))
                self.remember(frame.get("id"))
                frame = {}
        raise ConnectionError("SSE stream ended")


class WSListener(Listener):
    """Subscribes to the organization's agent list; resubscribes with `since` after a reconnect."""

    def __init__(self, base: Callable[[], str], org: Org, since: str):
        super().__init__(base, org, since)
        self.replays: list[tuple[int, int]] = []  # (since, up to]: covered by a replayed invalidate

    async def session(self) -> None:
        url = self.base().replace("http://", "ws://") + "/ws/reactive/"
        headers = {"Authorization": f"Bearer {self.org.token}"}
        async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
            self.connects += 1
            since = self.last
            message = {
                "type": "subscribe",
                "id": "agents",
                "name": "agents.getAll",
                "input": {"organizationId": self.org.id, "limit": 200},
            }
            if since:
                message["since"] = since
            await ws.send(json.dumps(message))
            cursor = None
            resumed = self.connects > 1
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 40))
                kind = msg.get("type")
                if kind == "subscribed":
                    cursor = msg.get("cursor") or ""
                    if not self.last:
                        self.remember(cursor)
                elif kind == "invalidate":
                    self.got.append(Received(now(), kind, msg["eventId"], msg.get("tags", [])))
                    if resumed and cursor is not None and since:
                        # the first invalidate after a resubscription replays everything missed
                        top = max(int(cursor or 0), int(msg["eventId"]))
                        self.replays.append((int(since), top))
                        resumed = False
                    self.remember(msg["eventId"])
                elif kind == "reset":
                    self.got.append(Received(now(), kind, ""))
                elif kind == "error":
                    if int(msg.get("status", 0)) >= 500:
                        self.errors.append(f"WS error {msg}")
                    raise RuntimeError(f"WS error {msg}")

    def covers(self, event_id: str | None) -> bool:
        if event_id is None:
            return False
        e = int(event_id)
        if any(g.kind == "invalidate" and int(g.id) == e for g in self.got):
            return True
        return any(lo < e <= hi for lo, hi in self.replays)


async def stopped(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def reset_after(listener: Listener, moment: float) -> bool:
    return any(g.kind == "reset" and g.at >= moment for g in listener.got)


def order_problems(listener: Listener, label: str, org: Org) -> list[str]:
    problems = []
    ids = [int(g.id) for g in listener.got if g.kind == "invalidate"]
    for a, b in zip(ids, ids[1:], strict=False):
        if b <= a:
            problems.append(f"{label}: event {b} after {a} (out of order or duplicate)")
    for g in listener.got:
        if g.org not in (None, org.id):
            problems.append(f"{label}: event {g.id} of another organization {g.org}")
    return problems[:10]


async def initial_cursor(base: str, org: Org) -> str:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        resp = await client.get(
            f"{base}/api/rx/agents.getAll",
            params={"organizationId": org.id, "limit": 200},
            headers={"Authorization": f"Bearer {org.token}"},
        )
    assert resp.status_code == 200, resp.text
    return resp.json()["cursor"]


def logged_events(url: str, org: Org) -> dict[str, str]:
    """Agent id -> id of the event naming it, as the Redis log holds them now."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    key = f"{settings.REACTIVE['KEY_PREFIX']}:log:{org.id}"
    out = {}
    for entry_id, fields in client.xrange(key):
        for t in fields["t"].split("\x1f"):
            if t.startswith("agency.agent:id="):
                out.setdefault(t.split("=", 1)[1], entry_id.split("-")[0])
    client.close()
    return out


async def database_names(org: Org) -> dict[str, str]:
    def read():
        try:
            return dict(Agent.objects.filter(organization_id=org.id).values_list("id", "name"))
        finally:
            connection.close()  # this thread's: it would outlive the test database

    return {str(k): v for k, v in (await asyncio.to_thread(read)).items()}


def coverage(
    traffic: Traffic, sse: SSEListener, ws: WSListener, ids: dict[str, str], window: tuple
) -> list[str]:
    """The acknowledged writes a listener never learnt of.

    Writes started inside `window` (Redis away, and until the live path is back)
    may be covered by a reset received after they started; any other write must
    arrive as an event naming it (SSE) or carrying its id (WebSocket, live or
    replayed after a resubscription).
    """
    lo, hi = window
    by_sse = sse.invalidated()
    lost = []
    for w in traffic.writes:
        if w.ack is None:
            continue  # never acknowledged: counted as an error, owed nothing
        outage = lo <= w.start < hi
        event = by_sse.get(w.agent)
        event_id = event.id if event else ids.get(w.agent)
        if event is None and not (outage and reset_after(sse, w.start)):
            lost.append(f"SSE: write {w.i} ({'outage' if outage else 'live'}) never arrived")
        if not ws.covers(event_id) and not (outage and reset_after(ws, w.start)):
            lost.append(f"WS: write {w.i} ({'outage' if outage else 'live'}), event {event_id}")
    return lost


def live_again(traffic: Traffic, sse: SSEListener, ws: WSListener, since: float) -> float | None:
    """The start of the first write after `since` that both listeners received live."""
    by_sse = sse.invalidated()
    ws_ids = {g.id for g in ws.got if g.kind == "invalidate"}
    starts = [
        w.start
        for w in traffic.writes
        if w.start > since and w.agent in by_sse and by_sse[w.agent].id in ws_ids
    ]
    return min(starts) if starts else None


# --- a scenario: steady traffic, a fault, recovery, more traffic, then the accounts --------------


@dataclass
class Outcome:
    problems: list[str]
    lost: list[str]
    requests: int
    events: int
    recovered: bool
    summary: str


async def under_fault(
    org: Org,
    writer: Callable[[], str],
    readers: list[Callable[[], str]],
    sse_base: Callable[[], str],
    ws_base: Callable[[], str],
    inject: Callable[[], None],
    repair: Callable[[], None],
    log_url: str,
    outage: float = 3.0,
) -> Outcome:
    """Traffic before, during and after a fault; what went wrong and what was lost."""
    truth = Truth(org.names)
    traffic = Traffic(writer, org, truth)
    others = [Traffic(base, org, truth) for base in readers]
    cursor = await initial_cursor(writer(), org)
    sse, ws = SSEListener(sse_base, org, cursor), WSListener(ws_base, org, cursor)
    loop = asyncio.get_running_loop()
    listeners = [loop.create_task(sse.run()), loop.create_task(ws.run())]
    stop = asyncio.Event()
    clients: list[asyncio.Task] = []
    try:
        assert await until(lambda: sse.connects and ws.connects, 15), (sse.drops, ws.drops)
        clients = [loop.create_task(traffic.write_loop(stop))]
        clients += [loop.create_task(t.read_loop(stop)) for t in others]
        steady = await until(
            lambda: (
                live_again(traffic, sse, ws, 0) is not None and all(t.hits_after(0) for t in others)
            ),
            20,
        )
        assert steady, "no steady state before the fault"
        await asyncio.sleep(1.0)  # traffic before the fault
        faulted = now()
        await asyncio.to_thread(inject)
        await asyncio.sleep(outage)  # traffic while Redis is away
        repaired = now()
        await asyncio.to_thread(repair)
        recovered = await until(
            lambda: (
                live_again(traffic, sse, ws, repaired) is not None
                and all(t.hits_after(repaired) for t in others)
            ),
            20,
        )
        back = now()
        await asyncio.sleep(3.0)  # traffic after recovery
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), TIMEOUT + 5)
        truth_now = await database_names(org)
        ids = await asyncio.to_thread(logged_events, log_url, org)
        window = (faulted - 1.0, live_again(traffic, sse, ws, repaired) or math.inf)
        # every acknowledged write reaches both listeners (bounded wait)
        await until(lambda: not coverage(traffic, sse, ws, ids, window), 15)
        lost = coverage(traffic, sse, ws, ids, window)
    finally:
        await stopped(listeners + clients)

    problems = [e for t in [traffic, *others] for e in t.errors + t.stale]
    problems += sse.errors + ws.errors
    problems += order_problems(sse, "SSE", org) + order_problems(ws, "WS", org)
    for agent, name in truth_now.items():
        if name not in truth.latest(agent):
            problems.append(f"database holds {name!r} for {agent}, not a write acknowledged last")
    slow = max((w.ack - w.start for w in traffic.writes if w.ack), default=0)
    summary = (
        f"writes={len(traffic.writes)} reads={sum(len(t.reads) for t in others)} "
        f"slowest write={slow:.1f}s recovered in {back - repaired:.1f}s; "
        f"SSE connects={sse.connects} resets={sum(g.kind == 'reset' for g in sse.got)}; "
        f"WS connects={ws.connects} resets={sum(g.kind == 'reset' for g in ws.got)}"
    )
    return Outcome(
        problems,
        lost,
        traffic.requests + sum(t.requests for t in others) + sse.connects + ws.connects,
        len(sse.got) + len(ws.got),
        recovered,
        summary,
    )


def report(section: str, outcome: Outcome, faults: int = 1) -> None:
    record(
        section,
        faults=faults,
        requests=outcome.requests,
        events=outcome.events,
        errors=len(outcome.problems),
        lost=len(outcome.lost),
    )
    print(f"\n{section}: {outcome.summary}")
    assert outcome.recovered, "the server did not recover by itself within 20 s"
    assert not outcome.problems, outcome.problems[:20]
    assert not outcome.lost, outcome.lost[:20]


@pytest.fixture
def org_one(make_user, make_org):
    return build_org(make_user, make_org, "one")


@pytest.fixture
def private_redis(tmp_path):
    rds = RedisServer(tmp_path)
    yield rds
    rds.stop()


# --- 1. Redis killed, then restarted empty ------------------------------------------------------


async def test_redis_killed_and_restarted_empty(org_one, private_redis, tmp_path):
    """SIGKILL Redis under traffic, start it again empty on the same port."""
    server = await asyncio.to_thread(LiveServer, tmp_path, REDIS_URL=private_redis.url)
    try:
        base = lambda: server.url  # noqa: E731
        outcome = await under_fault(
            org_one,
            base,
            [base],
            base,
            base,
            private_redis.kill,
            private_redis.start,
            private_redis.url,
        )
    finally:
        await asyncio.to_thread(server.stop)
    report("redis killed, restarted empty", outcome)


# --- 2. Redis partitioned (paused), its data kept ---------------------------------------------


async def test_redis_paused_keeps_no_stale_entry(org_one, private_redis, tmp_path):
    """SIGSTOP Redis (a partition: connections hang, data kept), then SIGCONT.

    Two servers: writes go through the first, reads through both, so a cache
    entry of the second must not outlive a write whose bump failed on the first.
    """
    one, two = await asyncio.gather(
        asyncio.to_thread(LiveServer, tmp_path, REDIS_URL=private_redis.url),
        asyncio.to_thread(LiveServer, tmp_path, REDIS_URL=private_redis.url),
    )
    try:
        outcome = await under_fault(
            org_one,
            lambda: one.url,
            [lambda: one.url, lambda: two.url],
            lambda: two.url,
            lambda: one.url,
            private_redis.pause,
            private_redis.resume,
            private_redis.url,
        )
    finally:
        await asyncio.gather(asyncio.to_thread(one.stop), asyncio.to_thread(two.stop))
    report("redis paused (partition)", outcome)


# --- 3. Redis partitioned: what is sent meanwhile is lost -----------------------------------------


@pytest.fixture
def partition(private_redis):
    proxy = Partition(private_redis.port)
    yield proxy
    proxy.close()


async def servers(tmp_path, url: str, count: int = 2) -> list[LiveServer]:
    return list(
        await asyncio.gather(
            *(asyncio.to_thread(LiveServer, tmp_path, REDIS_URL=url) for _ in range(count))
        )
    )


async def test_redis_partitioned_under_traffic(org_one, private_redis, partition, tmp_path):
    """Every byte to and from Redis dropped for 3 s (two servers, as in the paused case)."""
    one, two = await servers(tmp_path, partition.url)
    try:
        outcome = await under_fault(
            org_one,
            lambda: one.url,
            [lambda: one.url, lambda: two.url],
            lambda: two.url,
            lambda: one.url,
            partition.drop,
            partition.heal,
            private_redis.url,
        )
    finally:
        await asyncio.gather(asyncio.to_thread(one.stop), asyncio.to_thread(two.stop))
    report("redis partitioned", outcome)


async def read_name(client: httpx.AsyncClient, server: LiveServer, agent: str) -> tuple[str, str]:
    resp = await client.get(f"{server.url}/api/rx/agents.getOne", params={"id": agent})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["name"], resp.headers.get("X-Reactive-Cache", "")


async def write_name(client: httpx.AsyncClient, server: LiveServer, agent: str, name: str) -> None:
    resp = await client.post(
        f"{server.url}/api/rx/agents.update", json={"id": agent, "data": {"name": name}}
    )
    assert resp.status_code == 200, resp.text


async def stale_after_heal(
    client: httpx.AsyncClient, server: LiveServer, agent: str, name: str, healed: float
) -> tuple[list[float], int]:
    """Read `agent` through `server` for 4 s: when (after healing) it was still not `name`."""
    stale, reads = [], 0
    while now() < healed + 4.0:
        started = now()
        got, _ = await read_name(client, server, agent)
        reads += 1
        if got != name:
            stale.append(round(started - healed, 2))
        await asyncio.sleep(0.05)
    return stale, reads


async def test_failed_bump_is_repaired_by_an_idle_writer(
    org_one, private_redis, partition, tmp_path
):
    """A write whose version bump is lost in a partition, from a process that then stays idle.

    Another process's entry for that row must stop being served soon after
    Redis is reachable again: the writer retries its bumps by itself, not only
    when its next request comes.
    """
    one, two = await servers(tmp_path, partition.url)
    agent = org_one.pool[0]
    headers = {"Authorization": f"Bearer {org_one.token}"}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as client:
            await read_name(client, two, agent)
            assert (await read_name(client, two, agent))[1] == "hit"
            partition.drop()
            await write_name(client, one, agent, "written in the partition")
            partition.heal()
            healed = now()
            stale, reads = await stale_after_heal(
                client, two, agent, "written in the partition", healed
            )
    finally:
        await asyncio.gather(asyncio.to_thread(one.stop), asyncio.to_thread(two.stop))
    late = [t for t in stale if t > 2.0]
    record("partition, idle writer", faults=1, requests=reads + 4, errors=len(late))
    print(f"\nidle writer: stale reads at {stale[:10]} s after healing ({len(stale)})")
    assert not late, f"stale reads after the writer's retry: {stale}"


async def test_writer_killed_in_a_partition(org_one, private_redis, partition, tmp_path):
    """The writing process dies before it can retry its bump; a process that saw the partition
    must not serve its old entry afterwards."""
    one, two = await servers(tmp_path, partition.url)
    agent, other = org_one.pool[0], org_one.pool[1]
    headers = {"Authorization": f"Bearer {org_one.token}"}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as client:
            await read_name(client, two, agent)
            assert (await read_name(client, two, agent))[1] == "hit"
            partition.drop()
            await read_name(client, two, other)  # served from the database: two sees the cut
            await write_name(client, one, agent, "written by the dead")
            await asyncio.to_thread(one.kill)
            partition.heal()
            healed = now()
            stale, reads = await stale_after_heal(client, two, agent, "written by the dead", healed)
    finally:
        await asyncio.gather(asyncio.to_thread(one.stop), asyncio.to_thread(two.stop))
    record("partition, writer killed", faults=2, requests=reads + 5, errors=len(stale))
    print(f"\ndead writer: stale reads at {stale[:10]} s after healing ({len(stale)})")
    assert not stale, f"the dead writer's row was served stale: {stale[:10]}"


# --- 4. An ASGI worker killed while clients are connected ------------------------------------------


@pytest.fixture
def org_two(make_user, make_org):
    return build_org(make_user, make_org, "two")


async def test_worker_killed_clients_resume_on_another(org_one, org_two, tmp_path):
    """SSE and WebSocket clients of server one; SIGKILL it while writes go on through server two.

    The clients reconnect to server two with their last position and receive
    every event they missed, in order, and none of the other organization.
    """
    from asgiref.sync import sync_to_async

    from reactive.log import get_log

    one, two = await servers(tmp_path, settings.REDIS_URL)  # the run's Redis, shared
    dead = False
    listen = lambda: two.url if dead else one.url  # noqa: E731 - what a load balancer does
    org, other = org_one, org_two
    start = await sync_to_async(get_log().position)()
    loop = asyncio.get_running_loop()
    writes = [Traffic(lambda: two.url, o, Truth(o.names)) for o in (org, other)]
    sse, ws = SSEListener(listen, org, start), WSListener(listen, org, start)
    listeners = [loop.create_task(sse.run()), loop.create_task(ws.run())]
    stop = asyncio.Event()
    writers = [loop.create_task(w.write_loop(stop)) for w in writes]
    try:
        assert await until(lambda: len(sse.invalidated()) >= 3 and ws.got, 20), "no events"
        await asyncio.sleep(1.0)
        await asyncio.to_thread(one.kill)
        dead, killed = True, now()
        await asyncio.sleep(2.0)  # writes go on while the clients reconnect
        assert await until(lambda: sse.connects > 1 and ws.connects > 1, 15), "no reconnect"
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), TIMEOUT + 5)

        def logged(o: Org) -> list[str]:
            return [e.id for e in get_log().read([o.id], int(start), 100_000)]

        mine, theirs = await asyncio.to_thread(logged, org), await asyncio.to_thread(logged, other)

        def missing() -> list[str]:
            got = {g.id for g in sse.got if g.kind == "invalidate"}
            out = [f"SSE: event {e}" for e in mine if e not in got]
            return out + [f"WS: event {e}" for e in mine if not ws.covers(e)]

        await until(lambda: not missing(), 15)
        lost = missing()
    finally:
        await stopped(listeners + writers)
        await asyncio.gather(asyncio.to_thread(one.stop), asyncio.to_thread(two.stop))

    problems = [e for w in writes for e in w.errors] + sse.errors + ws.errors
    problems += order_problems(sse, "SSE", org) + order_problems(ws, "WS", org)
    foreign = set(theirs)
    problems += [f"SSE: event {g.id} of the other organization" for g in sse.got if g.id in foreign]
    problems += [f"WS: event {g.id} of the other organization" for g in ws.got if g.id in foreign]
    problems += [
        f"{kind}: unexpected reset"
        for kind, lis in (("SSE", sse), ("WS", ws))
        for g in lis.got
        if g.kind == "reset"
    ]
    acked = [w for w in writes[0].writes if w.ack]
    if len(mine) < len(acked):
        problems.append(f"{len(acked)} writes acknowledged, {len(mine)} events logged")
    after = [w for w in acked if w.start > killed]
    record(
        "worker killed",
        faults=1,
        requests=sum(w.requests for w in writes) + sse.connects + ws.connects,
        events=len(sse.got) + len(ws.got),
        errors=len(problems),
        lost=len(lost),
    )
    print(
        f"\nworker killed: {len(acked)} writes to the organization ({len(after)} after the kill), "
        f"{len(theirs)} to the other; SSE connects={sse.connects} drops={sse.drops[:2]}; "
        f"WS connects={ws.connects} replays={ws.replays}"
    )
    assert not problems, problems[:20]
    assert not lost, lost[:20]


# --- 5. Streams opened while Redis is away ---------------------------------------------------------


class SSEReader:
    """An open SSE stream read in the background: the event kinds, and how it ended."""

    def __init__(self, resp: httpx.Response):
        self.resp, self.kinds, self.ended = resp, [], None
        self.task = asyncio.get_running_loop().create_task(self.read())

    async def read(self) -> None:
        try:
            async for line in self.resp.aiter_lines():
                if line.startswith("event:"):
                    self.kinds.append(line.partition(":")[2].strip())
            self.ended = "closed by the server"
        except Exception as exc:  # noqa: BLE001 - how it ended is the finding
            self.ended = repr(exc)[:200]

    async def wait(self, kinds: set[str], seconds: float) -> list[str]:
        start = len(self.kinds)
        await until(lambda: self.ended or set(self.kinds[start:]) & kinds, seconds)
        return self.kinds[start:]


async def messages(ws, kinds: set[str], seconds: float) -> list[str]:
    seen: list[str] = []
    deadline = now() + seconds
    while now() < deadline:
        try:
            kind = json.loads(await asyncio.wait_for(ws.recv(), deadline - now()))["type"]
        except TimeoutError:
            break
        seen.append(kind)
        if kind in kinds:
            break
    return seen


async def streams_through_outage(org: Org, redis_server: RedisServer, tmp_path, since: bool):
    """Open both streams while Redis is down; they must stay open and hear the next write."""
    server = await asyncio.to_thread(LiveServer, tmp_path, REDIS_URL=redis_server.url)
    headers = {"Authorization": f"Bearer {org.token}"}
    try:
        cursor = await initial_cursor(server.url, org)
        position = {"since": cursor} if since else {}
        await asyncio.to_thread(redis_server.kill)
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=30), headers=headers) as client,
            client.stream(
                "GET", f"{server.url}/api/events", params={"organizationId": org.id, **position}
            ) as resp,
            websockets.connect(
                server.url.replace("http://", "ws://") + "/ws/reactive/",
                additional_headers=headers,
            ) as ws,
        ):
            assert resp.status_code == 200
            sse = SSEReader(resp)
            subscribe = {"type": "subscribe", "id": "a", "name": "agents.getAll"}
            subscribe["input"] = {"organizationId": org.id}
            await ws.send(json.dumps({**subscribe, **position}))
            assert (await messages(ws, {"subscribed"}, 10))[-1:] == ["subscribed"]
            if since:  # a client that resumes also pings (client.js does, every 25 s)
                await ws.send(json.dumps({"type": "ping"}))
                assert "pong" in await messages(ws, {"pong"}, 5), "no answer to a ping"
            await sse.wait(set(), 1.5)  # a reset is fine, the end of the stream is not
            assert sse.ended is None, f"the SSE stream ended while Redis was away: {sse.ended}"
            await asyncio.to_thread(redis_server.start)
            resp_w = await client.post(
                f"{server.url}/api/rx/agents.update",
                json={"id": org.pool[0], "data": {"name": "after the outage"}},
            )
            assert resp_w.status_code == 200, resp_w.text
            told = await sse.wait({"invalidate", "reset"}, 15)
            assert {"invalidate", "reset"} & set(told), f"SSE heard nothing: {told} {sse.ended}"
            heard = await messages(ws, {"invalidate", "reset"}, 15)
            assert heard[-1:] in (["invalidate"], ["reset"]), f"WS heard nothing: {heard}"
            await stopped([sse.task])
    finally:
        await asyncio.to_thread(server.stop)
    record("streams opened in an outage", faults=1, requests=4, events=2)


async def test_streams_opened_while_redis_is_down(org_one, private_redis, tmp_path):
    """New streams without a position open during the outage and hear writes once it ends."""
    await streams_through_outage(org_one, private_redis, tmp_path, since=False)


async def test_streams_resumed_while_redis_is_down(org_one, private_redis, tmp_path):
    """Streams resuming from a position during the outage: a reset, not a dropped connection."""
    await streams_through_outage(org_one, private_redis, tmp_path, since=True)
