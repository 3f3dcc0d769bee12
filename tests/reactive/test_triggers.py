"""The capture triggers (reactive/triggers.py): in step with the models, idempotent, and real."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from reactive import triggers
from reactive.tables import CHANGE_TABLE, table_of, tracked_tables
from tests.testapp.models import Author, Book, Shelf

pytestmark = pytest.mark.django_db


def change_rows(table: str) -> list[tuple[str, dict | None, dict | None]]:
    """The change rows of `table` visible to this test's transaction: (op, old, new)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT op, old, new FROM {CHANGE_TABLE} WHERE tbl = %s ORDER BY id", [table]
        )
        rows = cursor.fetchall()
    loaded = [json.loads(v) if isinstance(v, str) else v for r in rows for v in r[1:]]
    return [(r[0].strip(), loaded[2 * i], loaded[2 * i + 1]) for i, r in enumerate(rows)]


def row_trigger(table: str) -> str:
    """The name of one row trigger of `table` (its insert trigger on SQLite)."""
    names = triggers.expected(connection, [table_of(table)])
    return sorted(n for n in names if n.startswith("trigger:"))[0].split(":", 1)[1]


def drop_trigger(name: str, table: str) -> None:
    on = f" ON {table}" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {name}{on}")


def test_the_migrated_database_is_in_step_and_install_is_idempotent():
    assert triggers.plan() == ([], [])
    assert triggers.install() == 0


def test_a_write_leaves_one_change_row_of_its_bounded_columns():
    author = Author.objects.create(name="Le Guin")
    book = Book.objects.create(title="The Dispossessed", author=author, summary="long " * 50)
    ((op, old, new),) = change_rows("testapp_book")
    assert (op, old) == ("I", None)
    assert new["id"] == book.pk and new["title"] == "The Dispossessed"
    assert "summary" not in new  # unbounded columns are not carried
    Book.objects.filter(pk=book.pk).update(pages=300)
    Book.objects.filter(pk=book.pk).delete()
    ops = [
        (op, old and old["pages"], new and new["pages"])
        for op, old, new in change_rows("testapp_book")
    ]
    assert ops == [("I", None, 0), ("U", 0, 300), ("D", 300, None)]


def test_a_rolled_back_write_leaves_no_change_row():
    with pytest.raises(RuntimeError), transaction.atomic():
        Shelf.objects.create(code="GONE", name="Gone")
        raise RuntimeError("roll back")
    assert change_rows("testapp_shelf") == []


def test_a_missing_trigger_is_planned_and_installed_again():
    name = row_trigger("testapp_shelf")
    drop_trigger(name, "testapp_shelf")
    statements, stale = triggers.plan()
    assert stale == [] and any(name in sql for sql in statements)
    assert triggers.install() == len(statements)
    assert triggers.plan() == ([], [])
    Shelf.objects.create(code="BACK", name="Back")
    assert [op for op, _, _ in change_rows("testapp_shelf")] == ["I"]


def test_a_stale_trigger_is_dropped():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE TRIGGER reactive_stale_test AFTER TRUNCATE ON testapp_shelf "
                "FOR EACH STATEMENT EXECUTE FUNCTION reactive_truncated()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER reactive_stale_test AFTER INSERT ON testapp_shelf BEGIN SELECT 1; END"
            )
    statements, stale = triggers.plan()
    assert stale == ["trigger:reactive_stale_test"]
    assert all("reactive_stale_test" in sql for sql in statements)
    triggers.install()
    assert triggers.plan() == ([], [])


def test_the_printed_sql_creates_the_change_table_and_every_tables_triggers():
    sql = "\n".join(triggers.all_sql())
    assert f"CREATE TABLE IF NOT EXISTS {connection.ops.quote_name(CHANGE_TABLE)}" in sql
    for table in tracked_tables():
        assert connection.ops.quote_name(table.name) in sql


def test_object_names_fit_postgresqls_limit_and_stay_stable():
    long = "t" * 80
    name = triggers._short("capture", long)
    assert len(name) <= 63 and name == triggers._short("capture", long)
    assert name != triggers._short("capture", long + "x")
    assert triggers._short("row", "testapp_book") == "reactive_row_testapp_book"
