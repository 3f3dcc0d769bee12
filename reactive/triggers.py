"""The database triggers that write one change row per changed row of a tracked table.

They run in the writing transaction, so a rollback leaves no change row, and
they see every write: the ORM's, raw SQL, another process, ``psql``, another
service. PostgreSQL gets a PL/pgSQL row trigger per table (which also
NOTIFYs the drainers) and a statement-level TRUNCATE trigger; SQLite gets
AFTER INSERT/UPDATE/DELETE triggers building JSON with JSON1.

:func:`install` is idempotent and only touches what differs from the models;
it runs after every ``migrate`` (so a model added later is tracked with no
other step), and ``manage.py reactive_triggers --sql`` prints the SQL for a DBA.
"""

from __future__ import annotations

import hashlib

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from .tables import CHANGE_TABLE, Table, tracked_tables

PREFIX = "reactive_"
CHANNEL = "reactive_change"  # PostgreSQL NOTIFY channel the drainers LISTEN on
# A session that drains its own writes (a process running reactive) sets this,
# so that its commits wake no drainer: only other writers' commits NOTIFY.
SELF_DRAINING = "reactive.drains"
_OWN = f"coalesce(current_setting('{SELF_DRAINING}', true), '') = 'on'"
_NOTIFY = f"  IF NOT {_OWN} THEN PERFORM pg_notify('{CHANNEL}', ''); END IF;\n"
_MAX_PAIRS = 50  # json_build_object takes at most 100 arguments; SQLite's json_object 127


def _q(conn: BaseDatabaseWrapper, name: str) -> str:
    return conn.ops.quote_name(name)


def _short(kind: str, table: str) -> str:
    """A trigger or function name under PostgreSQL's 63-character limit, stable per table."""
    name = f"{PREFIX}{kind}_{table}"
    if len(name) <= 63:
        return name
    return f"{PREFIX}{kind}_{hashlib.sha1(table.encode()).hexdigest()[:16]}"


def _pairs(conn: BaseDatabaseWrapper, table: Table, row: str) -> list[str]:
    pairs = [f"'{c}', {row}.{_q(conn, c)}" for c in table.columns]
    for lookup in table.lookups:
        pairs.append(
            f"'{lookup.name}', (SELECT {_q(conn, lookup.tenant)} FROM {_q(conn, lookup.table)} "
            f"WHERE {_q(conn, lookup.key)} = {row}.{_q(conn, lookup.column)})"
        )
    return pairs


def _json(conn: BaseDatabaseWrapper, table: Table, row: str) -> str:
    pairs = _pairs(conn, table, row)
    chunks = [pairs[i : i + _MAX_PAIRS] for i in range(0, len(pairs), _MAX_PAIRS)]
    if conn.vendor == "postgresql":
        parts = [f"json_build_object({', '.join(chunk)})" for chunk in chunks]
        if len(parts) == 1:
            return parts[0]
        return "(" + " || ".join(f"{p}::jsonb" for p in parts) + ")::json"
    parts = [f"json_object({', '.join(chunk)})" for chunk in chunks]
    return parts[0] if len(parts) == 1 else f"json_patch({', '.join(parts)})"


# --- the change table ---------------------------------------------------------------


