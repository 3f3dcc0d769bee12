"""reactive.testing, the helpers downstream projects test their functions with."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from reactive import drain, publishing, testing
from reactive.cache import reactive_cache
from reactive.log import get_log
from tests.testapp.models import Author, Book, Shelf

committing = pytest.mark.django_db(transaction=True)


def all_tags(batches) -> set[str]:
    return {tag for batch in batches for tags in batch.values() for tag in tags}


@committing
def test_capture_published_sees_one_batch_per_commit():
    author = Author.objects.create(name="Jemisin")
    with testing.capture_published() as published:
        with transaction.atomic():
            book = Book.objects.create(title="The Fifth Season", author=author)
            Shelf.objects.create(code="F", name="Fantasy")
        Shelf.objects.filter(code="F").update(name="Fantasy & SF")
    assert len(published) == 2
    first, second = published
    assert {f"testapp.book:id={book.pk}", "testapp.shelf:code=F"} <= all_tags([first])
    assert "testapp.book" not in all_tags([second]) and "testapp.shelf" in all_tags([second])


def test_capture_published_puts_publish_back_even_on_error():
    original = publishing.publish
    with pytest.raises(RuntimeError), testing.capture_published():
        assert publishing.publish is not original
        raise RuntimeError("the test failed")
    assert publishing.publish is original


@pytest.mark.django_db
def test_reset_empties_a_local_cache_and_log():
    backend = reactive_cache().backend
    backend.set("rx:e:testing-helper", "cached", None)
    log = get_log()
    reactive_cache().unbumped.add("pending")
    testing.reset()
    assert reactive_cache().unbumped == set()
    if drain.is_local():
        assert backend.get("rx:e:testing-helper") is None
        assert get_log() is not log  # a fresh in-memory log
    else:  # shared by the run's other processes: left alone
        assert backend.get("rx:e:testing-helper") == "cached"
        assert get_log() is log
        backend.delete("rx:e:testing-helper")


def written_by_another_process(code: str) -> None:
    """A write whose change rows only a drainer publishes (another process's, in effect)."""
    with drain.internal(connection), connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # this session drains its own rows: not this one
            cursor.execute("SELECT set_config('reactive.drains', 'off', false)")
        cursor.execute("INSERT INTO testapp_shelf (code, name) VALUES (%s, 'Outside')", [code])
        if connection.vendor == "postgresql":
            cursor.execute("SELECT set_config('reactive.drains', 'on', false)")


@committing
def test_reset_skips_change_rows_written_so_far():
    written_by_another_process("OLD")
    testing.reset()
    assert testing.drain_now() == 0  # nothing left over for the next test


@committing
def test_drain_now_publishes_what_others_wrote():
    written_by_another_process("OUT")
    with testing.capture_published() as published:
        assert testing.drain_now() == 1
    assert "testapp.shelf:code=OUT" in all_tags(published)
    assert testing.drain_now() == 0


def test_events_after_a_cursor():
    log = get_log()
    cursor = log.position()
    event = log.append("tenant-testing", ["t"], 1)
    log.append("tenant-other", ["u"], 1)
    (seen,) = testing.events_after(cursor, "tenant-testing")
    assert (seen.id, seen.tags) == (event.id, ["t"])
    assert testing.events_after(event.id, "tenant-testing") == []
