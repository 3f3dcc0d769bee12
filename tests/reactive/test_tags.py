"""Tags (reactive/tags.py): the spelling of every invalidation, and dependency templates."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured

from reactive.tags import (
    TagTemplate,
    dependency_tags,
    format_value,
    normalize,
    resolve_attname,
    resolve_model,
    row_tag,
    scoped_tag,
    table_tag,
    wildcard_tag,
)
from tests.testapp.models import Author, Book, Place, PublishedBook, Restaurant, Shelf


def test_the_three_shapes_of_a_tag():
    assert table_tag(Book) == "testapp.book"
    assert wildcard_tag(Book) == "testapp.book:*"
    assert row_tag(Book, 7) == "testapp.book:id=7"
    assert scoped_tag(Book, "author_id", 3) == "testapp.book:author_id=3"
    assert row_tag(Restaurant, 2) == "testapp.restaurant:place_ptr_id=2"


def test_values_render_as_text_one_way():
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert format_value(key) == str(key)
    assert format_value(5) == format_value("5") == "5"
    assert format_value(None) == ""


def test_models_resolve_by_label_or_unique_name_and_proxies_to_their_table():
    assert resolve_model("testapp.book") is Book
    assert resolve_model("testapp.PublishedBook") is Book
    assert resolve_model("shelf") is Shelf
    assert resolve_model("book_labels") is Book.labels.through
    with pytest.raises(LookupError, match="matches 0 models"):
        resolve_model("nosuchmodel")


def test_field_names_resolve_to_their_columns():
    assert resolve_attname(Book, "author") == "author_id"
    assert resolve_attname(Book, "author_id") == "author_id"
    assert resolve_attname(Book, "pk") == "id"
    assert resolve_attname(Restaurant, "id") == "place_ptr_id"  # the parent's key is the child's
    with pytest.raises(LookupError, match="no field"):
        resolve_attname(Book, "nosuch")
    with pytest.raises(LookupError, match="not a column"):
        resolve_attname(Book, "labels")  # a many-to-many has no column


def test_normalize_spells_tags_as_writes_emit_them():
    assert normalize("book:author=3") == "testapp.book:author_id=3"
    assert normalize("testapp.PublishedBook:*") == "testapp.book:*"
    assert normalize("testapp.author") == "testapp.author"
    with pytest.raises(ValueError, match="placeholders"):
        normalize("testapp.book:author_id={author_id}")


def test_tags_no_write_could_emit_are_refused():
    with pytest.raises(ImproperlyConfigured, match="not tracked"):
        normalize(f"{Session._meta.label_lower}:session_key=x")  # an ignored app
    with pytest.raises(ImproperlyConfigured, match="TextField"):
        normalize("testapp.book:summary=x")  # change rows do not carry unbounded columns
    with pytest.raises(LookupError, match="not a column"):
        normalize("testapp.book:labels=1")  # a many-to-many: depend on the link table


def test_a_template_renders_its_placeholders_and_guards_its_wildcard():
    template = TagTemplate.parse("testapp.book:author={author_id}")
    assert template.placeholders == ["author_id"]
    assert template.render({"author_id": 4}) == "testapp.book:author_id=4"
    assert template.render({"author_id": None}) == "testapp.book:author_id="
    assert template.guards() == ["testapp.book:*"]
    with pytest.raises(KeyError, match="author_id"):
        template.render({})


def test_table_and_wildcard_templates_need_no_values():
    table = TagTemplate.parse("testapp.place")
    assert (table.placeholders, table.render({}), table.guards()) == ([], "testapp.place", [])
    assert TagTemplate.parse("testapp.place:id=*").render({}) == "testapp.place:*"


def test_a_malformed_spec_is_a_value_error():
    with pytest.raises(ValueError, match="not a tag spec"):
        TagTemplate.parse("testapp.book:author_id")


def test_dependency_tags_are_sorted_unique_and_guarded():
    templates = [
        TagTemplate.parse("testapp.book:author_id={id}"),
        TagTemplate.parse("testapp.author:id={id}"),
        TagTemplate.parse("testapp.book"),
        TagTemplate.parse("testapp.book:author_id={id}"),
    ]
    assert dependency_tags(templates, {"id": 9}) == [
        "testapp.author:*",
        "testapp.author:id=9",
        "testapp.book",
        "testapp.book:*",
        "testapp.book:author_id=9",
    ]


def test_a_proxy_and_its_concrete_model_share_their_tags():
    assert TagTemplate.parse("testapp.publishedbook:id={id}").model is Book
    assert table_tag(resolve_model(PublishedBook._meta.label)) == table_tag(Book)
    assert resolve_model(Author._meta.label_lower) is Author
    assert resolve_model("place") is Place
