"""Change capture on general Django models: every write path, as a caller of a function sees it.

The models (tests/testapp/models.py) know nothing of the reactive layer; the
functions (tests/testapp/functions.py) declare dependencies the way a host
project would. Each test calls a function (a miss, then a hit), writes, and
calls again: the answer must be the fresh data. One test per case of the
original bug list that database-side capture fixes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.db.models import F, Subquery
from django.db.models.signals import post_save

from reactive import capture, drain
from reactive.cache import reactive_cache
from reactive.functions import Context, ReactiveFunction, Result
from reactive.schema import Input
from tests.conftest import SERVICES
from tests.testapp.functions import registry
from tests.testapp.models import (
    Author,
    Book,
    Label,
    Place,
    PublishedBook,
    Restaurant,
    Shelf,
)

pytestmark = pytest.mark.django_db(transaction=True)
WAIT = 10  # seconds any cross-thread wait may take at most


@pytest.fixture(autouse=True)
def no_entries_of_earlier_tests():
    """With Redis, entries of earlier tests (or runs) survive: make every one a miss.

    Their invalidations never came: the change rows of the flush between two
    tests are skipped (reactive.testing.skip_pending_changes), and these functions'
    keys (no input, or small ids) repeat from test to test.
    """
    if SERVICES:
        reactive_cache().bump_epoch()


def call(name: str, **inp) -> Result:
    return registry[name].call(inp, Context())


def fresh(name: str, **inp) -> Result:
    """A call that must be computed (not a hit); returns its result."""
    result = call(name, **inp)
    assert not result.hit, f"{name}({inp}) was served from the cache after a write"
    return result


def primed(name: str, **inp) -> Result:
    """Call twice: a miss, then a hit (so that a stale entry would be served next)."""
    first = call(name, **inp)
    assert not first.hit, f"{name}({inp}) hit before it was ever computed"
    second = call(name, **inp)
    assert second.hit, f"{name}({inp}) was not cached"
    assert second.data == first.data
    return second


def titles(result: Result) -> list[str]:
    return [row["title"] for row in result.data]


def all_tags(published: list[dict]) -> set[str]:
    out: set[str] = set()
    for changes in published:
        for tags in changes.values():
            out |= tags
    return out


@pytest.fixture
def authors() -> tuple[Author, Author]:
    return Author.objects.create(name="Ann", country="FR"), Author.objects.create(
        name="Ben", country="DE"
    )


@pytest.fixture
def book(authors) -> Book:
    return Book.objects.create(title="First", author=authors[0], pages=10)


@contextmanager
def receiver(sender, handler) -> Iterator[None]:
    """Connect a post_save receiver for the duration of the block."""
    uid = f"test_capture_general.{sender.__name__}"
    post_save.connect(handler, sender=sender, weak=False, dispatch_uid=uid)
    try:
        yield
    finally:
        post_save.disconnect(sender=sender, dispatch_uid=uid)


# --- 1. read-your-writes -------------------------------------------------------------------


def test_1_read_inside_a_writing_transaction_sees_its_own_writes(authors, book):
    ann, _ = authors
    assert titles(primed("testapp.books.byAuthor", author_id=ann.pk)) == ["First"]
    primed("testapp.authors.byCountry", country="DE")
    with transaction.atomic():
        Book.objects.create(title="Second", author=ann)
        inside = fresh("testapp.books.byAuthor", author_id=ann.pk)
        assert titles(inside) == ["First", "Second"]
        Book.objects.filter(pk=book.pk).update(title="First, revised")
        assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == [
            "First, revised",
            "Second",
        ]
        # a query whose tags the transaction did not touch still hits
        assert call("testapp.authors.byCountry", country="DE").hit
    after = fresh("testapp.books.byAuthor", author_id=ann.pk)
    assert titles(after) == ["First, revised", "Second"]
    assert call("testapp.books.byAuthor", author_id=ann.pk).hit


@pytest.mark.parametrize("atomic", [True, False], ids=["in a transaction", "autocommit"])
def test_1_post_save_receiver_reading_through_a_function_sees_the_saved_row(authors, book, atomic):
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    seen: list[list[str]] = []

    def read_books(sender, instance, **kwargs):
        seen.append(titles(call("testapp.books.byAuthor", author_id=instance.author_id)))

    with receiver(Book, read_books):
        if atomic:
            with transaction.atomic():
                Book.objects.create(title="Second", author=ann)
        else:
            Book.objects.create(title="Second", author=ann)
        assert seen == [["First", "Second"]]
        book.title = "Renamed"
        book.save()
        assert seen[-1] == ["Renamed", "Second"]
    assert titles(call("testapp.books.byAuthor", author_id=ann.pk)) == ["Renamed", "Second"]


def test_1_post_save_receiver_of_a_child_model_reads_its_parent_fields():
    """Restaurant.save() runs in its own atomic block (parents first): its receiver reads fresh."""
    place = Restaurant.objects.create(name="Luigi", city="Rome", rating=3)
    assert primed("testapp.restaurants.getOne", id=place.pk).data["rating"] == 3
    seen: list[dict] = []

    def read_restaurant(sender, instance, **kwargs):
        seen.append(call("testapp.restaurants.getOne", id=instance.pk).data)

    with receiver(Restaurant, read_restaurant):
        place.name, place.rating = "Mario", 4
        place.save()
    assert seen and seen[-1]["name"] == "Mario" and seen[-1]["rating"] == 4
    after = call("testapp.restaurants.getOne", id=place.pk)
    assert after.data["name"] == "Mario" and after.data["rating"] == 4


def test_1_another_thread_reads_a_committed_autocommit_create_at_once(authors, book):
    """Once ``create()`` has returned in autocommit, the row is committed: no thread may miss it."""
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    Book.objects.create(title="Second", author=ann)  # autocommit: committed on return
    seen: list[Result] = []

    def reader():
        try:
            seen.append(call("testapp.books.byAuthor", author_id=ann.pk))
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive() and len(seen) == 1
    assert titles(seen[0]) == ["First", "Second"], "another thread was served the entry from before"


# --- 2. rollback ---------------------------------------------------------------------------


def test_2_query_computed_in_a_transaction_that_rolls_back_is_not_served(authors, book):
    ann, _ = authors
    assert titles(primed("testapp.books.byAuthor", author_id=ann.pk)) == ["First"]
    with pytest.raises(RuntimeError), transaction.atomic():
        Book.objects.create(title="Never", author=ann)
        assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["First", "Never"]
        raise RuntimeError
    after = call("testapp.books.byAuthor", author_id=ann.pk)
    assert titles(after) == ["First"]
    again = call("testapp.books.byAuthor", author_id=ann.pk)
    assert again.hit and titles(again) == ["First"]


def test_2_rolled_back_savepoint_read_is_not_served(authors, book):
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    with transaction.atomic():
        try:
            with transaction.atomic():
                Book.objects.filter(pk=book.pk).update(title="Dropped")
                assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Dropped"]
                raise ValueError
        except ValueError:
            pass
        assert titles(call("testapp.books.byAuthor", author_id=ann.pk)) == ["First"]
    assert titles(call("testapp.books.byAuthor", author_id=ann.pk)) == ["First"]


def test_2_in_transaction_read_then_rollback_leaves_no_cache_entry(authors, book):
    ann, _ = authors
    with pytest.raises(RuntimeError), transaction.atomic():
        Book.objects.filter(pk=book.pk).update(title="Never")
        inside = call("testapp.books.byAuthor", author_id=ann.pk)
        assert not inside.hit and titles(inside) == ["Never"]
        raise RuntimeError
    outside = call("testapp.books.byAuthor", author_id=ann.pk)
    assert not outside.hit, "the read inside the rolled-back transaction stored an entry"
    assert titles(outside) == ["First"]
    assert call("testapp.books.byAuthor", author_id=ann.pk).hit


def _unclassified_update(how: str, title: str, pk: int) -> None:
    """An UPDATE the execute wrapper's statement sniffing does not recognize as a write."""
    table = Book._meta.db_table
    if how == "comment-prefixed SQL":
        with connection.cursor() as cursor:
            cursor.execute(
                f"/* app:job */ UPDATE {table} SET title = %s WHERE id = %s", [title, pk]
            )
        return
    placeholder = "?" if connection.vendor == "sqlite" else "%s"
    connection.ensure_connection()
    raw = connection.connection.cursor()  # the DB-API cursor, under Django's wrapper
    try:
        raw.execute(
            f"UPDATE {table} SET title = {placeholder} WHERE id = {placeholder}", [title, pk]
        )
    finally:
        raw.close()


