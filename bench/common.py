"""Shared helpers of the benchmarks: a throwaway database, percentiles, the report and JSON files.

Two environment variables let a wrapper (bench/run_all.sh) gather every section
of one run under one heading: ``BENCH_REPORT`` (the Markdown file sections are
appended to, docs/benchmarks.md by default) and ``BENCH_REPORT_LEVEL`` (the
heading level of a section, 2 by default; the suite uses 3 under its own
dated level-2 heading).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = Path(os.environ.get("BENCH_REPORT") or ROOT / "docs" / "benchmarks.md")


def setup_django(fresh_sqlite: bool = True) -> None:
    """Configure Django on a fresh database (a temporary SQLite file unless DATABASE_URL)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamhub.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    if os.environ.get("DATABASE_URL"):
        _fresh_postgres()
    elif fresh_sqlite:
        os.environ["SQLITE_PATH"] = str(Path(tempfile.mkdtemp(prefix="teamhub-bench-")) / "b.db")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def _fresh_postgres() -> None:
    """Point DATABASE_URL at a new database (and a fresh cache prefix), dropped at exit."""
    import atexit
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    admin = os.environ["DATABASE_URL"]
    name = f"teamhub_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunsplit(urlsplit(admin)._replace(path="/" + name))
    os.environ["CACHE_KEY_PREFIX"] = name

    def drop() -> None:
        from django.db import connections

        for conn in connections.all():
            conn.close()
            if hasattr(conn, "close_pool"):
                conn.close_pool()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        drop_redis_prefix(name)

    atexit.register(drop)


def drop_redis_prefix(prefix: str) -> None:
    """Delete this benchmark's own Redis keys (cache, tag versions, log, channel layer).

    Every benchmark database comes with a key prefix of the same random name;
    tag versions and logs have no expiry, so without this they would pile up.
    """
    url = os.environ.get("REDIS_URL")
    if not url or not prefix.startswith("teamhub_bench_"):
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except redis.RedisError as exc:
        print(f"could not delete the Redis keys {prefix}:*: {exc}", file=sys.stderr)
    finally:
        client.close()


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit; return it.

    Servers started afterwards inherit the raised limit.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def percentile(values: list[float], p: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def mode() -> str:
    db = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    cache = "Redis" if os.environ.get("REDIS_URL") else "locmem"
    return f"{db} + {cache}"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        out = ""
    return out or "?"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command_line(script: str) -> str:
    """How this benchmark was invoked, as the report shows it."""
    return f"python bench/{script} " + " ".join(sys.argv[1:])


def append_report(title: str, command: str, body: str) -> None:
    """Append one result section to the report (docs/benchmarks.md unless BENCH_REPORT)."""
    depth = int(os.environ.get("BENCH_REPORT_LEVEL") or 2)
    # under a run's heading (depth 3) the machine and mode are the run's, said once there
    where = "" if depth > 2 else f"- machine: {machine()}\n- mode: {mode()}\n"
    section = (
        f"\n{'#' * depth} {title}\n\n"
        f"- date: {stamp()}, commit {commit()}\n{where}"
        f"- command: `{command}`\n\n{body.strip()}\n"
    )
    _append(section)


def start_run(command: str, note: str = "") -> None:
    """Open one dated level-2 heading that the sections of a whole suite run go under."""
    section = (
        f"\n## Full run, {stamp()}\n\n"
        f"- commit {commit()}\n- machine: {machine()}\n- mode: {mode()}\n"
        f"- command: `{command}`\n" + (f"\n{note.strip()}\n" if note else "")
    )
    _append(section)


def _append(section: str) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    if not REPORT.exists():
        REPORT.write_text(
            "# Benchmarks\n\nEach section is appended by a command in `bench/`; "
            "see bench/README.md.\n"
        )
    with REPORT.open("a") as fh:
        fh.write(section)


def save_json(path: str | Path | None, bench: str, command: str, rows: list[dict], **extra) -> None:
    """Write a benchmark's raw results (what bench/plot.py draws) as JSON."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "bench": bench,
        "date": stamp(),
        "commit": commit(),
        "machine": machine(),
        "mode": mode(),
        "command": command,
        **extra,
        "rows": rows,
    }
    path.write_text(json.dumps(_finite(data), indent=1, default=str) + "\n")


def _finite(value):
    """Strict JSON: NaN and infinities (a lost event's latency) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":  # for bench/run_all.sh
    if len(sys.argv) >= 3 and sys.argv[1] == "start-run":
        start_run(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    elif len(sys.argv) == 3 and sys.argv[1] == "note":
        _append(f"\n{sys.argv[2].strip()}\n")
    else:
        sys.exit(
            'usage: python bench/common.py start-run "<command>" ["<note>"]\n'
            '       python bench/common.py note "<paragraph>"'
        )
