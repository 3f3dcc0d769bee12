"""Writes made outside the serving process: the change table and the drainer publish them.

No outside writer calls ``invalidate``: a write made by another OS process
(plain SQL through ``sqlite3``/``psycopg``, or the ORM in ``manage.py shell``)
leaves change rows that the database triggers wrote, and a drainer publishes them:

- a live server's drainer turns an outside write into an SSE event and a fresh
  read; a token revoked from another process stops working within seconds;
- (services) two drainers publish each change exactly once, and each committed
  transaction as one event per organization (as docs/reactive-functions.md says);
- a worker killed between its commit and its publish loses nothing;
- an idle drainer costs next to no CPU;
- a short randomized run: an outside writer thread commits renames while this
  process reads through the cache; once a write is acknowledged as drained, no
  read returns anything older (``record("outside writers", ...)``).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection, transaction

import agency.functions  # noqa: F401  (declares the functions)
from agency.models import Agent, ApiToken
from reactive import drain
from reactive.capture import invalidate
from reactive.drainer import Drainer
from reactive.functions import Context, registry
from reactive.log import get_log
from reactive.tables import CHANGE_TABLE
from tests.conftest import SERVICES
from tests.live import ROOT, SSE, LiveServer, server_env
from tests.report import record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

WAIT = 10.0  # seconds any one change may take to reach a reader (the old token TTL was 65 s)
SUBPROCESS_TIMEOUT = 60.0


def until(condition: Callable[[], bool], timeout: float = WAIT, every: float = 0.01) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def row_tag(agent: Any) -> str:
    return f"agency.agent:id={agent}"


# --- the database, seen from outside Django ---------------------------------------------------


def target() -> dict[str, str]:
    """Where the test database is, for a process or connection that is not Django's."""
    env = server_env()
    if "DATABASE_URL" in env:
        return {"vendor": "postgresql", "url": env["DATABASE_URL"]}
    return {"vendor": "sqlite", "path": env["SQLITE_PATH"]}


def key(pk: uuid.UUID) -> str:
    """A UUID primary key as the column stores it (SQLite: 32 hex digits)."""
    return pk.hex if target()["vendor"] == "sqlite" else str(pk)


def rename_sql(pk: uuid.UUID, name: str) -> tuple[str, list[Any]]:
    return "UPDATE agency_agent SET name = %s WHERE id = %s", [name, key(pk)]


# Run by `python -c` in a process of its own: one transaction of plain SQL, no Django.
OUTSIDE_SCRIPT = r"""
import json, sys
spec = json.loads(sys.argv[1])
if spec["vendor"] == "sqlite":
    import sqlite3
    conn = sqlite3.connect(spec["path"], timeout=20, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    for sql, params in spec["statements"]:
        conn.execute(sql.replace("%s", "?"), params)
    conn.execute("COMMIT")
    conn.close()
else:
    import psycopg
    with psycopg.connect(spec["url"]) as conn:  # commits when the block ends
        for sql, params in spec["statements"]:
            conn.execute(sql, params)
"""


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run `cmd` with the live servers' environment (database, cache, log), bounded in time."""
    return subprocess.run(
        cmd, cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def sql_in_another_process(*statements: tuple[str, list[Any]]) -> None:
    spec = {**target(), "statements": list(statements)}
    done = run([sys.executable, "-c", OUTSIDE_SCRIPT, json.dumps(spec)])
    assert done.returncode == 0, done.stderr


def manage(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(ROOT / "manage.py"), *args])


