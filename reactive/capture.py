"""Write capture in the writing process: what this transaction touched, and draining on commit.

The database triggers (``triggers.py``) record every committed change; this
module only makes the writing process fast and consistent with them:

- A connection execute wrapper sees every statement that may write (the ORM's
  or raw SQL). In autocommit the statement has committed: its change rows are
  drained and published at once. Inside ``transaction.atomic`` the drain is
  put *first* among the outermost block's on-commit hooks, so every
  ``on_commit`` callback, whatever its order, sees published state.
- Once a transaction has written, a cached read on that connection whose tags
  the transaction touched neither reads nor stores the cache until the
  outermost block ends (it would see data from before the write, or store
  data nobody else can see yet). What it touched comes from ``post_save``,
  ``post_delete`` and ``m2m_changed`` at once, and, for writes no signal
  reports, from the transaction's own change rows. Reads before the first
  write still hit; a snapshot transaction (REPEATABLE READ, SERIALIZABLE, or
  a deferred SQLite transaction) never stores.

Writes that change nothing in the database (a cache of files, a remote API)
are announced with :func:`invalidate`, which writes a change row too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, Literal, overload

from django.apps import AppConfig
from django.core.signals import request_finished, request_started
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save

from . import drain, publishing, triggers
from .cache import set_read_policy
from .changes import MANUAL, Row, row_changes, user_stream, version_tags
from .tables import CHANGE_TABLE, concrete, is_tracked, tracked_table_name
from .tags import Tag, normalize, table_tag, wildcard_tag

logger = logging.getLogger("reactive")

__all__ = ["invalidate", "invalidate_model", "read_policy", "user_stream"]

# Statements that cannot change a row; anything else (CALL, DO, WITH, EXPLAIN
# ANALYZE, ...) may, and is looked at. Leading comments are skipped first.
_READS = ("SELECT", "SHOW", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT", "BEGIN", "START")
_READS_TOO = ("SET", "RESET", "PRAGMA", "FETCH", "CLOSE", "LISTEN", "VALUES", "DEALLOCATE")
_COMMENTS = re.compile(r"\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/)", re.DOTALL)
# The table of a single-table write as Django (and most hand-written SQL) spells it.
_TARGET = re.compile(
    r"\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM)\s+"
    r'(?:["`]?\w+["`]?\.)?["`]?(\w+)["`]?[\s(]',
    re.IGNORECASE,
)
_SNAPSHOT_LEVELS = ("REPEATABLE", "SERIALIZABLE")


class TransactionState:
    """What the current outermost transaction on one connection has written.

    It lives in the connection's list of on-commit hooks (first, with no
    savepoint ids, so a savepoint rollback keeps it): Django drops it on
    rollback and calls it on commit, which is exactly its lifetime.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.touched: set[Tag] = set()
        self.unread = True  # statements ran since the change rows were last read
        self.seen = 0  # the last change row id read
        self.everything = False  # touched tags unknown: bypass every read
        self.snapshot = False  # a raw SET TRANSACTION asked for a snapshot isolation level

    def published(self) -> None:
        """The on-commit hook: publish this transaction's change rows before any other hook."""
        drain.drain(self.alias, own=True)

    def read(self, conn: BaseDatabaseWrapper) -> None:
        """Add the tags of the change rows this transaction wrote since the last read."""
        own = (
            " AND txid = pg_current_xact_id()::text::bigint" if conn.vendor == "postgresql" else ""
        )
        try:
            with drain.internal(conn), conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT {drain.COLUMNS} FROM {CHANGE_TABLE} WHERE id > %s{own} ORDER BY id",
                    [self.seen],
                )
                rows = [Row(*r) for r in cursor.fetchall()]
        except Exception:
            self.everything = True
            return
        self.unread = False
        for row in rows:
            for tags in row_changes(row).values():
                self.touched |= tags
            self.seen = max(self.seen, row.id)


@overload
def _state(conn: BaseDatabaseWrapper, create: Literal[True]) -> TransactionState: ...
@overload
def _state(conn: BaseDatabaseWrapper, create: bool = False) -> TransactionState | None: ...
def _state(conn: BaseDatabaseWrapper, create: bool = False) -> TransactionState | None:
    hooks = conn.run_on_commit
    if hooks:
        owner = getattr(hooks[0][1], "__self__", None)
        if isinstance(owner, TransactionState):
            return owner
    if not create:
        return None
    state = TransactionState(conn.alias)
    # Django's hooks are (savepoint ids, function, robust); django-stubs miss `robust`.
    hooks.insert(0, (set(), state.published, False))  # type: ignore[arg-type]
    return state


def _wrote(conn: BaseDatabaseWrapper, cursor: Any) -> None:
    """A statement that may have written has run on `conn`."""
    if conn.in_atomic_block:
        _state(conn, create=True).unread = True
        return
    # Autocommit: it committed, unless SQLite still holds it open for its RETURNING rows.
    if conn.vendor == "sqlite" and getattr(cursor, "description", None) is not None:
        conn._rx_pending = True  # type: ignore[attr-defined]  # reactive's flag on the wrapper
        return
    drain.drain(conn.alias, own=True)


