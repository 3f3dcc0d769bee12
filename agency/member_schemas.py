"""Input and output schemas of members, organization settings and the catalogs.

The conventions of agency.schemas hold: camelCase on the wire, strict types,
optional fields that are not nullable, and every rule JSON Schema can express
expressed in the published schema (``enum`` for roles, ``pattern`` and
``maxLength`` for a time zone). What it cannot express (the size and depth of
the settings object, a time zone the server knows) is said in the field's
description and refused with a 422 naming the field.
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, ConfigDict, Field

from reactive import Input

from .schemas import Name, Output

Role = Literal["owner", "admin", "member"]
# Django's username field: at most 150 characters (which ones it allows is its validator's
# business; an unknown name is simply not found).
Username = Annotated[str, Field(min_length=1, max_length=150)]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]

SETTINGS_MAX_BYTES = 16 * 1024  # the settings object as compact JSON
SETTINGS_MAX_DEPTH = 5  # {} is depth 1, {"a": {}} depth 2
TIME_ZONE_PATTERN = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$"
TIME_ZONE_KEY = "timeZone"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def valid_time_zone(name: Any) -> bool:
    """Whether `name` is an IANA time zone this server knows (zoneinfo)."""
    if not isinstance(name, str) or len(name) > 64:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def check_settings(value: dict[str, Any]) -> dict[str, Any]:
    """An organization's settings: bounded in size and depth, with a known ``timeZone`` if any."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > SETTINGS_MAX_BYTES:
        raise ValueError(f"At most {SETTINGS_MAX_BYTES} bytes as JSON ({size} given).")
    if _depth(value) > SETTINGS_MAX_DEPTH:
        raise ValueError(f"At most {SETTINGS_MAX_DEPTH} levels of nesting.")
    if TIME_ZONE_KEY in value and not valid_time_zone(value[TIME_ZONE_KEY]):
        raise ValueError(f"{TIME_ZONE_KEY} must be an IANA time zone, such as Europe/Paris.")
    return value


Settings = Annotated[
    dict[str, Any],
    Field(
        max_length=100,
        description=(
            f"A JSON object of at most {SETTINGS_MAX_BYTES} bytes and {SETTINGS_MAX_DEPTH} "
            f"levels. `{TIME_ZONE_KEY}`, when present, is an IANA time zone (the crons' "
            "schedules run in it; UTC otherwise)."
        ),
        json_schema_extra={
            "properties": {
                TIME_ZONE_KEY: {
                    "type": "string",
                    "maxLength": 64,
                    "pattern": TIME_ZONE_PATTERN,
                    "examples": ["Europe/Paris", "UTC"],
                }
            }
        },
    ),
    AfterValidator(check_settings),
]

# --- inputs -----------------------------------------------------------------------------


class MembershipsQuery(Input):
    organization_id: UUID


class MembershipAdd(Input):
    """Exactly one of `username` and `email` names the user to add."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["username"]}, {"required": ["email"]}]}
    )
    organization_id: UUID
    username: Username = None
    email: Email = None
    role: Role = "member"


class MembershipUpdate(Input):
    id: UUID
    role: Role


class OrganizationFields(Input):
    name: Name = None
    settings: Settings = None


class OrganizationUpdate(Input):
    id: UUID
    data: OrganizationFields


# --- outputs ----------------------------------------------------------------------------


class MembershipOut(Output):
    id: UUID
    user_id: UUID
    username: str
    name: str
    role: Role
    created_at: datetime


class ToolTypeOut(Output):
    id: UUID
    slug: str
    name: str
    description: str


class MessageTypeOut(Output):
    id: UUID
    slug: str
    name: str
