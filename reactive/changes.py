"""From change rows to tags: what each committed row change invalidates, and on which stream.

A change row names a table, an operation and the row's old and new captured
values. Both versions are tagged (an agent moved from organization A to B
invalidates both), with the tags of the table's model, of its multi-table
inheritance parents and children, and of its relations. Tags go to the
stream of the row's tenant and of the user it belongs to; rows with neither
(lookup tables) go to the global stream every client follows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models

from .events import SILENT
from .relations import relations_of, scoped_fields, tagged_columns
from .tables import (
    LOOKUP_PREFIX,
    ancestors,
    decode,
    descendants,
    table_of,
    tenant_column,
    user_column,
)
from .tags import Tag, row_tag, scoped_tag, table_tag, wildcard_tag

# stream (a tenant id, "user:<id>", or None for the global stream) -> tags
Changes = dict[str | None, set[Tag]]
MANUAL = "M"  # op of a change row written by invalidate(): new = {"tenant", "tags"}
TRUNCATE = "T"


@dataclass(frozen=True)
class Row:
    """One change row as read from the change table."""

    id: int
    table: str
    op: str
    old: Any
    new: Any
    txid: int | None = None


def user_stream(user_id: Any) -> str:
    """The stream of one user's own rows (memberships, tokens, the user row)."""
    return f"user:{user_id}"


def row_tags(model: type[models.Model], values: Mapping[str, Any]) -> set[Tag]:
    """The tags of one version of a row of `model`: table, scoped and related tags."""
    tags = {table_tag(model)}
    for attname in scoped_fields(model):
        value = values.get(attname)
        if value is not None:
            tags.add(scoped_tag(model, attname, value))
    for template in relations_of(model):
        if all(values.get(name) is not None for name in template.placeholders):
            tags.add(template.render(values))
    return tags


def version_tags(model: type[models.Model], values: Mapping[str, Any]) -> set[Tag]:
    """`row_tags` plus what multi-table inheritance implies, both ways.

    A parent's row is each child's row too (a child's fields may live in the
    parent's table), and a child's row is its parent's.
    """
    tags = row_tags(model, values)
    pk = values.get(model._meta.pk.attname)
    if _inherits_scopes(model):
        # A scope on a parent's column: this table's row does not say its value.
        tags.add(wildcard_tag(model))
    for parent in ancestors(model):
        tags.add(table_tag(parent))
        if pk is not None:
            tags.add(row_tag(parent, pk))
    for child in descendants(model):
        tags |= row_tags(child, {**values, child._meta.pk.attname: pk})
    return tags


def _inherits_scopes(model: type[models.Model]) -> bool:
    local = {f.attname for f in model._meta.local_concrete_fields}
    return any(name not in local for name in scoped_fields(model))


def _streams(model: type[models.Model], values: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    tenant = tenant_column(model)
    if tenant is not None:
        value = values.get(_attname(model, tenant))
        if value is not None:
            found.add(str(value))
    for key, value in values.items():
        if key.startswith(LOOKUP_PREFIX) and value is not None:
            found.add(str(value))
    user = user_column(model)
    if user is not None:
        owner = values.get(_attname(model, user))
        if owner is not None:
            found.add(user_stream(owner))
    return found


def _attname(model: type[models.Model], column: str) -> str:
    return next(f.attname for f in model._meta.local_concrete_fields if f.column == column)


def _loaded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def row_changes(row: Row) -> Changes:
    """The tags one change row invalidates, by stream."""
    changes: Changes = defaultdict(set)
    if row.op == MANUAL:
        data = _loaded(row.new) or {}
        changes[data.get("tenant")] |= set(data.get("tags", ()))
        return changes
    table = table_of(row.table)
    if table is None:
        return changes  # a table no longer tracked (a model removed since)
    model = table.model
    if row.op == TRUNCATE:
        for each in (model, *ancestors(model), *descendants(model)):
            changes[None] |= {table_tag(each), wildcard_tag(each)}
        return changes
    linked = bool(table.lookups)
    needed = tagged_columns(model)
    versions = [decode(model, _loaded(raw), needed) for raw in (row.old, row.new) if raw]
    if len(versions) == 2 and versions[0] == versions[1]:
        versions.pop()  # an update that moved the row out of no scope: one version's tags
    for values in versions:
        tags = version_tags(model, values)
        streams = _streams(model, values)
        if not streams and linked:
            # A link whose linked rows are all gone: their own change rows carry
            # the events; sending its ids to every tenant's clients would leak them.
            changes[SILENT] |= tags
            continue
        targets: Iterable[str | None] = streams or (None,)  # None: the global stream
        for stream in targets:
            changes[stream] |= tags
    return changes


def merge(changes: Changes, more: Mapping[str | None, Iterable[Tag]]) -> None:
    """Add `more` into `changes`, stream by stream."""
    for stream, tags in more.items():
        changes.setdefault(stream, set()).update(tags)


def transactions(rows: Iterable[Row]) -> list[Changes]:
    """The rows' changes grouped by writing transaction (where the database names it).

    SQLite names no transaction: the rows drained together form one group, which
    in practice is one transaction, since each writer drains right after committing.
    """
    groups: dict[int | None, Changes] = {}
    for row in rows:
        merge(groups.setdefault(row.txid, defaultdict(set)), row_changes(row))
    return list(groups.values())
