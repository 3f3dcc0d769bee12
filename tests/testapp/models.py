"""General Django models, modelled on the test suites of django-cachalot and django-cacheops.

Nothing here knows the reactive layer: it must track these like any host
project's models (proxies, multi-table inheritance, ``to_field``, many-to-many).
"""

from django.db import models


class Shelf(models.Model):
    """A lookup table, referenced by its ``code`` (a ``to_field`` target)."""

    code = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.code


class Author(models.Model):
    """Scoped dependencies on ``country`` name a column that is not a foreign key."""

    name = models.CharField(max_length=100)
    country = models.CharField(max_length=2, default="")

    def __str__(self) -> str:
        return self.name


class Label(models.Model):
    """The other side of a many-to-many."""

    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    """Foreign keys (one with ``to_field``), a many-to-many, an unbounded text column."""

    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    shelf = models.ForeignKey(
        Shelf, to_field="code", null=True, blank=True, on_delete=models.SET_NULL
    )
    labels = models.ManyToManyField(Label, blank=True, related_name="books")
    pages = models.IntegerField(default=0)
    summary = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.title


class PublishedBook(Book):
    """A proxy: writes through it are writes to books."""

    class Meta:
        proxy = True

    def __str__(self) -> str:
        return self.title


class Place(models.Model):
    """The parent of multi-table inheritance."""

    name = models.CharField(max_length=100)
    city = models.CharField(max_length=50, default="")

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    """A child of multi-table inheritance: its pk is ``place_ptr_id``."""

    serves_pizza = models.BooleanField(default=False)
    rating = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name
