"""The catalogs: tool types and message types, global reference data any signed-in user reads."""

from __future__ import annotations

from reactive import Context, NoInput, query

from . import member_schemas as m
from .models import MessageType, ToolType
from .serializers import wire


@query("toolTypes.getAll", output=list[m.ToolTypeOut], dependencies=["agency.tooltype"])
def get_tool_types(ctx: Context, inp: NoInput) -> list[dict]:
    """Every tool type (the `toolType` slugs tools take), by name."""
    rows = ToolType.objects.order_by("name", "slug").values("id", "slug", "name", "description")
    return [wire(row) for row in rows]


@query("messageTypes.getAll", output=list[m.MessageTypeOut], dependencies=["agency.messagetype"])
def get_message_types(ctx: Context, inp: NoInput) -> list[dict]:
    """Every message type (the `messageType` slugs messages take), by name."""
    rows = MessageType.objects.order_by("name", "slug").values("id", "slug", "name")
    return [wire(row) for row in rows]
