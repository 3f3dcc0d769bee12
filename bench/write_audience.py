"""A write's response time against its audience: 1 SSE client, then 500, on the same organization.

One fresh server per configuration (production settings, DEBUG=0). A separate
process (this script with ``--audience``) holds the SSE clients of
bench/realtime.py (raw sockets, ``GET /api/events?organizationId=``, Bearer)
on the organization the writes touch, so their reading costs the writer
nothing. For each audience (`--audiences`, 1 and 500 by default; the first is
the baseline) the writer makes `--writes` agents.update mutations over HTTP
(``POST /api/rx/agents.update``, Bearer, one keep-alive connection), one at a
time: each timed from sending the request to having the whole response, then
a wait until every client holds its event (fan-out live, and the time to the
last client recorded), then `--pause` ms. `--warmup` writes per phase are not
counted. The audiences alternate over `--rounds` rounds (in reverse order
every other round); the percentiles pool the writes of every round. Target:
the response time at the largest audience within 1.2 times the baseline's
(p50 and p99).

    python bench/write_audience.py [--audiences 1 500] [--writes 100] [--rounds 3]
        [--pause 20] [--workers 1] [--servers uvicorn] [--report] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, percentile, raise_fd_limit, save_json  # noqa: E402
from server import BenchServer, add_server_arguments, bench_server, server_configs  # noqa: E402

TARGET = 1.2
DEADLINE = 10  # s for every client to hold a write's event


# --- the audience: a separate process of SSE clients, driven over its stdin --------------------


async def audience(port: int, org: str, token: str) -> None:
    """Answer one JSON line per command: clients N, mark, wait K, quit."""
    from realtime import SSEClient

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    clients: list[SSEClient] = []
    marks: list[int] = []

    def reply(**data) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "clients":
            t0 = time.perf_counter()
            while len(clients) > cmd["n"]:
                clients.pop().close()
            new = [SSEClient(port, org, token) for _ in range(cmd["n"] - len(clients))]
            for i in range(0, len(new), 50):  # in waves: the listen backlog is finite
                await asyncio.gather(*(c.open() for c in new[i : i + 50]))
            clients += new
            reply(clients=len(clients), seconds=time.perf_counter() - t0)
        elif cmd["op"] == "mark":
            marks = [len(c.events) for c in clients]
            reply(resets=sum(c.resets for c in clients))
        elif cmd["op"] == "wait":  # every client holds the k-th event since the mark
            k, deadline = cmd["k"], time.perf_counter() + cmd["timeout"]
            while time.perf_counter() < deadline and any(
                len(c.events) < m + k for c, m in zip(clients, marks, strict=True)
            ):
                await asyncio.sleep(0.0005)
            held = [
                c.events[m + k - 1][0]
                for c, m in zip(clients, marks, strict=True)
                if len(c.events) >= m + k
            ]
            reply(missing=len(clients) - len(held), last=max(held, default=None))
        elif cmd["op"] == "quit":
            break
    for c in clients:
        c.close()


class Audience:
    """The audience process, from the writer's side (perf_counter is system-wide on Linux)."""

    def __init__(self, srv: BenchServer):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--audience", str(srv.port), srv.org, srv.token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the audience process ended")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait(30)


# --- the writer ------------------------------------------------------------------------------


def phase(srv: BenchServer, crowd: Audience, clients: int, n: int, args) -> dict:
    """`args.warmup` + `args.writes` writes with `clients` SSE clients connected."""
    got = crowd.ask(op="clients", n=clients)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and sum(srv.connections().values()) != clients:
        time.sleep(0.1)  # closed clients: the server lets go of them
    held = sum(srv.connections().values())
    resets = crowd.ask(op="mark")["resets"]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    headers = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}
    response, delivery, lost = [], [], 0
    for i in range(args.warmup + args.writes):
        body = json.dumps({"id": srv.agent, "data": {"role": f"a{clients}-{n}-{i}"}})
        t0 = time.perf_counter()
        conn.request("POST", "/api/rx/agents.update", body, headers)
        answer = conn.getresponse()
        text = answer.read()
        t1 = time.perf_counter()
        if answer.status != 200:
            raise RuntimeError(f"agents.update answered {answer.status}: {text[:200]!r}")
        arrived = crowd.ask(op="wait", k=i + 1, timeout=DEADLINE)
        if i >= args.warmup:
            response.append((t1 - t0) * 1000)
            lost += arrived["missing"]
            if arrived["last"] is not None:
                delivery.append((arrived["last"] - t0) * 1000)
        time.sleep(args.pause / 1000)
    conn.close()
    resets = crowd.ask(op="mark")["resets"] - resets
    return {
        "clients": clients,
        "held": held,
        "connect_s": got["seconds"],
        "response": response,
        "delivery": delivery,
        "lost": lost,
        "resets": resets,
    }