class Outside:
    """A connection of its own, outside Django (no execute wrapper, nothing drained on commit)."""

    def __init__(self) -> None:
        spec = target()
        self.vendor = spec["vendor"]
        if self.vendor == "sqlite":
            self.conn = sqlite3.connect(
                spec["path"], timeout=20, isolation_level=None, check_same_thread=False
            )
        else:
            import psycopg

            self.conn = psycopg.connect(spec["url"], autocommit=True)

    def write(self, *statements: tuple[str, list[Any]]) -> int:
        """Run `statements` in one transaction; returns the id of its last change row."""
        if self.vendor == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self.conn.execute(sql.replace("%s", "?"), params)
                # It holds the write lock: the newest change rows are its own.
                top = self.conn.execute(f"SELECT MAX(id) FROM {CHANGE_TABLE}").fetchone()[0]
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return int(top)
        with self.conn.transaction():
            for sql, params in statements:
                self.conn.execute(sql, params)
            top = self.conn.execute(
                f"SELECT MAX(id) FROM {CHANGE_TABLE} WHERE txid = pg_current_xact_id()::text::bigint"
            ).fetchone()[0]
        return int(top)

    def pending(self, at_most: int | None = None) -> int:
        """Committed change rows still in the table (up to id `at_most`)."""
        sql, params = f"SELECT COUNT(*) FROM {CHANGE_TABLE}", []
        if at_most is not None:
            sql += " WHERE id <= %s"
            params = [at_most]
        if self.vendor == "sqlite":
            sql = sql.replace("%s", "?")
        return int(self.conn.execute(sql, params).fetchone()[0])

    def drained(self, row: int) -> bool:
        """Whether change row `row` was published in this process (local) or by anyone (shared)."""
        if drain.is_local():
            return drain._marks.get(connection.alias, 0) >= row
        # Shared: rows are deleted in the transaction that publishes them.
        return self.pending(row) == 0

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def outside():
    conn = Outside()
    yield conn
    conn.close()


@pytest.fixture
def start_drainer():
    """Drainer threads in this process, stopped (and checked stopped) after the test."""
    started: list[Drainer] = []

    def start() -> Drainer:
        drainer = Drainer(connection.alias)
        drainer.start()
        started.append(drainer)
        return drainer

    yield start
    for drainer in started:
        drainer.stop(timeout=10)
    assert not any(d.is_alive() for d in started), "a drainer did not stop"


def call(name: str, raw: dict, user) -> Any:
    return registry[name].call(raw, Context(user=user))


def events_since(tenant: Any, since: str) -> list:
    return get_log().read([str(tenant)], int(since))


# --- through a live server --------------------------------------------------------------------


@pytest.fixture(scope="class")
def server(django_db_setup, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("drainer"))
    yield srv
    srv.stop()


def api(server: LiveServer, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url, timeout=WAIT, headers={"Authorization": f"Bearer {token}"}
    )


