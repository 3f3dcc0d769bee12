"""Issue 8, concurrency and rollbacks: the cache never outlives a committed write.

- Concurrency: generated operation plans (hypothesis, fixed seed) run on a small
  world (two organizations, a few users, agents, tools, messages, memberships)
  from four writer and four reader threads at once, each on its own database
  connection. Writers use the agency mutations and the raw ORM write paths;
  readers call every query function through the cache. Once all threads have
  joined, every query answered through the cache must equal the same query run
  with the cache bypassed, for every organization, agent and user involved.
- Rollbacks: a mutation that fails after writing, a savepoint that rolls back,
  and every mutation of the registry called with invalid input publish nothing
  and leave the rows, the log position and every cache entry as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import traceback
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.apps import apps
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, OperationalError, connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import agency.functions  # noqa: F401  (declares the functions)
from agency.models import (
    Agent,
    Cron,
    Membership,
    Message,
    MessageType,
    Organization,
    Tool,
    ToolType,
    User,
)
from reactive.cache import Lookup, dumps, reactive_cache
from reactive.errors import Conflict, InvalidInput, ReactiveError
from reactive.functions import Context, ReactiveFunction, registry
from reactive.log import get_log
from tests.report import record

# Every test runs against Django alone and through the fast lane (tests/conftest.py `lane`).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("lane")]

WRITERS, READERS = 4, 4
RUN_SECONDS = 6.0  # a writer stops early past this; a thread that outlives 4x is a hang
JOIN_SECONDS = 60.0
# Plans per run: small and seeded in CI; raise it to hunt for races locally.
EXAMPLES = int(os.environ.get("TEAMHUB_CONSISTENCY_EXAMPLES", "8"))


# --- bypassing the cache -----------------------------------------------------------------


def _uncached(key, tags, compute, position, ttl=None):
    data = compute()
    return Lookup(dumps(data).encode(), "", hit=False, _data=data)


@contextmanager
def cache_bypassed():
    """Every fetch (queries and nested helpers such as membership lookups) computes afresh.

    Only for single-threaded use: it patches the process's cache object.
    """
    with mock.patch.object(reactive_cache(), "fetch", _uncached):
        yield


def _normal(value: Any) -> Any:
    """Results compared regardless of the order of rows with equal sort keys."""
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def outcome(fn: ReactiveFunction, raw: dict, user: User) -> tuple[str, Any]:
    """What a caller gets: the data, or the error it maps to."""
    try:
        return "ok", _normal(json.loads(dumps(fn.call(raw, Context(user=user)).data)))
    except ReactiveError as exc:
        return "error", type(exc).__name__


# --- the world ---------------------------------------------------------------------------


@dataclass
class World:
    """One example's rows; ids only grow (deleted ones stay, to be read as gone)."""

    tag: str
    orgs: list[Any]
    owners: list[User]
    guests: list[User]  # members or not, as the writers toggle them
    tool_types: list[str]
    message_type: str
    agents: list[Any] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    crons: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def users(self) -> list[User]:
        return self.owners + self.guests

    def pick(self, items: list, n: int) -> Any:
        with self.lock:
            return items[n % len(items)] if items else None

    def add(self, items: list, *ids: Any) -> None:
        with self.lock:
            items.extend(ids)


def build_world() -> World:
    tag = uuid.uuid4().hex[:8]
    owners = [User.objects.create(username=f"own{i}-{tag}") for i in range(2)]
    guests = [User.objects.create(username=f"guest{i}-{tag}") for i in range(2)]
    orgs = []
    for i, owner in enumerate(owners):
        org = Organization.objects.create(
            name=f"Org {i}", owner=owner, database_name=f"cons_{tag}_{i}"
        )
        Membership.objects.create(user=owner, organization=org, role="owner")
        orgs.append(org.pk)
    Membership.objects.create(user=guests[0], organization_id=orgs[0])
    Membership.objects.create(user=guests[0], organization_id=orgs[1])
    Membership.objects.create(user=guests[1], organization_id=orgs[1])
    tool_types = []
    for i in range(2):
        ToolType.objects.create(slug=f"tt-{tag}-{i}", name=f"type {i}")
        tool_types.append(f"tt-{tag}-{i}")
    MessageType.objects.create(slug=f"mt-{tag}", name="chat")
    world = World(tag, orgs, owners, guests, tool_types, f"mt-{tag}")
    for i, org in enumerate(orgs):
        tools = [Tool.objects.create(organization_id=org, name=f"tool {i}.{j}") for j in range(2)]
        agents = [
            Agent.objects.create(organization_id=org, name=f"agent {i}.{j}", role="r")
            for j in range(3)
        ]
        agents[0].tools.add(*tools)
        agents[1].tools.add(tools[0])
        world.add(world.tools, *(t.pk for t in tools))
        world.add(world.agents, *(a.pk for a in agents))
        for j in range(2):
            message = Message.objects.create(
                organization_id=org, from_agent=agents[j], to_agent=agents[2], content=f"m{j}"
            )
            world.add(world.messages, message.pk)
        cron = Cron.objects.create(
            organization_id=org, agent=agents[0], schedule="0 9 * * *", armed_at=ARMED
        )
        world.add(world.crons, cron.pk)
    return world


