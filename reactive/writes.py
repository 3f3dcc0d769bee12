"""The ORM's write paths that send no signals, wrapped so that capture sees them.

``QuerySet.update``, ``bulk_create``, ``bulk_update``, the deletion collector
(many-to-many link rows, ``SET_NULL`` batches, fast deletes) and ``save_base``
(saves of existing rows run in a transaction, so ``pre_save`` can lock the row
it reads). :func:`patch` installs them; :func:`unpatch` restores Django's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from django.db import connections, models, router, transaction
from django.db.models.deletion import Collector
from django.db.models.query import QuerySet

from .capture import (
    SNAPSHOT,
    Changes,
    invalidate_model,
    is_tracked,
    locked,
    record,
    row_values,
    rows_changes,
    stamp_locked,
    tenant_attname,
)
from .conf import reactive_settings
from .relations import tracked_fields
from .tags import table_tag, wildcard_tag

_original = {
    "update": QuerySet.update,
    "bulk_create": QuerySet.bulk_create,
    "bulk_update": QuerySet.bulk_update,
    "collector_delete": Collector.delete,
    "save_base": models.Model.save_base,
    "fetch_all": QuerySet._fetch_all,
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
        before = list(locked(self).values(*fields)[: limit + 1])
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
            obj.__dict__[SNAPSHOT] = values = row_values(obj)
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
            obj.__dict__[SNAPSHOT] = new = row_values(obj)
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
                rows = [row_values(obj) for obj in instances]
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
                        old = row_values(obj)
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
        rows += locked(chunk.order_by("pk")).values(*tracked_fields(model))
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


def _fetch_all(self: QuerySet) -> None:
    """Evaluate; rows loaded with FOR UPDATE in a transaction are stamped (capture.LOCKED_IN)."""
    fresh = self._result_cache is None
    _original["fetch_all"](self)
    if fresh and self.query.select_for_update and is_tracked(self.model):
        conn = connections[self.db]
        if conn.in_atomic_block:
            stamp_locked([o for o in self._result_cache if isinstance(o, self.model)], conn)


def patch() -> None:
    """Wrap the write paths (idempotent)."""
    QuerySet.update = _update
    QuerySet.bulk_create = _bulk_create
    QuerySet.bulk_update = _bulk_update
    Collector.delete = _collector_delete
    models.Model.save_base = _save_base
    QuerySet._fetch_all = _fetch_all


def unpatch() -> None:
    """Restore Django's own write paths."""
    QuerySet.update = _original["update"]
    QuerySet.bulk_create = _original["bulk_create"]
    QuerySet.bulk_update = _original["bulk_update"]
    Collector.delete = _original["collector_delete"]
    models.Model.save_base = _original["save_base"]
    QuerySet._fetch_all = _original["fetch_all"]