async def event_with(sse: SSE, tag: str, timeout: float = WAIT) -> dict:
    """The first `invalidate` event whose tags include `tag`, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no event with {tag} within {timeout}s")
        try:
            event = await asyncio.wait_for(sse.next(), left)
        except TimeoutError:
            raise AssertionError(f"no event with {tag} within {timeout}s") from None
        if tag in event["json"]["tags"]:
            return event


def orm_rename_script(pk: uuid.UUID, name: str) -> str:
    return (
        "from agency.models import Agent\n"
        f"agent = Agent.objects.get(pk={str(pk)!r})\n"
        f"agent.name = {name!r}\n"
        "agent.save()\n"
    )


@pytest.mark.asyncio
class TestLiveServer:
    """A uvicorn process (its drainer started by the ASGI lifespan) on the test database."""

    @pytest.fixture
    def token(self, alice):
        return ApiToken.issue(alice, "drainer")

    @pytest.mark.parametrize("writer", ["sql", "orm"])
    async def test_outside_write_reaches_sse_and_the_next_read(
        self, server, token, org_a, agent_a, writer
    ):
        name = f"renamed by {writer} elsewhere"
        tag = row_tag(agent_a.pk)
        async with api(server, token[1]) as client:
            params = {"id": str(agent_a.pk)}
            first = await client.get("/api/rx/agents.getOne", params=params)
            assert first.status_code == 200, first.text
            again = await client.get("/api/rx/agents.getOne", params=params)
            # The server holds an entry that the outside write makes stale.
            assert again.headers.get("X-Reactive-Cache") == "hit"
            assert again.json()["data"]["name"] == "Agent A"
            since = {"organizationId": str(org_a.pk), "since": first.json()["cursor"]}
            async with SSE(client, since) as sse:
                assert sse.response.status_code == 200
                started = time.monotonic()
                if writer == "sql":
                    await asyncio.to_thread(sql_in_another_process, rename_sql(agent_a.pk, name))
                else:
                    done = await asyncio.to_thread(
                        manage, "shell", "-c", orm_rename_script(agent_a.pk, name)
                    )
                    assert done.returncode == 0, done.stderr
                written = time.monotonic()
                event = await event_with(sse, tag)
                latency = time.monotonic() - written
            assert event["json"]["organizationId"] == str(org_a.pk)
            after = await client.get("/api/rx/agents.getOne", params=params)
        assert after.status_code == 200 and after.json()["data"]["name"] == name
        print(
            f"\n{writer} write in another process: event {latency * 1000:.0f} ms after it "
            f"exited ({(written - started):.1f} s to run it)"
        )

    async def test_token_revoked_by_another_process_stops_working(self, server, token, org_a):
        row, raw = token
        params = {"organizationId": str(org_a.pk)}
        async with api(server, raw) as client:
            for _ in range(2):  # the second answer comes from the server's cached identity
                resp = await client.get("/api/rx/agents.getAll", params=params)
                assert resp.status_code == 200, resp.text
            async with SSE(client, params) as sse:
                assert sse.response.status_code == 200
                done = await asyncio.to_thread(manage, "api_token", "revoke", str(row.pk))
                assert done.returncode == 0, done.stderr
                revoked = time.monotonic()
                # The open stream re-checks on the token's event and ends.
                await asyncio.wait_for(sse.next("forbidden"), WAIT)
                ended = time.monotonic() - revoked
            deadline = revoked + WAIT
            while True:
                resp = await client.get("/api/rx/agents.getAll", params=params)
                if resp.status_code == 401:
                    break
                assert resp.status_code == 200, resp.text
                assert time.monotonic() < deadline, f"token still accepted after {WAIT}s"
                await asyncio.sleep(0.02)
            refused = time.monotonic() - revoked
        print(
            f"\nrevoked elsewhere: stream ended in {ended:.2f} s, requests refused in {refused:.2f} s"
        )


# --- drainer threads in this process ----------------------------------------------------------


def agent_tags(event) -> list[str]:
    return sorted(t for t in event.tags if t.startswith("agency.agent:id="))


@pytest.mark.services
def test_two_drainers_publish_each_change_exactly_once(start_drainer, outside, org_a, org_b):
    """Outside transactions (one row, two rows, two organizations), two drainers: no row twice."""
    assert SERVICES and not drain.is_local()
    single, double, cross = 60, 10, 10
    a = Agent.objects.bulk_create(
        Agent(organization=org_a, name=f"a{i}", role="r")
        for i in range(single + 2 * double + cross)
    )
    b = Agent.objects.bulk_create(
        Agent(organization=org_b, name=f"b{i}", role="r") for i in range(cross)
    )
    position = get_log().position()
    drainers = [start_drainer(), start_drainer()]
    plan: list[tuple[list[Agent], list[Agent]]] = [([x], []) for x in a[:single]]
    rest = a[single:]
    plan += [(rest[2 * i : 2 * i + 2], []) for i in range(double)]
    plan += [([x], [y]) for x, y in zip(rest[2 * double :], b, strict=True)]
    random.Random(3).shuffle(plan)
    rows = 0
    for n, (in_a, in_b) in enumerate(plan):
        outside.write(*(rename_sql(x.pk, f"n{n}") for x in in_a + in_b))
        rows += len(in_a) + len(in_b)
    assert until(lambda: outside.pending() == 0 and sum(d.drained for d in drainers) >= rows), (
        f"{outside.pending()} rows left, drained {[d.drained for d in drainers]} of {rows}"
    )
    counts = [d.drained for d in drainers]
    got_a, got_b = events_since(org_a.pk, position), events_since(org_b.pk, position)
    print(
        f"\n{len(plan)} transactions, {rows} rows: drained {counts}, events {len(got_a)}+{len(got_b)}"
    )
    assert sum(counts) == rows, f"rows published more than once: {counts} for {rows}"
    # Each row's tag in exactly one event, of its own organization.
    assert sorted(t for e in got_a for t in agent_tags(e)) == sorted(row_tag(x.pk) for x in a)
    assert sorted(t for e in got_b for t in agent_tags(e)) == sorted(row_tag(y.pk) for y in b)


@pytest.mark.services
def test_concurrent_drainers_publish_each_transaction_as_one_event(start_drainer, outside, org_a):
    """Documented: one committed transaction gives one event per organization it touched.

    Each outside transaction renames two agents with two statements (two change
    rows, one txid); two drainers race for them. A drainer must never publish
    part of a transaction while another publishes the rest.
    """
    transactions = 600
    pair = Agent.objects.bulk_create(
        Agent(organization=org_a, name=f"pair {i}", role="r") for i in range(2)
    )
    position = get_log().position()
    drainers = [start_drainer(), start_drainer()]
    for n in range(transactions):
        outside.write(*(rename_sql(x.pk, f"n{n}") for x in pair))
    assert until(
        lambda: outside.pending() == 0 and sum(d.drained for d in drainers) >= 2 * transactions
    ), f"{outside.pending()} rows left, drained {[d.drained for d in drainers]}"
    events = events_since(org_a.pk, position)
    split = [e for e in events if len(agent_tags(e)) != 2]
    print(
        f"\n{transactions} two-row transactions, drained {[d.drained for d in drainers]}: "
        f"{len(events)} events, {len(split)} with part of a transaction"
    )
    assert not split, (
        f"{len(split)} of {len(events)} events carry part of a transaction, e.g. "
        f"{[agent_tags(e) for e in split[:2]]}"
    )
    assert len(events) == transactions


@pytest.mark.services
def test_a_transaction_straddling_a_claim_batch_is_one_event(outside, org_a):
    """One drainer, no race: a transaction whose rows cross the claim's LIMIT is still one event."""
    first = drain.BATCH - 1
    agents = Agent.objects.bulk_create(
        Agent(organization=org_a, name=f"batch {i}", role="r") for i in range(first + 2)
    )
    position = get_log().position()
    bulk = [str(a.pk) for a in agents[:first]]
    outside.write(("UPDATE agency_agent SET role = 'bulk' WHERE id = ANY(%s::uuid[])", [bulk]))
    pair = agents[first:]
    outside.write(*(rename_sql(x.pk, "straddling") for x in pair))
    while drain.drain(connection.alias):  # the background drainer's call
        pass
    assert outside.pending() == 0
    events = events_since(org_a.pk, position)
    with_pair = [
        agent_tags(e) for e in events if set(agent_tags(e)) & {row_tag(x.pk) for x in pair}
    ]
    assert with_pair == [sorted(row_tag(x.pk) for x in pair)], (
        f"{len(events)} events; the two-row transaction's rows went to {len(with_pair)} events"
    )


