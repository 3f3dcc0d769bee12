"""A django-redis serializer that stores reactive's entries as the bytes they are.

Reactive entries are bytes ready to send (``reactive.entries``): pickling them
would copy 36 KB into a pickle frame on every store and out of it on every hit.
Everything else is pickled exactly as django-redis's default serializer does,
so sessions and other data sharing the alias are unaffected::

    CACHES = {"default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "OPTIONS": {"SERIALIZER": "reactive.serializers.EntrySerializer"},
    }}
"""

from __future__ import annotations

from typing import Any

from django_redis.serializers.pickle import PickleSerializer  # type: ignore[import-untyped]

from .entries import MAGIC


class EntrySerializer(PickleSerializer):  # type: ignore[misc]
    """Pickle, except for reactive's entries, which are stored and read back as is.

    An entry starts with ``rx1 ``; a pickle always starts with byte 0x80 (and
    django-redis reads values that look like integers as integers before it
    asks the serializer, which an entry never does), so the two cannot be
    confused.
    """

    def dumps(self, value: Any) -> bytes:
        """The entry's own bytes, or the pickle of anything else."""
        if type(value) is bytes and value.startswith(MAGIC):
            return value
        pickled: bytes = super().dumps(value)
        return pickled

    def loads(self, value: bytes) -> Any:
        """The inverse of :meth:`dumps`."""
        if value.startswith(MAGIC):
            return bytes(value)
        return super().loads(value)
