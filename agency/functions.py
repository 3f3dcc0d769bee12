"""The agency's reactive functions (names and inputs of the wire contract)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from reactive import (
    Conflict,
    Context,
    InvalidInput,
    NoInput,
    NotFound,
    field_errors,
    mutation,
    query,
)

from . import schemas as s
from .access import ensure_member, member_of, memberships, result_member
from .models import Agent, Membership, Message, MessageType, Organization, Tool, ToolType
from .provisioning import ProvisioningError, deprovision, provision
from .serializers import (
    AGENT_FIELDS,
    MESSAGE_FIELDS,
    ORGANIZATION_FIELDS,
    TOOL_FIELDS,
    instance,
    organization,
    wire,
)

# --- organizations ------------------------------------------------------------------------


@query(
    "organizations.getAll",
    output=list[s.MyOrganizationOut],
    dependencies=["agency.membership:user_id={user}", "agency.organization"],
    tenant=lambda ctx, inp, data: [org["id"] for org in data],
    per_user=True,
)
def get_organizations(ctx: Context, inp: NoInput) -> list[dict]:
    """The caller's organizations, with the caller's role in each."""
    roles = memberships(ctx)
    rows = (
        Organization.objects.filter(id__in=list(roles))
        .order_by("name")
        .values(*ORGANIZATION_FIELDS)
    )
    return [{**organization(row), "role": roles[str(row["id"])]} for row in rows]


@query(
    "organizations.getOne",
    input=s.ById,
    output=s.OrganizationOut,
    dependencies=["agency.organization:id={id}"],
    access=member_of("id"),
    tenant="id",
)
def get_organization(ctx: Context, inp: s.ById) -> dict:
    """One organization the caller belongs to."""
    return organization(Organization.objects.values(*ORGANIZATION_FIELDS).get(id=inp.id))


@mutation("organizations.create", input=s.OrganizationCreate, output=s.OrganizationOut)
def create_organization(ctx: Context, inp: s.OrganizationCreate) -> dict:
    """Create an organization owned by the caller, and provision its database."""
    if Organization.objects.filter(database_name=inp.database_name).exists():
        raise Conflict(errors=[{"field": "databaseName", "message": "This name is taken."}])
    created = False
    if not inp.database_url:
        # The database is made outside the transaction (CREATE DATABASE cannot
        # run in one); if the rows then fail, it is dropped again.
        try:
            created = provision(inp.database_name)
        except ProvisioningError as exc:
            raise InvalidInput(
                "The organization's database could not be created.",
                errors=[{"field": "databaseName", "message": str(exc)}],
            ) from None
    try:
        with transaction.atomic():
            org = Organization(
                name=inp.name,
                owner=ctx.user,
                database_name=inp.database_name,
                database_url=inp.database_url,
            )
            org.full_clean()
            org.save()
            Membership.objects.create(user=ctx.user, organization=org, role=Membership.Role.OWNER)
    except BaseException as exc:
        if created:
            deprovision(inp.database_name)
        if isinstance(exc, IntegrityError):
            raise Conflict(
                errors=[{"field": "databaseName", "message": "This name is taken."}]
            ) from None
        raise
    return organization({name: getattr(org, name) for name in ORGANIZATION_FIELDS})


# --- agents --------------------------------------------------------------------------------


@query(
    "agents.getAll",
    input=s.ByOrganization,
    output=list[s.AgentOut],
    dependencies=["agency.agent:organization_id={organization_id}"],
    access=member_of(),
    tenant="organization_id",
)
def get_agents(ctx: Context, inp: s.ByOrganization) -> list[dict]:
    """An organization's agents, newest first."""
    rows = Agent.objects.filter(organization_id=inp.organization_id).order_by("-created_at")
    return [wire(row) for row in rows.values(*AGENT_FIELDS)[: inp.limit]]


@query(
    "agents.getOne",
    input=s.ById,
    output=s.AgentDetailOut,
    dependencies=["agency.agent:id={id}"],
    check=result_member,
    tenant=lambda ctx, inp, data: data["organizationId"],
)
def get_agent(ctx: Context, inp: s.ById) -> dict:
    """One agent, with the ids of its tools."""
    return _agent_detail(Agent.objects.prefetch_related("tools").get(id=inp.id))


def _agent_detail(agent: Agent) -> dict:
    return {**instance(agent, AGENT_FIELDS), "toolIds": [str(t.pk) for t in agent.tools.all()]}


