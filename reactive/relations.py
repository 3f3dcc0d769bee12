"""The relation graph: which other tags a write to a model implies.

By default it is derived from foreign keys, both ways: a change to a message
touches its agent's row tag (forward), and a change to an agent touches the
messages scoped by that agent (reverse). ``REACTIVE["RELATIONS"]`` replaces the
derived list for a model with explicit tag specs in the seed's form::

    "agency.agent": ["agency.organization:id={organization_id}",
                     "agency.message:from_agent_id={id}"]
"""

from __future__ import annotations

from functools import cache

from django.db import models

from .conf import reactive_settings
from .tags import TagTemplate


@cache
def relations_of(model: type[models.Model]) -> tuple[TagTemplate, ...]:
    """The tag templates a write to `model` implies, rendered with the row's values."""
    label = model._meta.label_lower
    overrides = reactive_settings().get("RELATIONS", {})
    if label in overrides:
        return tuple(TagTemplate.parse(spec) for spec in overrides[label])
    return tuple(_derived(model))


def _derived(model: type[models.Model]) -> list[TagTemplate]:
    pk = model._meta.pk.attname
    out: list[TagTemplate] = []
    for field in model._meta.concrete_fields:
        if field.many_to_one or field.one_to_one:
            target = field.related_model
            out.append(TagTemplate(target, target._meta.pk.attname, f"{{{field.attname}}}"))
    for rel in model._meta.related_objects:
        if (rel.one_to_many or rel.one_to_one) and rel.field.concrete:
            out.append(TagTemplate(rel.related_model, rel.field.attname, f"{{{pk}}}"))
    return out


@cache
def scoped_fields(model: type[models.Model]) -> tuple[str, ...]:
    """Columns a row is tagged by: its primary key and every foreign key."""
    fields = [model._meta.pk.attname]
    fields += [
        f.attname
        for f in model._meta.concrete_fields
        if (f.many_to_one or f.one_to_one) and f.attname not in fields
    ]
    return tuple(fields)


@cache
def tracked_fields(model: type[models.Model]) -> tuple[str, ...]:
    """Columns whose old values a write must know: scoped ones and those relations use."""
    fields = list(scoped_fields(model))
    for template in relations_of(model):
        fields += [name for name in template.placeholders if name not in fields]
    return tuple(fields)
