"""Read throughput and latency: agents.getAll through the reactive API against plain Django.

For each server configuration (`--servers` x `--workers`; daphne runs as one
process, so it is measured at 1 worker only) a fresh server, one organization of
50 agents (about 30 KB of JSON), and wrk at 16 connections for each endpoint in
turn:

- minimal: an async Django view answering {"ok": true}
- orm: a plain Django view (same auth and membership check, ORM, JsonResponse)
- ninja: the same through a Django Ninja schema
- rx hit: GET /api/rx/agents.getAll (cached)
- rx miss: the same function with a key that never repeats (every request a miss)
- rest: GET /api/agents (the REST route, cached)

    python bench/reads.py [--seconds 10] [--connections 16] [--workers 1 2 4]
        [--servers uvicorn daphne] [--report] [--json FILE]

wrk runs on the same machine as the server (2 threads): on a small machine they
compete for the cores, which caps what more workers can show.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, command_line, save_json  # noqa: E402
from server import (  # noqa: E402
    BenchServer,
    add_server_arguments,
    bench_server,
    server_configs,
)

NONCE_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, wrk.path .. "&nonce=" .. counter .. "-" .. math.random(1, 1e9))
end
"""


def wrk(
    url: str,
    token: str,
    seconds: int,
    connections: int,
    script: str | None = None,
    srv: BenchServer | None = None,
) -> dict:
    cmd = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    if script:
        cmd[1:1] = ["-s", script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spread = ""
    if srv is not None:  # which server process holds wrk's connections
        time.sleep(min(1.0, seconds / 2))
        spread = "/".join(str(n) for n in sorted(srv.connections().values(), reverse=True))
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {err or out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:  # timeouts (2 s) or refused connections: said, not hidden
        print(f"  wrk {url.split('?')[0]}: socket errors: {socket_errors.group(1)}", flush=True)
    return {
        "rps": rps,
        "p50": _ms(lat.get("50", "nan")),
        "p99": _ms(lat.get("99", "nan")),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "per_worker": spread,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


ENDPOINTS = [
    ("minimal view", "/bench/minimal", False),
    ("plain ORM view", "/bench/orm/agents", True),
    ("Ninja schema view", "/bench/ninja/agents", True),
    ("rx hit", "/api/rx/agents.getAll", True),
    ("rx miss", "/bench/rx-miss/agents", True),
    ("REST route (cached)", "/api/agents", True),
]
NONCE = {"rx miss"}  # a fresh cache key per request


def measure(server: str, workers: int, args, script: Path) -> list[dict]:
    rows = []
    with bench_server(server, workers) as srv:
        q = f"?organizationId={srv.org}"
        wrk(srv.url + "/api/rx/agents.getAll" + q, srv.token, 2, args.connections)  # warm up
        for label, path, scoped in ENDPOINTS:
            url = srv.url + path + (q if scoped else "")
            lua = str(script) if label in NONCE else None
            result = wrk(url, srv.token, args.seconds, args.connections, lua, srv)
            rows.append({"server": server, "workers": workers, "endpoint": label, **result})
            print(
                f"{server} x{workers} {label:<22} {result['rps']:>8.0f} req/s  "
                f"p50 {result['p50']:6.2f} ms  p99 {result['p99']:6.2f} ms  "
                f"non-2xx {result['errors']}  connections per worker {result['per_worker']}",
                flush=True,
            )
    return rows


def ratios(rows: list[dict]) -> dict[str, float]:
    by = {r["endpoint"]: r["rps"] for r in rows}

    def ratio(a: str, b: str) -> float:
        return by[a] / by[b] if by[b] else float("nan")  # nothing completed: a broken run

    return {
        "rx hit / minimal view (target >= 0.80)": ratio("rx hit", "minimal view"),
        "rx hit / plain ORM view": ratio("rx hit", "plain ORM view"),
        "rx miss time / Ninja view time (target <= 1.10)": ratio("Ninja schema view", "rx miss"),
        "rx miss / plain ORM view": ratio("rx miss", "plain ORM view"),
        "REST route / rx hit": ratio("REST route (cached)", "rx hit"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per endpoint")
    parser.add_argument("--connections", type=int, default=16)
    add_server_arguments(parser)
    parser.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--json", help="write the raw results (for bench/plot.py) to this file")
    args = parser.parse_args()
    os.environ["TEAMHUB_BENCH_VIEWS"] = "1"
    script = Path(tempfile.mkdtemp()) / "nonce.lua"
    script.write_text(NONCE_LUA)
    configs = server_configs(args.servers, args.workers)
    rows, by_config = [], {}
    for server, workers in configs:
        started = time.monotonic()
        got = measure(server, workers, args, script)
        rows += got
        by_config[(server, workers)] = got
        for name, value in ratios(got).items():
            print(f"  {name}: {value:.2f}")
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)

    def head(server: str, workers: int) -> str:
        return f"{server} x{workers}"

    table = [
        "| server | workers | endpoint | req/s | p50 (ms) | p99 (ms) | non-2xx | "
        "connections per worker |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    table += [
        f"| {r['server']} | {r['workers']} | {r['endpoint']} | {r['rps']:.0f} | "
        f"{r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | {r['per_worker']} |"
        for r in rows
    ]
    if len(configs) > 1:  # requests/s side by side
        table += ["", "| endpoint (req/s) | " + " | ".join(head(*c) for c in configs) + " |"]
        table += ["|---|" + "---:|" * len(configs)]
        for label, _, _ in ENDPOINTS:
            cells = [
                next(f"{r['rps']:.0f}" for r in by_config[c] if r["endpoint"] == label)
                for c in configs
            ]
            table += [f"| {label} | " + " | ".join(cells) + " |"]
    table += ["", "| ratio | " + " | ".join(head(*c) for c in configs) + " |"]
    table += ["|---|" + "---:|" * len(configs)]
    all_ratios = {c: ratios(by_config[c]) for c in configs}
    for name in all_ratios[configs[0]]:
        table += [f"| {name} | " + " | ".join(f"{all_ratios[c][name]:.2f}" for c in configs) + " |"]
    print("\n".join(table))
    command = command_line("reads.py")
    note = (
        f"wrk (2 threads, {args.connections} connections, {args.seconds} s per endpoint) runs "
        "on the same machine as the server and competes with it for the cores. *Connections "
        "per worker*: how wrk's connections spread over the server's processes, a second in."
    )
    if args.report:
        servers = " and ".join(args.servers)
        workers = "/".join(str(w) for w in args.workers)
        append_report(
            f"HTTP reads: {servers}, {workers} worker(s), {args.connections} connections",
            command,
            note + "\n\n" + "\n".join(table),
        )
    save_json(
        args.json,
        "reads",
        command,
        rows,
        ratios={head(*c): v for c, v in all_ratios.items()},
        note=note,
    )


if __name__ == "__main__":
    main()