def measure(server: str, workers: int, args) -> list[dict]:
    phases: dict[int, list[dict]] = {n: [] for n in args.audiences}
    with bench_server(server, workers) as srv:
        crowd = Audience(srv)
        try:
            for n in range(args.rounds):
                for clients in args.audiences if n % 2 == 0 else args.audiences[::-1]:
                    got = phase(srv, crowd, clients, n, args)
                    phases[clients].append(got)
                    print(
                        f"{server} x{workers} round {n + 1}/{args.rounds} clients={clients:>5} "
                        f"(server holds {got['held']}, connected in {got['connect_s']:.1f} s) "
                        f"response p50 {percentile(got['response'], 50):.2f} ms "
                        f"p99 {percentile(got['response'], 99):.2f} ms, last client p50 "
                        f"{percentile(got['delivery'], 50):.2f} ms, lost {got['lost']}",
                        flush=True,
                    )
        finally:
            crowd.close()
    rows = []
    for clients, runs in phases.items():
        response = [x for r in runs for x in r["response"]]
        delivery = [x for r in runs for x in r["delivery"]]
        rows.append(
            {
                "server": server,
                "workers": workers,
                "clients": clients,
                "writes": len(response),
                "p50": percentile(response, 50),
                "p90": percentile(response, 90),
                "p99": percentile(response, 99),
                "max": max(response, default=float("nan")),
                "last_p50": percentile(delivery, 50),
                "last_p99": percentile(delivery, 99),
                "lost": sum(r["lost"] for r in runs),
                "resets": sum(r["resets"] for r in runs),
                "held": [r["held"] for r in runs],
                "rounds": [
                    {"p50": percentile(r["response"], 50), "p99": percentile(r["response"], 99)}
                    for r in runs
                ],
            }
        )
    base = rows[0]
    for r in rows:
        r["x_p50"] = r["p50"] / base["p50"]
        r["x_p99"] = r["p99"] / base["p99"]
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| server | workers | SSE clients | writes | response p50 (ms) | p90 (ms) | p99 (ms) | "
        f"max (ms) | p50 × baseline | p99 × baseline (target ≤ {TARGET}) | "
        "last client holds the event p50 / p99 (ms) | lost | resets | connections held |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        met = (
            ""
            if r is rows[0] or r["server"] != rows[0]["server"]
            else (" ✓" if max(r["x_p50"], r["x_p99"]) <= TARGET else " ✗")
        )
        out.append(
            f"| {r['server']} | {r['workers']} | {r['clients']} | {r['writes']} | "
            f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | "
            f"{r['x_p50']:.2f} | {r['x_p99']:.2f}{met} | "
            f"{r['last_p50']:.2f} / {r['last_p99']:.2f} | {r['lost']} | {r['resets']} | "
            f"{'/'.join(str(h) for h in r['held'])} |"
        )
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--audience":
        from realtime import run

        run(audience(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audiences", type=int, nargs="+", default=[1, 500], metavar="N")
    parser.add_argument("--writes", type=int, default=100, help="counted writes per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="uncounted writes per phase")
    parser.add_argument("--pause", type=float, default=20, help="ms after each write's delivery")
    add_server_arguments(parser)
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args()
    limit = raise_fd_limit()  # the server and the audience process inherit it
    if max(args.audiences) + 200 > limit:
        sys.exit(f"{max(args.audiences)} clients need more open files than the limit of {limit}")
    rows = []
    for server, workers in server_configs(args.servers, args.workers):
        got = measure(server, workers, args)
        rows += got
        for r in got[1:]:
            print(
                f"  {r['clients']} clients / {got[0]['clients']}: p50 × {r['x_p50']:.2f}, "
                f"p99 × {r['x_p99']:.2f} (target ≤ {TARGET})"
            )
    text = table(rows)
    print(text)
    command = command_line("write_audience.py")
    note = (
        f"agents.update over HTTP (Bearer, one keep-alive connection), one at a time: "
        f"{args.writes} counted writes per audience and round ({args.warmup} more uncounted), "
        f"{args.rounds} rounds, the audiences alternating; *response*: from sending the request "
        "to having the whole response, pooled over the rounds; after each, a wait for every SSE "
        "client to hold the event (*last client*: from sending the write), then "
        f"{args.pause:g} ms. The clients (bench/realtime.py's, one process of their own) follow "
        f"the organization written to. Target: × baseline ≤ {TARGET} at the largest audience "
        "(p50 and p99). *Connections held*: the server's, per round. The token's `last_used_at` "
        "is written at most once a minute: that request is one write slower."
    )
    if args.report:
        audiences = " and ".join(str(n) for n in args.audiences)
        append_report(
            f"A write's response time against its audience: {audiences} SSE clients",
            command,
            note + "\n\n" + text,
        )
    save_json(args.json, "write_audience", command, rows, note=note)


if __name__ == "__main__":
    main()
