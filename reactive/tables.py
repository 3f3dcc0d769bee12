"""Which tables are tracked, and which of their columns the database triggers capture.

Every concrete, managed model of an app that is not ignored is tracked, the
auto-created many-to-many through models included; proxies share their
concrete model's table (and tags). A change row carries the *bounded* columns
of its table (everything but text, binary and JSON columns, which no tag is
built from), keyed by column name, so that the triggers depend on the models
alone: declaring a new dependency never needs new triggers.

A row whose table has no tenant column of its own (a many-to-many link, the
child table of multi-table inheritance) gets its tenant looked up in the
trigger, through its foreign keys, while the linked rows still exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeGuard, cast

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models

from .conf import on_change, reactive_settings

CHANGE_TABLE = "reactive_change"
LOOKUP_PREFIX = "_t_"  # keys of looked-up tenants in a change row: _t_<column>
UNBOUNDED = (models.TextField, models.BinaryField, models.JSONField)


@dataclass(frozen=True)
class Lookup:
    """A tenant read through a foreign key: ``SELECT tenant FROM target WHERE key = column``."""

    column: str  # the foreign key column of the tracked table
    table: str  # the target's table
    key: str  # the target column the foreign key points at
    tenant: str  # the target's tenant column

    @property
    def name(self) -> str:
        """The key of the looked-up value in a change row."""
        return LOOKUP_PREFIX + self.column


@dataclass(frozen=True)
class Table:
    """One tracked table: its model and what its triggers capture."""

    model: type[models.Model]
    name: str
    columns: tuple[str, ...]  # captured columns, primary key first
    lookups: tuple[Lookup, ...]


def is_tracked(model: type[models.Model]) -> bool:
    """Whether writes to `model`'s table are captured (proxies: their concrete model's)."""
    return concrete(model) in _tracked_set()


def concrete(model: type[models.Model]) -> type[models.Model]:
    """The model that owns the table: a proxy's concrete model, else the model itself."""
    return model._meta.concrete_model or model


def is_key(field: models.Field[Any, Any]) -> TypeGuard[models.ForeignKey[Any, Any]]:
    """Whether `field` points at one row: a foreign key, or a one-to-one key."""
    return bool(field.many_to_one or field.one_to_one)


def column_of(field: models.Field[Any, Any]) -> str:
    """The column of a concrete field.

    django-stubs type ``Field.column`` as optional, for the fields that have no
    column (many-to-many, generic relations); no concrete field lacks one.
    """
    return cast(str, field.column)


@cache
def _tracked_set() -> frozenset[type[models.Model]]:
    return frozenset(t.model for t in tracked_tables())


@cache
def tracked_tables() -> tuple[Table, ...]:
    """Every tracked table, in a stable order."""
    ignored = set(reactive_settings()["IGNORED_APPS"])
    found = []
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.abstract or meta.proxy or not meta.managed or meta.app_label in ignored:
            continue
        found.append(_table(model))
    return tuple(sorted(found, key=lambda t: t.name))


def tracked_table_name(name: str) -> bool:
    """Whether `name` is a tracked table (case-insensitively, as SQL compares names)."""
    return name.lower() in _tracked_names()


@cache
def _tracked_names() -> frozenset[str]:
    return frozenset(t.name.lower() for t in tracked_tables())


@cache
def table_of(name: str) -> Table | None:
    """The tracked table called `name`, or None."""
    return next((t for t in tracked_tables() if t.name == name), None)


def _table(model: type[models.Model]) -> Table:
    meta = model._meta
    fields = [f for f in meta.local_concrete_fields if not isinstance(f, UNBOUNDED)]
    fields.sort(key=lambda f: not f.primary_key)
    lookups: tuple[Lookup, ...] = ()
    if tenant_column(model) is None:
        lookups = tuple(_lookups(model))
    return Table(model, meta.db_table, tuple(column_of(f) for f in fields), lookups)


