"""Write-to-client latency over SSE and WebSocket with many connected clients.

Starts a fresh server (one uvicorn worker), connects N clients to one
organization's stream, then makes `--writes` mutations through the API, one at
a time, and times each from the moment the mutation is sent to the moment each
client has the event. Reports p50/p99 over every delivery and over the *last*
client of each write, and the server's memory per idle connection.

    python bench/realtime.py --clients 1 100 1000 [--writes 30] [--report]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, percentile  # noqa: E402
from server import BenchServer  # noqa: E402


class SSEClient:
    """A minimal SSE client on a raw socket (cheap enough to open thousands)."""

    def __init__(self, port: int, org: str, token: str):
        self.port, self.org, self.token = port, org, token
        self.events: list[tuple[float, float]] = []  # (receipt, ms since commit)

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
        while True:
            line = await self.reader.readline()
            if not line:
                return
            if line.startswith(b"data: {"):
                at = json.loads(line[6:])["at"]
                self.events.append((time.perf_counter(), time.time() * 1000 - at))

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


class WSClient:
    """A WebSocket client subscribed to agents.getAll of the organization."""

    def __init__(self, port: int, org: str, token: str):
        self.port, self.org, self.token = port, org, token
        self.events: list[tuple[float, float]] = []

    async def open(self) -> None:
        import websockets

        self.ws = await websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws/reactive/",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_queue=None,
            ping_interval=None,
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
        reply = json.loads(await self.ws.recv())
        assert reply["type"] == "subscribed", reply
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for message in self.ws:
            if '"invalidate"' in message:
                at = json.loads(message)["at"]
                self.events.append((time.perf_counter(), time.time() * 1000 - at))

    def close(self) -> None:
        self.task.cancel()
        asyncio.ensure_future(self.ws.close())


async def measure(srv: BenchServer, kind: str, clients: int, writes: int) -> dict:
    import httpx

    rss_before = srv.rss_kb()
    cls = SSEClient if kind == "sse" else WSClient
    conns = [cls(srv.port, srv.org, srv.token) for _ in range(clients)]
    for i in range(0, clients, 100):  # connect in waves: the backlog is finite
        await asyncio.gather(*(c.open() for c in conns[i : i + 100]))
    await asyncio.sleep(1.0)
    rss_after = srv.rss_kb()
    all_lat, last_lat, commit_lat, lost = [], [], [], 0
    headers = {"Authorization": f"Bearer {srv.token}"}
    async with httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=30) as http:
        for n in range(writes + 3):
            t0 = time.perf_counter()
            resp = await http.post(
                "/api/rx/agents.update", json={"id": srv.agent, "data": {"role": f"r{kind}{n}"}}
            )
            assert resp.status_code == 200, resp.text
            deadline = time.perf_counter() + 10
            while time.perf_counter() < deadline and any(len(c.events) <= n for c in conns):
                await asyncio.sleep(0.001)  # clients stamp receipts themselves
            got, since_commit = [], []
            for c in conns:
                if len(c.events) <= n:
                    lost += 1
                    c.events.append((float("inf"), float("inf")))
                    continue
                received, after_commit = c.events[n]
                got.append(received - t0)
                since_commit.append(after_commit)
            if n >= 3:  # the first writes warm up connections and code paths
                all_lat += got
                commit_lat.append(max(since_commit) if since_commit else float("inf"))
                last_lat.append(max(got) if got else float("inf"))
            await asyncio.sleep(0.05)
    for c in conns:
        c.close()
    ms = 1000
    return {
        "kind": kind,
        "clients": clients,
        "writes": writes,
        "lost": lost,
        "p50": percentile(all_lat, 50) * ms,
        "p99": percentile(all_lat, 99) * ms,
        "last_p50": percentile(last_lat, 50) * ms,
        "last_p99": percentile(last_lat, 99) * ms,
        "commit_p50": percentile(commit_lat, 50),
        "commit_p99": percentile(commit_lat, 99),
        "kib_per_conn": (rss_after - rss_before) / clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--writes", type=int, default=30)
    parser.add_argument("--kinds", nargs="+", default=["sse", "ws"])
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    rows = []
    for kind in args.kinds:
        for clients in args.clients:
            with BenchServer() as srv:
                row = asyncio.run(measure(srv, kind, clients, args.writes))
            rows.append(row)
            print(
                f"{kind:>3} clients={clients:>5} all p50={row['p50']:.1f}ms p99={row['p99']:.1f}ms "
                f"last p50={row['last_p50']:.1f}ms p99={row['last_p99']:.1f}ms "
                f"commit->last p50={row['commit_p50']:.0f}ms p99={row['commit_p99']:.0f}ms "
                f"lost={row['lost']} mem/conn={row['kib_per_conn']:.0f} KiB",
                flush=True,
            )
    table = [
        "| transport | clients | p50 (ms) | p99 (ms) | last client p50 (ms) | "
        "last client p99 (ms) | commit to last client p50 / p99 (ms) | lost | "
        "server KiB per idle connection |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {r['kind'].upper()} | {r['clients']} | {r['p50']:.1f} | {r['p99']:.1f} | "
        f"{r['last_p50']:.1f} | {r['last_p99']:.1f} | "
        f"{r['commit_p50']:.0f} / {r['commit_p99']:.0f} | {r['lost']} | {r['kib_per_conn']:.0f} |"
        for r in rows
    ]
    print("\n".join(table))
    if args.report:
        append_report(
            "Real time: write-to-client latency",
            "python bench/realtime.py " + " ".join(sys.argv[1:]),
            "Latency runs from sending the mutation (HTTP) to the client holding the event, so it "
            "includes the write itself; *commit to last client* runs from the commit time the event "
            "carries (`at`, whole milliseconds) to the last client holding it. The clients run in one Python process on the same 2 cores "
            "as the server, so the last-client figures include the client's own parsing.\n\n"
            + "\n".join(table),
        )


if __name__ == "__main__":
    main()