ARMED = datetime(2030, 1, 7, 10, 30, tzinfo=UTC)  # crons count from a fixed time: reads agree
TIME_ZONES = ("Europe/Berlin", "Asia/Tokyo", "")  # "" is UTC


# --- writes ------------------------------------------------------------------------------


def mutate(name: str, raw: dict, user: User) -> Any:
    return registry[name].call(raw, Context(user=user)).data


def w_agents_create(w: World, a: int, b: int, c: int) -> None:
    org = w.pick(w.orgs, a)
    tools = list(Tool.objects.filter(organization_id=org).values_list("pk", flat=True)[:2])
    raw = {"organizationId": str(org), "name": f"new {a}", "role": "r"}
    if b % 2:
        raw["toolIds"] = [str(t) for t in tools[: 1 + c % 2]]
    user = w.users[b % len(w.users)] if c % 3 == 0 else w.owners[a % len(w.orgs)]
    w.add(w.agents, uuid.UUID(mutate("agents.create", raw, user)["id"]))


def w_agents_update(w: World, a: int, b: int, c: int) -> None:
    agent = w.pick(w.agents, a)
    org = Agent.objects.filter(pk=agent).values_list("organization_id", flat=True).first()
    data: dict[str, Any] = {"name": f"renamed {b}", "temperature": (c % 20) / 10}
    if b % 2:
        tools = Tool.objects.filter(organization_id=org).values_list("pk", flat=True)
        data["toolIds"] = [str(t) for t in list(tools)[: c % 3]]
    if c % 5 == 0:
        data["isActive"] = bool(b % 3)
    owner = w.owners[w.orgs.index(org)] if org in w.orgs else w.owners[0]
    mutate("agents.update", {"id": str(agent), "data": data}, owner)


def w_agents_delete(w: World, a: int, b: int, c: int) -> None:
    agent = w.pick(w.agents, a)
    mutate("agents.delete", {"id": str(agent)}, w.users[b % len(w.users)])


def w_tools_create(w: World, a: int, b: int, c: int) -> None:
    org = w.pick(w.orgs, a)
    raw = {"organizationId": str(org), "name": f"tool {b}"}
    if c % 2:
        raw["toolType"] = w.tool_types[b % 2]
    w.add(w.tools, uuid.UUID(mutate("tools.create", raw, w.owners[a % 2])["id"]))


def w_tools_update(w: World, a: int, b: int, c: int) -> None:
    tool = w.pick(w.tools, a)
    data: dict[str, Any] = {"name": f"tool renamed {b}"}
    if c % 2:
        data["toolType"] = w.tool_types[c % 2] if c % 3 else None
    mutate("tools.update", {"id": str(tool), "data": data}, w.users[b % len(w.users)])


def w_tools_delete(w: World, a: int, b: int, c: int) -> None:
    mutate("tools.delete", {"id": str(w.pick(w.tools, a))}, w.users[b % len(w.users)])


def w_messages_create(w: World, a: int, b: int, c: int) -> None:
    org = w.pick(w.orgs, c)
    raw = {
        "organizationId": str(org),
        "fromAgentId": str(w.pick(w.agents, a)),
        "content": f"hello {c}",
    }
    if b % 2:
        raw["toAgentId"] = str(w.pick(w.agents, b))
    if c % 2:
        raw["messageType"] = w.message_type
    w.add(w.messages, uuid.UUID(mutate("messages.create", raw, w.owners[c % 2])["id"]))


def w_crons_create(w: World, a: int, b: int, c: int) -> None:
    agent = w.pick(w.agents, a)
    org = Agent.objects.filter(pk=agent).values_list("organization_id", flat=True).first()
    raw = {"organizationId": str(org or w.pick(w.orgs, a)), "agentId": str(agent)}
    made = mutate("crons.create", {**raw, "schedule": f"{b % 60} * * * *"}, w.users[c % 4])
    w.add(w.crons, made["id"])


def w_crons_update(w: World, a: int, b: int, c: int) -> None:
    """A new schedule, agent, or enabled state: each changes nextRunAt."""
    data = [
        {"schedule": f"{b % 60} {c % 24} * * *"},
        {"agentId": str(w.pick(w.agents, b))},
        {"enabled": bool(b % 2)},
    ][c % 3]
    mutate("crons.update", {"id": str(w.pick(w.crons, a)), "data": data}, w.users[b % 4])


def w_crons_delete(w: World, a: int, b: int, c: int) -> None:
    mutate("crons.delete", {"id": str(w.pick(w.crons, a))}, w.users[b % len(w.users)])


def w_cron_ran(w: World, a: int, b: int, c: int) -> None:
    """What a run of the scheduler writes (another process, as far as the cache knows)."""
    ran = ARMED + timedelta(hours=b % 48, minutes=c % 60)
    Cron.objects.filter(pk=w.pick(w.crons, a)).update(last_run_at=ran)


def w_org_time_zone(w: World, a: int, b: int, c: int) -> None:
    """The organization's time zone: every nextRunAt of its crons moves."""
    org = Organization.objects.get(pk=w.pick(w.orgs, a))
    org.settings = {"timeZone": TIME_ZONES[b % len(TIME_ZONES)]}
    org.save()


def w_update_agents_of_org(w: World, a: int, b: int, c: int) -> None:
    Agent.objects.filter(organization_id=w.pick(w.orgs, a)).update(role=f"role {b}")


