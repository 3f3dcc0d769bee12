"""Outside writes: from a raw SQL UPDATE on a separate connection to the SSE event.

Starts a fresh server (one uvicorn worker unless `--workers`; bench/server.py),
connects one SSE client to its organization, then makes `--updates` UPDATEs of
one agent row each with raw SQL on a connection of its own, not through
Django: psycopg on PostgreSQL (services mode, DATABASE_URL set), the sqlite3
module on the server's SQLite file (embedded mode). Nothing in the writing
process knows about the reactive layer: the row trigger writes the change
row, and the server's drainer thread publishes it, woken by LISTEN/NOTIFY on
PostgreSQL or by its poll (0.1 s) on SQLite.

Each update is timed from its commit (the writer's COMMIT returned) to the
SSE client holding the event that names the updated row; updates rotate over
the organization's agents, so every event is matched to its write by the row
tag it carries. After each event a random pause (`--pause`, 10-110 ms:
uniform over one 0.1 s poll period) comes before the next update, so that
updates do not fall in step with the SQLite poll. The event's `at` (the
publish time, whole ms) splits the latency into commit to publish (the
drainer) and publish to client. Runs with DEBUG=0 (bench/production.py).

    python bench/outside.py [--updates 200] [--runs 3] [--workers 1] [--report] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, mode, percentile, save_json  # noqa: E402
from production import production_env  # noqa: E402
from realtime import SSEClient, run  # noqa: E402
from server import BenchServer  # noqa: E402

WARMUP = 5  # updates not counted (first drain, connections, code paths)
DEADLINE = 5.0  # s to wait for an update's event before counting it lost
TARGET_P99 = 50.0
MEDIANS = ("p50", "p90", "p99", "max", "drainer_p50", "drainer_p99", "delivery_p50", "delivery_p99")


class TaggedClient(SSEClient):
    """An SSE client that keeps every event's tags, receipt time and `at`."""

    def __init__(self, *args):
        super().__init__(*args)
        # (receipt on perf_counter, receipt on time.time(), `at` in epoch s, tags)
        self.seen: list[tuple[float, float, float, frozenset[str]]] = []

    def record(self, data: dict, event_id: str) -> None:
        tags = frozenset(data["tags"])
        self.seen.append((time.perf_counter(), time.time(), data["at"] / 1000, tags))


class PostgresWriter:
    """Autocommit UPDATEs on a psycopg connection of its own (no Django)."""

    label = "psycopg, autocommit"

    def __init__(self, url: str):
        self.url = url

    async def open(self, org: str) -> list[str]:
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        cursor = await self.conn.execute(
            "SELECT id FROM agency_agent WHERE organization_id = %s ORDER BY name", [org]
        )
        return [str(row[0]) for row in await cursor.fetchall()]

    async def update(self, agent: str, role: str) -> tuple[float, float]:
        """(perf_counter, time.time()) when the autocommit UPDATE's COMMIT returned."""
        await self.conn.execute("UPDATE agency_agent SET role = %s WHERE id = %s", [role, agent])
        return time.perf_counter(), time.time()

    async def close(self) -> None:
        await self.conn.close()


