"""Rows to wire dicts: camelCase keys, JSON-ready values, built once per cache miss."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

ORGANIZATION_FIELDS = (
    "id",
    "name",
    "owner_id",
    "database_name",
    "database_url",
    "settings",
    "created_at",
    "updated_at",
)
AGENT_FIELDS = (
    "id",
    "organization_id",
    "name",
    "role",
    "system_prompt",
    "model",
    "temperature",
    "max_tokens",
    "model_settings",
    "is_active",
    "created_at",
    "updated_at",
)
TOOL_FIELDS = (
    "id",
    "organization_id",
    "tool_type__slug",
    "name",
    "description",
    "config",
    "created_at",
    "updated_at",
)
MESSAGE_FIELDS = (
    "id",
    "organization_id",
    "from_agent_id",
    "to_agent_id",
    "message_type__slug",
    "content",
    "metadata",
    "created_at",
)
_RENAMES = {"tool_type__slug": "toolType", "message_type__slug": "messageType"}


def _camel(name: str) -> str:
    if name in _RENAMES:
        return _RENAMES[name]
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_KEYS = {
    name: _camel(name)
    for name in (
        *ORGANIZATION_FIELDS,
        *AGENT_FIELDS,
        *TOOL_FIELDS,
        *MESSAGE_FIELDS,
        "role",
        "tool_ids",
    )
}


def _json(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def wire(row: dict[str, Any]) -> dict[str, Any]:
    """One ``values()`` row as a wire dict."""
    return {_KEYS.get(k) or _camel(k): _json(v) for k, v in row.items()}


def organization(row: dict[str, Any]) -> dict[str, Any]:
    """An organization as a wire dict; the database URL may hold credentials, so it stays home."""
    out = wire(row)
    out["hasDatabaseUrl"] = bool(out.pop("databaseUrl", ""))
    return out


def instance(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """A model instance as a wire dict, reading `fields` (``x__slug`` through the relation)."""
    row = {}
    for name in fields:
        if "__" in name:
            related = getattr(obj, name.split("__")[0])
            row[name] = getattr(related, "slug", None) if related else None
        else:
            row[name] = getattr(obj, name)
    return wire(row)
