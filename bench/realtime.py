"""Write-to-client latency over SSE and WebSocket with many connected clients.

Latency mode (the default): starts a fresh server, connects N clients to one
organization's stream, then makes `--writes` mutations through the API, one at
a time, and times each from the moment the mutation is sent to the moment each
client has the event. Reports p50/p99 over every delivery and over the *last*
client of each write, the server's memory per idle connection and how the
connections spread over the server's worker processes.

Sustained mode (`--rate R [R ...]`): connects N clients, then for each rate in
turn (a ramp) makes writes at R per second for `--duration` seconds (open loop:
a write is sent on schedule, up to `--concurrency` in flight) and waits for
every client to hold every event. A step is *sustained* when no client missed
an event or was told to reset, the writes kept to the rate (95 %) and the p99
from commit to client stays under `--max-p99`. The ramp stops at the first
step that is not sustained unless `--keep-going`.

The clients run in this one Python process (on uvloop when installed), on the
same machine as the server: on a small machine they compete for its cores.

    python bench/realtime.py --clients 1 100 1000 [--writes 30] [--kinds sse ws]
        [--workers 1 2 4] [--servers uvicorn daphne] [--report] [--json FILE]
    python bench/realtime.py --clients 100 --rate 25 50 100 200 [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    append_report,
    command_line,
    percentile,
    raise_fd_limit,
    save_json,
)
from server import (  # noqa: E402
    BenchServer,
    add_server_arguments,
    bench_server,
    server_configs,
)

WAVE = 50  # connections opened at once: daphne (Twisted) listens with a backlog of 50
WARMUP = 3  # latency mode: writes not counted (they warm up connections and code paths)
DEADLINE = 10  # latency mode: s to wait for every client to hold a write's event


class Client:
    """What both transports record: every event and every reset the server sent."""

    def __init__(self, port: int, org: str, token: str):
        self.port, self.org, self.token = port, org, token
        # (receipt on perf_counter, ms since the commit the event carries, event id)
        self.events: list[tuple[float, float, str]] = []
        self.resets = 0
        self.tags: list[str] = []
        self.by_id: dict[str, tuple[float, float]] = {}

    def record(self, data: dict, event_id: str) -> None:
        self.tags = data["tags"]
        receipt = (time.perf_counter(), time.time() * 1000 - data["at"])
        self.by_id[event_id] = receipt
        self.events.append((*receipt, event_id))


class SSEClient(Client):
    """A minimal SSE client on a raw socket (cheap enough to open thousands)."""

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            f"GET /api/events?organizationId={self.org} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0], head[:200]
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        kind = b"message"
        while True:
            line = await self.reader.readline()
            if not line:
                return
            if line.startswith(b"event: "):
                kind = line[7:].strip()
            elif line.startswith(b"data: {"):
                if kind == b"invalidate":
                    data = json.loads(line[6:])
                    self.record(data, str(data["id"]))
                elif kind == b"reset":
                    self.resets += 1
            elif line in (b"\r\n", b"\n"):
                kind = b"message"

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


class WSClient(Client):
    """A WebSocket client subscribed to agents.getAll of the organization."""

    async def open(self) -> None:
        import websockets

        self.ws = await websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws/reactive/",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_queue=None,
            ping_interval=None,
            open_timeout=60,
        )
        await self.ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "id": "a",
                    "name": "agents.getAll",
                    "input": {"organizationId": self.org},
                }
            )
        )
        while True:  # a heartbeat may come first when the server is busy accepting others
            reply = json.loads(await self.ws.recv())
            if reply["type"] != "heartbeat":
                break
        assert reply["type"] == "subscribed", reply
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for message in self.ws:
            if '"invalidate"' in message:
                data = json.loads(message)
                self.record(data, str(data["eventId"]))
            elif '"reset"' in message:
                self.resets += 1

    def close(self) -> None:
        self.task.cancel()
        asyncio.ensure_future(self.ws.close())


async def connect(srv: BenchServer, kind: str, clients: int) -> list[Client]:
    cls = SSEClient if kind == "sse" else WSClient
    conns = [cls(srv.port, srv.org, srv.token) for _ in range(clients)]
    for i in range(0, clients, WAVE):  # connect in waves: the listen backlog is finite
        await asyncio.gather(*(c.open() for c in conns[i : i + WAVE]))
    return conns


def spread(srv: BenchServer) -> str:
    """Connections per server process, largest first (e.g. "260/250/248/242")."""
    counts = sorted(srv.connections().values(), reverse=True)
    return "/".join(str(n) for n in counts) or "0"


def cdf(values_s: list[float]) -> list[float]:
    """The 0th..100th percentiles in ms: enough for plot.py to draw the distribution."""
    return [percentile(values_s, p) * 1000 for p in range(101)]


async def measure(srv: BenchServer, kind: str, clients: int, writes: int) -> dict:
    import httpx

    rss_before = srv.rss_kb()
    connecting = time.perf_counter()
    conns = await connect(srv, kind, clients)
    connect_s = time.perf_counter() - connecting
    await asyncio.sleep(1.0)
    rss_after = srv.rss_kb()
    per_worker = spread(srv)
    headers = {"Authorization": f"Bearer {srv.token}"}
    total, sent_at = writes + WARMUP, []
    async with httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=30) as http:
        for n in range(total):
            t0 = time.perf_counter()
            resp = await http.post(
                "/api/rx/agents.update", json={"id": srv.agent, "data": {"role": f"r{kind}{n}"}}
            )
            assert resp.status_code == 200, resp.text
            sent_at.append(t0)
            deadline = time.perf_counter() + DEADLINE
            while time.perf_counter() < deadline and any(len(c.events) <= n for c in conns):
                await asyncio.sleep(0.001)  # clients stamp receipts themselves
            await asyncio.sleep(0.05)
    deadline = time.perf_counter() + DEADLINE  # what is late may still come
    while time.perf_counter() < deadline and any(len(c.events) < total for c in conns):
        await asyncio.sleep(0.01)
    # Writes are sequential and each publishes one event, so the k-th event id any client
    # saw belongs to the k-th write: a client that missed one event stays aligned.
    ids = sorted({e[2] for c in conns for e in c.events}, key=int)
    if len(ids) != total:
        print(f"  warning: {len(ids)} distinct events for {total} writes", flush=True)
    all_lat, last_lat, commit_lat, lost = [], [], [], 0
    for n, (t0, event_id) in enumerate(zip(sent_at, ids[-total:], strict=False)):
        got, since_commit = [], []
        for c in conns:
            if event_id not in c.by_id:
                lost += 1
                continue
            received, after_commit = c.by_id[event_id]
            got.append(received - t0)
            since_commit.append(after_commit)
        if n >= WARMUP:  # the first writes warm up connections and code paths
            all_lat += got
            commit_lat.append(max(since_commit) if since_commit else float("inf"))
            last_lat.append(max(got) if got else float("inf"))
    resets = sum(c.resets for c in conns)
    for c in conns:
        c.close()
    ms = 1000
    return {
        "mode": "latency",
        "server": srv.name,
        "workers": srv.workers,
        "kind": kind,
        "clients": clients,
        "writes": writes,
        "lost": lost,
        "resets": resets,
        "p50": percentile(all_lat, 50) * ms,
        "p99": percentile(all_lat, 99) * ms,
        "last_p50": percentile(last_lat, 50) * ms,
        "last_p99": percentile(last_lat, 99) * ms,
        "commit_p50": percentile(commit_lat, 50),
        "commit_p99": percentile(commit_lat, 99),
        "kib_per_conn": (rss_after - rss_before) / clients,
        "rss_mib": rss_after / 1024,
        "per_worker": per_worker,
        "connect_s": connect_s,
        "cdf_ms": cdf(all_lat),
    }


class HttpSource:
    """Events from writes: agents.update over HTTP, open loop, up to `concurrency` in flight."""

    label = "agents.update over HTTP"

    def __init__(self, srv: BenchServer, concurrency: int):
        import httpx

        self.srv, self.concurrency, self.sent = srv, concurrency, 0
        self.http = httpx.AsyncClient(
            base_url=srv.url,
            headers={"Authorization": f"Bearer {srv.token}"},
            timeout=30,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=None),
        )

    async def start(self, tags: list[str]) -> None:
        listing = await self.http.get(
            "/api/rx/agents.getAll", params={"organizationId": self.srv.org}
        )
        self.agents = [a["id"] for a in listing.json()["data"]]  # many rows: no lock queue

    async def write(self) -> bool:
        self.sent += 1
        resp = await self.http.post(
            "/api/rx/agents.update",
            json={
                "id": self.agents[self.sent % len(self.agents)],
                "data": {"role": f"s{self.sent}"},
            },
        )
        return resp.status_code == 200

    async def step(self, rate: float, count: int) -> tuple[int, float, float]:
        """Send `count` writes at `rate`/s; (writes that succeeded, start, end)."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one() -> bool:
            try:
                return await self.write()
            finally:
                gate.release()

        tasks = []
        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()  # at most `concurrency` writes in flight
            tasks.append(asyncio.create_task(one()))
        ok = sum(await asyncio.gather(*tasks))
        return ok, t0, time.perf_counter()

    async def close(self) -> None:
        await self.http.aclose()


