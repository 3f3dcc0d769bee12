"""Input and output schemas of the agency functions (camelCase on the wire).

The inputs are what the OpenAPI document publishes, so every rule they check
that JSON Schema can express is expressed in their schema: lengths, bounds,
patterns. Numbers and booleans are strict: a JSON body's ``"12"``, ``false``
or ``"yes"`` is not a number or a boolean (422); query strings, which carry
only text, are parsed leniently before validation (reactive.http.query_input).
Update fields are optional but not nullable, except where null means
something (``maxTokens``, ``toolType``: clear it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator
from pydantic.alias_generators import to_camel

from reactive import Input

from .models import NAME_MAX, TEXT_MAX, database_name_validator

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
LongText = Annotated[str, Field(max_length=TEXT_MAX)]
Limit = Annotated[int, Strict(), Field(ge=1, le=200)]
JsonObject = Annotated[dict[str, Any], Field(max_length=100)]
# A slug (ToolType.slug, MessageType.slug), or "" for none.
Slug = Annotated[str, Field(max_length=64, pattern=r"^[-a-zA-Z0-9_]*$")]
# The model's database name rule (\A...\Z) as JSON Schema (ECMA-262) writes it.
DATABASE_NAME_PATTERN = (
    "^" + database_name_validator.regex.pattern.removeprefix(r"\A").removesuffix(r"\Z") + "$"
)


class Output(BaseModel):
    """A result shape, documented in OpenAPI; handlers return plain dicts of this shape."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


# --- inputs -----------------------------------------------------------------------------


class ById(Input):
    id: UUID


class OrganizationCreate(Input):
    name: Name
    database_name: Annotated[
        str,
        Field(min_length=1, max_length=63, json_schema_extra={"pattern": DATABASE_NAME_PATTERN}),
    ]
    database_url: Annotated[str, Field(max_length=500)] = ""

    @field_validator("database_name")
    @classmethod
    def safe_identifier(cls, value: str) -> str:
        # The pattern is enforced here (the schema only shows it) for the model's message.
        if not database_name_validator.regex.match(value):
            raise ValueError(database_name_validator.message)
        return value


class ByOrganization(Input):
    organization_id: UUID
    limit: Limit = 50


# Optional fields default to None, which a caller cannot send: null is refused
# (422) unless the type says `| None`. Updates apply only the fields sent.


class AgentFields(Input):
    name: Name = None
    role: Name = None
    system_prompt: LongText = None
    model: Annotated[str, Field(max_length=NAME_MAX)] = None
    temperature: Annotated[float, Strict(), Field(ge=0, le=2)] = None
    max_tokens: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] | None = None  # null: no limit
    model_settings: JsonObject = None
    is_active: Annotated[bool, Strict()] = None
    tool_ids: Annotated[list[UUID], Field(max_length=200)] = None


class AgentCreate(AgentFields):
    organization_id: UUID
    name: Name
    role: Name


class AgentUpdate(Input):
    id: UUID
    data: AgentFields


class ToolFields(Input):
    name: Name = None
    description: LongText = None
    tool_type: Slug | None = None  # a ToolType slug; null or "": none
    config: JsonObject = None


class ToolCreate(ToolFields):
    organization_id: UUID
    name: Name


class ToolUpdate(Input):
    id: UUID
    data: ToolFields


class MessagesQuery(ByOrganization):
    agent_id: UUID | None = None


class MessageCreate(Input):
    organization_id: UUID
    from_agent_id: UUID
    to_agent_id: UUID | None = None  # null: to everyone
    content: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
    message_type: Slug | None = None  # a MessageType slug; null or "": none
    metadata: JsonObject | None = None  # null: {}


class Credentials(BaseModel):
    """The body of POST /api/auth/login (other keys are ignored)."""

    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


# --- outputs ----------------------------------------------------------------------------


class OrganizationOut(Output):
    id: UUID
    name: str
    owner_id: UUID
    database_name: str
    has_database_url: bool
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class MyOrganizationOut(OrganizationOut):
    role: str


class AgentOut(Output):
    id: UUID
    organization_id: UUID
    name: str
    role: str
    system_prompt: str
    model: str
    temperature: float
    max_tokens: int | None
    model_settings: dict[str, Any]
    is_active: bool
    created_at: datetime
    updated_at: datetime


class AgentDetailOut(AgentOut):
    tool_ids: list[UUID]


class ToolOut(Output):
    id: UUID
    organization_id: UUID
    tool_type: str | None
    name: str
    description: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class MessageOut(Output):
    id: UUID
    organization_id: UUID
    from_agent_id: UUID
    to_agent_id: UUID | None
    message_type: str | None
    content: str
    metadata: dict[str, Any]
    created_at: datetime


class Deleted(Output):
    id: UUID
    deleted: bool


class UserOut(Output):
    id: UUID
    username: str
    email: str
    display_name: str
    is_staff: bool


class Session(Output):
    """The signed-in user (POST /api/auth/login, GET /api/auth/me)."""

    user: UserOut


class LoggedOut(Output):
    ok: bool


class FunctionMetrics(Output):
    name: str
    hits: int
    misses: int
    invalidated: int
    errors: int
    hit_rate: float | None
    avg_ms: float | None


class DeliveryPosition(Output):
    user: str
    client_id: str
    organization_id: str
    event_id: str
    at: datetime


class Metrics(Output):
    """GET /api/auth/metrics (staff only)."""

    functions: list[FunctionMetrics]
    process: dict[str, float]
    delivery_positions: list[DeliveryPosition]
