"""HTTP reads: agents.getAll through the reactive API, fast lane on and off, against two floors.

For each server configuration (`--servers` x `--workers`; daphne runs as one
process, so it is measured at 1 worker only) four servers, all with production
settings (DEBUG=0, bench/production.py), in the same configuration:

- TeamHub with the fast lane on (``TEAMHUB_FAST_LANE=1``) and TeamHub with it
  off (``TEAMHUB_FAST_LANE=0``), each on a fresh database of its own holding
  one organization of 50 agents (agents.getAll answers about 36 KB of JSON),
  with TeamHub's settings plus one app registering bench.agentsMiss
  (bench/bench_settings.py);
- the *django floor* (bench/lean.py): a minimal async Django view behind no
  middleware at all, answering the same bytes as agents.getAll;
- the *raw ASGI floor* (bench/rawasgi.py): the same bytes from a bare ASGI
  application, no Django.

Then `--rounds` interleaved rounds: each round runs every row once, for
`--seconds`, with wrk (2 threads, `--connections`), in reverse order every
other round. A row reports the medians over the rounds (req/s, p50, p99), the
range of its req/s, its req/s over the django floor's, the status codes of
every response (counted by wrk's Lua script) and the bytes per response
(headers included). Rows (`--endpoints` picks by key; `--lanes` picks the
TeamHub servers):

    raw      raw ASGI floor
    floor    django floor
    hit      rx hit, Bearer: GET /api/rx/agents.getAll, Authorization: Bearer
    session  rx hit, session: the same with a session cookie
    304      rx 304: the Bearer request with If-None-Match: <the ETag of the
             previous response> (taken before each run; a placeholder without one)
    miss     rx miss: agents.getAll through the /api/rx code from a bench view
             (/bench/rx-miss/agents), a fresh cache key per request
    rxmiss   rx miss, /api/rx: the same function registered as a query
             (bench/apps.py), GET /api/rx/bench.agentsMiss: through /api/rx and
             the fast lane's lookup
    minimal  minimal view: an async view answering {"ok": true}, all middleware
    orm      plain ORM view: same auth and membership check, ORM, JsonResponse
    ninja    Ninja schema view: the same through a Django Ninja schema
    rest     REST route (cached): GET /api/agents

    python bench/reads.py [--seconds 5] [--rounds 5] [--connections 16]
        [--workers 1 2 4] [--servers uvicorn daphne] [--endpoints KEY ...]
        [--lanes on off] [--report] [--json FILE]

wrk runs on the same machine as the servers: on a small machine they compete
for the cores, which caps what more workers can show. Needs wrk.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wrk_runner  # noqa: E402
from common import append_report, command_line, save_json  # noqa: E402
from read_rows import BY_KEY, ENDPOINTS, FLOOR, Endpoint, Setup, describe  # noqa: E402
from server import add_server_arguments, server_configs  # noqa: E402


def measure(server: str, workers: int, args, tmp: Path) -> list[dict]:
    with contextlib.ExitStack() as stack:
        setup = Setup(stack, server, workers, args, tmp)
        describe(setup)
        for srv_key in setup.servers:  # warm up: caches, pools, code paths
            e = BY_KEY["hit"] if srv_key in ("on", "off") else BY_KEY[srv_key]
            lane = srv_key if srv_key in ("on", "off") else ""
            head = [f"{k}: {v}" for k, v in setup.headers(e, lane).items()]
            wrk_runner.run(setup.url(e, lane), head, args.warmup, args.connections)
        runs: dict[tuple[str, str], list[dict]] = {(e.key, lane): [] for e, lane in setup.rows}
        for n in range(args.rounds):
            for e, lane in setup.rows if n % 2 == 0 else setup.rows[::-1]:
                head = [f"{k}: {v}" for k, v in setup.headers(e, lane).items()]
                lua = wrk_runner.script(tmp, nonce=e.nonce, statuses=True)
                srv = setup.server(e, lane)
                got = wrk_runner.run(
                    setup.url(e, lane), head, args.seconds, args.connections, lua, srv
                )
                runs[(e.key, lane)].append(got)
                print(
                    f"{server} x{workers} round {n + 1}/{args.rounds} {e.label:<20} "
                    f"{lane or '-':<3} {got['rps']:>8.0f} req/s  p50 {got['p50']:7.2f} ms  "
                    f"p99 {got['p99']:7.2f} ms  {statuses(got['statuses'])} "
                    f"cache {statuses(got['cache'])}  "
                    f"{got['bytes']:.0f} B/response  per worker {got['per_worker']}"
                    + (f"  socket errors: {got['socket_errors']}" if got["socket_errors"] else ""),
                    flush=True,
                )
    rows = [summary(server, workers, e, lane, runs[(e.key, lane)]) for e, lane in setup.rows]
    floor = next((r["rps"] for r in rows if (r["key"], r["lane"]) == FLOOR), None)
    for r in rows:
        r["x_floor"] = r["rps"] / floor if floor else float("nan")
    return rows


def summary(server: str, workers: int, e: Endpoint, lane: str, runs: list[dict]) -> dict:
    def median(name: str) -> float:
        return statistics.median(r[name] for r in runs)

    codes: Counter[str] = Counter()
    caches: Counter[str] = Counter()
    for r in runs:
        codes.update(r["statuses"])
        caches.update(r["cache"])
    return {
        "server": server,
        "workers": workers,
        "endpoint": e.label,
        "key": e.key,
        "lane": lane,
        "rps": median("rps"),
        "rps_min": min(r["rps"] for r in runs),
        "rps_max": max(r["rps"] for r in runs),
        "p50": median("p50"),
        "p99": median("p99"),
        "bytes": median("bytes"),
        "statuses": dict(sorted(codes.items())),
        "cache": dict(sorted(caches.items())),
        "errors": sum(r["errors"] for r in runs),
        "socket_errors": "; ".join(r["socket_errors"] for r in runs if r["socket_errors"]),
        "per_worker": runs[-1]["per_worker"],
        "rounds": [{k: r[k] for k in ("rps", "p50", "p99", "statuses", "cache")} for r in runs],
    }


def statuses(codes: dict[str, int]) -> str:
    """`200`, or every value and its share: `200 50 %, 304 50 %` (`-`: no such header)."""
    if len(codes) == 1:
        return next(iter(codes))
    total = sum(codes.values())
    return ", ".join(f"{code} {n / total:.0%}" for code, n in codes.items()) or "none"


def ratios(rows: list[dict]) -> dict[str, float]:
    by = {(r["key"], r["lane"]): r["rps"] for r in rows}
    out: dict[str, float] = {}

    def ratio(name: str, a: tuple[str, str], b: tuple[str, str]) -> None:
        if a in by and b in by:
            out[name] = by[a] / by[b] if by[b] else float("nan")  # nothing completed: broken

    ratio("django floor / raw ASGI floor", FLOOR, ("raw", ""))
    for e in ENDPOINTS[2:]:
        ratio(f"{e.label}: fast lane on / off", (e.key, "on"), (e.key, "off"))
    ratio("rx 304 / rx hit, Bearer (fast lane on)", ("304", "on"), ("hit", "on"))
    for lane in ("on", "off"):
        ratio(
            f"rx hit / minimal view, lane {lane} (target >= 0.80)", ("hit", lane), ("minimal", lane)
        )
        ratio(
            f"rx miss time / Ninja view time, lane {lane} (target <= 1.10)",
            ("ninja", lane),
            ("miss", lane),
        )
        ratio(f"REST route / rx hit, lane {lane}", ("rest", lane), ("hit", lane))
    return out


def tables(rows: list[dict], configs: list[tuple[str, int]]) -> str:
    table = [
        "| server | workers | endpoint | fast lane | req/s | req/s min–max | × django floor | "
        "p50 (ms) | p99 (ms) | statuses | X-Reactive-Cache | bytes/response | "
        "connections per worker |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    table += [
        f"| {r['server']} | {r['workers']} | {r['endpoint']} | {r['lane'] or '–'} | "
        f"{r['rps']:.0f} | {r['rps_min']:.0f}–{r['rps_max']:.0f} | {r['x_floor']:.2f} | "
        f"{r['p50']:.2f} | {r['p99']:.2f} | {statuses(r['statuses'])} | "
        f"{statuses(r['cache'])} | {r['bytes']:.0f} | "
        f"{r['per_worker']} |"
        for r in rows
    ]
    heads = [f"{s} x{w}" for s, w in configs]
    by_config = {c: [r for r in rows if (r["server"], r["workers"]) == c] for c in configs}
    if len(configs) > 1:  # requests/s side by side
        table += ["", "| endpoint (req/s) | fast lane | " + " | ".join(heads) + " |"]
        table += ["|---|---|" + "---:|" * len(configs)]
        for r in by_config[configs[0]]:
            same = [
                [o for o in by_config[c] if (o["key"], o["lane"]) == (r["key"], r["lane"])]
                for c in configs
            ]
            cells = [f"{o[0]['rps']:.0f}" if o else "" for o in same]
            table += [f"| {r['endpoint']} | {r['lane'] or '–'} | " + " | ".join(cells) + " |"]
    all_ratios = {c: ratios(by_config[c]) for c in configs}
    names = list(all_ratios[configs[0]])
    if names:
        table += ["", "| ratio (req/s) | " + " | ".join(heads) + " |"]
        table += ["|---|" + "---:|" * len(configs)]
        for name in names:
            cells = [f"{all_ratios[c].get(name, float('nan')):.2f}" for c in configs]
            table += [f"| {name} | " + " | ".join(cells) + " |"]
    return "\n".join(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per row and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1, help="s of wrk per server, uncounted")
    parser.add_argument(
        "--endpoints", nargs="+", default=[e.key for e in ENDPOINTS], choices=list(BY_KEY)
    )
    parser.add_argument("--lanes", nargs="+", default=["on", "off"], choices=["on", "off"])
    add_server_arguments(parser)
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results (for bench/plot.py) to this file")
    args = parser.parse_args()
    args.endpoints = [e.key for e in ENDPOINTS if e.key in args.endpoints]  # the table's order
    args.lanes = list(dict.fromkeys(args.lanes))
    tmp = Path(tempfile.mkdtemp(prefix="teamhub-reads-"))
    configs = server_configs(args.servers, args.workers)
    rows = []
    for server, workers in configs:
        started = time.monotonic()
        got = measure(server, workers, args, tmp)
        rows += got
        for name, value in ratios(got).items():
            print(f"  {name}: {value:.2f}")
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    table = tables(rows, configs)
    print(table)
    command = command_line("reads.py")
    parsers = " + ".join(
        m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is not None
    )
    note = (
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per row (wrk, 2 threads, "
        f"{args.connections} connections; every other round in reverse order): medians, and "
        "the range of req/s over the rounds. Every server with DEBUG=0, one configuration per "
        f"block (uvicorn: its auto loop and parser, here {parsers or 'asyncio + h11'}). "
        "*Fast lane*: TeamHub with `TEAMHUB_FAST_LANE=1` or `=0`, two server processes on "
        "databases of the same content. *× django floor*: req/s over the django floor's (a "
        "minimal async Django view with no middleware answering agents.getAll's bytes; the "
        "raw ASGI floor answers them without Django). *Statuses* and *X-Reactive-Cache*: every "
        "response's, counted by wrk's Lua script (`-`: no such header); *rx 304* sends the ETag of the previous response (a placeholder "
        "when there was none). *rx miss* runs agents.getAll through the /api/rx code from a "
        "bench view (`/bench/rx-miss/agents`), not through `/api/rx`; *rx miss, /api/rx* "
        "the same function registered as a query (`/api/rx/bench.agentsMiss`, "
        "bench/bench_settings.py), through `/api/rx` and the fast lane's lookup. wrk runs on "
        "the same machine and competes with the servers for the cores; *connections per "
        "worker*: how its connections spread over a server's processes, a second in."
    )
    if args.report:
        append_report(
            f"HTTP reads and the fast lane: {' and '.join(args.servers)}, "
            f"{'/'.join(str(w) for w in args.workers)} worker(s), {args.connections} connections",
            command,
            note + "\n\n" + table,
        )
    save_json(
        args.json,
        "reads",
        command,
        rows,
        ratios={
            f"{s} x{w}": ratios([r for r in rows if (r["server"], r["workers"]) == (s, w)])
            for s, w in configs
        },
        note=note,
    )


if __name__ == "__main__":
    main()