def w_move_agent_save(w: World, a: int, b: int, c: int) -> None:
    agent = Agent.objects.get(pk=w.pick(w.agents, a))
    agent.organization_id = w.pick(w.orgs, b)
    agent.name = f"moved {c}"
    agent.save()


def w_move_agent_update(w: World, a: int, b: int, c: int) -> None:
    Agent.objects.filter(pk=w.pick(w.agents, a)).update(organization_id=w.pick(w.orgs, b))


def w_move_tool(w: World, a: int, b: int, c: int) -> None:
    Tool.objects.filter(pk=w.pick(w.tools, a)).update(organization_id=w.pick(w.orgs, b))


def w_move_message(w: World, a: int, b: int, c: int) -> None:
    Message.objects.filter(pk=w.pick(w.messages, a)).update(organization_id=w.pick(w.orgs, b))


def w_bulk_create_agents(w: World, a: int, b: int, c: int) -> None:
    org = w.pick(w.orgs, a)
    made = Agent.objects.bulk_create(
        [Agent(organization_id=org, name=f"bulk {b}.{i}", role="r") for i in range(1 + c % 2)]
    )
    w.add(w.agents, *(m.pk for m in made))


def w_bulk_create_messages(w: World, a: int, b: int, c: int) -> None:
    sender = Agent.objects.get(pk=w.pick(w.agents, a))
    made = Message.objects.bulk_create(
        [
            Message(
                organization_id=sender.organization_id,
                from_agent=sender,
                to_agent_id=w.pick(w.agents, b) if c % 2 else None,
                content=f"bulk {i}",
            )
            for i in range(2)
        ]
    )
    w.add(w.messages, *(m.pk for m in made))


def w_bulk_update_agents(w: World, a: int, b: int, c: int) -> None:
    rows = list(Agent.objects.filter(pk__in=[w.pick(w.agents, a), w.pick(w.agents, a + 1)]))
    for row in rows:
        row.name = f"bulk renamed {b}"
        if c % 2:
            row.organization_id = w.pick(w.orgs, b)
    Agent.objects.bulk_update(rows, ["name", "organization"])


def w_bulk_update_messages(w: World, a: int, b: int, c: int) -> None:
    rows = list(Message.objects.filter(pk__in=[w.pick(w.messages, a), w.pick(w.messages, b)]))
    for row in rows:
        row.content = f"edited {c}"
        if c % 2:
            row.to_agent_id = w.pick(w.agents, c)
    Message.objects.bulk_update(rows, ["content", "to_agent"])


def w_delete_messages(w: World, a: int, b: int, c: int) -> None:
    Message.objects.filter(from_agent_id=w.pick(w.agents, a)).delete()


def w_delete_agent_qs(w: World, a: int, b: int, c: int) -> None:
    Agent.objects.filter(pk=w.pick(w.agents, a)).delete()


def w_delete_tool_qs(w: World, a: int, b: int, c: int) -> None:
    Tool.objects.filter(pk=w.pick(w.tools, a)).delete()


def w_m2m_add(w: World, a: int, b: int, c: int) -> None:
    Agent.objects.get(pk=w.pick(w.agents, a)).tools.add(w.pick(w.tools, b))


def w_m2m_remove_reverse(w: World, a: int, b: int, c: int) -> None:
    Tool.objects.get(pk=w.pick(w.tools, b)).agents.remove(w.pick(w.agents, a))


def w_m2m_set_or_clear(w: World, a: int, b: int, c: int) -> None:
    agent = Agent.objects.get(pk=w.pick(w.agents, a))
    if c % 2:
        agent.tools.clear()
    else:
        agent.tools.set([w.pick(w.tools, b), w.pick(w.tools, b + 1)])


def w_membership_toggle(w: World, a: int, b: int, c: int) -> None:
    user, org = w.guests[a % len(w.guests)], w.pick(w.orgs, b)
    found = Membership.objects.filter(user=user, organization_id=org)
    if found.exists():
        found.delete()
    else:
        Membership.objects.create(user=user, organization_id=org)


def w_membership_role(w: World, a: int, b: int, c: int) -> None:
    role = ("member", "admin")[c % 2]
    Membership.objects.filter(user=w.guests[a % len(w.guests)]).update(role=role)


def w_rename_org(w: World, a: int, b: int, c: int) -> None:
    org = Organization.objects.get(pk=w.pick(w.orgs, a))
    org.name = f"Org renamed {b}"
    org.save()


def w_rename_tool_type(w: World, a: int, b: int, c: int) -> None:
    """A new slug (tools.getAll shows it): a table-level dependency of another model."""
    with w.lock:
        old, new = w.tool_types[a % 2], f"tt-{w.tag}-{a % 2}-{b}"
        w.tool_types[a % 2] = new
    if c % 2:
        ToolType.objects.filter(slug=old).update(slug=new, name=f"type {b}")
    else:
        row = ToolType.objects.filter(slug=old).first()
        if row is not None:
            row.slug = new
            row.save()


def w_rename_message_type(w: World, a: int, b: int, c: int) -> None:
    MessageType.objects.filter(slug__startswith=f"mt-{w.tag}").update(slug=f"mt-{w.tag}-{b}")
    with w.lock:
        w.message_type = f"mt-{w.tag}-{b}"