def _lookups(model: type[models.Model]) -> list[Lookup]:
    out = []
    for field in model._meta.local_concrete_fields:
        if not is_key(field):
            continue
        target = field.related_model
        tenant = tenant_column(target)
        if tenant is None or target is model:
            continue
        key = column_of(field.target_field)
        out.append(Lookup(field.column, target._meta.db_table, key, tenant))
    return out


@cache
def tenant_column(model: type[models.Model]) -> str | None:
    """The column of `model`'s own table naming a row's tenant, or None."""
    conf = reactive_settings()
    if not conf["TENANT_MODEL"]:
        return None
    model = concrete(model)
    tenant_model = concrete(apps.get_model(conf["TENANT_MODEL"]))
    if model is tenant_model or tenant_model in model._meta.get_parent_list():
        return model._meta.pk.column
    try:
        field = model._meta.get_field(conf["TENANT_FIELD"])
    except Exception:
        return None
    if not isinstance(field, models.Field) or field not in model._meta.local_concrete_fields:
        return None
    return field.column if getattr(field, "related_model", None) else None


@cache
def user_column(model: type[models.Model]) -> str | None:
    """The column of `model`'s table naming the user a row belongs to (its own stream)."""
    user_model = get_user_model()
    model = concrete(model)
    if model is concrete(user_model):
        return model._meta.pk.column
    try:
        field = model._meta.get_field("user")
    except Exception:
        return None
    if not isinstance(field, models.Field) or field not in model._meta.local_concrete_fields:
        return None
    if not (is_key(field) and field.many_to_one):
        return None
    return field.column if concrete(field.related_model) is concrete(user_model) else None


@cache
def _decoders(model: type[models.Model]) -> dict[str, tuple[str, Any]]:
    """Column name -> (attname, field) for the captured columns of `model`'s table."""
    return {column_of(f): (f.attname, f) for f in model._meta.local_concrete_fields}


def decode(
    model: type[models.Model], raw: Mapping[str, Any] | None, only: frozenset[str]
) -> dict[str, Any]:
    """A change row's values of the attnames in `only` as Python values (UUIDs, booleans...).

    Looked-up tenants are kept when `only` holds ``LOOKUP_PREFIX``.
    """
    if not raw:
        return {}
    out: dict[str, Any] = {}
    decoders = _decoders(model)
    for column, value in raw.items():
        if column.startswith(LOOKUP_PREFIX):
            if LOOKUP_PREFIX in only:
                out[column] = value if value is None else str(_python(_tenant_field(), value))
            continue
        attname, field = decoders.get(column, (column, None))
        if attname in only:
            out[attname] = value if value is None or field is None else _python(field, value)
    return out


def _python(field: models.Field[Any, Any], value: Any) -> Any:
    try:
        return field.to_python(value)
    except Exception:
        return value


@cache
def _tenant_field() -> models.Field[Any, Any]:
    model = concrete(apps.get_model(reactive_settings()["TENANT_MODEL"]))
    return model._meta.pk


def descendants(model: type[models.Model]) -> tuple[type[models.Model], ...]:
    """The tracked models whose multi-table inheritance chain includes `model`."""
    return _family()[0].get(model, ())


def ancestors(model: type[models.Model]) -> tuple[type[models.Model], ...]:
    """The concrete parents of `model` (multi-table inheritance), nearest first."""
    return tuple(model._meta.get_parent_list())


@cache
def _family() -> tuple[dict[type[models.Model], tuple[type[models.Model], ...]]]:
    children: dict[type[models.Model], list[type[models.Model]]] = {}
    for table in tracked_tables():
        for parent in table.model._meta.get_parent_list():
            children.setdefault(parent, []).append(table.model)
    return ({k: tuple(v) for k, v in children.items()},)


@on_change("IGNORED_APPS", "TENANT_MODEL", "TENANT_FIELD")
def reset() -> None:
    """Forget what was derived from the models and settings (settings changed, tests)."""
    for fn in (_tracked_set, _tracked_names, tracked_tables, table_of, tenant_column, user_column):
        fn.cache_clear()
    for derived in (_decoders, _tenant_field, _family):
        derived.cache_clear()
