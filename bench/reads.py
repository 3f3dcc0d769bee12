"""Read throughput and latency: agents.getAll through the reactive API against plain Django.

One server (uvicorn, one worker unless --workers), one organization of 50
agents (about 30 KB of JSON), wrk at 16 connections for each endpoint in turn:

- minimal: an async Django view answering {"ok": true}
- orm: a plain Django view (same auth and membership check, ORM, JsonResponse)
- ninja: the same through a Django Ninja schema
- rx hit: GET /api/rx/agents.getAll (cached)
- rx miss: the same function with a key that never repeats (every request a miss)
- rest: GET /api/agents (the REST route, cached)

    python bench/reads.py [--seconds 10] [--connections 16] [--workers 1] [--server uvicorn] [--report]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report  # noqa: E402
from server import BenchServer  # noqa: E402

NONCE_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, wrk.path .. "&nonce=" .. counter .. "-" .. math.random(1, 1e9))
end
"""


def wrk(url: str, token: str, seconds: int, connections: int, script: str | None = None) -> dict:
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
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": _ms(lat.get("50", "nan")),
        "p99": _ms(lat.get("99", "nan")),
        "errors": int(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", default="uvicorn", choices=["uvicorn", "daphne"])
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    os.environ["TEAMHUB_BENCH_VIEWS"] = "1"
    script = Path(tempfile.mkdtemp()) / "nonce.lua"
    script.write_text(NONCE_LUA)
    with BenchServer(workers=args.workers, server=args.server) as srv:
        q = f"?organizationId={srv.org}"
        endpoints = [
            ("minimal view", "/bench/minimal", None),
            ("plain ORM view", "/bench/orm/agents" + q, None),
            ("Ninja schema view", "/bench/ninja/agents" + q, None),
            ("rx hit", "/api/rx/agents.getAll" + q, None),
            ("rx miss", "/bench/rx-miss/agents" + q, str(script)),
            ("REST route (cached)", "/api/agents" + q, None),
        ]
        wrk(srv.url + endpoints[3][1], srv.token, 2, args.connections)  # warm up
        rows = []
        for label, path, lua in endpoints:
            result = wrk(srv.url + path, srv.token, args.seconds, args.connections, lua)
            rows.append((label, result))
            print(
                f"{label:<22} {result['rps']:>8.0f} req/s  p50 {result['p50']:6.2f} ms  "
                f"p99 {result['p99']:6.2f} ms  non-2xx {result['errors']}",
                flush=True,
            )
    by = dict(rows)
    ratios = {
        "rx hit / minimal view (target >= 0.80)": by["rx hit"]["rps"] / by["minimal view"]["rps"],
        "rx hit / plain ORM view": by["rx hit"]["rps"] / by["plain ORM view"]["rps"],
        "rx miss time / Ninja view time (target <= 1.10)": by["Ninja schema view"]["rps"]
        / by["rx miss"]["rps"],
        "rx miss / plain ORM view": by["rx miss"]["rps"] / by["plain ORM view"]["rps"],
        "REST route / rx hit": by["REST route (cached)"]["rps"] / by["rx hit"]["rps"],
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    table = ["| endpoint | req/s | p50 (ms) | p99 (ms) | non-2xx |", "|---|---:|---:|---:|---:|"]
    table += [
        f"| {label} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |"
        for label, r in rows
    ]
    table += ["", "| ratio | value |", "|---|---:|"]
    table += [f"| {name} | {value:.2f} |" for name, value in ratios.items()]
    if args.report:
        append_report(
            f"HTTP reads: {args.server}, {args.workers} worker(s), {args.connections} connections",
            "python bench/reads.py " + " ".join(sys.argv[1:]),
            "\n".join(table),
        )


if __name__ == "__main__":
    main()
