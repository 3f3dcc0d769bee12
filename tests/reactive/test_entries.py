"""The stored form of results (reactive.entries) and the serializer that keeps it as bytes."""

from __future__ import annotations

import pickle

from reactive.entries import etag, pack, unpack
from reactive.serializers import EntrySerializer


def test_an_entry_reads_back_as_it_was_stored():
    raw = pack(["a1", "!b2"], "17", b'{"x":"\xc3\xa9"}')
    entry = unpack(raw)
    assert entry is not None
    assert (entry.versions, entry.cursor, entry.body) == (["a1", "!b2"], "17", b'{"x":"\xc3\xa9"}')
    assert unpack(pack(["a"], "", b"[]")).cursor == ""
    assert unpack({"v": [], "j": "[]", "c": ""}) is None  # the format before bytes: a miss
    assert unpack(b"garbage") is None


def test_the_etag_changes_with_the_versions_and_the_key():
    one = unpack(pack(["a", "b"], "1", b"[]"))
    two = unpack(pack(["a", "c"], "1", b"[]"))
    assert etag("k", one.header) != etag("k", two.header)
    assert etag("k", one.header) != etag("other", one.header)
    assert etag("k", one.header) == etag("k", unpack(pack(["a", "b"], "1", b"[]")).header)


def test_the_serializer_stores_entries_as_they_are_and_pickles_the_rest():
    serializer = EntrySerializer({})
    raw = pack(["a"], "1", b'{"big":"json"}')
    assert serializer.dumps(raw) == raw and serializer.loads(raw) == raw
    for value in [b"\x80 looks pickled", b"12345", "text", {"a": 1}, None, True]:
        stored = serializer.dumps(value)
        assert stored == pickle.dumps(value, pickle.DEFAULT_PROTOCOL)
        assert serializer.loads(stored) == value
