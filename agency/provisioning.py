"""Creating an organization's own database (PostgreSQL database or SQLite file), idempotently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from django.conf import settings
from django.db import connections

from .models import database_name_validator


class ProvisioningError(Exception):
    """The organization's database could not be created."""


def provision(database_name: str) -> bool:
    """Make sure the database exists; True when this call created it."""
    if not database_name_validator.regex.match(database_name):
        raise ProvisioningError(f"unsafe database name {database_name!r}")
    conn = connections["default"]
    try:
        if conn.vendor == "postgresql":
            return _postgres(database_name)
        return _sqlite(database_name)
    except ProvisioningError:
        raise
    except Exception as exc:
        raise ProvisioningError(str(exc)) from exc


def deprovision(database_name: str) -> None:
    """Drop a database this process provisioned (to undo a failed create)."""
    if not database_name_validator.regex.match(database_name):
        return
    if connections["default"].vendor == "postgresql":
        with _autocommit_cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database_name}"')
    else:
        sqlite_path(database_name).unlink(missing_ok=True)


def sqlite_path(database_name: str) -> Path:
    return Path(settings.DATA_DIR) / "organizations" / f"{database_name}.sqlite3"


def _sqlite(database_name: str) -> bool:
    path = sqlite_path(database_name)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(path).close()
    return True


class _autocommit_cursor:
    """A cursor on a separate autocommit connection: CREATE DATABASE cannot run in a transaction."""

    def __enter__(self):
        import psycopg

        params = connections["default"].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.pop("prepare_threshold", None)
        params.pop("server_side_binding", None)
        params.setdefault("dbname", "postgres")
        self.conn = psycopg.connect(**params, autocommit=True)
        return self.conn.cursor()

    def __exit__(self, *exc):
        self.conn.close()


def _postgres(database_name: str) -> bool:
    with _autocommit_cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database_name])
        if cursor.fetchone():
            return False
        try:
            cursor.execute(f'CREATE DATABASE "{database_name}"')
        except Exception as exc:
            if "already exists" in str(exc):
                return False  # created concurrently: still idempotent
            raise
        return True