def _execute(
    execute: Callable[[str, Any, bool, dict[str, Any]], Any],
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    conn = context["connection"]
    if getattr(conn, "_rx_internal", False):
        return execute(sql, params, many, context)
    _drain_pending(conn)
    text = _statement(sql)
    head = text[:9].upper()
    writes = _may_write(text, head) and _may_capture(text) and drain.ready(conn)
    if conn.vendor == "sqlite" and head.startswith("BEGIN"):
        # What this transaction changes shows in the connection's change counter,
        # whatever ran it (a DB-API cursor Django never sees included).
        conn._rx_changes_at_begin = _changes(conn)
    if writes and conn.vendor == "sqlite" and conn.in_atomic_block and _state(conn) is None:
        # SQLite names no transaction: the rows past this mark are this one's (no
        # other connection commits while it holds the write lock).
        _state(conn, create=True).seen = drain.max_id(conn)
    if writes and conn.vendor == "postgresql":
        _drains_itself(conn)
    result = execute(sql, params, many, context)
    if writes:
        _wrote(conn, context.get("cursor"))
    elif head.startswith("SET") and conn.in_atomic_block:
        upper = sql.upper()
        if "TRANSACTION" in upper and any(level in upper for level in _SNAPSHOT_LEVELS):
            _state(conn, create=True).snapshot = True
    return result


def _drains_itself(conn: BaseDatabaseWrapper) -> None:
    """Tell PostgreSQL, once per connection, that this session drains its own change rows.

    Its commits then wake no drainer (they would race the writer for its rows).
    Set in a transaction that rolls back, the setting is lost: its later commits
    wake the drainers again, which costs speed, never an event.
    """
    raw = conn.connection
    if raw is None or getattr(raw, "_rx_drains", False):
        return
    with drain.internal(conn), conn.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', false)", [triggers.SELF_DRAINING])
    raw._rx_drains = True


def _statement(sql: str) -> str:
    """`sql` past its leading whitespace and comments."""
    position = 0
    while True:
        found = _COMMENTS.match(sql, position)
        if found is None or found.end() == position:
            return sql[position:].lstrip()
        position = found.end()


def _may_write(text: str, head: str) -> bool:
    if head.startswith("EXPLAIN"):  # runs the statement only with ANALYZE
        options = text[:60].upper()
        return "ANALYZE" in options or "ANALYSE" in options
    return not head.startswith(_READS + _READS_TOO)


def _changes(conn: BaseDatabaseWrapper) -> int | None:
    raw = conn.connection
    return getattr(raw, "total_changes", None) if raw is not None else None


def _may_capture(sql: str) -> bool:
    """Whether a write statement may touch a tracked table (unknown: yes)."""
    found = _TARGET.match(sql)
    return found is None or found[1] == CHANGE_TABLE or tracked_table_name(found[1])


def _wrote_unseen(conn: BaseDatabaseWrapper) -> bool:
    """SQLite: whether the transaction changed rows by a path the wrapper did not see."""
    if conn.vendor != "sqlite":
        return False
    begin = getattr(conn, "_rx_changes_at_begin", None)
    return begin is not None and _changes(conn) != begin


def _pg_wrote(conn: BaseDatabaseWrapper) -> bool:
    """PostgreSQL: whether the current transaction has written (it then has an id)."""
    with drain.internal(conn), conn.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
        return bool(cursor.fetchone()[0])


def _stores_in_transaction(conn: BaseDatabaseWrapper) -> bool:
    """Whether a read inside this connection's transaction sees every commit made before it."""
    if conn.vendor == "sqlite":
        # Only a transaction that takes the write lock at BEGIN keeps others from
        # committing after its first read (its snapshot).
        return getattr(conn, "transaction_mode", None) in ("IMMEDIATE", "EXCLUSIVE")
    level = str(getattr(conn, "isolation_level", "") or "").upper()
    return not any(name in level for name in _SNAPSHOT_LEVELS)


def read_policy(tags: list[Tag], using: str = DEFAULT_DB_ALIAS) -> tuple[bool, Any]:
    """(may read the cache, may store in it) for a query with `tags`, on `using`.

    "May store" is a bool, or a function to ask right before storing.
    """
    conn = connections[using]
    if not conn.in_atomic_block:
        _drain_pending(conn)  # a write this thread committed is published before it reads
        return True, True
    state = _state(conn)
    store = _stores_in_transaction(conn)
    if state is None and _wrote_unseen(conn):
        state = _state(conn, create=True)
        state.everything = True
    if state is None:
        # A write on a DB-API cursor Django never sees: PostgreSQL knows (checked
        # only before storing, so a hit costs no query); SQLite told _wrote_unseen.
        return True, (
            lambda: not _pg_wrote(conn)
        ) if store and conn.vendor == "postgresql" else store
    if state.unread:
        state.read(conn)
    if state.everything or not state.touched.isdisjoint(tags):
        return False, False
    return True, store and not state.snapshot


# --- signals: the ORM says at once what it wrote -------------------------------------


def _touch(using: str | None, model: type[models.Model], values: dict[str, Any]) -> None:
    state = _state(connections[using or DEFAULT_DB_ALIAS])
    if state is not None and is_tracked(model):
        state.touched |= version_tags(concrete(model), values)


def _values(instance: models.Model) -> dict[str, Any]:
    # F() expressions and the like are not values yet: the change rows will say.
    return {
        f.attname: v
        for f in instance._meta.concrete_fields
        if not hasattr(v := instance.__dict__.get(f.attname), "resolve_expression")
    }


def _on_row(
    sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any
) -> None:
    """post_save and post_delete: the row's tags are touched; a held write is drained."""
    _touch(using, sender, _values(instance))
    _drain_pending(connections[using or DEFAULT_DB_ALIAS])


def _drain_pending(conn: BaseDatabaseWrapper) -> None:
    """Drain a committed write SQLite held open for its RETURNING rows, now that they are read."""
    if getattr(conn, "_rx_pending", False) and not conn.in_atomic_block:
        conn._rx_pending = False  # type: ignore[attr-defined]  # reactive's flag on the wrapper
        drain.drain(conn.alias, own=True)


def _on_m2m(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    state = _state(connections[using or DEFAULT_DB_ALIAS])
    if action.startswith("post_") and state is not None and is_tracked(sender):
        # Which link rows: the change rows say.
        state.touched |= {table_tag(sender), wildcard_tag(sender)}


# --- manual invalidation ------------------------------------------------------------


def invalidate(*tags: Tag, tenant: Any = None, using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate tags by hand, when the current transaction commits (now, in autocommit).

    Tags take the spellings of dependency specs (``agent``, ``app.Model``,
    ``agency.agent:organization=<id>``, ``app.model:*``). For a change the
    database cannot see; writes to tracked tables, raw SQL included, need no call.
    """
    normal = sorted({normalize(tag) for tag in tags})
    if not normal:
        return
    conn = connections[using]
    data = {"tenant": None if tenant is None else str(tenant), "tags": normal}
    with conn.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {CHANGE_TABLE} (tbl, op, new) VALUES (%s, %s, %s)",
            ["", MANUAL, json.dumps(data)],
        )


def invalidate_model(
    model: type[models.Model], tenant: Any = None, using: str = DEFAULT_DB_ALIAS
) -> None:
    """Invalidate every query on `model` (table and scoped)."""
    model = concrete(model)
    invalidate(table_tag(model), wildcard_tag(model), tenant=tenant, using=using)


# --- installation ---------------------------------------------------------------------


def _wrap(sender: Any = None, connection: BaseDatabaseWrapper | None = None, **kwargs: Any) -> None:
    if connection is not None and _execute not in connection.execute_wrappers:
        connection.execute_wrappers.append(_execute)


def _after_migrate(sender: AppConfig, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    try:
        triggers.install(using)
    except NotImplementedError as exc:
        logger.warning("reactive: %s; cached reads there are only invalidated by TTL", exc)
    drain.forget_ready()


def _before_request(sender: Any = None, **kwargs: Any) -> None:
    publishing.responding()  # this request's events reach local connections after its response


def _after_request(sender: Any = None, **kwargs: Any) -> None:
    for conn in connections.all(initialized_only=True):
        _drain_pending(conn)
    publishing.responded()  # the response is out: local connections get its events now


def install(app_config: Any = None) -> None:
    """Connect the receivers and wrap every connection's execute (idempotent)."""
    post_save.connect(_on_row, dispatch_uid="reactive.save")
    post_delete.connect(_on_row, dispatch_uid="reactive.delete")
    m2m_changed.connect(_on_m2m, dispatch_uid="reactive.m2m")
    connection_created.connect(_wrap, dispatch_uid="reactive.wrap")
    request_started.connect(_before_request, dispatch_uid="reactive.request_started")
    request_finished.connect(_after_request, dispatch_uid="reactive.request")
    if app_config is not None:
        post_migrate.connect(_after_migrate, sender=app_config, dispatch_uid="reactive.migrate")
    for conn in connections.all(initialized_only=True):
        _wrap(connection=conn)
    set_read_policy(read_policy)


def uninstall() -> None:
    """Undo :func:`install` in this process (benchmarks compare writes with and without)."""
    post_save.disconnect(dispatch_uid="reactive.save")
    post_delete.disconnect(dispatch_uid="reactive.delete")
    m2m_changed.disconnect(dispatch_uid="reactive.m2m")
    connection_created.disconnect(dispatch_uid="reactive.wrap")
    request_started.disconnect(dispatch_uid="reactive.request_started")
    request_finished.disconnect(dispatch_uid="reactive.request")
    publishing.responded()
    for conn in connections.all(initialized_only=True):
        if _execute in conn.execute_wrappers:
            conn.execute_wrappers.remove(_execute)
    set_read_policy(None)
