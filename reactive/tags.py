"""Tags: the one vocabulary of invalidation shared by the cache, the event log and clients.

A tag names a set of rows, in one of three shapes:

- ``agency.agent``                       every row of a model (table)
- ``agency.agent:id=<pk>``               one row (scoped by its primary key)
- ``agency.agent:organization_id=<v>``   the rows whose field equals a value (scoped)

Every scoped dependency also depends on the model's wildcard ``agency.agent:*``,
which writes emit only when they cannot say which rows they touched (a very
large ``QuerySet.update``, or a raw-SQL write invalidated by hand).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from .tables import UNBOUNDED, concrete, is_tracked

Tag = str

_SPEC = re.compile(r"^(?P<model>[\w.]+)(?::(?P<field>\w+)=(?P<value>.+))?$")


def table_tag(model: type[models.Model]) -> Tag:
    """The tag of every row of `model`."""
    return model._meta.label_lower


def wildcard_tag(model: type[models.Model]) -> Tag:
    """The tag that invalidates every scoped query of `model` at once."""
    return f"{model._meta.label_lower}:*"


def scoped_tag(model: type[models.Model], attname: str, value: Any) -> Tag:
    """The tag of the rows of `model` whose column `attname` equals `value`."""
    return f"{model._meta.label_lower}:{attname}={format_value(value)}"


def row_tag(model: type[models.Model], pk: Any) -> Tag:
    """The tag of one row of `model`."""
    return scoped_tag(model, model._meta.pk.attname, pk)


def format_value(value: Any) -> str:
    """Values are compared as text: UUIDs, ints and strings all render one way."""
    return "" if value is None else str(value)


@cache
def resolve_model(name: str) -> type[models.Model]:
    """The model owning the table of ``app_label.model`` (or a unique bare model name).

    A proxy resolves to its concrete model: they share one table, so one set of tags.
    """
    if "." in name:
        return concrete(apps.get_model(name))
    found = [
        m for m in apps.get_models(include_auto_created=True) if m._meta.model_name == name.lower()
    ]
    if len(found) != 1:
        raise LookupError(f"model name {name!r} matches {len(found)} models; use app_label.model")
    return concrete(found[0])


def resolve_attname(model: type[models.Model], field: str) -> str:
    """The column attribute for a field name: ``organization`` -> ``organization_id``.

    Any primary key of the model's inheritance chain (``id`` on a multi-table
    child) names the model's own primary key column (``parent_ptr_id``).
    """
    if field == "pk":
        return model._meta.pk.attname
    try:
        found = model._meta.get_field(field)
    except Exception as exc:
        raise LookupError(f"{model._meta.label} has no field {field!r}") from exc
    if not isinstance(found, models.Field) or not found.concrete or found.many_to_many:
        raise LookupError(
            f"{model._meta.label}.{field} is not a column: depend on its through model or "
            "the related model instead"
        )
    if found.primary_key:
        return model._meta.pk.attname
    return found.attname


def check_scope(model: type[models.Model], attname: str | None) -> None:
    """Refuse, with ImproperlyConfigured, a tag that no captured write could ever emit."""
    if not is_tracked(model):
        raise ImproperlyConfigured(
            f"{model._meta.label} is not tracked (an ignored app, or an unmanaged model): "
            "no write to it is captured, so a dependency on it would never be invalidated"
        )
    if attname is None:
        return
    field = next(f for f in model._meta.concrete_fields if f.attname == attname)
    if isinstance(field, UNBOUNDED):
        raise ImproperlyConfigured(
            f"{model._meta.label}.{field.name} is a {type(field).__name__}: change rows do not "
            "carry unbounded columns, so no write can be scoped on it; depend on the row or table"
        )


def normalize(tag: Tag) -> Tag:
    """A tag in the one spelling writes emit: ``agent:organization=X`` -> ``agency.agent:organization_id=X``."""
    if tag.endswith(":*"):
        model = resolve_model(tag[:-2])
        check_scope(model, None)
        return wildcard_tag(model)
    template = TagTemplate.parse(tag)
    if template.placeholders:
        raise ValueError(f"tag {tag!r} has placeholders: pass the values")
    check_scope(template.model, template.attname)
    return template.render({})


@dataclass(frozen=True)
class TagTemplate:
    """A tag with placeholders, rendered with input values or row values."""

    model: type[models.Model]
    attname: str | None = None
    value: str | None = None

    @classmethod
    def parse(cls, spec: str) -> TagTemplate:
        """Parse ``agent``, ``agency.agent:organization_id={organization_id}`` and the like."""
        match = _SPEC.match(spec.strip())
        if not match:
            raise ValueError(f"not a tag spec: {spec!r}")
        model = resolve_model(match["model"])
        if match["field"] is None:
            return cls(model)
        return cls(model, resolve_attname(model, match["field"]), match["value"])

    @property
    def placeholders(self) -> list[str]:
        """The names of the ``{placeholders}`` in the template's value."""
        if self.value is None:
            return []
        return [name for _, name, _, _ in string.Formatter().parse(self.value) if name]

    def render(self, values: Mapping[str, Any]) -> Tag:
        """The tag for `values`: the template's table, wildcard or field tag."""
        if self.attname is None:
            return table_tag(self.model)
        if self.value == "*":
            return wildcard_tag(self.model)
        assert self.value is not None  # parse() gives every field tag a value
        rendered = self.value.format_map(_Formatted(values))
        return f"{self.model._meta.label_lower}:{self.attname}={rendered}"

    def guards(self) -> list[Tag]:
        """Tags a query on this template must also watch (the model's wildcard)."""
        return [] if self.attname is None else [wildcard_tag(self.model)]


class _Formatted(dict[str, Any]):
    def __init__(self, values: Mapping[str, Any]):
        super().__init__(values)

    def __getitem__(self, key: str) -> str:
        return format_value(super().__getitem__(key))

    def __missing__(self, key: str) -> str:
        raise KeyError(f"no value for placeholder {{{key}}}")


def dependency_tags(templates: Iterable[TagTemplate], values: Mapping[str, Any]) -> list[Tag]:
    """Render dependency templates into a sorted, de-duplicated tag list (guards included)."""
    out: set[Tag] = set()
    for template in templates:
        out.add(template.render(values))
        out.update(template.guards())
    return sorted(out)