@pytest.mark.parametrize("how", ["comment-prefixed SQL", "DB-API cursor"])
def test_2_rollback_of_a_write_capture_did_not_classify_leaves_no_entry(authors, book, how):
    """The triggers saw the write (its change rows exist): a read after it must not store."""
    ann, _ = authors
    with pytest.raises(RuntimeError), transaction.atomic():
        _unclassified_update(how, "Never", book.pk)
        inside = call("testapp.books.byAuthor", author_id=ann.pk)
        assert titles(inside) == ["Never"]
        raise RuntimeError
    outside = call("testapp.books.byAuthor", author_id=ann.pk)
    assert titles(outside) == ["First"], "the rolled-back transaction's data was stored and served"
    assert not outside.hit


# --- 3. on_commit ----------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True], ids=["same block", "write in a savepoint"])
def test_3_on_commit_registered_before_the_first_write_reads_fresh_data(authors, book, nested):
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    seen: list[Result] = []
    with transaction.atomic():
        transaction.on_commit(lambda: seen.append(call("testapp.books.byAuthor", author_id=ann.pk)))
        if nested:
            with transaction.atomic():
                Book.objects.create(title="Second", author=ann)
        else:
            Book.objects.create(title="Second", author=ann)
        assert seen == []
    assert len(seen) == 1
    assert not seen[0].hit and titles(seen[0]) == ["First", "Second"]