class LogSource:
    """Events without writes: bench/publisher.py calls the publish path of a committed write."""

    label = "reactive.publishing.publish in a separate process (no write)"

    def __init__(self, srv: BenchServer):
        self.srv = srv

    async def start(self, tags: list[str]) -> None:
        self.tags = tags
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve().parent / "publisher.py"),
            env=self.srv.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        ready = await self.proc.stdout.readline()
        assert json.loads(ready)["ready"], ready

    async def step(self, rate: float, count: int) -> tuple[int, float, float]:
        t0 = time.perf_counter()
        line = {"tenant": self.srv.org, "tags": self.tags, "rate": rate, "count": count}
        self.proc.stdin.write((json.dumps(line) + "\n").encode())
        await self.proc.stdin.drain()
        done = json.loads(await self.proc.stdout.readline())
        return done["ok"], t0, t0 + done["seconds"]

    async def close(self) -> None:
        self.proc.stdin.close()
        await self.proc.wait()


async def sustained(srv: BenchServer, kind: str, clients: int, args) -> list[dict]:
    """The ramp: one row per rate, until a rate is not sustained (unless --keep-going)."""
    conns = await connect(srv, kind, clients)
    await asyncio.sleep(1.0)
    per_worker = spread(srv)

    async def settle(expected: list[int], timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline and any(
            len(c.events) < e for c, e in zip(conns, expected, strict=True)
        ):
            await asyncio.sleep(0.005)
        return time.perf_counter()

    # warm up with a few writes, one at a time, not counted: they also tell the
    # tags a write of an agent publishes, which the log source then repeats
    http = HttpSource(srv, args.concurrency)
    await http.start([])
    start = [len(c.events) for c in conns]
    for _ in range(5):
        assert await http.write()
    await settle([s + 5 for s in start], args.drain)
    tags = conns[0].tags
    source = http
    if args.source == "log":
        await http.close()
        source = LogSource(srv)
        await source.start(tags)

    rows = []
    for rate in args.rate:
        start = [len(c.events) for c in conns]
        resets0 = sum(c.resets for c in conns)
        total = max(1, round(rate * args.duration))
        cpu0 = time.process_time()
        ok, t0, t_written = await source.step(rate, total)
        t_delivered = await settle([s + ok for s in start], args.drain)
        client_cpu = (time.process_time() - cpu0) / (t_delivered - t0)
        received = sum(len(c.events) - s for c, s in zip(conns, start, strict=True))
        lost = max(0, ok * clients - received)
        resets = sum(c.resets for c in conns) - resets0
        lat = [e[1] for c, s in zip(conns, start, strict=True) for e in c.events[s:]]
        row = {
            "mode": "sustained",
            "source": args.source,
            "server": srv.name,
            "workers": srv.workers,
            "kind": kind,
            "clients": clients,
            "rate": rate,
            "duration": args.duration,
            "events_ok": ok,
            "events_failed": total - ok,
            # rates over the planned duration, or longer when the source or delivery fell behind
            "send_rate": ok / max(args.duration, t_written - t0),
            "events_per_s": ok / max(args.duration, t_delivered - t0),  # per client
            "deliveries_per_s": received / max(args.duration, t_delivered - t0),
            "drain_ms": (t_delivered - t_written) * 1000,
            # CPU of this process (clients, and the HTTP writer) over the step: near 100 %
            # means the clients, not the server, set the pace
            "client_cpu": client_cpu,
            "lost": lost,
            "resets": resets,
            "commit_p50": percentile(lat, 50),
            "commit_p99": percentile(lat, 99),
            "per_worker": per_worker,
            "cdf_ms": [percentile(lat, p) for p in range(101)],
        }
        if total != ok or row["send_rate"] < 0.95 * rate:
            row["limit"] = "source"  # the writes (or the publisher) could not keep the rate
        elif lost or resets or row["events_per_s"] < 0.95 * rate:
            row["limit"] = "delivery"
        elif row["commit_p99"] > args.max_p99:
            row["limit"] = "p99"
        else:
            row["limit"] = ""
        row["sustained"] = not row["limit"]
        rows.append(row)
        print(
            f"  {kind:>3} clients={clients} rate={rate:>6g}/s sent={row['send_rate']:.1f}/s "
            f"events/s per client={row['events_per_s']:.1f} "
            f"deliveries/s={row['deliveries_per_s']:.0f} drain={row['drain_ms']:.0f}ms "
            f"commit->client p50={row['commit_p50']:.0f}ms p99={row['commit_p99']:.0f}ms "
            f"lost={lost} resets={resets} failed={total - ok} client CPU={client_cpu:.0%} "
            f"{'sustained' if row['sustained'] else 'NOT sustained: ' + row['limit']}",
            flush=True,
        )
        if not row["sustained"] and not args.keep_going:
            break
        await asyncio.sleep(1.0)  # let the server settle between steps
    await source.close()
    for c in conns:
        c.close()
    return rows


def run(coro):
    """Run the client side on uvloop when it is installed: less client CPU per event."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def latency_table(rows: list[dict]) -> str:
    table = [
        "| server | workers | transport | clients | p50 (ms) | p99 (ms) | last client p50 (ms) | "
        "last client p99 (ms) | commit to last client p50 / p99 (ms) | lost | "
        "server KiB per idle connection | connections per worker |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    table += [
        f"| {r['server']} | {r['workers']} | {r['kind'].upper()} | {r['clients']} | "
        f"{r['p50']:.1f} | {r['p99']:.1f} | {r['last_p50']:.1f} | {r['last_p99']:.1f} | "
        f"{r['commit_p50']:.0f} / {r['commit_p99']:.0f} | {r['lost']} | "
        f"{r['kib_per_conn']:.0f} | {r['per_worker']} |"
        for r in rows
    ]
    return "\n".join(table)


def sustained_table(rows: list[dict]) -> str:
    table = [
        "| source | server | workers | transport | clients | offered (events/s) | sent/s | "
        "events/s per client | deliveries/s (all clients) | drain after the last event sent (ms) | "
        "commit to client p50 / p99 (ms) | lost | resets | client process CPU | sustained |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    table += [
        f"| {r['source']} | {r['server']} | {r['workers']} | {r['kind'].upper()} | "
        f"{r['clients']} | {r['rate']:g} | {r['send_rate']:.1f} | {r['events_per_s']:.1f} | "
        f"{r['deliveries_per_s']:.0f} | {r['drain_ms']:.0f} | "
        f"{r['commit_p50']:.0f} / {r['commit_p99']:.0f} | {r['lost']} | {r['resets']} | "
        f"{r['client_cpu']:.0%} | {'yes' if r['sustained'] else '**no** (' + r['limit'] + ')'} |"
        for r in rows
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["source"], r["server"], r["workers"], r["kind"], r["clients"])
        groups.setdefault(key, []).append(r)
    table += [""]
    for (source, server, workers, kind, clients), group in groups.items():
        rate = max((r["rate"] for r in group if r["sustained"]), default=0)
        clean = [r for r in group if not r["lost"] and not r["resets"]]
        most = max(clean, key=lambda r: r["events_per_s"], default=None)
        table += [
            f"- {source}, {server} x{workers} {kind.upper()}, {clients} clients: "
            + (f"sustained **{rate:g} events/s**" if rate else "no rate tried was sustained")
            + (
                f"; most delivered with no loss {most['events_per_s']:.0f} events/s per client "
                f"({most['deliveries_per_s']:.0f} deliveries/s)"
                if most
                else ""
            )
        ]
    return "\n".join(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 1000], metavar="N")
    parser.add_argument("--writes", type=int, default=30, help="latency mode: writes per run")
    parser.add_argument("--kinds", nargs="+", default=["sse", "ws"], choices=["sse", "ws"])
    add_server_arguments(parser)
    parser.add_argument(
        "--rate", type=float, nargs="+", metavar="R", help="sustained mode: events/s, a ramp"
    )
    parser.add_argument("--duration", type=float, default=5, help="sustained: seconds per step")
    parser.add_argument(
        "--source",
        default="http",
        choices=["http", "log"],
        help="sustained: events from HTTP writes, or published without a write (bench/publisher.py)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="sustained: writes in flight")
    parser.add_argument("--max-p99", type=float, default=1000, help="sustained: ms, commit->client")
    parser.add_argument("--drain", type=float, default=10, help="sustained: s to wait for delivery")
    parser.add_argument("--keep-going", action="store_true", help="sustained: every rate")
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results (for bench/plot.py) to this file")
    args = parser.parse_args()

    limit = raise_fd_limit()  # the server started below inherits it
    if max(args.clients) + 200 > limit:
        sys.exit(
            f"{max(args.clients)} clients need more open files than the limit of {limit} "
            "(`ulimit -Hn` is the most this process can raise it to)"
        )
    rows = []
    for server, workers in server_configs(args.servers, args.workers):
        for kind in args.kinds:
            for clients in args.clients:
                started = time.monotonic()
                with bench_server(server, workers) as srv:
                    if args.rate:
                        print(f"{server} x{workers} {kind} clients={clients}: ramp", flush=True)
                        rows += run(sustained(srv, kind, clients, args))
                        continue
                    row = run(measure(srv, kind, clients, args.writes))
                rows.append(row)
                print(
                    f"{server} x{workers} {kind:>3} clients={clients:>5} "
                    f"all p50={row['p50']:.1f}ms p99={row['p99']:.1f}ms "
                    f"last p50={row['last_p50']:.1f}ms p99={row['last_p99']:.1f}ms "
                    f"commit->last p50={row['commit_p50']:.0f}ms p99={row['commit_p99']:.0f}ms "
                    f"lost={row['lost']} resets={row['resets']} "
                    f"mem/conn={row['kib_per_conn']:.0f} KiB "
                    f"per worker={row['per_worker']} connect={row['connect_s']:.1f}s "
                    f"({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
    command = command_line("realtime.py")
    note = (
        "The clients run in one Python process (uvloop) on the same machine as the server and "
        "compete with it for the cores. *Connections per worker*: the connections each server "
        "process holds (see the notes at the top of docs/benchmarks.md)."
    )
    if args.rate:
        table = sustained_table(rows)
        title = "Real time: sustained event rate"
        body = (
            f"Events at each offered rate for {args.duration:g} s, from `{args.source}` "
            + (
                f"(agents.update over HTTP, up to {args.concurrency} in flight)"
                if args.source == "http"
                else "(bench/publisher.py: the publish path of a committed write, no write)"
            )
            + "; *sustained*: no lost event, no reset, no failed write, delivery at 95 % of "
            f"the offered rate or better, and a p99 from commit to client under "
            f"{args.max_p99:g} ms (else the column says what fell short: source, delivery or "
            "p99). *Client process CPU* near 100 % means the clients set the pace. " + note
        )
    else:
        table = latency_table(rows)
        title = "Real time: write-to-client latency"
        body = (
            "From sending the mutation (HTTP) to each client holding the event, so the write "
            "is included; *commit to last client* from the commit time the event carries "
            "(`at`, whole ms) to the last client holding it. Memory per idle connection: the "
            "server's resident memory (all its processes) after connecting minus before, over "
            "the clients (at 1 client mostly one-off allocations). " + note
        )
    print(table)
    if args.report:
        append_report(title, command, body + "\n\n" + table)
    save_json(args.json, "realtime", command, rows, note=note)


if __name__ == "__main__":
    main()
