"""The relation graph (reactive/relations.py): which other tags a write to a model implies."""

from __future__ import annotations

import pytest

from reactive import relations
from reactive.relations import relations_of, scoped_fields, tagged_columns
from reactive.tables import LOOKUP_PREFIX
from reactive.tags import TagTemplate
from tests.testapp.models import Author, Book, Label, Place, Restaurant


def implied(model, values) -> set[str]:
    return {t.render(values) for t in relations_of(model)}


@pytest.fixture
def own_declarations(monkeypatch):
    """Declarations made by a test stay in it (others' writes must not emit their tags)."""
    monkeypatch.setattr(relations, "_declared", {m: set(c) for m, c in relations._declared.items()})
    relations.reset()
    yield
    monkeypatch.undo()
    relations.reset()


def test_a_foreign_key_implies_its_target_row_on_the_target_column():
    row = {"id": 7, "author_id": 3, "shelf_id": "SCI"}
    assert implied(Book, row) == {"testapp.author:id=3", "testapp.shelf:code=SCI"}  # to_field


def test_a_foreign_key_implies_the_scoped_rows_pointing_back():
    assert implied(Author, {"id": 3}) == {"testapp.book:author_id=3"}
    assert implied(Label, {"id": 1}) == set()  # reached only through the link table


def test_a_link_row_implies_both_rows_and_both_tables():
    link = Book.labels.through
    assert implied(link, {"id": 1, "book_id": 2, "label_id": 5}) == {
        "testapp.book",
        "testapp.book:id=2",
        "testapp.label",
        "testapp.label:id=5",
    }


def test_multi_table_inheritance_links_parent_and_child_rows():
    assert implied(Restaurant, {"place_ptr_id": 4}) == {"testapp.place:id=4"}
    assert implied(Place, {"id": 4}) == {"testapp.restaurant:place_ptr_id=4"}


def test_the_relations_setting_replaces_the_derived_list(settings):
    settings.REACTIVE = {
        **settings.REACTIVE,
        "RELATIONS": {**settings.REACTIVE.get("RELATIONS", {}), "testapp.book": []},
    }
    assert relations_of(Book) == ()
    settings.REACTIVE = {
        **settings.REACTIVE,
        "RELATIONS": {"testapp.book": ["testapp.label:id={pages}"]},
    }
    assert implied(Book, {"pages": 12}) == {"testapp.label:id=12"}


def test_rows_are_tagged_by_key_foreign_keys_and_settings(settings):
    assert scoped_fields(Book)[:3] == ("id", "author_id", "shelf_id")
    assert "pages" not in scoped_fields(Book)
    settings.REACTIVE = {**settings.REACTIVE, "SCOPED_FIELDS": {"testapp.book": ["pages"]}}
    assert "pages" in scoped_fields(Book)
    assert "pages" in tagged_columns(Book)


def test_a_declared_scope_tags_rows_by_its_column(own_declarations):
    assert "name" not in scoped_fields(Place)
    relations.declare(TagTemplate.parse("testapp.place:name={name}"))
    assert "name" in scoped_fields(Place) and "name" in tagged_columns(Place)
    relations.declare(TagTemplate.parse("testapp.label"))  # table and wildcard tags scope nothing
    relations.declare(TagTemplate.parse("testapp.label:id=*"))
    assert scoped_fields(Label) == ("id",)


def test_tagged_columns_are_what_tags_use_and_local_to_the_table():
    columns = tagged_columns(Book)
    assert {"id", "author_id", "shelf_id", LOOKUP_PREFIX} <= columns
    assert not {"title", "summary"} & columns
    # A child's scope on a parent's column is decoded from the parent's table.
    assert "city" in tagged_columns(Place) and "city" not in tagged_columns(Restaurant)