def w_rename_user(w: World, a: int, b: int, c: int) -> None:
    """A member's new name (memberships.getAll shows it; their user row is not the org's)."""
    user = User.objects.get(pk=w.users[a % len(w.users)].pk)
    user.display_name = f"person {b}"
    user.save()


def w_memberships_change(w: World, a: int, b: int, c: int) -> None:
    """memberships.add, .update or .remove of a guest, by the organization's owner."""
    guest, i = w.guests[a % len(w.guests)], b % len(w.orgs)
    org, owner = w.orgs[i], w.owners[i]
    found = Membership.objects.filter(user=guest, organization_id=org).values_list("pk", flat=True)
    row = found.first()
    role = ("member", "admin")[c % 2]
    if row is None:
        body = {"organizationId": str(org), "username": guest.username, "role": role}
        mutate("memberships.add", body, owner)
    elif c % 3:
        mutate("memberships.update", {"id": str(row), "role": role}, owner)
    else:
        mutate("memberships.remove", {"id": str(row)}, owner)


def w_organizations_update(w: World, a: int, b: int, c: int) -> None:
    i = a % len(w.orgs)
    data = {"name": f"Org updated {b}"} if c % 2 else {"settings": {"digest": b}}
    mutate("organizations.update", {"id": str(w.orgs[i]), "data": data}, w.owners[i])


def w_move_membership(w: World, a: int, b: int, c: int) -> None:
    row = Membership.objects.filter(user=w.guests[a % len(w.guests)]).first()
    if row is not None:
        row.organization_id = w.pick(w.orgs, b)
        row.role = ("member", "admin")[c % 2]
        row.save()


RAW = [
    w_update_agents_of_org,
    w_move_agent_save,
    w_move_agent_update,
    w_move_tool,
    w_move_message,
    w_bulk_create_agents,
    w_bulk_create_messages,
    w_bulk_update_agents,
    w_bulk_update_messages,
    w_delete_messages,
    w_delete_agent_qs,
    w_delete_tool_qs,
    w_m2m_add,
    w_m2m_remove_reverse,
    w_m2m_set_or_clear,
    w_membership_toggle,
    w_membership_role,
    w_rename_org,
    w_rename_tool_type,
    w_rename_message_type,
    w_move_membership,
    w_rename_user,
    w_cron_ran,
    w_org_time_zone,
]
MUTATIONS = [
    w_agents_create,
    w_agents_update,
    w_agents_delete,
    w_tools_create,
    w_tools_update,
    w_tools_delete,
    w_messages_create,
    w_crons_create,
    w_crons_update,
    w_crons_delete,
    w_memberships_change,
    w_organizations_update,
]


class Undo(Exception):
    """Raised inside a savepoint to roll it back."""


def w_atomic_mix(w: World, a: int, b: int, c: int) -> None:
    """Two raw writes in one transaction, a third in a savepoint that rolls back."""
    with transaction.atomic():
        RAW[a % len(RAW)](w, a, b, c)
        try:
            with transaction.atomic():
                RAW[b % len(RAW)](w, b, c, a)
                raise Undo
        except Undo:
            pass
        RAW[c % len(RAW)](w, c, a, b)


WRITES = {fn.__name__[2:]: fn for fn in [*MUTATIONS, *RAW, w_atomic_mix]}


# --- reads -------------------------------------------------------------------------------


def read_inputs(w: World, name: str, a: int, b: int) -> dict:
    org, agent, tool = w.pick(w.orgs, a), w.pick(w.agents, b), w.pick(w.tools, a + b)
    return {
        "organizations.getAll": {},
        "organizations.getOne": {"id": str(org)},
        "agents.getAll": {"organizationId": str(org)},
        "agents.getOne": {"id": str(agent)},
        "tools.getAll": {"organizationId": str(org)},
        "tools.getOne": {"id": str(tool)},
        "messages.getAll": {"organizationId": str(org)}
        if b % 3 == 0
        else {"organizationId": str(org), "agentId": str(agent)},
        "crons.getAll": {"organizationId": str(org)}
        if b % 2 == 0
        else {"organizationId": str(org), "agentId": str(agent)},
        "memberships.getAll": {"organizationId": str(org)},
        "organizations.getSettings": {"id": str(org)},
        "toolTypes.getAll": {},
        "messageTypes.getAll": {},
    }[name]


QUERIES = sorted(name for name, fn in registry.items() if fn.kind == "query")


def all_reads(w: World) -> list[tuple[str, dict]]:
    """Every query input the world can ask: each organization, agent, and pair of them."""
    reads: list[tuple[str, dict]] = [("organizations.getAll", {})]
    reads += [("toolTypes.getAll", {}), ("messageTypes.getAll", {})]
    for org in w.orgs:
        by_org = {"organizationId": str(org)}
        reads += [
            ("organizations.getOne", {"id": str(org)}),
            ("agents.getAll", by_org),
            ("tools.getAll", by_org),
            ("messages.getAll", by_org),
            ("crons.getAll", by_org),
            ("memberships.getAll", by_org),
            ("organizations.getSettings", {"id": str(org)}),
        ]
        reads += [("messages.getAll", {**by_org, "agentId": str(a)}) for a in w.agents]
        reads += [("crons.getAll", {**by_org, "agentId": str(a)}) for a in w.agents]
    reads += [("agents.getOne", {"id": str(a)}) for a in w.agents]
    reads += [("tools.getOne", {"id": str(t)}) for t in w.tools]
    return reads