def _apply(obj: Any, fields: dict[str, Any]) -> None:
    # full_clean skips validating a blank=True field that is None: the NOT NULL
    # column would then fail at the database (a 500) instead of a 422.
    nulls = {
        name: "This field cannot be null."
        for name, value in fields.items()
        if value is None and not obj._meta.get_field(name).null
    }
    if nulls:
        raise ValidationError(nulls)
    for name, value in fields.items():
        setattr(obj, name, value)
    obj.full_clean()
    obj.save()


@contextmanager
def _fields_of(prefix: str) -> Iterator[None]:
    """Name the fields of errors raised inside by their path in the input (``data.toolIds``),
    as input validation does: one field, one name, whichever check refused it."""

    def named(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**e, "field": f"{prefix}.{e['field']}"} for e in errors]

    try:
        yield
    except InvalidInput as exc:
        exc.errors = named(exc.errors)
        raise
    except ValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise
        errors = named(field_errors(exc.message_dict))
        raise InvalidInput(" ".join(exc.messages), errors=errors) from None


def _set_tools(agent: Agent, tool_ids: list) -> None:
    # Locked (in primary-key order), so a tool deleted concurrently is either
    # gone here (422) or deleted after this commits, never under the new link
    # (which would fail the deferred foreign key at commit: a 500).
    tools = list(
        Tool.objects.select_for_update()
        .filter(id__in=tool_ids, organization_id=agent.organization_id)
        .order_by("pk")
    )
    if len(tools) != len(set(tool_ids)):
        raise InvalidInput(
            errors=[{"field": "toolIds", "message": "Unknown tool of this organization."}]
        )
    agent.tools.set(tools)


@mutation("agents.create", input=s.AgentCreate, output=s.AgentDetailOut, access=member_of())
def create_agent(ctx: Context, inp: s.AgentCreate) -> dict:
    """Create an agent in an organization the caller belongs to."""
    fields = inp.model_dump(exclude_none=True, exclude={"tool_ids"})
    agent = Agent()
    _apply(agent, fields)
    if inp.tool_ids:
        _set_tools(agent, inp.tool_ids)
    return _agent_detail(agent)


def _for_write(ctx: Context, rows: Any, row_id: Any) -> Any:
    """The row to change, locked; NotFound, or Forbidden unless the caller is a member."""
    row = rows.select_for_update(of=("self",)).filter(id=row_id).first()
    if row is None:
        raise NotFound()
    ensure_member(ctx, row.organization_id)
    return row


@mutation("agents.update", input=s.AgentUpdate, output=s.AgentDetailOut)
def update_agent(ctx: Context, inp: s.AgentUpdate) -> dict:
    """Change some fields of an agent."""
    agent = _for_write(ctx, Agent.objects, inp.id)
    with _fields_of("data"):
        _apply(agent, inp.data.model_dump(exclude_unset=True, exclude={"tool_ids"}))
        if inp.data.tool_ids is not None:
            _set_tools(agent, inp.data.tool_ids)
    return _agent_detail(agent)


@mutation("agents.delete", input=s.ById, output=s.Deleted)
def delete_agent(ctx: Context, inp: s.ById) -> dict:
    """Delete an agent (its messages and jobs go with it)."""
    _for_write(ctx, Agent.objects, inp.id).delete()
    return {"id": str(inp.id), "deleted": True}


# --- tools ---------------------------------------------------------------------------------


@query(
    "tools.getAll",
    input=s.ByOrganization,
    output=list[s.ToolOut],
    dependencies=["agency.tool:organization_id={organization_id}", "agency.tooltype"],
    access=member_of(),
    tenant="organization_id",
)
def get_tools(ctx: Context, inp: s.ByOrganization) -> list[dict]:
    """An organization's tools, newest first."""
    rows = Tool.objects.filter(organization_id=inp.organization_id).order_by("-created_at")
    return [wire(row) for row in rows.values(*TOOL_FIELDS)[: inp.limit]]


@query(
    "tools.getOne",
    input=s.ById,
    output=s.ToolOut,
    dependencies=["agency.tool:id={id}", "agency.tooltype"],
    check=result_member,
    tenant=lambda ctx, inp, data: data["organizationId"],
)
def get_tool(ctx: Context, inp: s.ById) -> dict:
    """One tool."""
    return instance(Tool.objects.select_related("tool_type").get(id=inp.id), TOOL_FIELDS)