# --- 4. proxies --------------------------------------------------------------------------


def test_4_proxy_writes_invalidate_concrete_queries_and_back(authors, book, published):
    ann, ben = authors
    primed("testapp.publishedBooks.all")
    primed("testapp.publishedBooks.getOne", id=book.pk)
    primed("testapp.books.byAuthor", author_id=ann.pk)

    # concrete write -> proxy queries
    Book.objects.filter(pk=book.pk).update(title="Concrete")
    assert titles(fresh("testapp.publishedBooks.all")) == ["Concrete"]
    assert fresh("testapp.publishedBooks.getOne", id=book.pk).data["title"] == "Concrete"

    # proxy writes -> concrete queries
    primed("testapp.books.withLabels")
    published.clear()
    PublishedBook.objects.create(title="Via proxy", author=ann)
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Concrete", "Via proxy"]
    assert titles(fresh("testapp.books.withLabels")) == ["Concrete", "Via proxy"]
    proxy = PublishedBook.objects.get(pk=book.pk)
    proxy.author = ben
    proxy.save()
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Via proxy"]
    assert titles(fresh("testapp.books.byAuthor", author_id=ben.pk)) == ["Concrete"]
    assert not any(t.startswith("testapp.publishedbook") for t in all_tags(published))

    # and inside a transaction, through the proxy
    with transaction.atomic():
        PublishedBook.objects.filter(pk=book.pk).update(pages=99)
        assert fresh("testapp.publishedBooks.getOne", id=book.pk).data["pages"] == 99
        assert fresh("testapp.books.byAuthor", author_id=ben.pk).data[0]["pages"] == 99


