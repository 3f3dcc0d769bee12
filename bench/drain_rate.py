"""Drainer throughput and idle cost: how fast pending change rows are published.

Throughput: with no drainer running and the writer's drain off
(``capture.uninstall()``; the triggers stay), `--rows` agent rows are updated,
which leaves `--rows` change rows pending, then one loop of
``drain.drain()`` (what the drainer thread runs) is timed until it
finds nothing more. Two shapes of pending rows, alternating over `--rounds`:

- ``one``: one UPDATE of every row, one transaction (few events, many tags each);
- ``many``: one UPDATE per row, each its own transaction (autocommit): on
  PostgreSQL one event per transaction; SQLite names no transaction, so each
  drained batch makes one event.

Idle: the CPU (``getrusage``, user + system, of this whole process) over
`--idle` seconds with a running :class:`reactive.drainer.Drainer` thread and
nothing to drain, minus the same process idle without it, as a share of one
core. On PostgreSQL the drainer sleeps in LISTEN (2 s fallback poll); on SQLite
it polls every 0.1 s. Runs with DEBUG=0 (bench/production.py).

    python bench/drain_rate.py [--rows 20000] [--rounds 4] [--idle 10] [--report] [--json FILE]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, mode, save_json, setup_django  # noqa: E402
from production import production_env  # noqa: E402

SHAPES = ("one", "many")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def idle_share(seconds: float) -> float:
    """This process's CPU over `seconds` of sleep in the main thread, as a share of one core."""
    cpu0, t0 = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds() - cpu0) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000, help="pending change rows per drain")
    parser.add_argument("--rounds", type=int, default=4, help="drains per shape (alternating)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of each idle measure")
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args()
    production_env()
    setup_django()
    from django.db import connection

    from agency.models import Agent, Organization, User
    from reactive import capture, drain, events, publishing
    from reactive.drainer import Drainer

    alias = connection.alias
    user = User.objects.create_user("drain", password=None)
    org = Organization.objects.create(name="D", owner=user, database_name="bench_drain")
    capture.uninstall()  # no writer drain: the rows wait for the drain timed below
    Agent.objects.bulk_create(
        [Agent(organization=org, name=f"a{i}", role="r") for i in range(args.rows)],
        batch_size=2000,
    )
    ids = list(Agent.objects.filter(organization=org).values_list("pk", flat=True))
    while drain.drain(alias):  # the inserts' rows, untimed
        pass

    published = [0, 0]  # publishing.publish calls (one per batch drained), events in them
    publish = publishing.publish

    def counting(*batches):
        published[0] += 1
        published[1] += sum(1 for b in batches for s, t in b.items() if t and s != events.SILENT)
        return publish(*batches)

    publishing.publish = counting  # drain.py calls it as publishing.publish

    def pend(shape: str, n: int) -> float:
        """Leave `args.rows` change rows pending; returns the seconds the writes took."""
        pk_field = Agent._meta.pk
        t0 = time.perf_counter()
        if shape == "one":
            Agent.objects.filter(organization=org).update(role=f"one {n}")
        else:  # one statement per round trip: psycopg's executemany is one transaction
            sql = "UPDATE agency_agent SET role = %s WHERE id = %s"
            with connection.cursor() as cursor:
                for pk in ids:
                    cursor.execute(sql, [f"many {n}", pk_field.get_db_prep_value(pk, connection)])
        return time.perf_counter() - t0

    results: dict[str, list[dict]] = {s: [] for s in args.shapes}
    for r in range(args.rounds):
        shapes = args.shapes if r % 2 == 0 else list(reversed(args.shapes))
        for shape in shapes:
            write_s = pend(shape, r)
            calls0, events0 = published
            t0 = time.perf_counter()
            total = 0
            while n := drain.drain(alias):
                total += n
            seconds = time.perf_counter() - t0
            if total != args.rows:
                sys.exit(f"{shape}: drained {total} rows, expected {args.rows}")
            results[shape].append(
                {
                    "rows": total,
                    "seconds": seconds,
                    "rows_per_s": total / seconds,
                    "publish_calls": published[0] - calls0,
                    "events": published[1] - events0,
                    "write_s": write_s,
                }
            )
            print(
                f"round {r + 1} {shape:>4}: {total} rows in {seconds:.2f} s = "
                f"{total / seconds:,.0f} changes/s ({published[0] - calls0} publishes, "
                f"{published[1] - events0} events; "
                f"writing them took {write_s:.2f} s)",
                flush=True,
            )

    # idle: the process without a drainer, then with one
    time.sleep(1)
    baseline = idle_share(args.idle)
    drainer = Drainer(alias)
    drainer.start()
    time.sleep(1.0)  # its connection, LISTEN and first drain
    with_drainer = idle_share(args.idle)
    drained_idle = drainer.drained
    drainer.stop()
    print(
        f"idle: process {baseline:.2%} of a core without a drainer, {with_drainer:.2%} with "
        f"one (poll {drainer.poll:g} s; drained {drained_idle} rows meanwhile)",
        flush=True,
    )

    rows = []
    for shape in args.shapes:
        runs = results[shape]
        rows.append(
            {
                "shape": shape,
                "rows": args.rows,
                "rows_per_s": statistics.median(x["rows_per_s"] for x in runs),
                "seconds": statistics.median(x["seconds"] for x in runs),
                "publish_calls": statistics.median(x["publish_calls"] for x in runs),
                "events": statistics.median(x["events"] for x in runs),
                "write_s": statistics.median(x["write_s"] for x in runs),
                "runs": runs,
            }
        )
    labels = {
        "one": "one UPDATE of every row (one transaction)",
        "many": "one UPDATE per row (one transaction each)",
    }
    drain_mode = "local" if drain.is_local() else "shared"
    table = [
        "| pending change rows | written as | drain mode | changes/s published | "
        "drain time (s) | publish calls | events | changes/s min–max |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        speeds = [x["rows_per_s"] for x in row["runs"]]
        table.append(
            f"| {row['rows']:,} | {labels[row['shape']]} | {drain_mode} | "
            f"**{row['rows_per_s']:,.0f}** | {row['seconds']:.2f} | {row['publish_calls']:.0f} | "
            f"{row['events']:,.0f} | "
            f"{min(speeds):,.0f}–{max(speeds):,.0f} |"
        )
    table += [
        "",
        "| idle for (s) | drainer wakes | process CPU without a drainer | with a drainer | "
        "the drainer's share of one core |",
        "|---:|---|---:|---:|---:|",
        f"| {args.idle:g} | "
        + (
            "LISTEN/NOTIFY, 2 s poll"
            if connection.vendor == "postgresql"
            else f"poll every {drainer.poll:g} s"
        )
        + f" | {baseline:.2%} | {with_drainer:.2%} | **{max(0.0, with_drainer - baseline):.2%}** |",
    ]
    table = "\n".join(table)
    print(table)
    command = command_line("drain_rate.py")
    if args.report:
        append_report(
            f"Drainer throughput and idle cost ({mode()})",
            command,
            f"Median of {args.rounds} drains per shape (shapes alternating), each of "
            f"{args.rows:,} pending change rows of agent UPDATEs, timed from the first "
            "`drain.drain()` to the one that finds nothing (claim, tags, cache "
            "bumps, event appends; no drainer thread, no clients). *Publish calls*: "
            "`publishing.publish` calls (one per batch drained: up to 1,000 rows on SQLite, up to 200 "
            "whole transactions on PostgreSQL); *events*: the "
            "events they appended (one per transaction and stream). Idle: CPU of "
            f"the whole process (getrusage) over {args.idle:g} s, without and then with a "
            "running Drainer thread and nothing to drain (the database server's own CPU "
            "not included).\n\n" + table,
        )
    save_json(
        args.json,
        "drain_rate",
        command,
        rows,
        idle={"seconds": args.idle, "without": baseline, "with": with_drainer},
    )


if __name__ == "__main__":
    main()
