"""From change rows to tags (reactive/changes.py): what each row change invalidates, on which stream."""

from __future__ import annotations

import json

import pytest

from reactive.changes import (
    MANUAL,
    TRUNCATE,
    Row,
    merge,
    row_changes,
    transactions,
    user_stream,
)
from reactive.events import SILENT
from tests.testapp.models import Book

LINK_TABLE = Book.labels.through._meta.db_table


def row(table: str, op: str, old: dict | None = None, new: dict | None = None, **kw) -> Row:
    as_json = {k: None if v is None else json.dumps(v) for k, v in (("old", old), ("new", new))}
    return Row(kw.pop("id", 1), table, op, as_json["old"], as_json["new"], **kw)


BOOK = {"id": 1, "title": "T", "author_id": 3, "shelf_id": "SCI", "pages": 10}


@pytest.fixture
def authors_are_tenants(settings):
    settings.REACTIVE = {
        **settings.REACTIVE,
        "TENANT_MODEL": "testapp.author",
        "TENANT_FIELD": "author",
    }


def test_an_insert_tags_the_row_its_scopes_and_its_relations():
    changes = row_changes(row("testapp_book", "I", new=BOOK))
    assert set(changes) == {None}  # no tenant: the global stream
    assert changes[None] >= {
        "testapp.book",
        "testapp.book:id=1",
        "testapp.book:author_id=3",
        "testapp.book:shelf_id=SCI",
        "testapp.author:id=3",  # forward: the author's row
        "testapp.shelf:code=SCI",  # forward, on the to_field
    }
    assert not any(t.startswith("testapp.book:title") for t in changes[None])


def test_an_update_tags_both_versions():
    moved = {**BOOK, "author_id": 4}
    tags = row_changes(row("testapp_book", "U", old=BOOK, new=moved))[None]
    assert {"testapp.book:author_id=3", "testapp.book:author_id=4"} <= tags
    assert {"testapp.author:id=3", "testapp.author:id=4"} <= tags


def test_an_update_of_untagged_columns_tags_one_version():
    renamed = {**BOOK, "title": "New", "pages": 11}
    assert row_changes(row("testapp_book", "U", old=BOOK, new=renamed)) == row_changes(
        row("testapp_book", "I", new=BOOK)
    )


def test_a_delete_tags_the_old_version():
    tags = row_changes(row("testapp_book", "D", old=BOOK))[None]
    assert "testapp.book:id=1" in tags and "testapp.author:id=3" in tags


def test_a_child_row_tags_its_parent_and_a_parent_row_its_child():
    child = row_changes(row("testapp_restaurant", "U", old={"place_ptr_id": 5, "rating": 1}))
    assert {"testapp.restaurant:place_ptr_id=5", "testapp.place", "testapp.place:id=5"} <= child[
        None
    ]
    # a scope the child inherits (restaurant:city) is on the parent's table: the wildcard covers it
    assert "testapp.restaurant:*" in child[None]
    parent = row_changes(row("testapp_place", "I", new={"id": 5, "name": "N", "city": "Oslo"}))
    assert {"testapp.place:id=5", "testapp.restaurant:place_ptr_id=5"} <= parent[None]
    assert "testapp.restaurant:city=Oslo" in parent[None]


def test_a_truncate_invalidates_the_tables_of_the_family():
    changes = row_changes(Row(1, "testapp_place", TRUNCATE, None, None))
    assert changes == {
        None: {"testapp.place", "testapp.place:*", "testapp.restaurant", "testapp.restaurant:*"}
    }


def test_a_manual_row_carries_its_tenant_and_tags():
    manual = row("", MANUAL, new={"tenant": "org-1", "tags": ["a", "b"]})
    assert row_changes(manual) == {"org-1": {"a", "b"}}
    assert row_changes(row("", MANUAL, new={"tags": ["g"]})) == {None: {"g"}}


def test_a_table_no_longer_tracked_changes_nothing():
    assert row_changes(row("gone_table", "I", new={"id": 1})) == {}


def test_rows_go_to_their_tenants_stream(authors_are_tenants):
    moved = {**BOOK, "author_id": 4}
    changes = row_changes(row("testapp_book", "U", old=BOOK, new=moved))
    assert set(changes) == {"3", "4"}
    assert "testapp.book:author_id=3" in changes["3"] and "testapp.book:author_id=4" in changes["4"]


def test_a_link_goes_to_the_looked_up_tenant_or_silently_nowhere(authors_are_tenants):
    linked = {"id": 9, "book_id": 1, "label_id": 2, "_t_book_id": 3}
    assert set(row_changes(row(LINK_TABLE, "I", new=linked))) == {"3"}
    orphan = {**linked, "_t_book_id": None}  # the book is gone: its own change row tells
    changes = row_changes(row(LINK_TABLE, "D", old=orphan))
    assert set(changes) == {SILENT} and "testapp.label:id=2" in changes[SILENT]


def test_user_streams_are_named_after_the_user():
    assert user_stream(42) == "user:42"


def test_merge_adds_stream_by_stream():
    changes = {"a": {"1"}}
    merge(changes, {"a": ["2"], None: {"3"}})
    assert changes == {"a": {"1", "2"}, None: {"3"}}


def test_rows_are_grouped_by_their_writing_transaction():
    rows = [
        row("testapp_book", "I", new=BOOK, id=1, txid=10),
        row("testapp_shelf", "I", new={"id": 2, "code": "A"}, id=2, txid=11),
        row("testapp_book", "D", old=BOOK, id=3, txid=10),
    ]
    first, second = transactions(rows)
    assert "testapp.book:id=1" in first[None] and "testapp.shelf" not in first[None]
    assert "testapp.shelf:code=A" in second[None]
    (one,) = transactions(
        [row("testapp_book", "I", new=BOOK), row("testapp_label", "I", new={"id": 2})]
    )
    assert {"testapp.book", "testapp.label"} <= one[None]  # SQLite names none: one group
