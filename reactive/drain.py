"""Draining the change table: publish each committed change row.

With a shared cache (Redis), rows are claimed and deleted by whoever drains
them, in the transaction that publishes them: a process killed before its
publish commits leaves its rows for the next drainer, and an advisory lock
(the write lock on SQLite) makes N drainers take turns, so each row is
published once and each transaction's rows together. When publishing fails
(Redis down) the claim rolls back and the rows wait.

With a cache of this process's own (locmem: embedded mode), every process must
see every row, so nothing is claimed: each process reads the rows past its own
high-water mark, and rows are pruned once older than ``CHANGE_RETENTION_SECONDS``.
A process whose mark fell behind pruned rows cannot know what it missed: it
invalidates everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from . import publishing
from .cache import reactive_cache
from .changes import Changes, Row, transactions
from .conf import reactive_settings
from .tables import CHANGE_TABLE, tracked_tables
from .tags import table_tag, wildcard_tag

logger = logging.getLogger("reactive")

BATCH = 1000  # rows claimed per transaction (SQLite), read per query (local mode)
TRANSACTIONS = 200  # writing transactions claimed at once (PostgreSQL)
LOCK_KEY = 0x7278_6368  # the advisory lock drainers take turns with ("rxch")
LEFT_OVER = 2.0  # seconds after which a drainer takes a self-draining writer's rows
MAX_ROUNDS = 100  # a writer's drain gives up after this many claims (a drainer goes on)
PRUNE_EVERY = 10.0  # seconds between two prunes of a local-mode process
COLUMNS = "id, tbl, op, old, new, txid"

_lock = threading.Lock()
_marks: dict[str, int] = {}  # local mode: alias -> the last row id this process published
_pruned_at: dict[str, float] = {}
_ready: dict[str, bool] = {}  # alias -> whether the change table exists there


class _Unpublished(Exception):
    """Publishing failed: roll the claim back so that the rows wait for a drainer."""


def is_local() -> bool:
    """Whether the reactive cache belongs to this process alone (every process reads every row)."""
    mode: str = reactive_settings()["DRAIN_MODE"]
    if mode != "auto":
        return mode == "local"
    backend = type(reactive_cache().backend).__name__
    return backend in ("LocMemCache", "DummyCache")


def ready(conn: BaseDatabaseWrapper) -> bool:
    """Whether `conn`'s database has the change table (before ``migrate``, it has not)."""
    alias = conn.alias
    if not _ready.get(alias):
        with internal(conn):
            found = CHANGE_TABLE in conn.introspection.table_names()
        if found and is_local():
            # Past the newest row at first sight; back to it if the table was made
            # anew (ids start again at 1 and the old mark would hide every new row).
            top = max_id(conn)
            _marks[alias] = min(_marks.get(alias, top), top)
        _ready[alias] = found
    return _ready[alias]


def forget_ready() -> None:
    """After ``migrate``: look for the change table again."""
    _ready.clear()


@contextmanager
def internal(conn: BaseDatabaseWrapper) -> Iterator[None]:
    """Statements run inside are reactive's own: the execute wrapper ignores them."""
    previous = getattr(conn, "_rx_internal", False)
    # reactive's own flag, kept on the connection wrapper (the stubs know no such attribute)
    conn._rx_internal = True  # type: ignore[attr-defined]
    try:
        yield
    finally:
        conn._rx_internal = previous  # type: ignore[attr-defined]


def drain(using: str = "default", *, own: bool = False) -> int:
    """Publish committed change rows; returns how many were published.

    `own` (a writer, right after its commit): its rows must be published when
    this returns. On PostgreSQL it claims its own session's rows (if a drainer
    holds them, the claim waits for its commit, which follows its publish).
    Otherwise (the drainer thread, tools) it claims everybody's, taking turns
    with other drainers, and handles an overflowing change table
    (``MAX_PENDING_CHANGES``).
    """
    conn = connections[using]
    if conn.in_atomic_block or not ready(conn):
        return 0
    try:
        if is_local():
            return _drain_local(conn)
        return _drain_shared(conn, own)
    except Exception:
        logger.exception("reactive: could not drain the change table")
        return 0


def _rows(cursor: CursorWrapper) -> list[Row]:
    rows = [Row(*record) for record in cursor.fetchall()]
    return sorted(rows, key=lambda r: r.id)


def _claim(conn: BaseDatabaseWrapper, own: bool) -> list[Row]:
    """Delete and return committed change rows, whole transactions at a time.

    PostgreSQL: a writer (`own`) claims the rows of its own session, in one
    round trip. Drainers take turns under an advisory lock, so that a
    transaction's rows are never split between two of them (it would become two
    events), and leave a live writer's rows alone for ``LEFT_OVER`` (a writer
    that died or stalled leaves them to a drainer). SQLite: the write lock of
    BEGIN IMMEDIATE serializes every claim.
    """
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql" and own:
            cursor.execute(f"SELECT {COLUMNS} FROM reactive_claim_own()")
        elif conn.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            cursor.execute(
                f"DELETE FROM {CHANGE_TABLE} WHERE txid IN (SELECT txid FROM {CHANGE_TABLE} "
                f"WHERE NOT own OR at < now() - make_interval(secs => %s) "
                f"GROUP BY txid ORDER BY MIN(id) LIMIT {TRANSACTIONS}) RETURNING {COLUMNS}",
                [LEFT_OVER],
            )
        else:
            cursor.execute(
                f"DELETE FROM {CHANGE_TABLE} WHERE id IN (SELECT id FROM {CHANGE_TABLE} "
                f"ORDER BY id LIMIT {BATCH}) RETURNING {COLUMNS}"
            )
        return _rows(cursor)


