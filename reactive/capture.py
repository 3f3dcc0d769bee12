"""Write capture: every ORM write path -> the tags it touched, published after commit.

Covered: save/create, delete (and cascades, through signals), QuerySet.update,
bulk_create, bulk_update, QuerySet.delete, m2m add/remove/set/clear (the paths
without signals are wrapped in ``writes.py``). Writes the ORM cannot see go
through :func:`invalidate`. Inside ``transaction.atomic`` the
tags wait for the outermost commit; a rollback (of a savepoint too) drops them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cache, partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, models, transaction
from django.db.models.query import QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save, pre_save

from . import events
from .conf import reactive_settings
from .relations import relations_of, scoped_fields, tracked_fields
from .tags import Tag, scoped_tag, table_tag, wildcard_tag

logger = logging.getLogger("reactive")

# tenant id (or None for rows that belong to no tenant) -> tags
Changes = dict[str | None, set[Tag]]
SNAPSHOT = "_rx_old"


# --- which models, which tenant -------------------------------------------------------


@cache
def is_tracked(model: type[models.Model]) -> bool:
    """Whether writes to `model` are captured (every app but the ignored ones)."""
    meta = model._meta
    return not (meta.abstract or meta.app_label in reactive_settings()["IGNORED_APPS"])


@cache
def tenant_attname(model: type[models.Model]) -> str | None:
    """The column naming a row's tenant: the pk of the tenant model, or its foreign key."""
    conf = reactive_settings()
    if not conf["TENANT_MODEL"]:
        return None
    if model._meta.label_lower == conf["TENANT_MODEL"].lower():
        return model._meta.pk.attname
    try:
        return model._meta.get_field(conf["TENANT_FIELD"]).attname
    except Exception:
        return None


@cache
def user_attname(model: type[models.Model]) -> str | None:
    """The column naming the user a row belongs to: the user's pk, or a ``user`` foreign key."""
    user_model = get_user_model()
    if model is user_model:
        return model._meta.pk.attname
    try:
        field = model._meta.get_field("user")
    except Exception:
        return None
    is_key = getattr(field, "many_to_one", False) and field.related_model is user_model
    return field.attname if is_key else None


def user_stream(user_id: Any) -> str:
    """The stream of one user's own rows (memberships, tokens, the user row)."""
    return f"user:{user_id}"


def row_tags(model: type[models.Model], values: Mapping[str, Any]) -> set[Tag]:
    """The tags one row touches: table, row, scoped and related tags."""
    tags = {table_tag(model)}
    for attname in scoped_fields(model):
        value = values.get(attname)
        if value is not None:
            tags.add(scoped_tag(model, attname, value))
    for template in relations_of(model):
        if all(values.get(name) is not None for name in template.placeholders):
            tags.add(template.render(values))
    return tags