# --- running a plan ----------------------------------------------------------------------

Op = tuple[str, int, int, int]
op_strategy = st.tuples(
    st.sampled_from(sorted(WRITES)), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)
)
read_strategy = st.tuples(st.sampled_from(QUERIES), st.integers(0, 99), st.integers(0, 99))
plan_strategy = st.tuples(
    st.lists(st.lists(op_strategy, min_size=8, max_size=16), min_size=WRITERS, max_size=WRITERS),
    st.lists(st.lists(read_strategy, min_size=4, max_size=8), min_size=READERS, max_size=READERS),
)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def crash(self, where: str) -> None:
        with self.lock:
            self.counts["crash"] += 1
            self.crashes.append(f"{where}\n{traceback.format_exc()}")


# PostgreSQL's deadlock, serialization failure, lock not available: a retryable conflict
RETRYABLE = {"40P01", "40001", "55P03"}


def is_locked(exc: BaseException) -> bool:
    """A write refused for contention (SQLite busy, PostgreSQL deadlock): the writer skips it."""
    if not isinstance(exc, OperationalError):
        return False
    return (
        "database is locked" in str(exc).lower()
        or getattr(exc.__cause__, "sqlstate", None) in RETRYABLE
    )


def run_write(w: World, op: Op, tally: Tally) -> None:
    name, a, b, c = op
    fn = WRITES[name]
    try:
        fn(w, a, b, c)
        tally.count("written")
    except ReactiveError:
        tally.count("refused")  # 4xx: not found, forbidden, invalid: expected under races
    except DatabaseError as exc:
        if is_locked(exc):
            tally.count("locked")
        elif fn in MUTATIONS:
            tally.crash(f"{op}")  # a mutation must answer 4xx, never a database error
        else:
            # a raw write racing a delete (foreign keys, unique) or another write (deadlock)
            tally.count("db-refused")
            tally.count(f"db:{type(exc).__name__}:{str(exc).splitlines()[0][:50]}")
    except ObjectDoesNotExist:
        if fn in MUTATIONS:
            tally.crash(f"{op}")
        else:
            tally.count("db-refused")
    except Exception:
        tally.crash(f"{op}")


def writer(w: World, ops: list[Op], tally: Tally, deadline: float) -> None:
    try:
        for op in ops:
            if time.monotonic() > deadline:
                tally.count("cut")
                break
            run_write(w, op, tally)
    finally:
        connections.close_all()


