"""Input and output schemas of the agency functions (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from reactive.schema import Input

from .models import NAME_MAX, TEXT_MAX

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
LongText = Annotated[str, Field(max_length=TEXT_MAX)]
Limit = Annotated[int, Field(ge=1, le=200)]
JsonObject = Annotated[dict[str, Any], Field(max_length=100)]


class Output(BaseModel):
    """A result shape, documented in OpenAPI; handlers return plain dicts of this shape."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


# --- inputs -----------------------------------------------------------------------------


class ById(Input):
    id: UUID


class OrganizationCreate(Input):
    name: Name
    database_name: Annotated[str, Field(min_length=1, max_length=63)]
    database_url: Annotated[str, Field(max_length=500)] = ""

    @field_validator("database_name")
    @classmethod
    def safe_identifier(cls, value: str) -> str:
        from .models import database_name_validator

        if not database_name_validator.regex.match(value):
            raise ValueError(database_name_validator.message)
        return value


class ByOrganization(Input):
    organization_id: UUID
    limit: Limit = 50


class AgentFields(Input):
    name: Name | None = None
    role: Name | None = None
    system_prompt: LongText | None = None
    model: Annotated[str, Field(max_length=NAME_MAX)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    model_settings: JsonObject | None = None
    is_active: bool | None = None
    tool_ids: Annotated[list[UUID], Field(max_length=200)] | None = None


class AgentCreate(AgentFields):
    organization_id: UUID
    name: Name
    role: Name


class AgentUpdate(Input):
    id: UUID
    data: AgentFields


class ToolFields(Input):
    name: Name | None = None
    description: LongText | None = None
    tool_type: Annotated[str, Field(max_length=64)] | None = None
    config: JsonObject | None = None


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
    to_agent_id: UUID | None = None
    content: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
    message_type: Annotated[str, Field(max_length=64)] | None = None
    metadata: JsonObject | None = None


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
