"""Write cost: what the database triggers and the writer's drain add to a write.

Four write paths on agency's Agent, each `--n` times per round (bulk_create
`--n / 10` times), in one process on one database:

- ``save``: ``Model.save()`` of an existing row (one UPDATE);
- ``update``: ``QuerySet.update()`` of 10 rows (one UPDATE, 10 change rows);
- ``bulk_create``: ``bulk_create()`` of 100 new rows (one INSERT, 100 change rows;
  the rows are deleted after each round, outside the timing);
- ``agents.update``: the mutation through its reactive function (input
  validation, access check, transaction, save).

*With capture* is the shipped state: the triggers write one change row per
changed row, and capture's execute wrapper drains them (bump the tag
versions, append the event) right after the autocommit write or on commit.
*Plain* has neither: ``capture.uninstall()`` and ``triggers.uninstall()``
(which drops the triggers and the change table), and a read policy that
allows every read (capture's own, which apps.py installs, stays otherwise);
``triggers.install()``, ``capture.install()`` and capture's read policy
restore them. A third mode, *triggers only*, has the triggers and nothing
that drains their rows: the database's share of the cost. The modes
alternate within every round (in reverse order every other round), so drift
hits all alike; the ratio is the median with capture over the median plain,
and its target is at most 1.3. Runs with DEBUG=0 (bench/production.py).

    python bench/writes.py [--n 500] [--rounds 7] [--paths save update ...] [--report] [--json FILE]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, mode, save_json, setup_django  # noqa: E402
from production import production_env  # noqa: E402

PATHS = ("save", "update", "bulk_create", "agents.update")
UPDATE_ROWS = 10
BULK_ROWS = 100
TARGET = 1.3
MODES = ("capture", "triggers", "plain")
PUBLISHING = ("capture", "drainer")  # the modes whose writes publish events


class ErrorCount(logging.Handler):
    """Counts the errors a logger reports."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class Bench:
    """The world the paths write to, and the switch between the modes."""

    def __init__(self, n: int):
        from django.db import connection

        from agency.models import Agent, Membership, Organization, User
        from reactive.functions import registry

        self.Agent, self.conn, self.n = Agent, connection, n
        self.user = User.objects.create_user("writer", password=None)
        self.org = Organization.objects.create(
            name="W", owner=self.user, database_name="bench_writes"
        )
        self.bulk_org = Organization.objects.create(
            name="B", owner=self.user, database_name="bench_bulk"
        )
        Membership.objects.create(user=self.user, organization=self.org, role="owner")
        self.agents = Agent.objects.bulk_create(
            [Agent(organization=self.org, name=f"a{i}", role="r") for i in range(50)]
        )
        self.ids = [a.pk for a in self.agents]
        self.update = registry["agents.update"]
        self.mode = "capture"  # migrate installed the triggers; the app installed capture
        self.drainer = None

    # --- the modes -----------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        """Switch to one of MODES; the change table starts empty in every mode that has one."""
        from reactive import capture, drain, triggers
        from reactive.cache import set_read_policy

        if mode == self.mode:
            return
        alias = self.conn.alias
        if self.drainer is not None:
            self.drainer.stop()
            self.drainer = None
        capture.uninstall()
        # capture.uninstall() leaves capture's read policy (apps.py installs it); without
        # the execute wrapper it sees stale per-connection state and would drain on commit.
        set_read_policy(lambda tags: (True, True))
        triggers.uninstall(alias)
        if mode != "plain":
            triggers.install(alias)
            drain.forget_ready()
            # The change table is new and its ids start again at 1: a local-mode
            # process's high-water mark from before would hide every new row.
            drain._marks.pop(alias, None)
        if mode in PUBLISHING:
            capture.install()
            set_read_policy(capture.read_policy)
        if mode == "drainer":
            from reactive.drainer import Drainer

            self.drainer = Drainer(alias)
            self.drainer.start()
            time.sleep(0.5)  # its connection and LISTEN
        self.mode = mode

    def last_event(self) -> tuple[str, str]:
        from reactive.log import get_log

        log = get_log()
        return log.last_id(str(self.org.pk)), log.last_id(str(self.bulk_org.pk))

    def pending(self) -> int | None:
        """Change rows left undrained (shared drain mode; None in local mode, which keeps rows)."""
        from reactive import drain

        if drain.is_local():
            return None
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM reactive_change")
            return cursor.fetchone()[0]

    # --- the paths: each returns the seconds its timed writes took ---------------------

    def run(self, path: str, label: str) -> tuple[float, int]:
        """(seconds of the timed writes, how many) for one path."""
        clock, n = time.perf_counter, self.n
        agents, ids = self.agents, self.ids
        spent = 0.0
        if path == "save":
            for i in range(n):
                agent = agents[i % len(agents)]
                agent.role = f"{label}{i}"
                t0 = clock()
                agent.save()
                spent += clock() - t0
            return spent, n
        if path == "update":
            manager = self.Agent.objects
            for i in range(n):
                start = (i * UPDATE_ROWS) % len(ids)
                chunk = (ids + ids)[start : start + UPDATE_ROWS]
                t0 = clock()
                manager.filter(pk__in=chunk).update(role=f"{label}{i}")
                spent += clock() - t0
            return spent, n
        if path == "bulk_create":
            count = max(1, n // 10)
            for i in range(count):
                rows = [
                    self.Agent(organization=self.bulk_org, name=f"{label}{i}.{j}", role="b")
                    for j in range(BULK_ROWS)
                ]
                t0 = clock()
                self.Agent.objects.bulk_create(rows)
                spent += clock() - t0
            self.Agent.objects.filter(organization=self.bulk_org)._raw_delete(self.conn.alias)
            return spent, count
        if path == "agents.update":
            for i in range(n):
                agent = agents[i % len(agents)]
                t0 = clock()
                self.update.execute(
                    {"id": str(agent.pk), "data": {"role": f"{label}{i}"}}, user=self.user
                )
                spent += clock() - t0
            return spent, n
        raise ValueError(path)

    def statements(self, path: str) -> float:
        """SQL statements per write of `path` in the current mode (an untimed pass)."""
        seen = [0]

        def count(execute, sql, params, many, context):
            seen[0] += 1
            return execute(sql, params, many, context)

        saved, self.n = self.n, 20
        try:
            with self.conn.execute_wrapper(count):
                # bulk_create deletes its rows at the end: not a write of the path
                _, ops = self.run(path, "s")
        finally:
            self.n = saved
        return (seen[0] - (1 if path == "bulk_create" else 0)) / ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="writes per path and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument(
        "--no-triggers-only",
        dest="triggers_only",
        action="store_false",
        help="skip the third mode (triggers without capture)",
    )
    parser.add_argument(
        "--drainer",
        action="store_true",
        help="a fourth mode: with capture and a Drainer thread in this process (a server's)",
    )
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args()
    production_env()
    setup_django()
    from reactive import drain

    errors = ErrorCount()  # a drain that fails logs and goes on: the run must not
    logging.getLogger("reactive").addHandler(errors)
    modes = MODES if args.triggers_only else ("capture", "plain")
    if args.drainer:
        modes = ("drainer", *modes)
    bench = Bench(args.n)
    for path in args.paths:  # warm up every mode (code paths, statement caches)
        for m in modes:
            bench.set_mode(m)
            bench.run(path, "warm")
    statements = {}
    for m in modes:
        bench.set_mode(m)
        statements[m] = {path: bench.statements(path) for path in args.paths}

    ms: dict[tuple[str, str], list[float]] = {(p, m): [] for p in args.paths for m in modes}
    started = time.monotonic()
    for r in range(args.rounds):
        order = modes if r % 2 == 0 else tuple(reversed(modes))
        for m in order:
            bench.set_mode(m)
            before = bench.last_event()
            for path in args.paths:
                spent, ops = bench.run(path, f"{m[0]}{r}.")
                ms[path, m].append(spent / ops * 1000)
            published = bench.last_event() != before
            if published != (m in PUBLISHING):  # capture publishes; the others must not
                sys.exit(f"round {r}: mode {m}, but events published={published}")
            if m in PUBLISHING and bench.pending():
                sys.exit(f"round {r}: {bench.pending()} change rows left undrained")
        print(
            f"round {r + 1}/{args.rounds} (ms, {'/'.join(modes)}): "
            + ", ".join(
                f"{p} " + "/".join(f"{ms[p, m][-1]:.3f}" for m in modes) for p in args.paths
            )
            + f" ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    bench.set_mode("capture")
    if errors.count:
        sys.exit(f"the reactive layer logged {errors.count} errors: the numbers are void")

    rows = []
    for path in args.paths:
        med = {m: statistics.median(ms[path, m]) for m in modes}
        pairs = [a / b for a, b in zip(ms[path, "capture"], ms[path, "plain"], strict=True)]
        row = {
            "path": path,
            "ops_per_round": args.n if path != "bulk_create" else max(1, args.n // 10),
            "rows_per_op": {"update": UPDATE_ROWS, "bulk_create": BULK_ROWS}.get(path, 1),
            "with_capture_ms": med["capture"],
            "without_ms": med["plain"],
            "added_ms": med["capture"] - med["plain"],
            "ratio": med["capture"] / med["plain"],
            "round_ratios": pairs,
            "statements_with": statements["capture"][path],
            "statements_without": statements["plain"][path],
            "rounds_with_ms": ms[path, "capture"],
            "rounds_without_ms": ms[path, "plain"],
        }
        if "drainer" in modes:
            row["with_drainer_ms"] = med["drainer"]
            row["drainer_ratio"] = med["drainer"] / med["plain"]
            row["rounds_drainer_ms"] = ms[path, "drainer"]
        if "triggers" in modes:
            row["triggers_only_ms"] = med["triggers"]
            row["triggers_ratio"] = med["triggers"] / med["plain"]
            row["rounds_triggers_ms"] = ms[path, "triggers"]
        rows.append(row)
    labels = {
        "save": "`Model.save()`, existing row",
        "update": f"`QuerySet.update()`, {UPDATE_ROWS} rows",
        "bulk_create": f"`bulk_create()`, {BULK_ROWS} rows",
        "agents.update": "`agents.update` mutation",
    }
    trig, dr = "triggers" in modes, "drainer" in modes
    table = [
        "| write path | with capture (ms) | plain (ms) | added (ms) | "
        f"ratio (target ≤ {TARGET}) | ratio per round, min–max |"
        + (" with capture and a drainer (ms) | that / plain |" if dr else "")
        + (" triggers only (ms) | triggers only / plain |" if trig else "")
        + " SQL statements per write, with / plain |",
        "|---|---:|---:|---:|---:|---:|"
        + ("---:|---:|" if dr else "")
        + ("---:|---:|" if trig else "")
        + "---:|",
    ]
    for row in rows:
        table.append(
            f"| {labels[row['path']]} | {row['with_capture_ms']:.3f} | "
            f"{row['without_ms']:.3f} | {row['added_ms']:+.3f} | **{row['ratio']:.2f}** | "
            f"{min(row['round_ratios']):.2f}–{max(row['round_ratios']):.2f} | "
            + (f"{row['with_drainer_ms']:.3f} | {row['drainer_ratio']:.2f} | " if dr else "")
            + (f"{row['triggers_only_ms']:.3f} | {row['triggers_ratio']:.2f} | " if trig else "")
            + f"{row['statements_with']:.0f} / {row['statements_without']:.0f} |"
        )
    table = "\n".join(table)
    print(table)
    local = drain.is_local()
    drain_mode = "local (every process reads every row)" if local else "shared (claim and delete)"
    command = command_line("writes.py")
    if args.report:
        append_report(
            f"Write cost of the change capture ({mode()})",
            command,
            f"Median of {args.rounds} rounds, {args.n} writes per path and round"
            + (f" ({max(1, args.n // 10)} for bulk_create)" if "bulk_create" in args.paths else "")
            + ", the modes alternating within each round; "
            f"drain mode {drain_mode}. *With capture*: the triggers plus the writer's drain "
            "(claim, tags, cache bumps, event append); *plain*: no triggers, no change table, "
            "no capture (nor its read policy)"
            + (
                "; *with capture and a drainer*: the same with a Drainer thread running in the "
                "writing process, as in a server (on PostgreSQL each commit's NOTIFY wakes it)"
                if dr
                else ""
            )
            + (
                "; *triggers only*: the triggers write the change rows and nothing drains them "
                "(the database's share of the cost)"
                if trig
                else ""
            )
            + ". *SQL statements* counts every statement the connection ran per write, the "
            "drain's included (not the BEGIN and COMMIT of its claim).\n\n" + table,
        )
    save_json(args.json, "writes", command, rows, drain_mode=drain_mode)


if __name__ == "__main__":
    main()