def _tool_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if "tool_type" in fields:
        slug = fields.pop("tool_type")
        tool_type = ToolType.objects.filter(slug=slug).first() if slug else None
        if slug and tool_type is None:
            raise InvalidInput(
                errors=[{"field": "toolType", "message": f"Unknown tool type {slug!r}."}]
            )
        fields["tool_type"] = tool_type
    return fields


@mutation("tools.create", input=s.ToolCreate, output=s.ToolOut, access=member_of())
def create_tool(ctx: Context, inp: s.ToolCreate) -> dict:
    """Create a tool in an organization the caller belongs to."""
    tool = Tool()
    _apply(tool, _tool_fields(inp.model_dump(exclude_none=True)))
    return instance(tool, TOOL_FIELDS)


@mutation("tools.update", input=s.ToolUpdate, output=s.ToolOut)
def update_tool(ctx: Context, inp: s.ToolUpdate) -> dict:
    """Change some fields of a tool."""
    tool = _for_write(ctx, Tool.objects.select_related("tool_type"), inp.id)
    with _fields_of("data"):
        _apply(tool, _tool_fields(inp.data.model_dump(exclude_unset=True)))
    return instance(tool, TOOL_FIELDS)


@mutation("tools.delete", input=s.ById, output=s.Deleted)
def delete_tool(ctx: Context, inp: s.ById) -> dict:
    """Delete a tool."""
    _for_write(ctx, Tool.objects.select_related("tool_type"), inp.id).delete()
    return {"id": str(inp.id), "deleted": True}


# --- messages ------------------------------------------------------------------------------


def _message_tags(ctx: Context, inp: s.MessagesQuery) -> list[str]:
    if inp.agent_id:
        return [
            f"agency.message:from_agent_id={inp.agent_id}",
            f"agency.message:to_agent_id={inp.agent_id}",
            "agency.message:*",
            "agency.messagetype",
        ]
    return [
        f"agency.message:organization_id={inp.organization_id}",
        "agency.message:*",
        "agency.messagetype",
    ]


@query(
    "messages.getAll",
    input=s.MessagesQuery,
    output=list[s.MessageOut],
    dependencies=_message_tags,
    access=member_of(),
    tenant="organization_id",
)
def get_messages(ctx: Context, inp: s.MessagesQuery) -> list[dict]:
    """An organization's recent messages, optionally those sent or received by one agent."""
    rows = Message.objects.filter(organization_id=inp.organization_id)
    if inp.agent_id:
        rows = rows.filter(from_agent_id=inp.agent_id) | rows.filter(to_agent_id=inp.agent_id)
    rows = rows.order_by("-created_at").values(*MESSAGE_FIELDS)[: inp.limit]
    return [wire(row) for row in rows]


@mutation("messages.create", input=s.MessageCreate, output=s.MessageOut, access=member_of())
def create_message(ctx: Context, inp: s.MessageCreate) -> dict:
    """Post a message from one of the organization's agents."""
    # The agents are locked (in primary-key order) until the message commits: an
    # agent deleted or moved concurrently is refused here (422) instead of
    # failing the deferred foreign key at commit (a 500).
    found = set(
        Agent.objects.select_for_update()
        .filter(
            organization_id=inp.organization_id,
            id__in=[a for a in (inp.from_agent_id, inp.to_agent_id) if a],
        )
        .order_by("pk")
        .values_list("id", flat=True)
    )
    errors = []
    if inp.from_agent_id not in found:
        errors.append({"field": "fromAgentId", "message": "No such agent in this organization."})
    if inp.to_agent_id and inp.to_agent_id not in found:
        errors.append({"field": "toAgentId", "message": "No such agent in this organization."})
    message_type = None
    if inp.message_type:
        message_type = MessageType.objects.filter(slug=inp.message_type).first()
        if message_type is None:
            errors.append({"field": "messageType", "message": "Unknown message type."})
    if errors:
        raise InvalidInput(errors=errors)
    message = Message.objects.create(
        organization_id=inp.organization_id,
        from_agent_id=inp.from_agent_id,
        to_agent_id=inp.to_agent_id,
        message_type=message_type,
        content=inp.content,
        metadata=inp.metadata or {},
    )
    return instance(message, MESSAGE_FIELDS)