# --- 5. multi-table inheritance ------------------------------------------------------------


def test_5_child_writes_invalidate_parent_queries_and_parent_writes_the_child(published):
    r = Restaurant.objects.create(name="Luigi", city="Rome", rating=3)
    plain = Place.objects.create(name="Park", city="Rome")
    assert [p["rating"] for p in primed("testapp.places.all").data] == [3, None]
    primed("testapp.restaurants.getOne", id=r.pk)

    # a write to the child table only
    Restaurant.objects.filter(pk=r.pk).update(rating=5)
    assert [p["rating"] for p in fresh("testapp.places.all").data] == [5, None]
    assert fresh("testapp.restaurants.getOne", id=r.pk).data["rating"] == 5

    # a parent field through the child instance (only the parent table is written)
    r.name = "Mario"
    r.save(update_fields=["name"])
    assert fresh("testapp.restaurants.getOne", id=r.pk).data["name"] == "Mario"
    assert [p["name"] for p in fresh("testapp.places.all").data] == ["Mario", "Park"]

    # a parent field through the parent's manager
    Place.objects.filter(pk=r.pk).update(name="Bruno")
    assert fresh("testapp.restaurants.getOne", id=r.pk).data["name"] == "Bruno"

    # a parent field through the child's manager (Django updates the parent table)
    Restaurant.objects.filter(pk=r.pk).update(city="Milan")
    assert fresh("testapp.restaurants.getOne", id=r.pk).data["city"] == "Milan"

    # inside a transaction: read-your-writes on the child's query after a parent write
    with transaction.atomic():
        Place.objects.filter(pk=r.pk).update(city="Turin")
        assert fresh("testapp.restaurants.getOne", id=r.pk).data["city"] == "Turin"
    assert fresh("testapp.restaurants.getOne", id=r.pk).data["city"] == "Turin"

    # the parent row deleted: the child is gone too
    assert call("testapp.restaurants.getOne", id=r.pk).hit
    Place.objects.filter(pk=r.pk).delete()
    assert fresh("testapp.restaurants.getOne", id=r.pk).data is None
    assert [p["id"] for p in fresh("testapp.places.all").data] == [plain.pk]


def test_5_child_table_write_invalidates_a_scope_on_an_inherited_column():
    """``restaurant:city={city}``: city lives in the parent table, rating in the child's."""
    r = Restaurant.objects.create(name="Luigi", city="Rome", rating=3)
    assert [x["rating"] for x in primed("testapp.restaurants.byCity", city="Rome").data] == [3]
    Restaurant.objects.filter(pk=r.pk).update(rating=5)  # writes the child table only
    assert [x["rating"] for x in fresh("testapp.restaurants.byCity", city="Rome").data] == [5]
    r.refresh_from_db()
    r.rating = 6
    r.save(update_fields=["rating"])  # the child table only, through save()
    assert [x["rating"] for x in fresh("testapp.restaurants.byCity", city="Rome").data] == [6]


# --- 6. many-to-many -----------------------------------------------------------------------


def test_6_m2m_changes_invalidate_a_table_dependency_read_across_the_link(book, published):
    red, blue = Label.objects.create(name="red"), Label.objects.create(name="blue")
    other = Book.objects.create(title="Other", author=book.author)

    def labels() -> list[str]:
        result = fresh("testapp.books.withLabels")
        return next(row["labels"] for row in result.data if row["id"] == book.pk)

    def links() -> list[list[int]]:
        return fresh("testapp.bookLabels.all").data

    primed("testapp.books.withLabels")
    primed("testapp.bookLabels.all")
    for action, expected in (
        (lambda: book.labels.add(red, blue), ["blue", "red"]),
        (lambda: book.labels.remove(red), ["blue"]),
        (lambda: book.labels.set([red]), ["red"]),
        (lambda: book.labels.clear(), []),
        (lambda: blue.books.add(book, other), ["blue"]),  # the reverse side
        (lambda: blue.books.remove(other), ["blue"]),
    ):
        published.clear()
        action()
        assert "testapp.book_labels" in all_tags(published)
        assert labels() == expected
        linked = sorted(label for book_id, label in links() if book_id == book.pk)
        assert linked == sorted(Label.objects.get(name=name).pk for name in expected)
        assert call("testapp.books.withLabels").hit
        assert call("testapp.bookLabels.all").hit

    with transaction.atomic():
        book.labels.add(red)
        assert labels() == ["blue", "red"]
    assert labels() == ["blue", "red"]


