"""Shared helpers of the benchmarks: a throwaway database, percentiles, the report file."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"


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

    atexit.register(drop)


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


def append_report(title: str, command: str, body: str) -> None:
    """Append one result section to docs/benchmarks.md."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n"
        f"- date: {stamp}, commit {commit}\n- machine: {machine()}\n- mode: {mode()}\n"
        f"- command: `{command}`\n\n{body.strip()}\n"
    )
    if not REPORT.exists():
        REPORT.write_text(
            "# Benchmarks\n\nEach section is appended by a command in `bench/`; "
            "see bench/README.md.\n"
        )
    with REPORT.open("a") as fh:
        fh.write(section)