def test_a_manual_invalidation_joins_its_transaction_event(agent_a, org_a):
    """A write and an ``invalidate()`` in one transaction: one event for the organization."""
    position = get_log().position()
    with transaction.atomic():
        Agent.objects.filter(pk=agent_a.pk).update(name="with a manual invalidation")
        invalidate("agency.tool", tenant=org_a.pk)
    events = events_since(org_a.pk, position)
    assert len(events) == 1, [e.tags for e in events]
    assert {row_tag(agent_a.pk), "agency.tool"} <= set(events[0].tags)


def test_worker_killed_between_commit_and_publish_loses_nothing(
    start_drainer, outside, alice, agent_a
):
    """The writer dies where it would publish: its change rows wait for any drainer."""
    assert call("agents.getOne", {"id": str(agent_a.pk)}, alice).data["name"] == "Agent A"
    assert call("agents.getOne", {"id": str(agent_a.pk)}, alice).hit
    position = get_log().position()
    before = outside.pending()
    script = (
        "import os, signal\n"
        "from reactive import drain\n"
        "drain.drain = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from agency.models import Agent\n"
        f"Agent.objects.filter(pk={str(agent_a.pk)!r}).update(name='written, then killed')\n"
        "print('not reached')\n"
    )
    done = manage("shell", "-c", script)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)
    assert "not reached" not in done.stdout
    assert Agent.objects.get(pk=agent_a.pk).name == "written, then killed"  # it had committed
    assert outside.pending() == before + 1, "the killed writer's change row is gone"
    stale = call("agents.getOne", {"id": str(agent_a.pk)}, alice)
    assert stale.hit and stale.data["name"] == "Agent A"  # nobody published it yet
    drainer = start_drainer()

    def fresh() -> bool:
        return call("agents.getOne", {"id": str(agent_a.pk)}, alice).data["name"] != "Agent A"

    assert until(fresh), f"not published within {WAIT}s"
    assert call("agents.getOne", {"id": str(agent_a.pk)}, alice).data["name"] == (
        "written, then killed"
    )
    assert until(lambda: drainer.drained >= 1)
    if not drain.is_local():
        assert outside.pending() == before, "the published row was not deleted"
    tags = [t for e in events_since(agent_a.organization_id, position) for t in e.tags]
    assert row_tag(agent_a.pk) in tags