# --- 7. bulk_create with update_conflicts ---------------------------------------------------


def test_7_bulk_create_upsert_invalidates_the_stored_rows_scopes(authors, book, published):
    alpha = Shelf.objects.create(code="A", name="Alpha")
    primed("testapp.shelves.byCode", code="A")
    primed("testapp.shelves.getOne", id=alpha.pk)
    assert primed("testapp.shelves.byCode", code="B").data is None
    published.clear()
    Shelf.objects.bulk_create(
        [Shelf(code="A", name="Alpha 2"), Shelf(code="B", name="Beta")],
        update_conflicts=True,
        unique_fields=["code"],
        update_fields=["name"],
    )
    assert Shelf.objects.count() == 2
    assert fresh("testapp.shelves.byCode", code="A").data["name"] == "Alpha 2"
    assert fresh("testapp.shelves.getOne", id=alpha.pk).data["name"] == "Alpha 2"
    assert fresh("testapp.shelves.byCode", code="B").data["name"] == "Beta"
    assert "testapp.shelf:code=A" in all_tags(published)

    # an upsert that moves a book to another author: both authors' lists change
    ann, ben = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    primed("testapp.books.byAuthor", author_id=ben.pk)
    Book.objects.bulk_create(
        [Book(id=book.pk, title="Upserted", author=ben)],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=["title", "author"],
    )
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == []
    assert titles(fresh("testapp.books.byAuthor", author_id=ben.pk)) == ["Upserted"]


# --- 8. F() expressions -------------------------------------------------------------------


def test_8_save_with_expressions_in_a_foreign_key_publishes_literal_tags(authors, book, published):
    ann, ben = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    primed("testapp.books.byAuthor", author_id=ben.pk)

    published.clear()
    book.pages = F("pages") + 1
    book.author_id = F("author_id")
    book.save()
    tags = all_tags(published)
    assert f"testapp.book:author_id={ann.pk}" in tags
    assert not any("F(" in tag or "(" in tag for tag in tags), tags
    assert fresh("testapp.books.byAuthor", author_id=ann.pk).data[0]["pages"] == 11

    book.refresh_from_db()
    published.clear()
    book.author_id = Subquery(Author.objects.filter(pk=ben.pk).values("pk")[:1])
    book.save()
    tags = all_tags(published)
    assert {f"testapp.book:author_id={ann.pk}", f"testapp.book:author_id={ben.pk}"} <= tags
    assert not any("(" in tag for tag in tags), tags
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == []
    assert titles(fresh("testapp.books.byAuthor", author_id=ben.pk)) == ["First"]

    # inside a transaction: the expression's result is read back, not the expression
    book.refresh_from_db()
    assert call("testapp.books.byAuthor", author_id=ann.pk).hit
    with transaction.atomic():
        book.pages = F("pages") + 1
        book.author_id = Subquery(Author.objects.filter(pk=ann.pk).values("pk")[:1])
        book.save()
        assert fresh("testapp.books.byAuthor", author_id=ann.pk).data[0]["pages"] == 12
        assert titles(fresh("testapp.books.byAuthor", author_id=ben.pk)) == []
    assert fresh("testapp.books.byAuthor", author_id=ann.pk).data[0]["pages"] == 12


# --- 9. to_field ----------------------------------------------------------------------------