class SQLiteWriter:
    """UPDATEs with the sqlite3 module on the server's database file, in a thread."""

    label = "sqlite3 module, one transaction per UPDATE"

    def __init__(self, path: str):
        self.path = path

    async def open(self, org: str) -> list[str]:
        self.conn = sqlite3.connect(self.path, timeout=20, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 20000")
        rows = self.conn.execute(
            "SELECT id FROM agency_agent WHERE organization_id = ? ORDER BY name",
            [uuid.UUID(org).hex],
        ).fetchall()
        return [str(uuid.UUID(row[0])) for row in rows]

    def _update(self, agent: str, role: str) -> tuple[float, float]:
        with self.conn:  # BEGIN ... COMMIT
            self.conn.execute(
                "UPDATE agency_agent SET role = ? WHERE id = ?", [role, uuid.UUID(agent).hex]
            )
        return time.perf_counter(), time.time()

    async def update(self, agent: str, role: str) -> tuple[float, float]:
        return await asyncio.to_thread(self._update, agent, role)

    async def close(self) -> None:
        self.conn.close()


async def measure(srv: BenchServer, writer, updates: int, pause: tuple[float, float]) -> dict:
    client = TaggedClient(srv.port, srv.org, srv.token)
    await client.open()
    await asyncio.sleep(0.5)
    agents = await writer.open(srv.org)
    rng = random.Random(12)
    total, lost = [], 0
    drainer, delivery = [], []
    started = time.monotonic()
    for n in range(updates + WARMUP):
        agent = agents[n % len(agents)]
        tag = f"agency.agent:id={agent}"
        seen_before = len(client.seen)
        committed, committed_wall = await writer.update(agent, f"outside {n}")
        deadline = time.perf_counter() + DEADLINE
        match = None
        while match is None and time.perf_counter() < deadline:
            for received, received_wall, at, tags in client.seen[seen_before:]:
                if tag in tags:
                    match = (received, received_wall, at)
                    break
            else:
                await asyncio.sleep(0.0005)
        if n >= WARMUP:
            if match is None:
                lost += 1
            else:
                total.append((match[0] - committed) * 1000)
                # `at` is whole milliseconds: each part is +-1 ms, their sum the total
                drainer.append((match[2] - committed_wall) * 1000)
                delivery.append((match[1] - match[2]) * 1000)
        await asyncio.sleep(rng.uniform(*pause))
    elapsed = time.monotonic() - started
    await writer.close()
    client.close()
    return {
        "workers": srv.workers,
        "writer": writer.label,
        "updates": updates,
        "lost": lost,
        "p50": percentile(total, 50),
        "p90": percentile(total, 90),
        "p99": percentile(total, 99),
        "max": max(total, default=float("nan")),
        "drainer_p50": percentile(drainer, 50),
        "drainer_p99": percentile(drainer, 99),
        "delivery_p50": percentile(delivery, 50),
        "delivery_p99": percentile(delivery, 99),
        "seconds": elapsed,
        "latencies_ms": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=200, help="updates per run")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh server")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--pause",
        type=float,
        nargs=2,
        default=[0.01, 0.11],
        metavar=("MIN", "MAX"),
        help="seconds between an event and the next update, uniform at random",
    )
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args()
    production_env()
    services = bool(os.environ.get("DATABASE_URL"))
    wake = "LISTEN/NOTIFY (2 s poll as fallback)" if services else "poll, 0.1 s"
    rows = []
    for n in range(args.runs):
        with BenchServer(workers=args.workers) as srv:
            if services:
                writer = PostgresWriter(srv.env["DATABASE_URL"])
            else:
                writer = SQLiteWriter(srv.env["SQLITE_PATH"])
            row = run(measure(srv, writer, args.updates, tuple(args.pause)))
        row["mode"], row["wake"], row["run"] = mode(), wake, n + 1
        rows.append(row)
        print(
            f"run {n + 1}/{args.runs}: {row['mode']} ({wake}), {row['workers']} worker(s), "
            f"{row['updates']} updates: commit->client p50={row['p50']:.1f} "
            f"p90={row['p90']:.1f} p99={row['p99']:.1f} max={row['max']:.1f} ms, "
            f"lost={row['lost']}; commit->publish p50/p99 {row['drainer_p50']:.0f}/"
            f"{row['drainer_p99']:.0f} ms, publish->client {row['delivery_p50']:.0f}/"
            f"{row['delivery_p99']:.0f} ms",
            flush=True,
        )
    table = [
        "| run | mode | drainer woken by | uvicorn workers | updates | lost | "
        f"commit to client p50 (ms) | p90 (ms) | p99 (ms, target < {TARGET_P99:g}) | max (ms) | "
        "commit to publish p50 / p99 (ms) | publish to client p50 / p99 (ms) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        table.append(
            f"| {row['run']} | {row['mode']} | {wake} | {row['workers']} | {row['updates']} | "
            f"{row['lost']} | {row['p50']:.1f} | {row['p90']:.1f} | {row['p99']:.1f} | "
            f"{row['max']:.1f} | {row['drainer_p50']:.0f} / {row['drainer_p99']:.0f} | "
            f"{row['delivery_p50']:.0f} / {row['delivery_p99']:.0f} |"
        )
    if len(rows) > 1:
        med = {k: statistics.median(r[k] for r in rows) for k in MEDIANS}
        table.append(
            f"| **median** | | | | | {sum(r['lost'] for r in rows)} | **{med['p50']:.1f}** | "
            f"{med['p90']:.1f} | **{med['p99']:.1f}** | {med['max']:.1f} | "
            f"{med['drainer_p50']:.0f} / {med['drainer_p99']:.0f} | "
            f"{med['delivery_p50']:.0f} / {med['delivery_p99']:.0f} |"
        )
    table = "\n".join(table)
    print(table)
    command = command_line("outside.py")
    if args.report:
        append_report(
            f"Outside writes to an SSE client ({mode()})",
            command,
            f"{args.runs} run(s), each on a fresh server, of {args.updates} raw SQL UPDATEs of "
            f"one agent row each ({rows[0]['writer']}; not through Django), each "
            f"{args.pause[0] * 1000:g}-{args.pause[1] * 1000:g} ms (at random) after the "
            "previous event arrived, one SSE client; from the writer's commit returning to the "
            "client holding the event naming the row (the *median* row: the median of the "
            "runs' percentiles). The split uses the event's `at` (the publish time, whole "
            "ms): *commit to publish* is the drainer's wake-up, claim and publish, *publish "
            "to client* the fan-out and the SSE write.\n\n" + table,
        )
    save_json(args.json, "outside", command, rows)


if __name__ == "__main__":
    main()