def _thread_cpu(thread: threading.Thread) -> float:
    """Seconds of CPU (user + system) one thread of this process has used.

    The thread's own CPU clock where there is one (POSIX), else Linux's /proc
    (10 ms ticks), else the whole process's time (an upper bound).
    """
    if hasattr(time, "pthread_getcpuclockid"):
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    path = Path(f"/proc/self/task/{thread.native_id}/stat")
    if not path.exists():
        return _process_cpu()
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_an_idle_drainer_costs_next_to_no_cpu(start_drainer, outside, agent_a):
    window = 2.0
    drainer = start_drainer()
    row = outside.write(rename_sql(agent_a.pk, "wakes the drainer"))
    assert until(lambda: drainer.drained >= 1 and outside.drained(row))  # it runs, connected
    thread0, process0, wall0 = _thread_cpu(drainer), _process_cpu(), time.monotonic()
    time.sleep(window)  # the measurement window: nothing happens, by design
    wall = time.monotonic() - wall0
    thread = _thread_cpu(drainer) - thread0
    process = _process_cpu() - process0
    assert drainer.is_alive()
    share = thread / wall
    print(
        f"\nidle drainer (poll {drainer.poll:g} s): {thread * 1000:.1f} ms CPU in {wall:.2f} s "
        f"= {share:.2%} of a core (whole process {process * 1000:.0f} ms = {process / wall:.2%})"
    )
    assert share < 0.05
    assert process / wall < 0.10


# --- consistency with an outside writer ---------------------------------------------------------

AGENTS = 6
WRITES = 60
IN_FLIGHT_READS = 80  # reads while a write is in flight, at most (two more per write)


