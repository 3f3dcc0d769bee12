"""The stored form of a cached result: one bytes value, ready to send.

``rx1 <version>,<version>,... <cursor>``, a newline, then the JSON: the tag versions the entry
was computed at (each a token of hex digits, or ``!`` and hex digits), the
event-log position it was read at, then the JSON text of the result. A hit
checks the header and sends the JSON as it lies in the cache: it is never
decoded or re-encoded, and with ``reactive.serializers.EntrySerializer`` never
pickled either. The ETag of a response is derived from the key and the header,
so it changes exactly when the entry does.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

MAGIC = b"rx1 "


class Entry(NamedTuple):
    """An entry read back: its versions, cursor, JSON body and raw header."""

    versions: list[str]
    cursor: str
    body: bytes
    header: bytes


def pack(versions: list[str], cursor: str, body: bytes) -> bytes:
    """The stored bytes of an entry."""
    return MAGIC + ",".join(versions).encode() + b" " + cursor.encode() + b"\n" + body


def unpack(raw: object) -> Entry | None:
    """The entry stored in `raw`, or None for anything that is not one (an older format)."""
    if not isinstance(raw, bytes) or not raw.startswith(MAGIC):
        return None
    header, _, body = raw.partition(b"\n")
    parts = header[len(MAGIC) :].decode("ascii").split(" ", 1)
    if len(parts) != 2:
        return None
    return Entry(parts[0].split(","), parts[1], body, header)


def etag(key: str, header: bytes) -> str:
    """The ETag of the entry stored under `key` with `header`: a quoted 24-digit hash."""
    digest = hashlib.blake2b(key.encode() + b"\n" + header, digest_size=12).hexdigest()
    return f'"{digest}"'


def body_etag(body: bytes) -> str:
    """The ETag of a result that has no entry (uncached): a hash of its body."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
