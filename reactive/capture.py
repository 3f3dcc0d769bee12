"""Write capture: every ORM write path -> the tags it touched, published after commit.

Covered: save/create, delete (and cascades, through signals), QuerySet.update,
bulk_create, bulk_update, QuerySet.delete, m2m add/remove/set/clear. Writes the
ORM cannot see go through :func:`invalidate`. Inside ``transaction.atomic`` the
tags wait for the outermost commit; a rollback (of a savepoint too) drops them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cache, partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, models, router, transaction
from django.db.models.deletion import Collector
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


def _values(instance: models.Model) -> dict[str, Any]:
    data = instance.__dict__
    return {name: data.get(name) for name in tracked_fields(type(instance))}


# --- transaction batching -----------------------------------------------------------


class _Batch:
    """The changes of one transaction, published once when the outermost block commits."""

    def __init__(self) -> None:
        self.changes: Changes = defaultdict(set)
        self.flush_fn = self.flush  # one bound object, found again by identity

    def add(self, changes: Changes) -> None:
        for tenant, tags in changes.items():
            self.changes[tenant] |= tags

    def flush(self) -> None:
        events.publish(self.changes)

    def alive(self, conn) -> bool:
        return any(entry[1] is self.flush_fn for entry in reversed(conn.run_on_commit))

    def keep_last(self, conn) -> None:
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
        instance.__dict__[SNAPSHOT] = _values(instance)


def _on_pre_save(sender, instance, raw=False, using=None, **kwargs) -> None:
    if not is_tracked(sender) or instance._state.adding or instance.pk is None:
        return
    # The instance's snapshot is as old as its loading: the row may have moved
    # since (another writer, another copy). Its stored values, locked until
    # the save commits (see _save_base), name the scopes it really leaves.
    rows = _locked(sender._base_manager.using(using or instance._state.db or "default"))
    stored = rows.filter(pk=instance.pk).values(*tracked_fields(sender)).first()
    if stored is not None:
        instance.__dict__[SNAPSHOT] = stored


def _locked(qs: QuerySet) -> QuerySet:
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
    new = _values(instance)
    old = instance.__dict__.get(SNAPSHOT)
    rows = [new] if created or not old or old == new else [old, new]
    instance.__dict__[SNAPSHOT] = new
    record(rows_changes(sender, rows), using)


def _on_delete(sender, instance, using, **kwargs) -> None:
    if is_tracked(sender):
        record(rows_changes(sender, [_values(instance)]), using)


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


# --- QuerySet write paths without signals ------------------------------------------------

_original = {
    "update": QuerySet.update,
    "bulk_create": QuerySet.bulk_create,
    "bulk_update": QuerySet.bulk_update,
    "collector_delete": Collector.delete,
    "save_base": models.Model.save_base,
}


def _update(self: QuerySet, **kwargs):
    model = self.model
    if not is_tracked(model) or self.query.is_sliced:
        return _original["update"](self, **kwargs)  # (a sliced update raises there)
    fields = tracked_fields(model)
    limit = reactive_settings()["MAX_TRACKED_ROWS"]
    with transaction.atomic(using=self.db, savepoint=False):
        # Read (and, with row locks, lock) the rows before writing them: their
        # old scopes are what this update moves them out of.
        before = list(_locked(self).values(*fields)[: limit + 1])
        if len(before) > limit:
            count = _original["update"](self, **kwargs)
            invalidate_model(model, using=self.db)
            return count
        pks = [row[model._meta.pk.attname] for row in before]
        target = self
        if connections[self.db].features.has_select_for_update:
            # Rows that joined the filtered set after the read committed are not
            # locked and their tags unknown: write only the rows read (as if the
            # update ran at the moment of the read).
            target = self.filter(pk__in=pks)
        count = _original["update"](target, **kwargs)
        rows = before
        written = {model._meta.get_field(name).attname for name in kwargs}
        if written & set(fields) and before:
            rows = before + list(
                model._base_manager.using(self.db).filter(pk__in=pks).values(*fields)
            )
        record(rows_changes(model, rows), self.db)
    return count


def _bulk_create(self: QuerySet, objs, *args, **kwargs):
    objs = _original["bulk_create"](self, objs, *args, **kwargs)
    model = self.model
    if is_tracked(model) and objs:
        rows = []
        for obj in objs:
            obj.__dict__[SNAPSHOT] = values = _values(obj)
            rows.append(values)
        if model._meta.auto_created:  # many-to-many add: on the linked rows' streams
            record(_link_changes(model, rows, self.db, {}), self.db)
        else:
            record(rows_changes(model, rows), self.db)
        update_fields = kwargs.get("update_fields") or ()
        if kwargs.get("update_conflicts") and set(update_fields) & set(tracked_fields(model)):
            invalidate_model(model, using=self.db)  # old scopes of upserted rows are unknown
    return objs


def _bulk_update(self: QuerySet, objs, fields, *args, **kwargs):
    objs = list(objs)
    count = _original["bulk_update"](self, objs, fields, *args, **kwargs)
    model = self.model
    if is_tracked(model) and objs:
        rows = []
        for obj in objs:
            old = obj.__dict__.get(SNAPSHOT)
            obj.__dict__[SNAPSHOT] = new = _values(obj)
            rows += [new] if not old or old == new else [old, new]
        record(rows_changes(model, rows), self.db)
    return count


def _collector_delete(self: Collector):
    """Deletes (cascades included): the rows Django deletes without sending signals.

    Auto-created many-to-many rows get no ``post_delete``, and objects whose
    foreign key is set to null (``SET_NULL``/``SET_DEFAULT``) are updated in
    batches without signals: their tags are recorded here, in the delete's
    transaction, so a rollback drops them. (Deleting a tool must invalidate the
    agents that listed it.)
    """
    using = self.using
    with transaction.atomic(using=using, savepoint=False):
        changes: Changes = defaultdict(set)
        for model, instances in self.data.items():
            if not (is_tracked(model) and instances):
                continue
            if model._meta.auto_created:
                rows = [_values(obj) for obj in instances]
                _merge(changes, _link_changes(model, rows, using, self.data))
            else:
                # Collected before this transaction, maybe from stale instances:
                # the stored rows (locked) name the scopes they are deleted from.
                _merge(changes, rows_changes(model, _stored(model, instances, using)))
        for qs in self.fast_deletes:
            if is_tracked(qs.model):
                _merge(changes, _queryset_changes(qs))
        for (fk, value), batches in self.field_updates.items():
            for objs in batches:
                if isinstance(objs, QuerySet) and objs._result_cache is None:
                    continue  # updated with QuerySet.update, which is captured
                for obj in objs:
                    if is_tracked(type(obj)):
                        old = _values(obj)
                        new = {**old, fk.attname: value}
                        _merge(changes, rows_changes(type(obj), [old, new]))
        record(changes, using)
        return _original["collector_delete"](self)


def _link_changes(through, rows: list[dict], using: str, collected: Mapping) -> Changes:
    """Many-to-many rows' tags, on the streams of the tenants of the rows they link.

    A link row has no tenant column of its own: without this its tags would go
    to the global stream every client follows (one organization's ids leaking
    to all). `collected` holds instances being deleted, whose tenants are known.
    """
    tenants: list[set[str]] = [set() for _ in rows]
    for fk in through._meta.concrete_fields:
        column = tenant_attname(fk.related_model) if fk.many_to_one else None
        if column is None:
            continue
        known = {obj.pk: getattr(obj, column) for obj in collected.get(fk.related_model, ())}
        missing = {row[fk.attname] for row in rows} - known.keys()
        if missing:
            stored = fk.related_model._base_manager.using(using).filter(pk__in=missing)
            known.update(stored.values_list("pk", column))
        for found, row in zip(tenants, rows, strict=True):
            if known.get(row[fk.attname]) is not None:
                found.add(str(known[row[fk.attname]]))
    changes: Changes = defaultdict(set)
    for found, row in zip(tenants, rows, strict=True):
        per_row = rows_changes(through, [row])
        if found and None in per_row:
            tags = per_row.pop(None)
            for tenant in found:
                per_row[tenant] = per_row.get(tenant, set()) | tags
        _merge(changes, per_row)
    return changes


def _stored(model: type[models.Model], instances: Iterable[models.Model], using: str) -> list:
    pks = sorted({obj.pk for obj in instances}, key=str)
    rows: list = []
    for start in range(0, len(pks), 1000):
        chunk = model._base_manager.using(using).filter(pk__in=pks[start : start + 1000])
        rows += _locked(chunk.order_by("pk")).values(*tracked_fields(model))
    return rows


def _save_base(self: models.Model, *args, **kwargs):
    """Saves of existing tracked rows run in a transaction, so ``pre_save`` can lock the row."""
    if self._state.adding or not is_tracked(type(self)):
        return _original["save_base"](self, *args, **kwargs)
    using = kwargs.get("using") or (args[3] if len(args) > 3 else None)
    using = using or router.db_for_write(type(self), instance=self)
    with transaction.atomic(using=using, savepoint=False):
        return _original["save_base"](self, *args, **kwargs)


def _merge(changes: Changes, more: Changes) -> None:
    for tenant, tags in more.items():
        changes[tenant] |= tags


def _queryset_changes(qs: QuerySet) -> Changes:
    model = qs.model
    limit = reactive_settings()["MAX_TRACKED_ROWS"]
    rows = list(qs.values(*tracked_fields(model))[: limit + 1])
    if len(rows) > limit:
        return {None: {table_tag(model), wildcard_tag(model)}}
    return rows_changes(model, rows)


def install() -> None:
    """Connect the receivers and wrap the QuerySet write paths (idempotent)."""
    post_init.connect(_on_init, dispatch_uid="reactive.init")
    pre_save.connect(_on_pre_save, dispatch_uid="reactive.pre_save")
    post_save.connect(_on_save, dispatch_uid="reactive.save")
    post_delete.connect(_on_delete, dispatch_uid="reactive.delete")
    m2m_changed.connect(_on_m2m, dispatch_uid="reactive.m2m")
    QuerySet.update = _update
    QuerySet.bulk_create = _bulk_create
    QuerySet.bulk_update = _bulk_update
    Collector.delete = _collector_delete
    models.Model.save_base = _save_base


def uninstall() -> None:
    """Undo :func:`install` (benchmarks compare writes with and without capture)."""
    post_init.disconnect(dispatch_uid="reactive.init")
    pre_save.disconnect(dispatch_uid="reactive.pre_save")
    post_save.disconnect(dispatch_uid="reactive.save")
    post_delete.disconnect(dispatch_uid="reactive.delete")
    m2m_changed.disconnect(dispatch_uid="reactive.m2m")
    QuerySet.update = _original["update"]
    QuerySet.bulk_create = _original["bulk_create"]
    QuerySet.bulk_update = _original["bulk_update"]
    Collector.delete = _original["collector_delete"]
    models.Model.save_base = _original["save_base"]
