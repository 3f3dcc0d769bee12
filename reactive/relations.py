"""The relation graph: which other tags a write to a model implies.

By default it is derived from foreign keys, both ways, on the key's target
column (``to_field`` included): a change to a message touches its agent's row
tag (forward), and a change to an agent touches the messages scoped by that
agent (reverse). A many-to-many link row also touches both linked tables, so
that table-level dependencies of queries reading across the link follow it.
``REACTIVE["RELATIONS"]`` replaces the derived list for a model with explicit
tag specs in the seed's form::

    "agency.agent": ["agency.organization:id={organization_id}",
                     "agency.message:from_agent_id={id}"]
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from django.db import models

from .conf import on_change, reactive_settings
from .tables import LOOKUP_PREFIX, concrete, descendants, is_key, tenant_column, user_column
from .tags import TagTemplate

# model -> columns named by the scoped dependencies declared in this process
_declared: dict[type[models.Model], set[str]] = {}


@cache
def relations_of(model: type[models.Model]) -> tuple[TagTemplate, ...]:
    """The tag templates a write to `model` implies, rendered with the row's values."""
    label = model._meta.label_lower
    overrides = reactive_settings().get("RELATIONS", {})
    if label in overrides:
        return tuple(TagTemplate.parse(spec) for spec in overrides[label])
    return tuple(_derived(model))


def _derived(model: type[models.Model]) -> list[TagTemplate]:
    out: list[TagTemplate] = []
    links = _is_link(model)
    for field in model._meta.concrete_fields:
        if is_key(field):
            target = concrete(field.related_model)
            out.append(TagTemplate(target, field.target_field.attname, f"{{{field.attname}}}"))
            if links:
                out.append(TagTemplate(target))
    for rel in model._meta.related_objects:
        if (rel.one_to_many or rel.one_to_one) and rel.field.concrete:
            key = rel.field.target_field.attname
            out.append(TagTemplate(concrete(rel.related_model), rel.field.attname, f"{{{key}}}"))
    return out


def _is_link(model: type[models.Model]) -> bool:
    """Whether `model` is the through model of a many-to-many field."""
    if model._meta.auto_created:
        return True
    return any(
        m2m.remote_field.through is not None and concrete(m2m.remote_field.through) is model
        for other in model._meta.apps.get_models()
        for m2m in other._meta.local_many_to_many
    )


@cache
def scoped_fields(model: type[models.Model]) -> tuple[str, ...]:
    """Columns a row is tagged by: its primary key, its foreign keys, and declared scopes.

    Declared scopes are the columns named by a scoped dependency of any function
    declared in this process, and ``REACTIVE["SCOPED_FIELDS"]``.
    """
    fields = [model._meta.pk.attname]
    fields += [f.attname for f in model._meta.concrete_fields if f.many_to_one or f.one_to_one]
    fields += sorted(_declared.get(model, ()))
    for name in reactive_settings()["SCOPED_FIELDS"].get(model._meta.label_lower, ()):
        # The model's own fields, not reverse relations (those have no column to tag by).
        fields.append(cast("models.Field[Any, Any]", model._meta.get_field(name)).attname)
    return tuple(dict.fromkeys(fields))


@cache
def tagged_columns(model: type[models.Model]) -> frozenset[str]:
    """The attnames (and looked-up tenants) of `model`'s table that any of its tags use.

    A change row carries every bounded column; only these are decoded, and an
    update that changes none of them needs its new values alone.
    """
    names = {model._meta.pk.attname}
    for each in (model, *descendants(model)):
        names |= set(scoped_fields(each))
        for template in relations_of(each):
            names |= set(template.placeholders)
    by_column = {f.column: f.attname for f in model._meta.local_concrete_fields}
    for column in (tenant_column(model), user_column(model)):
        if column is not None:
            names.add(by_column[column])
    local = set(by_column.values())
    return frozenset(n for n in names if n in local) | {LOOKUP_PREFIX}


@on_change("RELATIONS", "SCOPED_FIELDS", "TENANT_MODEL", "TENANT_FIELD")
def reset() -> None:
    """Forget the derived graph (settings changed, a dependency declared)."""
    relations_of.cache_clear()
    scoped_fields.cache_clear()
    tagged_columns.cache_clear()


def declare(template: TagTemplate) -> None:
    """Note a scoped dependency, so that writes to its model emit tags on that column."""
    if template.attname is None or template.value == "*":
        return
    columns = _declared.setdefault(template.model, set())
    if template.attname not in columns:
        columns.add(template.attname)
        scoped_fields.cache_clear()
        tagged_columns.cache_clear()