def test_9_query_scoped_on_a_to_field_key_follows_a_book_between_shelves(book, published):
    a = Shelf.objects.create(code="A", name="Alpha")
    b = Shelf.objects.create(code="B", name="Beta")
    book.shelf = a
    book.save()
    assert titles(primed("testapp.books.byShelf", shelf="A")) == ["First"]
    assert titles(primed("testapp.books.byShelf", shelf="B")) == []

    published.clear()
    book.shelf = b
    book.save()
    assert {"testapp.book:shelf_id=A", "testapp.book:shelf_id=B"} <= all_tags(published)
    assert titles(fresh("testapp.books.byShelf", shelf="A")) == []
    assert titles(fresh("testapp.books.byShelf", shelf="B")) == ["First"]

    Book.objects.filter(pk=book.pk).update(shelf=a)
    assert titles(fresh("testapp.books.byShelf", shelf="A")) == ["First"]
    assert titles(fresh("testapp.books.byShelf", shelf="B")) == []

    with transaction.atomic():
        book.refresh_from_db()
        book.shelf = b
        book.save()
        assert titles(fresh("testapp.books.byShelf", shelf="B")) == ["First"]
        assert titles(fresh("testapp.books.byShelf", shelf="A")) == []

    # deleting the shelf sets the key to NULL (on_delete=SET_NULL): off shelf B
    primed("testapp.books.byShelf", shelf="B")
    b.delete()
    assert titles(fresh("testapp.books.byShelf", shelf="B")) == []


# --- 10. declarations ---------------------------------------------------------------------


class BySummary(Input):
    summary: str


def _none(ctx, inp):
    return None


def test_10_dependency_on_an_unbounded_column_is_refused_at_declaration():
    with pytest.raises(ImproperlyConfigured, match="TextField"):
        ReactiveFunction(
            name="testapp.bad.bySummary",
            handler=_none,
            input=BySummary,
            dependencies=["testapp.book:summary={summary}"],
        )
    assert "testapp.bad.bySummary" not in registry


def test_10_dependency_on_an_ignored_app_is_refused_at_declaration():
    for spec in ("sessions.session", "sessions.session:session_key={summary}"):
        with pytest.raises(ImproperlyConfigured, match="not tracked"):
            ReactiveFunction(
                name="testapp.bad.sessions", handler=_none, input=BySummary, dependencies=[spec]
            )


def test_10_scoped_dependency_on_a_plain_column_is_invalidated(authors, published):
    ann, ben = authors
    assert [a["name"] for a in primed("testapp.authors.byCountry", country="FR").data] == ["Ann"]
    assert [a["name"] for a in primed("testapp.authors.byCountry", country="DE").data] == ["Ben"]
    assert [a["name"] for a in primed("testapp.authors.byCountry", country="IT").data] == []

    Author.objects.create(name="Cleo", country="FR")
    assert [a["name"] for a in fresh("testapp.authors.byCountry", country="FR").data] == [
        "Ann",
        "Cleo",
    ]
    assert call("testapp.authors.byCountry", country="DE").hit

    ann.country = "DE"
    ann.save()
    assert [a["name"] for a in fresh("testapp.authors.byCountry", country="FR").data] == ["Cleo"]
    assert [a["name"] for a in fresh("testapp.authors.byCountry", country="DE").data] == [
        "Ann",
        "Ben",
    ]

    Author.objects.filter(pk=ben.pk).update(country="IT")
    assert [a["name"] for a in fresh("testapp.authors.byCountry", country="DE").data] == ["Ann"]
    assert [a["name"] for a in fresh("testapp.authors.byCountry", country="IT").data] == ["Ben"]