def rows_changes(model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> Changes:
    """Group the tags of `rows` by stream: the row's tenant and the user it belongs to.

    Rows with neither (lookup tables) go to the global stream every client follows.
    """
    changes: Changes = defaultdict(set)
    tenant, user = tenant_attname(model), user_attname(model)
    for values in rows:
        tags = row_tags(model, values)
        key = values.get(tenant) if tenant else None
        owner = values.get(user) if user else None
        if key is not None:
            changes[str(key)] |= tags
        if owner is not None:
            changes[user_stream(owner)] |= tags
        if key is None and owner is None:
            changes[None] |= tags
    return changes


def row_values(instance: models.Model) -> dict[str, Any]:
    """The tracked columns of an instance, as loaded or set (what its tags are made of)."""
    data = instance.__dict__
    return {name: data.get(name) for name in tracked_fields(type(instance))}


# --- transaction batching -----------------------------------------------------------


class _Batch:
    """The changes of one transaction, published once when the outermost block commits."""

    def __init__(self) -> None:
        self.changes: Changes = defaultdict(set)
        self.flush_fn = self.flush  # one bound object, found again by identity

    def add(self, changes: Changes) -> None:
        """Merge one write's changes (tenant -> tags) into the batch."""
        for tenant, tags in changes.items():
            self.changes[tenant] |= tags

    def flush(self) -> None:
        """Called when the outermost transaction commits: publish the batch's changes."""
        events.publish(self.changes)

    def alive(self, conn) -> bool:
        """Whether this batch's flush is still among `conn`'s on-commit hooks."""
        return any(entry[1] is self.flush_fn for entry in reversed(conn.run_on_commit))

    def keep_last(self, conn) -> None:
        """Move this batch's flush to the end of `conn`'s on-commit hooks."""
        # The flush must run after every marker; markers of a rolled-back
        # savepoint are dropped by Django, so only committed changes reach it.
        hooks = conn.run_on_commit
        if hooks[-1][1] is self.flush_fn:
            return
        if len(hooks) >= 2 and hooks[-2][1] is self.flush_fn:
            hooks[-2], hooks[-1] = hooks[-1], hooks[-2]
            return
        entry = next(e for e in hooks if e[1] is self.flush_fn)
        hooks.remove(entry)
        hooks.append(entry)


def record(changes: Changes, using: str = "default") -> None:
    """Publish `changes` now in autocommit, or when the current transaction commits."""
    if not changes:
        return
    conn = connections[using]
    if not conn.in_atomic_block:
        events.publish(changes)
        return
    batch: _Batch | None = getattr(conn, "_reactive_batch", None)
    if batch is None or not batch.alive(conn):
        batch = _Batch()
        conn._reactive_batch = batch
        # No savepoint ids: a savepoint rollback never drops the flush itself.
        conn.run_on_commit.append((set(), batch.flush_fn, False))
    transaction.on_commit(partial(batch.add, dict(changes)), using=using)
    batch.keep_last(conn)


def invalidate(*tags: Tag, tenant: str | None = None, using: str = "default") -> None:
    """Invalidate tags by hand (after raw SQL), after commit like any other write."""
    record({None if tenant is None else str(tenant): set(tags)}, using)


def invalidate_model(
    model: type[models.Model], tenant: str | None = None, using: str = "default"
) -> None:
    """Invalidate every query on `model` (table and scoped), e.g. after a raw-SQL bulk write."""
    invalidate(table_tag(model), wildcard_tag(model), tenant=tenant, using=using)


# --- signal receivers -----------------------------------------------------------------


def _on_init(sender, instance, **kwargs) -> None:
    if is_tracked(sender):
        instance.__dict__[SNAPSHOT] = row_values(instance)


def _on_pre_save(sender, instance, raw=False, using=None, **kwargs) -> None:
    if not is_tracked(sender) or instance._state.adding or instance.pk is None:
        return
    conn = connections[using or instance._state.db or "default"]
    if locked_snapshot(instance, conn):
        return
    # The instance's snapshot is as old as its loading: the row may have moved
    # since (another writer, another copy). Its stored values, locked until
    # the save commits (see _save_base), name the scopes it really leaves.
    rows = locked(sender._base_manager.using(conn.alias))
    stored = rows.filter(pk=instance.pk).values(*tracked_fields(sender)).first()
    if stored is not None:
        instance.__dict__[SNAPSHOT] = stored


# An instance loaded by a locking query (select_for_update) in the current
# transaction holds its row's current values until that transaction ends (no
# other transaction can write the row; on SQLite none can write at all), so
# its save needs no second read. Writes this transaction made to the row in
# between are no exception: they published the scopes the row moved into, in
# the same batch. A transaction is told by the identity of its connection's
# list of on-commit hooks, which Django replaces on commit, rollback and
# savepoint rollback.
LOCKED_IN = "_rx_locked_in"


def stamp_locked(instances: Iterable[models.Model], conn) -> None:
    """Mark instances a locking query just loaded in the current transaction."""
    for obj in instances:
        obj.__dict__[LOCKED_IN] = conn.run_on_commit


def locked_snapshot(instance: models.Model, conn) -> bool:
    """Whether the instance's snapshot is its row's current value (see LOCKED_IN)."""
    return conn.in_atomic_block and instance.__dict__.get(LOCKED_IN) is conn.run_on_commit


def locked(qs: QuerySet) -> QuerySet:
    """`qs` with FOR UPDATE where the database has row locks (inside a transaction).

    SQLite has none and needs none: its writers are serialized by the write
    lock every transaction takes at BEGIN (IMMEDIATE).
    """
    conn = connections[qs.db]
    if not (conn.features.has_select_for_update and conn.in_atomic_block):
        return qs
    if qs.query.distinct or qs.query.combinator or qs.query.group_by:
        return qs  # FOR UPDATE is not allowed there
    if conn.features.has_select_for_update_of:
        return qs.select_for_update(of=("self",))
    return qs.select_for_update()


def _on_save(sender, instance, created, using, **kwargs) -> None:
    if not is_tracked(sender):
        return
    new = row_values(instance)
    old = instance.__dict__.get(SNAPSHOT)
    rows = [new] if created or not old or old == new else [old, new]
    instance.__dict__[SNAPSHOT] = new
    record(rows_changes(sender, rows), using)


def _on_delete(sender, instance, using, **kwargs) -> None:
    if is_tracked(sender):
        record(rows_changes(sender, [row_values(instance)]), using)


def _through_columns(through, instance, reverse: bool) -> tuple[str, str]:
    fks = [f for f in through._meta.concrete_fields if f.many_to_one]
    own = [f for f in fks if isinstance(instance, f.related_model)]
    source = own[1] if reverse and len(own) > 1 else own[0]
    target = next(f for f in fks if f is not source)
    return source.attname, target.attname


def _on_m2m(sender, instance, action, reverse, pk_set, using, **kwargs) -> None:
    if not is_tracked(sender) or action not in (
        "pre_clear",
        "post_add",
        "post_remove",
        "post_clear",
    ):
        return
    source, target = _through_columns(sender, instance, reverse)
    if action == "pre_clear":
        linked = sender._base_manager.using(using).filter(**{source: instance.pk})
        instance.__dict__["_rx_cleared"] = set(linked.values_list(target, flat=True))
        return
    pks = pk_set if action != "post_clear" else instance.__dict__.pop("_rx_cleared", set())
    if not pks:
        return
    rows = [{source: instance.pk, target: pk} for pk in pks]
    changes: Changes = defaultdict(set)
    tenant_col = tenant_attname(type(instance))
    tenant = getattr(instance, tenant_col) if tenant_col else None
    for tags in rows_changes(sender, rows).values():
        changes[None if tenant is None else str(tenant)] |= tags
    record(changes, using)


def install() -> None:
    """Connect the receivers and wrap the write paths without signals (idempotent)."""
    post_init.connect(_on_init, dispatch_uid="reactive.init")
    pre_save.connect(_on_pre_save, dispatch_uid="reactive.pre_save")
    post_save.connect(_on_save, dispatch_uid="reactive.save")
    post_delete.connect(_on_delete, dispatch_uid="reactive.delete")
    m2m_changed.connect(_on_m2m, dispatch_uid="reactive.m2m")
    from . import writes

    writes.patch()


def uninstall() -> None:
    """Undo :func:`install` (benchmarks compare writes with and without capture)."""
    post_init.disconnect(dispatch_uid="reactive.init")
    pre_save.disconnect(dispatch_uid="reactive.pre_save")
    post_save.disconnect(dispatch_uid="reactive.save")
    post_delete.disconnect(dispatch_uid="reactive.delete")
    m2m_changed.disconnect(dispatch_uid="reactive.m2m")
    from . import writes

    writes.unpatch()
