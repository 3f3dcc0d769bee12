"""Hit rate of the reactive cache on a read-heavy mixed workload, against the ideal.

Replays a seeded random workload over several organizations (Zipf-like
popularity; 90 % reads across five queries, 10 % writes across four
mutations) through the reactive functions. Next to every read it computes the
result fresh from the database and keeps an *ideal* cache that misses only
when the result really changed: the hit rate a perfect invalidator would get.
Every read is also checked against the fresh result: a stale read fails the run.

    python bench/hit_rate.py --orgs 10 100 1000 --ops 20000 [--report] [--json FILE]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, save_json, setup_django  # noqa: E402

READS = [
    ("agents.getAll", 35),
    ("agents.getOne", 20),
    ("messages.getAll", 20),
    ("tools.getAll", 15),
    ("organizations.getAll", 10),
]
WRITES = [
    ("agents.update", 40),
    ("messages.create", 40),
    ("tools.create", 10),
    ("agents.create", 10),
]


def seed(orgs: int, agents: int, rng: random.Random):
    from agency.models import Agent, Membership, Organization, Tool, User

    world = []
    for i in range(orgs):
        tag = f"{orgs}_{i}"  # several sizes share one database
        user = User.objects.create_user(f"bench{tag}", password=None)
        org = Organization.objects.create(
            name=f"Bench {tag}", owner=user, database_name=f"bench_{tag}"
        )
        Membership.objects.create(user=user, organization=org, role="owner")
        made = Agent.objects.bulk_create(
            [Agent(organization=org, name=f"agent {j}", role="worker") for j in range(agents)]
        )
        Tool.objects.bulk_create([Tool(organization=org, name=f"tool {j}") for j in range(5)])
        world.append((org, user, [str(a.pk) for a in made]))
    return world


def pick(weighted, rng):
    names, weights = zip(*weighted, strict=True)
    return rng.choices(names, weights)[0]


def read_input(name, org, agents, rng):
    if name == "agents.getOne":
        return {"id": rng.choice(agents[:10])}  # a few hot agents per organization
    if name == "organizations.getAll":
        return {}
    return {"organizationId": str(org.pk)}


def write(name, org, user, agents, rng, n):
    from reactive.functions import registry

    if name == "agents.update":
        registry[name].execute({"id": rng.choice(agents), "data": {"role": f"role {n}"}}, user=user)
    elif name == "messages.create":
        registry[name].execute(
            {
                "organizationId": str(org.pk),
                "fromAgentId": rng.choice(agents),
                "content": f"message {n}",
            },
            user=user,
        )
    elif name == "tools.create":
        registry[name].execute({"organizationId": str(org.pk), "name": f"tool {n}"}, user=user)
    else:
        made = registry[name].execute(
            {"organizationId": str(org.pk), "name": f"new {n}", "role": "worker"}, user=user
        )
        agents.append(made["id"])


def run(orgs: int, ops: int, agents: int, seed_value: int) -> dict:
    from reactive.functions import Context, registry

    rng = random.Random(seed_value)
    seeding = time.perf_counter()
    world = seed(orgs, agents, rng)
    seed_s = time.perf_counter() - seeding
    weights = [1 / (i + 1) for i in range(orgs)]  # Zipf-like organization popularity
    ideal: dict[str, object] = {}
    ours = ideal_hits = reads = stale = 0
    started = time.perf_counter()
    for n in range(ops):
        org, user, agent_ids = rng.choices(world, weights)[0]
        if rng.random() < 0.9:
            name = pick(READS, rng)
            fn = registry[name]
            raw = read_input(name, org, agent_ids, rng)
            ctx = Context(user=user)
            result = fn.call(raw, ctx)
            fresh = fn.handler(ctx, fn.parse_input(raw))
            reads += 1
            ours += result.hit
            stale += result.data != fresh
            if ideal.get(result.key, object()) == fresh:
                ideal_hits += 1
            ideal[result.key] = fresh
        else:
            write(pick(WRITES, rng), org, user, agent_ids, rng, n)
    elapsed = time.perf_counter() - started
    return {
        "orgs": orgs,
        "ops": ops,
        "reads": reads,
        "ours": ours / reads,
        "ideal": ideal_hits / reads,
        "stale": stale,
        "seconds": elapsed,
        "seed_seconds": seed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, nargs="+", default=[10])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results (for bench/plot.py) to this file")
    args = parser.parse_args()
    setup_django()
    rows = []
    for orgs in args.orgs:
        r = run(orgs, args.ops, args.agents, args.seed)
        rows.append(r)
        print(
            f"orgs={r['orgs']:>5} reads={r['reads']:>6} ours={r['ours']:.1%} "
            f"ideal={r['ideal']:.1%} gap={100 * (r['ideal'] - r['ours']):.1f} pts "
            f"stale={r['stale']} (seed {r['seed_seconds']:.1f} s, run {r['seconds']:.1f} s)",
            flush=True,
        )
    table = [
        "| organizations | operations | reads | hit rate (ours) | ideal | gap (points) | "
        "stale reads | seed (s) | run (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {r['orgs']} | {r['ops']} | {r['reads']} | {r['ours']:.1%} | {r['ideal']:.1%} | "
        f"{100 * (r['ideal'] - r['ours']):.1f} | {r['stale']} | {r['seed_seconds']:.0f} | "
        f"{r['seconds']:.0f} |"
        for r in rows
    ]
    print("\n".join(table))
    command = command_line("hit_rate.py")
    note = (
        "Each read is also computed fresh from the database, for the ideal and the stale "
        "check, so the run time is not the cost of the workload. *Run (s)* covers the "
        "operations, *seed (s)* the creation of the organizations."
    )
    if args.report:
        append_report(
            "Hit rate against the ideal invalidator", command, note + "\n\n" + "\n".join(table)
        )
    save_json(args.json, "hit_rate", command, rows, note=note)
    if any(r["stale"] for r in rows):
        sys.exit("stale reads observed")


if __name__ == "__main__":
    main()