def change_table_sql(conn: BaseDatabaseWrapper) -> list[str]:
    """CREATE statements of the change table (and its notifying function on PostgreSQL)."""
    t = _q(conn, CHANGE_TABLE)
    if conn.vendor == "postgresql":
        return [
            # pid and own: the writing session, and whether it drains its rows itself
            # (drainers leave those alone unless they are left over, see drain.py).
            f"CREATE TABLE IF NOT EXISTS {t} (id bigserial PRIMARY KEY, tbl text NOT NULL, "
            "op char(1) NOT NULL, old json, new json, "
            "txid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint, "
            "at timestamptz NOT NULL DEFAULT now(), "
            "pid integer NOT NULL DEFAULT pg_backend_pid(), "
            f"own boolean NOT NULL DEFAULT {_OWN})",
            f"CREATE OR REPLACE FUNCTION {PREFIX}truncated() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n  INSERT INTO {t} (tbl, op) VALUES (TG_TABLE_NAME, 'T');\n"
            f"{_NOTIFY}  RETURN NULL;\nEND $$",
            # The writer's claim of its own rows, in one round trip. Losing this
            # commit in a crash only publishes them twice: no flush to wait for.
            f"CREATE OR REPLACE FUNCTION {PREFIX}claim_own() RETURNS SETOF {t} "
            "LANGUAGE plpgsql AS $$\n"
            "BEGIN\n  PERFORM set_config('synchronous_commit', 'off', true);\n"
            f"  RETURN QUERY DELETE FROM {t} WHERE pid = pg_backend_pid() RETURNING *;\nEND $$",
        ]
    if conn.vendor == "sqlite":
        # AUTOINCREMENT: ids are never reused, so a process's high-water mark stays valid.
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "tbl TEXT NOT NULL, op TEXT NOT NULL, old TEXT, new TEXT, txid INTEGER, "
            "at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))",
        ]
    raise NotImplementedError(f"reactive: no change capture for {conn.vendor}")


def drop_change_table_sql(conn: BaseDatabaseWrapper) -> list[str]:
    """DROP statements undoing :func:`change_table_sql`."""
    out = [f"DROP TABLE IF EXISTS {_q(conn, CHANGE_TABLE)}"]
    if conn.vendor == "postgresql":
        out.insert(0, f"DROP FUNCTION IF EXISTS {PREFIX}truncated() CASCADE")
        out.insert(0, f"DROP FUNCTION IF EXISTS {PREFIX}claim_own() CASCADE")
    return out


# --- per table -------------------------------------------------------------------------


