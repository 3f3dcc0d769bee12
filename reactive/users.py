"""Users read through the reactive cache: identity without a query per request.

A user's row is cached (password left out) under the row's tag, so a
deactivation or a password change takes effect at the next request. The entry
also holds the user's session auth hash, which a session's stored hash is
checked against (``django.contrib.auth.get_user`` does the same with the
password's HMAC).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.db import models

from .tags import row_tag

Lookup = tuple[str, list[str], Callable[[], Any]]
SESSION_HASH = "*sessionHash"


@cache
def _fields() -> tuple[models.Field[Any, Any], ...]:
    return tuple(f for f in get_user_model()._meta.concrete_fields if f.attname != "password")


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    return value


def _row(user_id: Any) -> dict[str, Any] | None:
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None:
        return None
    row = {f.attname: _json_ready(getattr(user, f.attname)) for f in _fields()}
    row[SESSION_HASH] = user.get_session_auth_hash()
    return row


def user_lookup(user_id: Any) -> Lookup:
    """The cache key, tags and computation of a user's row (for ``cached`` / ``cached_many``)."""
    return (f"user:{user_id}", [row_tag(get_user_model(), user_id)], lambda: _row(user_id))


def user_from(row: dict[str, Any] | None) -> Any:
    """The user a cached row describes (password deferred), or None."""
    if row is None:
        return None
    fields = _fields()
    return get_user_model().from_db(
        "default", [f.attname for f in fields], [f.to_python(row[f.attname]) for f in fields]
    )


def session_hash(row: dict[str, Any]) -> str:
    """The session auth hash of the user a cached row describes."""
    value: str = row[SESSION_HASH]
    return value
