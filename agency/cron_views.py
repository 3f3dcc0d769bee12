"""The crons on the pages: the live list, the add form with its next-run preview.

Like every page (agency/views.py), they read and write through the reactive
functions with the caller's identity: crons.getAll for the list (live: a run of
the scheduler in another process re-renders it), crons.create from the form,
crons.update and crons.delete from the list's buttons.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cronsim import CronSim, CronSimError
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from reactive import InvalidInput, Loader, fragment

from .forms import CronForm
from .models import validate_cron
from .slots import upcoming, zone
from .views import ALL, call, reactive_page

PREVIEW_SLOTS = 5


def _zone_name(organization: dict[str, Any]) -> str:
    tz = zone(organization.get("settings"))
    return getattr(tz, "key", "UTC")


def explain(schedule: str) -> str:
    """A schedule in words ("At 09:00 on Monday through Friday"), or "" when invalid."""
    try:
        return CronSim(schedule, datetime.now(UTC)).explain()
    except (CronSimError, ValueError):
        return ""


def preview(schedule: str, organization: dict[str, Any]) -> dict[str, Any]:
    """The next slots of `schedule` from now in the organization's time zone, or its error."""
    tz_name = _zone_name(organization)
    try:
        validate_cron(schedule)
    except ValidationError as exc:
        return {"error": " ".join(exc.messages), "tz": tz_name, "schedule": schedule}
    slots = upcoming(schedule, datetime.now(UTC), zone(organization.get("settings")), PREVIEW_SLOTS)
    return {"slots": slots, "explain": explain(schedule), "tz": tz_name, "schedule": schedule}


def _shown(cron: dict[str, Any], now: datetime) -> dict[str, Any]:
    upcoming_at = datetime.fromisoformat(cron["nextRunAt"]) if cron["nextRunAt"] else None
    last = datetime.fromisoformat(cron["lastRunAt"]) if cron["lastRunAt"] else None
    content = cron["payload"].get("content")
    return {
        **cron,
        "next": upcoming_at,
        "last": last,
        "due": upcoming_at is not None and upcoming_at <= now,
        "explain": explain(cron["schedule"]),
        "message": content if isinstance(content, str) else "",
    }


@fragment("agency.crons", template="fragments/crons.html")
def crons_fragment(
    load: Loader, organization_id: str, agent_id: str | None = None
) -> dict[str, Any]:
    """An organization's crons (or one agent's): when each runs next and ran last."""
    query = {"organizationId": organization_id}
    if agent_id:
        query["agentId"] = agent_id
    organization = load("organizations.getOne", {"id": organization_id})
    crons = load("crons.getAll", query)
    agents = load("agents.getAll", {"organizationId": organization_id, "limit": ALL})
    now = datetime.now(UTC)
    return {
        "crons": [_shown(cron, now) for cron in crons],
        "names": {agent["id"]: agent["name"] for agent in agents},
        "tz": _zone_name(organization),
        "organization_id": organization_id,
        "agent_id": agent_id or "",
    }


@fragment("agency.cron_form", template="fragments/cron_form.html")
def cron_form_fragment(
    load: Loader, organization_id: str, agent_id: str | None = None
) -> dict[str, Any]:
    """The add form: its agent choices follow the organization's agents live."""
    organization = load("organizations.getOne", {"id": organization_id})
    agents = load("agents.getAll", {"organizationId": organization_id, "limit": ALL})
    form = CronForm(agents=agents, initial={"agent_id": agent_id} if agent_id else None)
    return {
        "form": form,
        "org": organization,
        "back": "agent" if agent_id else "",
        "preview": preview(str(form["schedule"].initial), organization),
    }


def _back(request: HttpRequest, org_id: UUID, agent_id: str) -> HttpResponse:
    # crons.create has just checked that the agent is the organization's.
    if request.POST.get("back") == "agent":
        return redirect(reverse("agent", args=[agent_id]) + "#crons")
    return redirect(reverse("organization", args=[org_id]) + "#crons")


@reactive_page
@require_http_methods(["GET", "POST"])
def cron_new(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """Add a cron (the forms of the organization and agent pages post here)."""
    org = call(request, "organizations.getOne", {"id": org_id})
    agents = call(request, "agents.getAll", {"organizationId": org_id, "limit": ALL})
    agent_id = request.POST.get("agent_id") or request.GET.get("agent", "")
    form = CronForm(request.POST or None, agents=agents, initial={"agent_id": agent_id})
    if request.method == "POST" and form.is_valid():
        try:
            call(request, "crons.create", {"organizationId": str(org_id), **form.cron_input()})
            return _back(request, org_id, form.cleaned_data["agent_id"])
        except InvalidInput as exc:
            form.add_reactive_errors(exc)
    schedule = form.data.get("schedule") if form.is_bound else form["schedule"].initial
    context = {
        "org": org,
        "form": form,
        "back": request.POST.get("back") or ("agent" if request.GET.get("agent") else ""),
        "preview": preview(str(schedule or ""), org),
        "page": "new",
    }
    status = 422 if form.is_bound else 200
    return render(request, "pages/cron_new.html", context, status=status)


@reactive_page
@require_GET
def cron_preview(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """The next slots of ``?schedule=`` in the organization's time zone (HTML, for the form)."""
    org = call(request, "organizations.getOne", {"id": org_id})
    schedule = request.GET.get("schedule", "")[:200]
    shown = preview(schedule, org)
    return render(
        request,
        "fragments/cron_preview.html",
        {"preview": shown},
        status=422 if "error" in shown else 200,
    )