def table_sql(conn: BaseDatabaseWrapper, table: Table) -> dict[str, str]:
    """Object name -> its CREATE statement, for the triggers of one table."""
    t, changes = _q(conn, table.name), _q(conn, CHANGE_TABLE)
    if conn.vendor == "postgresql":
        fn = _short("capture", table.name)
        body = (
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n  INSERT INTO {changes} (tbl, op, old, new, txid) VALUES (TG_TABLE_NAME, "
            "left(TG_OP, 1),\n"
            f"    CASE WHEN TG_OP <> 'INSERT' THEN {_json(conn, table, 'OLD')} END,\n"
            f"    CASE WHEN TG_OP <> 'DELETE' THEN {_json(conn, table, 'NEW')} END,\n"
            "    pg_current_xact_id()::text::bigint);\n"
            f"{_NOTIFY}  RETURN NULL;\nEND $$"
        )
        row = _short("row", table.name)
        trunc = _short("truncate", table.name)
        return {
            f"function:{fn}": body,
            f"trigger:{row}": f"CREATE OR REPLACE TRIGGER {row} AFTER INSERT OR UPDATE OR DELETE "
            f"ON {t} FOR EACH ROW EXECUTE FUNCTION {fn}()",
            f"trigger:{trunc}": f"CREATE OR REPLACE TRIGGER {trunc} AFTER TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PREFIX}truncated()",
        }
    out = {}
    for op, when, old, new in (
        ("I", "INSERT", "NULL", _json(conn, table, "NEW")),
        ("U", "UPDATE", _json(conn, table, "OLD"), _json(conn, table, "NEW")),
        ("D", "DELETE", _json(conn, table, "OLD"), "NULL"),
    ):
        name = _short(op.lower(), table.name)
        out[f"trigger:{name}"] = (
            f"CREATE TRIGGER {name} AFTER {when} ON {t} FOR EACH ROW BEGIN "
            f"INSERT INTO {changes} (tbl, op, old, new) VALUES ('{table.name}', '{op}', "
            f"{old}, {new}); END"
        )
    return out


def expected(conn: BaseDatabaseWrapper, tables: list[Table] | None = None) -> dict[str, str]:
    """Every trigger object the tracked tables need, name -> CREATE statement."""
    out: dict[str, str] = {}
    for table in tracked_tables() if tables is None else tables:
        out.update(table_sql(conn, table))
    return out


def _installed(conn: BaseDatabaseWrapper) -> dict[str, str]:
    """Trigger objects present now, name -> a comparable form of their definition."""
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(
                "SELECT 'function:' || proname, pg_get_functiondef(p.oid) FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema() AND proname LIKE %s",
                [PREFIX + "capture_%"],
            )
            found = {name: _normal(src) for name, src in cursor.fetchall()}
            cursor.execute(
                "SELECT 'trigger:' || tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND NOT tgisinternal AND tgname LIKE %s",
                [PREFIX + "%"],
            )
            found.update({name: _normal(src) for name, src in cursor.fetchall()})
            return found
        cursor.execute(
            "SELECT 'trigger:' || name, sql FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE %s",
            [PREFIX + "%"],
        )
        return {name: _normal(src) for name, src in cursor.fetchall()}


def _normal(sql: str) -> str:
    """Definitions compared whitespace- and case-insensitively, past the object's name."""
    return " ".join(sql.split()).lower()


def _matches(conn: BaseDatabaseWrapper, name: str, sql: str, present: str | None) -> bool:
    if present is None:
        return False
    if conn.vendor == "sqlite":
        return present == _normal(sql)
    # PostgreSQL rewrites definitions: a function carries a fingerprint of the body
    # we wrote; a trigger names only its table and function, both in its name.
    return name.startswith("trigger:") or _fingerprint(sql) in present


def _fingerprint(sql: str) -> str:
    return "rx:" + hashlib.sha1(_normal(sql).encode()).hexdigest()[:16]


def _create(conn: BaseDatabaseWrapper, name: str, sql: str) -> list[str]:
    kind, obj = name.split(":", 1)
    if conn.vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {obj}", sql]
    if kind == "function":
        # The fingerprint rides in the body, where pg_get_functiondef shows it.
        return [sql.replace("$$\nBEGIN", f"$$\n-- {_fingerprint(sql)}\nBEGIN", 1)]
    return [sql]


def plan(using: str = "default") -> tuple[list[str], list[str]]:
    """(statements to run, names of stale objects they drop) to bring triggers in step."""
    conn = connections[using]
    existing = set(conn.introspection.table_names())
    tables = [t for t in tracked_tables() if t.name in existing]
    wanted = expected(conn, tables)
    present = _installed(conn)
    statements: list[str] = []
    if CHANGE_TABLE not in existing:
        statements += change_table_sql(conn)
    for name, sql in wanted.items():
        if not _matches(conn, name, sql, present.get(name)):
            statements += _create(conn, name, sql)
    stale = sorted(n for n in present if n not in wanted)
    for name in stale:
        statements += _drop(conn, name)
    return statements, stale


def _drop(conn: BaseDatabaseWrapper, name: str) -> list[str]:
    kind, obj = name.split(":", 1)
    if conn.vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {obj}"]
    if kind == "function":
        return [f"DROP FUNCTION IF EXISTS {obj}() CASCADE"]
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = %s",
            [obj],
        )
        return [f"DROP TRIGGER IF EXISTS {obj} ON {_q(conn, r[0])}" for r in cursor.fetchall()]


def install(using: str = "default") -> int:
    """Create or update the change table and every trigger; returns statements run."""
    statements, _ = plan(using)
    if statements:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
    return len(statements)


def all_sql(using: str = "default") -> list[str]:
    """Every statement of a fresh install, for ``reactive_triggers --sql``."""
    conn = connections[using]
    out = change_table_sql(conn)
    for name, sql in expected(conn).items():
        out += _create(conn, name, sql)
    return out


def uninstall(using: str = "default") -> None:
    """Drop every trigger and the change table."""
    conn = connections[using]
    present = _installed(conn)
    with transaction.atomic(using=using), conn.cursor() as cursor:
        for name in present:
            for sql in _drop(conn, name):
                cursor.execute(sql)
        for sql in drop_change_table_sql(conn):
            cursor.execute(sql)