def test_outside_writers_never_leave_a_stale_read(start_drainer, alice, org_a):
    """Reads through the cache never return a value older than a write acknowledged as drained.

    A writer thread renames agents through its own connection (no Django, nothing
    drained on commit). A write is acknowledged once the drainer has published
    its change rows. Each read takes the acknowledged versions before it starts
    and must return, for every agent it shows, that version or a later one.
    """
    rng = random.Random(20240601)
    agents = [
        Agent.objects.create(organization=org_a, name=f"{k}:init", role="r") for k in range(AGENTS)
    ]
    ids = [str(a.pk) for a in agents]
    by_org = {"organizationId": str(org_a.pk)}
    history: dict[str, list[str]] = {i: [f"{k}:init"] for k, i in enumerate(ids)}
    acked: dict[str, int] = dict.fromkeys(ids, 0)  # agent -> index in history acknowledged
    lock = threading.Lock()
    acks: queue.Queue[list[str] | None] = queue.Queue()  # agents of each acknowledged write
    stop = threading.Event()
    problems: list[str] = []
    plan = [rng.sample(range(AGENTS), rng.choice((1, 1, 2))) for _ in range(WRITES)]
    start_drainer()
    for k in ids:  # warm: every read below may hit
        call("agents.getOne", {"id": k}, alice)
    call("agents.getAll", by_org, alice)
    latencies: list[float] = []

    def writer() -> None:
        out = Outside()
        try:
            for n, chosen in enumerate(plan):
                if stop.is_set():
                    return
                names = {ids[k]: f"{k}:w{n}" for k in chosen}
                with lock:  # a read may see it as soon as it commits
                    for agent, name in names.items():
                        history[agent].append(name)
                row = out.write(*(rename_sql(uuid.UUID(a), name) for a, name in names.items()))
                committed = time.monotonic()
                if not until(lambda row=row: out.drained(row), WAIT, every=0.002):
                    problems.append(f"write {n} (change row {row}) not drained in {WAIT}s")
                    return
                latencies.append(time.monotonic() - committed)
                with lock:
                    for agent in names:
                        acked[agent] = len(history[agent]) - 1
                acks.put(list(names))
        except Exception:
            problems.append(f"writer crashed:\n{traceback.format_exc()}")
        finally:
            out.close()
            acks.put(None)

    def check(what: str, agent: str, name: str, floor: int) -> None:
        with lock:
            versions = list(history[agent])
        if name not in versions:
            problems.append(f"{what}: {agent} read {name!r}, never written")
        elif versions.index(name) < floor:
            problems.append(f"{what}: stale {name!r}, {versions[floor]!r} was acknowledged")

    def read(name: str, agent: str) -> None:
        with lock:
            floors = dict(acked)  # what was acknowledged before the read starts
        try:
            if name == "agents.getOne":
                got = call(name, {"id": agent}, alice).data
                check(name, agent, got["name"], floors[agent])
                return
            shown = {row["id"]: row["name"] for row in call(name, by_org, alice).data}
            if set(shown) != set(ids):
                problems.append(f"{name} listed {sorted(shown)}")
            for each, value in shown.items():
                check(name, each, value, floors[each])
        except Exception:
            problems.append(f"{name} failed:\n{traceback.format_exc()}")

    thread = threading.Thread(target=writer, name="outside-writer", daemon=True)
    thread.start()
    reads = in_flight = 0
    try:
        deadline = time.monotonic() + WAIT * 3
        while True:
            assert time.monotonic() < deadline, "the writer hangs"
            try:
                acknowledged = acks.get(timeout=0.05 if in_flight < IN_FLIGHT_READS else WAIT)
            except queue.Empty:  # a write in flight: either version may be read
                read(rng.choice(("agents.getOne", "agents.getAll")), rng.choice(ids))
                reads += 1
                in_flight += 1
                continue
            if acknowledged is None:
                break
            # Right after the acknowledgement: the new version, through both functions.
            read("agents.getOne", rng.choice(acknowledged))
            read("agents.getAll", "")
            reads += 2
        thread.join(WAIT * 3)
        assert not thread.is_alive(), "the writer hangs"
    finally:
        stop.set()
    # Everything acknowledged: every read now answers the last write.
    for k, agent in enumerate(ids):
        got = call("agents.getOne", {"id": agent}, alice).data["name"]
        if got != history[agent][-1]:
            problems.append(f"final: agent {k} reads {got!r}, last written {history[agent][-1]!r}")
    listed = {r["id"]: r["name"] for r in call("agents.getAll", by_org, alice).data}
    if listed != {a: h[-1] for a, h in history.items()}:
        problems.append(f"final: agents.getAll reads {listed}")
    reads += 1 + AGENTS
    record("outside writers", requests=reads + len(latencies), errors=len(problems))
    if latencies:
        latencies.sort()
        print(
            f"\n{len(latencies)} outside writes, {reads} reads: drained in median "
            f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
    assert not problems, "\n".join(problems[:20])