def reader(
    w: World, reads: list[tuple[str, int, int]], tally: Tally, done: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    try:
        i = 0
        while not done.is_set() or i < len(reads):
            name, a, b = reads[i % len(reads)]
            i += 1
            user = w.users[(a + b) % len(w.users)] if rng.random() < 0.3 else w.owners[a % 2]
            try:
                registry[name].call(read_inputs(w, name, a, b), Context(user=user))
                tally.count("read")
            except ReactiveError:
                tally.count("read-refused")
            except Exception:
                tally.crash(f"read {name}")
            if i > 2000:
                break
    finally:
        connections.close_all()


def stale_reads(w: World) -> list[str]:
    """Every query through the cache against the same query with the cache bypassed."""
    problems = []
    reads = all_reads(w)
    for user in w.users:
        cached_out = [outcome(registry[name], raw, user) for name, raw in reads]
        with cache_bypassed():
            fresh_out = [outcome(registry[name], raw, user) for name, raw in reads]
        for (name, raw), got, want in zip(reads, cached_out, fresh_out, strict=True):
            if got != want:
                problems.append(
                    f"{name} {raw} as {user.username}:\n  cached {got}\n  fresh  {want}"
                )
    return problems


def run_plan(plan) -> tuple[int, list[str], list[str], Counter]:
    writes, reads = plan
    w = build_world()
    tally = Tally()
    done = threading.Event()
    deadline = time.monotonic() + RUN_SECONDS
    writers = [
        threading.Thread(target=writer, args=(w, ops, tally, deadline), name=f"writer{i}")
        for i, ops in enumerate(writes)
    ]
    readers = [
        threading.Thread(target=reader, args=(w, ops, tally, done, i), name=f"reader{i}")
        for i, ops in enumerate(reads)
    ]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(JOIN_SECONDS)
    done.set()
    for t in readers:
        t.join(JOIN_SECONDS)
    hung = [t.name for t in writers + readers if t.is_alive()]
    assert not hung, f"threads still running: {hung}"
    problems = stale_reads(w)
    ops = sum(n for what, n in tally.counts.items() if ":" not in what)  # not the details
    return ops, problems, tally.crashes, tally.counts


@pytest.mark.timeout(240)  # ~10-30 s; each plan's writers stop after RUN_SECONDS anyway
def test_concurrent_writers_and_readers_leave_no_stale_cache():
    totals = Counter()
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(plan_strategy)
    def run(plan):
        ops, problems, crashes, counts = run_plan(plan)
        totals.update(counts)
        totals["requests"] += ops
        totals["stale"] += len(problems)
        if problems or crashes:
            failures.append("\n".join([f"plan {plan}", *problems[:10], *crashes[:5]]))

    known = {"organizations.getAll", "organizations.getOne", "agents.getAll", "agents.getOne"}
    known |= {"tools.getAll", "tools.getOne", "messages.getAll", "crons.getAll"}
    known |= {"memberships.getAll", "organizations.getSettings"}
    known |= {"toolTypes.getAll", "messageTypes.getAll"}
    assert set(QUERIES) == known, "a new query: teach read_inputs() and all_reads() to call it"
    started = time.monotonic()
    run()
    record(
        "concurrency",
        requests=totals["requests"],
        errors=totals["stale"] + totals["crash"],
    )
    print(f"concurrency: {dict(totals)} in {time.monotonic() - started:.1f}s")
    assert not failures, "\n\n".join(failures[:3])


# --- the races the plans found, one at a time ---------------------------------------------


@pytest.fixture
def pair(alice, org_a, org_b):
    """Alice sees both organizations; a third one ("elsewhere") is where rows get moved to."""
    Membership.objects.create(user=alice, organization=org_b)
    return alice, org_a, org_b


def agents_of(user, org) -> set[str]:
    fn = registry["agents.getAll"]
    return {a["id"] for a in fn.call({"organizationId": str(org.pk)}, Context(user=user)).data}


def tool_ids(user, agent) -> list[str]:
    return registry["agents.getOne"].call({"id": str(agent.pk)}, Context(user=user)).data["toolIds"]


def test_deleting_a_tool_invalidates_the_agents_that_listed_it(pair, agent_a, org_a):
    """Django deletes many-to-many rows without signals: the tool's agents must still miss."""
    user = pair[0]
    tool = Tool.objects.create(organization=org_a, name="t")
    agent_a.tools.add(tool)
    assert tool_ids(user, agent_a) == [str(tool.pk)]
    registry["tools.delete"].call({"id": str(tool.pk)}, Context(user=user))
    assert tool_ids(user, agent_a) == []


def test_links_tell_only_their_organization(pair, agent_a, org_a, published):
    """Many-to-many rows' tags go to the organization's stream, not the global one."""
    user = pair[0]
    tool = Tool.objects.create(organization=org_a, name="t")
    published.clear()
    agent_a.tools.add(tool)
    assert published and all(set(changes) == {str(org_a.pk)} for changes in published)
    published.clear()
    registry["tools.delete"].call({"id": str(tool.pk)}, Context(user=user))
    assert len(published) == 1
    assert set(published[0]) == {str(org_a.pk)}
    assert f"agency.agent:id={agent_a.pk}" in published[0][str(org_a.pk)]


def test_saving_a_stale_instance_invalidates_where_the_row_really_was(pair, agent_a):
    """The row moved after the instance was loaded: its save moves it back, from there."""
    user, org_a, org_b = pair
    stale = Agent.objects.get(pk=agent_a.pk)  # loaded in A
    Agent.objects.filter(pk=agent_a.pk).update(organization=org_b)
    assert str(agent_a.pk) in agents_of(user, org_b)  # cached: the agent is in B
    stale.name = "saved from a stale copy"
    stale.save()  # writes every field: the agent is back in A
    assert str(agent_a.pk) not in agents_of(user, org_b)
    assert str(agent_a.pk) in agents_of(user, org_a)


def test_deleting_a_stale_instance_invalidates_where_the_row_really_was(pair, agent_a):
    user, org_a, org_b = pair
    stale = Agent.objects.get(pk=agent_a.pk)
    Agent.objects.filter(pk=agent_a.pk).update(organization=org_b)
    assert str(agent_a.pk) in agents_of(user, org_b)
    stale.delete()
    assert agents_of(user, org_b) == set()


def test_bulk_updating_stale_instances_invalidates_where_the_rows_really_were(pair, agent_a):
    user, org_a, org_b = pair
    stale = list(Agent.objects.filter(pk=agent_a.pk))
    Agent.objects.filter(pk=agent_a.pk).update(organization=org_b)
    assert str(agent_a.pk) in agents_of(user, org_b)
    stale[0].name = "bulk from a stale copy"
    Agent.objects.bulk_update(stale, ["name", "organization"])  # back to A
    assert agents_of(user, org_b) == set()


def backend_pid() -> int:
    from django.db import connection

    connection.ensure_connection()
    return connection.connection.info.backend_pid


def wait_until_blocked(pid: int) -> None:
    """Until PostgreSQL backend `pid` waits for a row lock (bounded)."""
    from django.db import connection

    for _ in range(2000):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"backend {pid} never waited for a lock")


@pytest.mark.services
def test_queryset_update_racing_a_move_invalidates_the_row_where_it_really_was(pair, agent_a):
    """PostgreSQL: the update's own read must see the row as it is when it is written.

    A writer moves the agent to B (uncommitted); a QuerySet.update of the agent
    reads it in A, then waits for the row; the move commits and a reader caches
    B with the agent; the update commits: B must be invalidated.
    """
    user, org_a, org_b = pair
    org_c = Organization.objects.create(name="C", owner=user, database_name="race_c")
    Membership.objects.create(user=user, organization=org_c)
    pid: dict[str, int] = {}
    started, written, commit = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def updater():
        try:
            pid["updater"] = backend_pid()
            started.set()
            with transaction.atomic():
                Agent.objects.filter(pk=agent_a.pk).update(organization=org_c)
                written.set()
                assert commit.wait(10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=updater)
    with transaction.atomic():
        Agent.objects.filter(pk=agent_a.pk).update(organization=org_b)
        thread.start()
        assert started.wait(10)
        wait_until_blocked(pid["updater"])
    assert written.wait(10)
    seen = agents_of(user, org_b)  # the move is committed, the update is not
    commit.set()
    thread.join(10)
    assert not errors, errors
    assert str(agent_a.pk) in seen
    assert agents_of(user, org_b) == set(), "B still lists the agent the update moved to C"
    assert str(agent_a.pk) in agents_of(user, org_c)


