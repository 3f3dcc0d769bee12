"""Write cost: what capture and invalidation add to a mutation.

Runs the same mutation (agents.update through its reactive function, so input
validation, access check and transaction included) `--n` times with the
reactive layer's write capture installed and again with it removed, in one
process on one database, alternating rounds so drift hits both alike. The
ratio is reactive / plain; the target is under 1.3.

    python bench/writes.py [--n 2000] [--rounds 5] [--report] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, save_json, setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args()
    setup_django()
    from agency.models import Agent, Membership, Organization, User
    from reactive import capture
    from reactive.functions import registry

    user = User.objects.create_user("writer", password=None)
    org = Organization.objects.create(name="W", owner=user, database_name="bench_writes")
    Membership.objects.create(user=user, organization=org, role="owner")
    agents = Agent.objects.bulk_create(
        [Agent(organization=org, name=f"a{i}", role="r") for i in range(50)]
    )
    update = registry["agents.update"]

    def run(label: str) -> float:
        started = time.perf_counter()
        for i in range(args.n):
            agent = agents[i % len(agents)]
            update.execute({"id": str(agent.pk), "data": {"role": f"{label}{i}"}}, user=user)
        return (time.perf_counter() - started) / args.n * 1000

    run("warm")
    reactive_ms, plain_ms = [], []
    for _ in range(args.rounds):
        reactive_ms.append(run("r"))
        capture.uninstall()
        try:
            plain_ms.append(run("p"))
        finally:
            capture.install()
    r, p = statistics.median(reactive_ms), statistics.median(plain_ms)
    print(f"reactive {r:.3f} ms/write, plain {p:.3f} ms/write, ratio {r / p:.2f} (target < 1.30)")
    table = (
        "| mutation | with capture (ms) | without (ms) | ratio (target < 1.30) |\n"
        "|---|---:|---:|---:|\n"
        f"| agents.update | {r:.3f} | {p:.3f} | {r / p:.2f} |"
    )
    command = command_line("writes.py")
    if args.report:
        append_report(
            "Write cost of capture and invalidation",
            command,
            f"Median of {args.rounds} rounds of {args.n} writes each.\n\n{table}",
        )
    row = {"mutation": "agents.update", "with_capture_ms": r, "without_ms": p, "ratio": r / p}
    row |= {"rounds_with_ms": reactive_ms, "rounds_without_ms": plain_ms}
    save_json(args.json, "writes", command, [row])


if __name__ == "__main__":
    main()
