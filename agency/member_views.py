"""The members and organization settings pages, and their live fragments.

Like every page, they read and write through the reactive functions with the
request's user, so roles are enforced there: the controls a page shows follow
the caller's role (and re-render when it changes), but a forged form meets the
same 403 as the API.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from reactive import InvalidInput, Loader, ReactiveError, fragment

from .member_forms import MemberAddForm, SettingsForm, role_choices
from .models import Membership
from .views import call, reactive_page

OWNER = Membership.Role.OWNER
MANAGERS = (Membership.Role.OWNER, Membership.Role.ADMIN)


def _role_in(organizations: list[dict], org_id: Any) -> str | None:
    """The caller's role in `org_id`, from organizations.getAll's answer."""
    return next((o["role"] for o in organizations if o["id"] == str(org_id)), None)


# --- fragments ----------------------------------------------------------------------------------


@fragment("agency.members", template="fragments/members.html")
def members_fragment(load: Loader, organization_id: str) -> dict[str, Any]:
    """An organization's members, with the controls the caller's role allows on each."""
    members = load("memberships.getAll", {"organizationId": organization_id})
    mine = _role_in(load("organizations.getAll"), organization_id)
    me = str(load.ctx.user.pk)
    manager, owner = mine in MANAGERS, mine == OWNER
    rows = [
        {
            "member": m,
            "mine": m["userId"] == me,
            "editable": manager and (owner or m["role"] != OWNER),
            "removable": m["userId"] == me or (manager and (owner or m["role"] != OWNER)),
        }
        for m in members
    ]
    return {
        "rows": rows,
        "my_role": mine,
        "manager": manager,
        "roles": role_choices(owner),
        "organization_id": organization_id,
    }


@fragment("agency.organization_settings", template="fragments/organization_settings.html")
def settings_fragment(load: Loader, organization_id: str) -> dict[str, Any]:
    """An organization's name and settings: a form for managers, read-only for members."""
    org = load("organizations.getOne", {"id": organization_id})
    settings = load("organizations.getSettings", {"id": organization_id})
    manager = _role_in(load("organizations.getAll"), organization_id) in MANAGERS
    form = SettingsForm(initial=SettingsForm.initial_for(org, settings)) if manager else None
    return {
        "org": org,
        "settings": settings,
        "settings_json": json.dumps(settings, indent=2, sort_keys=True),
        "form": form,
        "manager": manager,
    }


# --- pages ----------------------------------------------------------------------------------------


def _members_page(
    request: HttpRequest, org_id: UUID, form: MemberAddForm | None, flash: str = "", status=200
) -> HttpResponse:
    org = call(request, "organizations.getOne", {"id": org_id})
    role = _role_in(call(request, "organizations.getAll"), org_id)
    if form is None and role in MANAGERS:
        form = MemberAddForm(owner=role == OWNER)
    context = {"org": org, "form": form, "flash": flash, "page": "members"}
    return render(request, "pages/members.html", context, status=status)


@reactive_page
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """The members page; managers add a member here (POST)."""
    if request.method == "GET":
        return _members_page(request, org_id, None)
    role = _role_in(call(request, "organizations.getAll"), org_id)
    form = MemberAddForm(request.POST, owner=role == OWNER)
    status = 422
    if form.is_valid():
        try:
            call(request, "memberships.add", {"organizationId": str(org_id), **form.to_input()})
            return redirect("members", org_id=org_id)
        except ReactiveError as exc:
            if exc.status == 403:  # not a manager (any more): the page says why
                return _members_page(request, org_id, None, flash=exc.message, status=403)
            form.add_reactive_errors(exc)  # 404 unknown user, 409 already a member, 422
            status = exc.status
    return _members_page(request, org_id, form, status=status)


def _after_write(request: HttpRequest, org_id: UUID, write: Any) -> HttpResponse:
    """Run `write`; back to the members page, or it again with the refusal (403, 404, 409)."""
    try:
        write()
    except ReactiveError as exc:
        return _members_page(request, org_id, None, flash=exc.message, status=exc.status)
    if _role_in(call(request, "organizations.getAll"), org_id) is None:
        return redirect("home")  # the caller left
    return redirect("members", org_id=org_id)


@reactive_page
@require_POST
def membership_role(request: HttpRequest, org_id: UUID, membership_id: UUID) -> HttpResponse:
    """Change a member's role (the form of a row of the members page)."""
    body = {"id": str(membership_id), "role": request.POST.get("role", "")}
    return _after_write(request, org_id, lambda: call(request, "memberships.update", body))


@reactive_page
@require_POST
def membership_remove(request: HttpRequest, org_id: UUID, membership_id: UUID) -> HttpResponse:
    """Remove a member, or leave (your own row); leaving goes to your organizations."""
    body = {"id": str(membership_id)}
    return _after_write(request, org_id, lambda: call(request, "memberships.remove", body))


@reactive_page
@require_http_methods(["GET", "POST"])
def organization_settings(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """An organization's name and settings, live; managers save them (POST: what changed)."""
    org = call(request, "organizations.getOne", {"id": org_id})
    form, status = None, 200
    if request.method == "POST":
        settings = call(request, "organizations.getSettings", {"id": org_id})
        form = SettingsForm(request.POST, initial=SettingsForm.initial_for(org, settings))
        status = 422
        if form.is_valid():
            try:
                data = form.changes()
                if data:
                    call(request, "organizations.update", {"id": str(org_id), "data": data})
                return redirect("organization_settings", org_id=org_id)
            except InvalidInput as exc:
                form.add_reactive_errors(exc)
    context = {"org": org, "form": form, "page": "settings"}
    return render(request, "pages/organization_settings.html", context, status=status)