# --- rollbacks, savepoints and failed mutations ----------------------------------------------


@pytest.fixture
def small_world(pair, agent_a, agent_b):
    """Both organizations with an agent, a tool each (linked), a message and a cron; Alice in
    both."""
    user, org_a, org_b = pair
    MessageType.objects.get_or_create(slug="chat", defaults={"name": "Chat"})
    ToolType.objects.get_or_create(slug="http", defaults={"name": "HTTP"})
    tools = []
    for org, agent in ((org_a, agent_a), (org_b, agent_b)):
        tools.append(Tool.objects.create(organization=org, name=f"tool of {org.name}"))
        agent.tools.add(tools[-1])
        Message.objects.create(organization=org, from_agent=agent, content="hi")
        Cron.objects.create(organization=org, agent=agent, schedule="0 9 * * *", armed_at=ARMED)
    reads = [("organizations.getAll", {}), ("toolTypes.getAll", {}), ("messageTypes.getAll", {})]
    for org, agent, tool in ((org_a, agent_a, tools[0]), (org_b, agent_b, tools[1])):
        by_org = {"organizationId": str(org.pk)}
        reads += [
            ("organizations.getOne", {"id": str(org.pk)}),
            ("agents.getAll", by_org),
            ("agents.getOne", {"id": str(agent.pk)}),
            ("tools.getAll", by_org),
            ("tools.getOne", {"id": str(tool.pk)}),
            ("messages.getAll", by_org),
            ("messages.getAll", {**by_org, "agentId": str(agent.pk)}),
            ("crons.getAll", by_org),
            ("memberships.getAll", by_org),
            ("organizations.getSettings", {"id": str(org.pk)}),
        ]
    assert {name for name, _ in reads} == set(QUERIES), "a query the test does not read"
    return user, org_a, org_b, agent_a, agent_b, reads


def checksum() -> str:
    """Every row of every agency table (many-to-many tables included)."""
    digest = hashlib.sha256()
    for model in sorted(
        apps.get_app_config("agency").get_models(include_auto_created=True),
        key=lambda m: m._meta.label,
    ):
        rows = model._base_manager.order_by("pk").values_list()
        digest.update(f"{model._meta.label}:{list(rows)!r}".encode())
    return digest.hexdigest()


def warm(user, reads) -> dict:
    """Cache every read; returns what each answered."""
    out = {}
    for name, raw in reads:
        registry[name].call(raw, Context(user=user))
        out[name, json.dumps(raw)] = registry[name].call(raw, Context(user=user)).data
    return out


def changed_entries(user, reads, before: dict) -> list[str]:
    """Reads that no longer hit, or hit with other data, than `before`."""
    problems = []
    for name, raw in reads:
        got = registry[name].call(raw, Context(user=user))
        if not got.hit or got.data != before[name, json.dumps(raw)]:
            problems.append(f"{name} {raw}: hit={got.hit}")
    return problems


@dataclass
class Snapshot:
    rows: str
    position: str
    entries: dict


def snapshot(user, reads) -> Snapshot:
    entries = warm(user, reads)
    return Snapshot(checksum(), get_log().position(), entries)


def differences(user, reads, before: Snapshot, published: list) -> list[str]:
    out = []
    if published:
        out.append(f"published {published}")
    if get_log().position() != before.position:
        out.append(f"log moved from {before.position} to {get_log().position()}")
    if checksum() != before.rows:
        out.append("agency rows changed")
    out += changed_entries(user, reads, before.entries)
    return out


def write_then(fail: BaseException | None, org_a, agent_b):
    """A mutation that writes in both organizations, then raises `fail`."""

    def handler(ctx, inp):
        Tool.objects.create(organization=org_a, name="written, then undone")
        agent = Agent.objects.get(pk=agent_b.pk)
        agent.name = "renamed, then undone"
        agent.save()
        agent.tools.clear()
        Message.objects.filter(organization=org_a).update(content="undone")
        if fail is not None:
            raise fail
        return {}

    return ReactiveFunction(name="test.writeThenFail", kind="mutation", handler=handler)


@pytest.mark.parametrize(
    "fail",
    [RuntimeError("a bug after the writes"), InvalidInput("a late validation error")],
    ids=["crash", "invalid"],
)
def test_mutation_failing_after_its_writes_changes_nothing(small_world, published, fail):
    user, org_a, org_b, agent_a, agent_b, reads = small_world
    before = snapshot(user, reads)
    published.clear()
    with pytest.raises(type(fail)):
        write_then(fail, org_a, agent_b).call({}, Context(user=user))
    problems = differences(user, reads, before, published)
    record("rollbacks", requests=1, errors=len(problems))
    assert not problems