def test_10_callable_dependencies_get_the_wildcard_guard(authors, book):
    ann, _ = authors
    first = primed("testapp.books.byAuthorComputed", author_id=ann.pk)
    assert "testapp.book:*" in first.tags
    capture.invalidate("testapp.book:*")
    assert titles(fresh("testapp.books.byAuthorComputed", author_id=ann.pk)) == ["First"]
    Book.objects.create(title="Second", author=ann)
    assert titles(fresh("testapp.books.byAuthorComputed", author_id=ann.pk)) == [
        "First",
        "Second",
    ]


def test_10_invalidate_normalizes_dependency_spellings(authors, book, published):
    ann, _ = authors
    primed("testapp.books.withLabels")
    primed("testapp.books.byAuthor", author_id=ann.pk)
    published.clear()
    capture.invalidate("testapp.Book")
    assert all_tags(published) == {"testapp.book"}
    fresh("testapp.books.withLabels")
    assert call("testapp.books.byAuthor", author_id=ann.pk).hit

    published.clear()
    capture.invalidate(f"testapp.Book:author={ann.pk}")
    assert all_tags(published) == {f"testapp.book:author_id={ann.pk}"}
    fresh("testapp.books.byAuthor", author_id=ann.pk)


# --- 11. writes the ORM never sees ----------------------------------------------------------


def test_11_raw_sql_through_a_django_cursor_needs_no_manual_invalidation(authors, book):
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    table = Book._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET title = %s WHERE id = %s", ["Raw", book.pk])
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Raw"]

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (title, author_id, pages, summary) VALUES (%s, %s, 0, '')",
                ["Raw insert", ann.pk],
            )
        assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Raw", "Raw insert"]
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Raw", "Raw insert"]


def test_11_raw_sql_starting_with_a_comment_needs_no_manual_invalidation(authors, book):
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            f"-- nightly fix-up\nUPDATE {Book._meta.db_table} SET title = %s WHERE id = %s",
            ["Commented", book.pk],
        )
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Commented"]


def _outside_params() -> dict:
    settings = connection.settings_dict
    found = {
        "dbname": settings["NAME"],
        "user": settings["USER"],
        "password": settings["PASSWORD"],
        "host": settings["HOST"],
        "port": settings["PORT"],
    }
    return {key: value for key, value in found.items() if value}


