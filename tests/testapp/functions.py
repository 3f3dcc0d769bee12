"""Reactive query functions over the general models (tests/testapp/models.py).

Each one exercises one way a host project declares dependencies: scoped on a
foreign key, on a ``to_field`` key, on a plain column, at table level across
a many-to-many, on a proxy, on a multi-table inheritance child, and computed.
"""

from __future__ import annotations

from collections.abc import Callable

from reactive.functions import Context, ReactiveFunction, Registry
from reactive.schema import Input, NoInput

from .models import Author, Book, Place, PublishedBook, Restaurant, Shelf

BOOK_FIELDS = ("id", "title", "pages", "author_id", "shelf_id")

# A registry of their own: TeamHub's API, OpenAPI document and authorization
# sweeps cover TeamHub's functions; these exist for the capture tests.
registry = Registry()


def query(name: str, **options) -> Callable[[Callable], ReactiveFunction]:
    """Declare a query in this app's registry."""

    def decorate(handler: Callable) -> ReactiveFunction:
        return registry.add(ReactiveFunction(name=name, handler=handler, kind="query", **options))

    return decorate


class ByAuthor(Input):
    author_id: int


class ByCountry(Input):
    country: str


class ById(Input):
    id: int


class ByShelf(Input):
    shelf: str


class ByCode(Input):
    code: str


class ByCity(Input):
    city: str


def _books(queryset) -> list[dict]:
    return [dict(row) for row in queryset.order_by("id").values(*BOOK_FIELDS)]


@query(
    "testapp.books.byAuthor",
    input=ByAuthor,
    dependencies=["testapp.book:author_id={author_id}"],
    public=True,
)
def books_by_author(ctx: Context, inp: ByAuthor) -> list[dict]:
    """The books of one author (scoped on a foreign key)."""
    return _books(Book.objects.filter(author_id=inp.author_id))


@query(
    "testapp.books.byAuthorComputed",
    input=ByAuthor,
    dependencies=lambda ctx, inp: [f"testapp.book:author_id={inp.author_id}"],
    public=True,
)
def books_by_author_computed(ctx: Context, inp: ByAuthor) -> list[dict]:
    """The books of one author, with a callable dependency."""
    return _books(Book.objects.filter(author_id=inp.author_id))


@query("testapp.books.withLabels", input=NoInput, dependencies=["testapp.book"], public=True)
def books_with_labels(ctx: Context, inp: NoInput) -> list[dict]:
    """Every book with the names of its labels (a table dependency read across the m2m)."""
    out = []
    for book in Book.objects.order_by("id").prefetch_related("labels"):
        labels = sorted(label.name for label in book.labels.all())
        out.append({"id": book.id, "title": book.title, "labels": labels})
    return out


@query("testapp.bookLabels.all", input=NoInput, dependencies=["testapp.book_labels"], public=True)
def book_labels(ctx: Context, inp: NoInput) -> list[list[int]]:
    """Every (book, label) link (a dependency on the through table itself)."""
    rows = Book.labels.through.objects.order_by("book_id", "label_id")
    return [[row.book_id, row.label_id] for row in rows]


@query(
    "testapp.publishedBooks.all",
    input=NoInput,
    dependencies=["testapp.PublishedBook"],
    public=True,
)
def published_books(ctx: Context, inp: NoInput) -> list[dict]:
    """Every book, read through the proxy (its dependency names the proxy)."""
    return _books(PublishedBook.objects.all())


@query(
    "testapp.publishedBooks.getOne",
    input=ById,
    dependencies=["testapp.publishedbook:id={id}"],
    public=True,
)
def published_book(ctx: Context, inp: ById) -> dict | None:
    """One book through the proxy, scoped on its row."""
    return next(iter(_books(PublishedBook.objects.filter(id=inp.id))), None)


@query(
    "testapp.authors.byCountry",
    input=ByCountry,
    dependencies=["testapp.author:country={country}"],
    public=True,
)
def authors_by_country(ctx: Context, inp: ByCountry) -> list[dict]:
    """The authors of one country (scoped on a column that is not a key)."""
    rows = Author.objects.filter(country=inp.country).order_by("id").values("id", "name")
    return [dict(row) for row in rows]


@query("testapp.places.all", input=NoInput, dependencies=["testapp.place"], public=True)
def places(ctx: Context, inp: NoInput) -> list[dict]:
    """Every place, with its restaurant's rating when it is one (the parent's query)."""
    rows = Place.objects.order_by("id").values("id", "name", "city", "restaurant__rating")
    return [
        {"id": r["id"], "name": r["name"], "city": r["city"], "rating": r["restaurant__rating"]}
        for r in rows
    ]


@query(
    "testapp.restaurants.getOne",
    input=ById,
    dependencies=["testapp.restaurant:id={id}"],
    public=True,
)
def restaurant(ctx: Context, inp: ById) -> dict | None:
    """One restaurant with its parent's fields (name and city live in the place table)."""
    found = Restaurant.objects.filter(pk=inp.id).first()
    if found is None:
        return None
    return {
        "id": found.pk,
        "name": found.name,
        "city": found.city,
        "servesPizza": found.serves_pizza,
        "rating": found.rating,
    }


@query(
    "testapp.books.byShelf",
    input=ByShelf,
    dependencies=["testapp.book:shelf_id={shelf}"],
    public=True,
)
def books_by_shelf(ctx: Context, inp: ByShelf) -> list[dict]:
    """The books on one shelf, by the shelf's code (the foreign key's ``to_field``)."""
    return _books(Book.objects.filter(shelf_id=inp.shelf))


@query(
    "testapp.shelves.byCode",
    input=ByCode,
    dependencies=["testapp.shelf:code={code}"],
    public=True,
)
def shelf_by_code(ctx: Context, inp: ByCode) -> dict | None:
    """One shelf by its unique code."""
    row = Shelf.objects.filter(code=inp.code).values("id", "code", "name").first()
    return None if row is None else dict(row)


@query(
    "testapp.shelves.getOne",
    input=ById,
    dependencies=["testapp.shelf:id={id}"],
    public=True,
)
def shelf_by_id(ctx: Context, inp: ById) -> dict | None:
    """One shelf by its primary key."""
    row = Shelf.objects.filter(id=inp.id).values("id", "code", "name").first()
    return None if row is None else dict(row)


@query(
    "testapp.restaurants.byCity",
    input=ByCity,
    dependencies=["testapp.restaurant:city={city}"],
    public=True,
)
def restaurants_by_city(ctx: Context, inp: ByCity) -> list[dict]:
    """The restaurants of one city, scoped on a column the child inherits from its parent."""
    rows = Restaurant.objects.filter(city=inp.city).order_by("pk")
    return [{"id": r.pk, "name": r.name, "rating": r.rating} for r in rows]
