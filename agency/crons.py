"""The crons functions: scheduled runs of an organization's agents (see agency/scheduler.py).

``nextRunAt`` is computed from stored data alone (agency/slots.py), so a cached
answer stays right until a write to the crons or to the organization (its
time zone) invalidates it.
"""

from __future__ import annotations

from typing import Any

from reactive import Context, InvalidInput, mutation, query

from . import cron_schemas as s
from .access import member_of
from .functions import _apply, _fields_of, _for_write
from .models import Agent, Cron, Organization
from .schemas import ById, Deleted
from .serializers import wire
from .slots import next_run, zone

CRON_FIELDS = (
    "id",
    "organization_id",
    "agent_id",
    "name",
    "schedule",
    "payload",
    "enabled",
    "last_run_at",
    "armed_at",
    "created_at",
    "updated_at",
)


def cron_out(row: dict[str, Any], tz) -> dict[str, Any]:
    """A cron as the wire has it: its stored fields and ``nextRunAt`` (null when disabled)."""
    armed_at = row.pop("armed_at")
    upcoming = next_run(row["schedule"], row["last_run_at"], armed_at, tz)
    return wire({**row, "next_run_at": upcoming if row["enabled"] else None})


def _row(cron: Cron) -> dict[str, Any]:
    return {name: getattr(cron, name) for name in CRON_FIELDS}


def _zone_of(organization_id: Any):
    return zone(Organization.objects.values_list("settings", flat=True).get(id=organization_id))


def _cron_tags(ctx: Context, inp: s.CronsQuery) -> list[str]:
    # The organization's row carries its time zone, on which every nextRunAt depends.
    rows = (
        f"agency.cron:agent_id={inp.agent_id}"
        if inp.agent_id
        else f"agency.cron:organization_id={inp.organization_id}"
    )
    return [rows, f"agency.organization:id={inp.organization_id}"]


@query(
    "crons.getAll",
    input=s.CronsQuery,
    output=list[s.CronOut],
    dependencies=_cron_tags,
    access=member_of(),
    tenant="organization_id",
)
def get_crons(ctx: Context, inp: s.CronsQuery) -> list[dict]:
    """An organization's crons (or one agent's), newest first, with when each runs next."""
    rows = Cron.objects.filter(organization_id=inp.organization_id)
    if inp.agent_id:
        rows = rows.filter(agent_id=inp.agent_id)
    tz = _zone_of(inp.organization_id)
    found = rows.order_by("-created_at").values(*CRON_FIELDS)[: inp.limit]
    return [cron_out(row, tz) for row in found]


def _lock_agent(organization_id: Any, agent_id: Any, field: str) -> None:
    # Locked until the write commits: an agent deleted or moved concurrently is
    # refused here (422) instead of failing the deferred foreign key (a 500).
    if (
        not Agent.objects.select_for_update()
        .filter(id=agent_id, organization_id=organization_id)
        .exists()
    ):
        raise InvalidInput(
            errors=[{"field": field, "message": "No such agent in this organization."}]
        )


@mutation("crons.create", input=s.CronCreate, output=s.CronOut, access=member_of())
def create_cron(ctx: Context, inp: s.CronCreate) -> dict:
    """Schedule runs of one of the organization's agents; it counts its slots from now."""
    _lock_agent(inp.organization_id, inp.agent_id, "agentId")
    cron = Cron()
    _apply(cron, inp.model_dump(exclude_none=True))
    return cron_out(_row(cron), _zone_of(cron.organization_id))


@mutation("crons.update", input=s.CronUpdate, output=s.CronOut)
def update_cron(ctx: Context, inp: s.CronUpdate) -> dict:
    """Change some fields of a cron; a new schedule or re-enabling counts slots from now."""
    cron = _for_write(ctx, Cron.objects, inp.id)
    fields = inp.data.model_dump(exclude_unset=True)
    with _fields_of("data"):
        if "agent_id" in fields and fields["agent_id"] != cron.agent_id:
            _lock_agent(cron.organization_id, fields["agent_id"], "agentId")
        _apply(cron, fields)
    return cron_out(_row(cron), _zone_of(cron.organization_id))


@mutation("crons.delete", input=ById, output=Deleted)
def delete_cron(ctx: Context, inp: s.ById) -> dict:
    """Delete a cron: it never runs again, even a slot that is due."""
    _for_write(ctx, Cron.objects, inp.id).delete()
    return {"id": str(inp.id), "deleted": True}