def mark_published(conn: BaseDatabaseWrapper) -> None:
    """Local mode: take every change row written so far as published (a test's fresh start)."""
    _marks[conn.alias] = max_id(conn)


def max_id(conn: BaseDatabaseWrapper) -> int:
    """The newest change row id visible to `conn` (0 for none)."""
    with internal(conn), conn.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {CHANGE_TABLE}")
        return int(cursor.fetchone()[0])


def _drain_shared(conn: BaseDatabaseWrapper, own: bool) -> int:
    total = 0
    with internal(conn):
        if not own and _overflowed(conn):
            return 0
        for _ in range(MAX_ROUNDS):
            try:
                with transaction.atomic(using=conn.alias):
                    rows = _claim(conn, own=own)
                    if rows and not publishing.publish(*transactions(rows)):
                        raise _Unpublished
            except _Unpublished:
                return total
            total += len(rows)
            whole = own and conn.vendor == "postgresql"  # the session's rows, all at once
            if whole or (len(rows) < BATCH and len({row.txid for row in rows}) < TRANSACTIONS):
                return total
    return total


def _drain_local(conn: BaseDatabaseWrapper) -> int:
    if conn.vendor == "postgresql":
        return _drain_local_pg(conn)
    alias = conn.alias
    total = 0
    with _lock, internal(conn):
        mark = _marks.setdefault(alias, 0)
        while True:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT {COLUMNS} FROM {CHANGE_TABLE} WHERE id > %s ORDER BY id LIMIT {BATCH}",
                    [mark],
                )
                rows = _rows(cursor)
            if not rows:
                break
            batches = transactions(rows)
            if conn.vendor == "sqlite" and mark and rows[0].id != mark + 1:
                # AUTOINCREMENT ids have no holes: rows this process never saw were pruned.
                batches.append(_everything())
            if not publishing.publish(*batches):
                break
            mark = _marks[alias] = rows[-1].id
            total += len(rows)
            if len(rows) < BATCH:
                break
        _prune(conn)
    return total


def _everything() -> Changes:
    reactive_cache().bump_epoch()
    return {None: _table_tags()}


def _table_tags(names: set[str] | None = None) -> set[str]:
    """The table and wildcard tags of every tracked table (of those named in `names`)."""
    tags: set[str] = set()
    for table in tracked_tables():
        if names is None or table.name in names:
            tags |= {table_tag(table.model), wildcard_tag(table.model)}
    return tags


# PostgreSQL, local mode: ids are taken at insert, so a transaction still open
# when the mark moved past its id commits below the mark. Rows of every
# transaction that was open at the last read (txid >= that read's xmin) are
# read again, and those already published skipped.
_low: dict[str, int] = {}
_published: dict[str, dict[int, int]] = {}  # alias -> row id -> txid


def _drain_local_pg(conn: BaseDatabaseWrapper) -> int:
    alias = conn.alias
    with _lock, internal(conn), conn.cursor() as cursor:
        mark, low = _marks.setdefault(alias, 0), _low.get(alias, 0)
        cursor.execute(
            f"SELECT {COLUMNS}, pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
            f"FROM {CHANGE_TABLE} WHERE id > %s OR txid >= %s ORDER BY id",
            [mark, low],
        )
        records = cursor.fetchall()
        done = _published.setdefault(alias, {})
        rows = [Row(*r[:-1]) for r in records if r[0] not in done]
        if rows and not publishing.publish(*transactions(rows)):
            return 0
        if records:
            low = records[0][-1]
        else:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            low = cursor.fetchone()[0]
        done.update((row.id, row.txid or 0) for row in rows)
        for row_id in [i for i, txid in done.items() if txid < low]:
            del done[row_id]
        _low[alias] = low
        _marks[alias] = max([mark, *(row.id for row in rows)])
        _prune(conn)
    return len(rows)


def _prune(conn: BaseDatabaseWrapper) -> None:
    now = time.monotonic()
    if now - _pruned_at.get(conn.alias, 0.0) < PRUNE_EVERY:
        return
    _pruned_at[conn.alias] = now
    keep = reactive_settings()["CHANGE_RETENTION_SECONDS"]
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(
                f"DELETE FROM {CHANGE_TABLE} WHERE at < now() - make_interval(secs => %s)", [keep]
            )
        else:
            cursor.execute(
                f"DELETE FROM {CHANGE_TABLE} WHERE at < (julianday('now') - 2440587.5) * 86400.0 - %s",
                [keep],
            )


def _overflowed(conn: BaseDatabaseWrapper) -> bool:
    """Past ``MAX_PENDING_CHANGES`` rows (no drainer ran for long): invalidate by table, once.

    Publishing row by row would take minutes while every cache entry is suspect;
    one event with the table and wildcard tags of each table named is exact enough.
    """
    bound = reactive_settings()["MAX_PENDING_CHANGES"]
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {CHANGE_TABLE} LIMIT %s) AS t", [bound + 1]
        )
        if cursor.fetchone()[0] <= bound:
            return False
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        top = max_id(conn)
        cursor.execute(f"SELECT DISTINCT tbl FROM {CHANGE_TABLE} WHERE id <= %s", [top])
        names = {name for (name,) in cursor.fetchall()}
        tags = _table_tags(names)
        logger.warning("reactive: %d+ change rows pending; invalidating %s", bound, sorted(names))
        if not publishing.publish({None: tags}):
            return True
        cursor.execute(f"DELETE FROM {CHANGE_TABLE} WHERE id <= %s", [top])
    return True
