"""Tracked tables (reactive/tables.py): which tables, which columns, whose tenant."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from reactive.conf import reactive_settings
from reactive.models import FunctionStats
from reactive.tables import (
    LOOKUP_PREFIX,
    Lookup,
    ancestors,
    concrete,
    decode,
    descendants,
    is_tracked,
    table_of,
    tenant_column,
    tracked_table_name,
    tracked_tables,
    user_column,
)
from tests.testapp.models import Author, Book, Label, Place, PublishedBook, Restaurant, Shelf

LINK = Book.labels.through


@pytest.fixture
def authors_are_tenants(settings):
    """A project whose tenants are authors: a book's tenant is its author."""
    settings.REACTIVE = {
        **settings.REACTIVE,
        "TENANT_MODEL": "testapp.author",
        "TENANT_FIELD": "author",
    }


def test_concrete_managed_models_and_links_are_tracked_not_ignored_apps():
    tracked = {t.model for t in tracked_tables()}
    assert {Shelf, Author, Label, Book, LINK, Place, Restaurant} <= tracked
    assert PublishedBook not in tracked  # a proxy shares its concrete model's table
    assert is_tracked(PublishedBook) and concrete(PublishedBook) is Book
    assert not is_tracked(Session) and not is_tracked(FunctionStats)
    names = [t.name for t in tracked_tables()]
    assert names == sorted(names)


def test_an_ignored_app_is_not_tracked(settings):
    ignored = [*reactive_settings().IGNORED_APPS, "testapp"]
    settings.REACTIVE = {**settings.REACTIVE, "IGNORED_APPS": ignored}
    assert not is_tracked(Book) and table_of("testapp_book") is None


def test_tables_capture_their_bounded_columns_key_first():
    book = table_of("testapp_book")
    assert book is not None and book.model is Book
    assert book.columns[0] == "id"
    assert set(book.columns) == {"id", "title", "author_id", "shelf_id", "pages"}  # no summary
    restaurant = table_of("testapp_restaurant")
    assert restaurant.columns[0] == "place_ptr_id" and "name" not in restaurant.columns
    assert table_of("testapp_nosuch") is None


def test_table_names_match_case_insensitively():
    assert tracked_table_name("TESTAPP_BOOK") and tracked_table_name("testapp_book")
    assert not tracked_table_name("django_session")


def test_without_a_tenant_model_nothing_has_a_tenant():
    assert tenant_column(Book) is None and table_of("testapp_book").lookups == ()


def test_tenant_columns_and_lookups(authors_are_tenants):
    assert tenant_column(Author) == "id"  # the tenant row itself
    assert tenant_column(Book) == tenant_column(PublishedBook) == "author_id"
    assert tenant_column(Shelf) is None
    assert table_of(LINK._meta.db_table).lookups == (
        Lookup(column="book_id", table="testapp_book", key="id", tenant="author_id"),
    )  # a link row's tenant is read through the book it links; labels have none
    assert table_of("testapp_book").lookups == ()  # it has a tenant column of its own


def test_a_users_own_rows_are_found_by_their_user_column():
    user_model = get_user_model()
    assert user_column(user_model) == user_model._meta.pk.column
    assert user_column(Book) is None


def test_inheritance_both_ways():
    assert descendants(Place) == (Restaurant,) and descendants(Restaurant) == ()
    assert ancestors(Restaurant) == (Place,) and ancestors(Place) == ()


def test_decode_converts_the_asked_columns_to_python(authors_are_tenants):
    raw = {"place_ptr_id": "3", "serves_pizza": 1, "rating": "4", LOOKUP_PREFIX + "x": "7"}
    only = frozenset({"place_ptr_id", "serves_pizza"})
    assert decode(Restaurant, raw, only) == {"place_ptr_id": 3, "serves_pizza": True}
    looked_up = decode(Restaurant, raw, only | {LOOKUP_PREFIX})
    assert looked_up[LOOKUP_PREFIX + "x"] == "7"  # a tenant, as text
    assert decode(Book, {"shelf_id": None, "id": 1}, frozenset({"shelf_id"})) == {"shelf_id": None}
    assert decode(Book, None, only) == {} and decode(Book, {}, only) == {}
