"""wrk for the HTTP benchmarks: one run, its headers, a Lua script, and what it printed.

A run sends the same headers on every request (``-H``); the Lua script
(:func:`script`) optionally makes every URL unique (``&nonce=``, a fresh cache
key per request, unique across threads and runs) and counts the status codes
and ``X-Reactive-Cache`` values of the responses, which wrk itself does not
report (only "Non-2xx or 3xx", which a wrong 200 for a 304 passes).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from pathlib import Path

# Every thread numbers itself (setup) and takes the run's token (wrk's arguments after
# "--"): a nonce never repeats across threads or runs (math.random is not seeded: every
# thread of every run would draw the same numbers).
COMMON = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  statuses = {}
  caches = {}
  prefix = (args[1] or "run") .. "-" .. tid .. "-"
  counter = 0
end
"""

NONCE = """
function request()
  counter = counter + 1
  return wrk.format(nil, wrk.path .. "&nonce=" .. prefix .. counter)
end
"""

STATUSES = """
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local cache = headers["X-Reactive-Cache"] or headers["x-reactive-cache"] or "-"
  caches[cache] = (caches[cache] or 0) + 1
end
local function report(name, key)
  local total = {}
  for _, t in ipairs(threads) do
    for value, n in pairs(t:get(key)) do
      total[value] = (total[value] or 0) + n
    end
  end
  local parts = {}
  for value, n in pairs(total) do
    table.insert(parts, value .. "=" .. n)
  end
  io.write(name .. " " .. table.concat(parts, ",") .. "\\n")
end
function done(summary, latency, requests)
  report("STATUSES", "statuses")
  report("CACHE", "caches")
end
"""

UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def script(directory: Path, nonce: bool, statuses: bool) -> str | None:
    """The path of a Lua script doing what is asked (written once), or None for neither."""
    if not (nonce or statuses):
        return None
    path = directory / f"wrk-{'nonce' if nonce else 'same'}-{'codes' if statuses else 'plain'}.lua"
    if not path.exists():
        path.write_text(COMMON + (NONCE if nonce else "") + (STATUSES if statuses else ""))
    return str(path)


def run(
    url: str,
    headers: list[str],
    seconds: int,
    connections: int,
    lua: str | None = None,
    srv=None,
    threads: int = 2,
) -> dict:
    """One wrk run: requests/s, p50 and p99 (ms), errors, status codes and bytes per response.

    With `srv` (a BenchServer), also how wrk's connections spread over its
    processes, a second into the run.
    """
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    if lua:
        cmd += ["-s", lua]
    cmd.append(url)
    if lua:
        cmd += ["--", secrets.token_hex(6)]  # the run's token: nonces of its own
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spread = ""
    if srv is not None:
        time.sleep(min(1.0, seconds / 2))
        spread = "/".join(str(n) for n in sorted(srv.connections().values(), reverse=True))
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {err or out}")
    return {**parse(out), "per_worker": spread}


def parse(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    done = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+)(\w+) read", out)
    requests = int(done.group(1)) if done else 0
    read = float(done.group(2)) * UNITS.get(done.group(3), 1) if done else 0.0
    return {
        "rps": rps,
        "p50": ms(lat.get("50", "nan")),
        "p99": ms(lat.get("99", "nan")),
        "requests": requests,
        "bytes": read / requests if requests else float("nan"),  # headers included
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "statuses": counts(out, "STATUSES"),  # status code: responses
        "cache": counts(out, "CACHE"),  # X-Reactive-Cache (hit, miss, - for none): responses
    }


def counts(out: str, name: str) -> dict[str, int]:
    """The counts the Lua script printed as `NAME value=n,value=n`."""
    found = re.search(rf"^{name} (.*)$", out, re.M)
    got: dict[str, int] = {}
    for part in filter(None, found.group(1).split(",") if found else []):
        value, _, n = part.rpartition("=")
        got[value] = int(n)
    return dict(sorted(got.items()))


def ms(text: str) -> float:
    found = re.match(r"([\d.]+)(\w+)", text)
    if not found:
        return float("nan")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]