def test_savepoint_rolled_back_inside_a_mutation_publishes_only_the_outer_writes(
    small_world, published
):
    """Inner blocks rolled back at several depths, before and after the outer writes."""
    user, org_a, org_b, agent_a, agent_b, reads = small_world

    def in_b(depth: int) -> None:
        """Write in B inside `depth` nested savepoints, then roll the outermost back."""
        try:
            with transaction.atomic():
                Agent.objects.filter(pk=agent_b.pk).update(name="undone")
                for _ in range(depth - 1):
                    with transaction.atomic():  # released, then undone with its parent
                        Tool.objects.create(organization=org_b, name="undone")
                        Agent.objects.get(pk=agent_b.pk).tools.clear()
                raise Undo
        except Undo:
            pass

    def handler(ctx, inp):
        in_b(1)  # before any outer write: the transaction's batch starts in a savepoint
        Tool.objects.create(organization=org_a, name="kept")
        in_b(3)
        Agent.objects.filter(pk=agent_a.pk).update(role="kept")
        in_b(2)
        return {}

    b_reads = [
        (n, r)
        for n, r in reads
        if str(org_b.pk) in json.dumps(r) or str(agent_b.pk) in json.dumps(r)
    ]
    before = warm(user, reads)
    published.clear()
    ReactiveFunction(name="test.savepoints", kind="mutation", handler=handler).call(
        {}, Context(user=user)
    )
    problems = []
    if len(published) != 1 or set(published[0]) != {str(org_a.pk)}:
        problems.append(f"published {published}")
    problems += changed_entries(user, b_reads, before)  # B's entries are all still hits
    fresh = registry["tools.getAll"].call({"organizationId": str(org_a.pk)}, Context(user=user))
    if fresh.hit or "kept" not in {t["name"] for t in fresh.data}:
        problems.append("A's tools were not invalidated")
    record("rollbacks", requests=1, errors=len(problems))
    assert not problems


def test_outer_rollback_drops_released_savepoints(small_world, published):
    """A savepoint that committed into a transaction that then rolls back publishes nothing."""
    user, org_a, org_b, agent_a, agent_b, reads = small_world
    before = snapshot(user, reads)
    published.clear()

    def handler(ctx, inp):
        with transaction.atomic():
            Agent.objects.filter(pk=agent_a.pk).update(name="released")
        with transaction.atomic(), transaction.atomic():
            Tool.objects.filter(organization=org_b).delete()
        raise Conflict("refused at the end")

    with pytest.raises(Conflict):
        ReactiveFunction(name="test.released", kind="mutation", handler=handler).call(
            {}, Context(user=user)
        )
    problems = differences(user, reads, before, published)
    record("rollbacks", requests=1, errors=len(problems))
    assert not problems


def wrong_everywhere(fn: ReactiveFunction) -> dict:
    """An input whose every field has a value no field type accepts."""
    return {name: [[{}]] for name in fn.input.model_fields}


def semantic_failures(org_a, org_b, agent_a, agent_b) -> dict[str, list[dict]]:
    """Inputs the schemas accept that the handlers refuse (422), some after writing."""
    unknown = str(uuid.uuid4())
    a = str(org_a.pk)
    return {
        "agents.create": [
            {"organizationId": a, "name": "n", "role": "r", "toolIds": [unknown]},
        ],
        "agents.update": [
            {"id": str(agent_a.pk), "data": {"name": "saved, then refused", "toolIds": [unknown]}},
        ],
        "tools.create": [{"organizationId": a, "name": "t", "toolType": "no-such-type"}],
        "tools.update": [
            {
                "id": str(Tool.objects.filter(organization=org_a).first().pk),
                "data": {"toolType": "nope"},
            }
        ],
        "messages.create": [
            {"organizationId": a, "fromAgentId": str(agent_b.pk), "content": "from B"},
            {
                "organizationId": a,
                "fromAgentId": str(agent_a.pk),
                "toAgentId": unknown,
                "content": "x",
            },
            {
                "organizationId": a,
                "fromAgentId": str(agent_a.pk),
                "content": "x",
                "messageType": "nope",
            },
        ],
        "organizations.create": [{"name": "x", "databaseName": "Not A Valid Name"}],
        "crons.create": [
            {"organizationId": a, "agentId": str(agent_b.pk), "schedule": "0 * * * *"}
        ],
        "crons.update": [
            {
                "id": str(Cron.objects.filter(organization=org_a).first().pk),
                "data": {"name": "refused", "agentId": str(agent_b.pk)},
            }
        ],
    }


def test_invalid_input_changes_nothing_for_every_mutation(small_world, published):
    user, org_a, org_b, agent_a, agent_b, reads = small_world
    mutations = sorted(name for name, fn in registry.items() if fn.kind == "mutation")
    semantic = semantic_failures(org_a, org_b, agent_a, agent_b)
    before = snapshot(user, reads)
    calls, problems = 0, []
    for name in mutations:
        fn = registry[name]
        for raw in [{}, wrong_everywhere(fn), *semantic.get(name, [])]:
            published.clear()
            calls += 1
            try:
                fn.call(raw, Context(user=user))
            except InvalidInput:
                pass
            except Exception as exc:
                problems.append(f"{name} {raw}: {type(exc).__name__} instead of InvalidInput")
            else:
                problems.append(f"{name} {raw}: accepted")
            problems += [f"{name} {raw}: {d}" for d in differences(user, reads, before, published)]
    record("rollbacks", requests=calls, errors=len(problems))
    assert not problems, "\n".join(problems)