def _outside_write(sql: str, params: list) -> None:
    """Write and commit on a connection Django knows nothing of (another process's write)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        other = sqlite3.connect(settings["NAME"], timeout=10)
        try:
            other.execute(sql.replace("%s", "?"), params)
            other.commit()
        finally:
            other.close()
        return
    import psycopg

    with psycopg.connect(**_outside_params(), autocommit=True) as other:
        other.execute(sql, params)


def test_11_a_write_by_another_connection_is_published_by_this_process_drain(authors, book):
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    primed("testapp.books.withLabels")
    _outside_write(
        f"UPDATE {Book._meta.db_table} SET title = %s WHERE id = %s", ["Elsewhere", book.pk]
    )
    assert drain.drain() >= 1
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Elsewhere"]
    assert titles(fresh("testapp.books.withLabels")) == ["Elsewhere"]

    _outside_write(
        f"INSERT INTO {Book._meta.db_table} (title, author_id, pages, summary) "
        "VALUES (%s, %s, 0, '')",
        ["Inserted elsewhere", ann.pk],
    )
    drain.drain()
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == [
        "Elsewhere",
        "Inserted elsewhere",
    ]


def test_11_local_mode_publishes_rows_committed_out_of_id_order(authors, settings, monkeypatch):
    """Local mode (a process's own cache: PostgreSQL without Redis) reads rows past its mark.

    On PostgreSQL a change row's id is taken at insert, not at commit: a slow
    transaction's rows can commit below rows this process has already read.
    """
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes writers: change row ids commit in id order")
    import psycopg

    settings.REACTIVE = {**settings.REACTIVE, "DRAIN_MODE": "local"}
    monkeypatch.setattr(drain, "PRUNE_EVERY", 1e9)  # no prune (see the next test)
    monkeypatch.setitem(drain._marks, connection.alias, drain.max_id(connection))
    ann, ben = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    primed("testapp.books.byAuthor", author_id=ben.pk)
    insert = (
        f"INSERT INTO {Book._meta.db_table} (title, author_id, pages, summary) "
        "VALUES (%s, %s, 0, '')"
    )
    with (
        psycopg.connect(**_outside_params()) as slow,
        psycopg.connect(**_outside_params(), autocommit=True) as quick,
    ):
        slow.execute(insert, ["Slow", ann.pk])  # its change row takes the lower id
        quick.execute(insert, ["Quick", ben.pk])  # commits first
        drain.drain()  # this process reads the quick row, and moves its mark past it
        slow.commit()
    drain.drain()
    assert titles(fresh("testapp.books.byAuthor", author_id=ben.pk)) == ["Quick"]
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Slow"], (
        "the slow transaction's change row was never published"
    )


def test_local_mode_prunes_published_change_rows(authors, settings, monkeypatch):
    """Local mode keeps change rows for other processes, and prunes them once old."""
    settings.REACTIVE = {
        **settings.REACTIVE,
        "DRAIN_MODE": "local",
        # -1: every row counts as old (a row written this millisecond too)
        "CHANGE_RETENTION_SECONDS": -1,
    }
    monkeypatch.setattr(drain, "_pruned_at", {})
    monkeypatch.setitem(drain._marks, connection.alias, drain.max_id(connection))
    ann, _ = authors
    primed("testapp.books.byAuthor", author_id=ann.pk)
    _outside_write(
        f"INSERT INTO {Book._meta.db_table} (title, author_id, pages, summary) "
        "VALUES (%s, %s, 0, '')",
        ["Outside", ann.pk],
    )
    drain._pruned_at.clear()  # this drain prunes (an earlier one may have, just now)
    assert drain.drain() == 1, "the drain failed (see the log)"
    assert titles(fresh("testapp.books.byAuthor", author_id=ann.pk)) == ["Outside"]
    with drain.internal(connection), connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {drain.CHANGE_TABLE}")
        assert cursor.fetchone()[0] == 0, "published rows older than the retention were kept"


def test_11_flush_invalidates_every_query(authors, book):
    ann, _ = authors
    r = Restaurant.objects.create(name="Luigi")
    primed("testapp.books.byAuthor", author_id=ann.pk)
    primed("testapp.books.withLabels")
    primed("testapp.authors.byCountry", country="FR")
    primed("testapp.restaurants.getOne", id=r.pk)
    call_command("flush", interactive=False, verbosity=0)
    assert fresh("testapp.books.byAuthor", author_id=ann.pk).data == []
    assert fresh("testapp.books.withLabels").data == []
    assert fresh("testapp.authors.byCountry", country="FR").data == []
    assert fresh("testapp.restaurants.getOne", id=r.pk).data is None


def test_11_truncate_invalidates_every_query_on_the_table(authors, book, published):
    """TRUNCATE on PostgreSQL; SQLite has none, its equivalent is an unqualified DELETE."""
    ann, _ = authors
    r = Restaurant.objects.create(name="Luigi")
    primed("testapp.books.byAuthor", author_id=ann.pk)
    primed("testapp.books.withLabels")
    primed("testapp.restaurants.getOne", id=r.pk)
    primed("testapp.places.all")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"TRUNCATE {Book.labels.through._meta.db_table}, {Book._meta.db_table}, "
                f"{Restaurant._meta.db_table}"
            )
        else:
            for model in (Book.labels.through, Book, Restaurant):
                cursor.execute(f"DELETE FROM {model._meta.db_table}")
    assert fresh("testapp.books.byAuthor", author_id=ann.pk).data == []
    assert fresh("testapp.books.withLabels").data == []
    assert fresh("testapp.restaurants.getOne", id=r.pk).data is None
    assert fresh("testapp.places.all").data[0]["rating"] is None
