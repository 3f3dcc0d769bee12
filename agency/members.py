"""Members and roles, and an organization's name and settings, as reactive functions.

Members read everything of their organization and manage its agents, tools,
messages and crons; owners and admins ("managers") also manage its members
and settings. Only an owner grants or removes the owner role, and an
organization never ends up without an owner (409). A member may leave.

The last-owner rule holds under concurrency: a membership change locks the
organization's owner memberships (in primary-key order, before the row it
changes) and reads the caller's role again under that lock, so two owners
demoting each other at once leave one owner, not none. On SQLite the project
runs every transaction IMMEDIATE, which serializes writers anyway.

``Organization.owner`` names the user who created the organization and is
kept pointing at one of its owners: when that user stops being an owner
(demoted, removed, or leaving), it moves in the same transaction to the
longest-standing remaining owner. (The admin edits memberships and the owner
field directly and is trusted to keep them consistent.)
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models.signals import post_save
from django.utils import timezone

from reactive import (
    Conflict,
    Context,
    Forbidden,
    InvalidInput,
    NotFound,
    invalidate,
    mutation,
    query,
    scoped_tag,
)

from . import member_schemas as m
from . import schemas as s
from .access import MANAGERS, ensure_member, manager_of, member_of
from .functions import _apply, _fields_of
from .models import Membership, Organization, User
from .serializers import ORGANIZATION_FIELDS, organization

OWNER = Membership.Role.OWNER
# The user fields a member's name is made of (memberships.getAll shows it).
NAME_FIELDS = frozenset({"username", "display_name", "first_name", "last_name"})


def member_name(user: User) -> str:
    """How a member is shown: display name, else full name, else username."""
    return user.display_name or user.get_full_name() or user.username


def _membership(row: Membership) -> dict[str, Any]:
    return {
        "id": str(row.pk),
        "userId": str(row.user_id),
        "username": row.user.username,
        "name": member_name(row.user),
        "role": row.role,
        "createdAt": row.created_at.isoformat(),
    }


# --- memberships ----------------------------------------------------------------------------


@query(
    "memberships.getAll",
    input=m.MembershipsQuery,
    output=list[m.MembershipOut],
    dependencies=["agency.membership:organization_id={organization_id}"],
    access=member_of(),
    tenant="organization_id",
)
def get_memberships(ctx: Context, inp: m.MembershipsQuery) -> list[dict]:
    """An organization's members with their roles, longest-standing first.

    A member's `name` is their display name, else full name, else username;
    renaming a user updates the lists of all their organizations.
    """
    rows = (
        Membership.objects.filter(organization_id=inp.organization_id)
        .select_related("user")
        .order_by("created_at", "user__username")
    )
    return [_membership(row) for row in rows]


def _naming_field(inp: m.MembershipAdd) -> str:
    """``username`` or ``email``: whichever of the two (exactly one) names the user to add."""
    if (inp.username is None) == (inp.email is None):
        message = "Give a username or an email, exactly one."
        raise InvalidInput(
            message,
            errors=[{"field": f, "message": message} for f in ("username", "email")],
        )
    return "username" if inp.username is not None else "email"


def _active_user(field: str, value: str) -> User:
    """The active user of that username (exact) or email (any case), locked; 404 naming `field`."""
    # Locked (no key update) so that a concurrent delete waits instead of failing the
    # deferred foreign key at commit; the organization likewise.
    users = User.objects.select_for_update(no_key=True).filter(is_active=True)
    if field == "username":
        found = list(users.filter(username=value)[:1])
    else:
        found = list(users.filter(email__iexact=value).order_by("pk")[:2])
    if len(found) > 1:
        raise InvalidInput(
            errors=[{"field": field, "message": "Several users have this email; give a username."}]
        )
    if not found:
        raise NotFound("No such user.", errors=[{"field": field, "message": "No such user."}])
    return found[0]


@mutation("memberships.add", input=m.MembershipAdd, output=m.MembershipOut)
def add_membership(ctx: Context, inp: m.MembershipAdd) -> dict:
    """Add a user, by username or email, to an organization (managers; an owner only by an owner)."""
    field = _naming_field(inp)
    role = ensure_member(ctx, inp.organization_id, MANAGERS)
    if inp.role == OWNER and role != OWNER:
        raise Forbidden("Only an owner can add an owner.")
    user = _active_user(field, getattr(inp, field))
    org = Organization.objects.select_for_update(no_key=True).filter(pk=inp.organization_id)
    if org.first() is None:
        raise NotFound()
    try:
        with transaction.atomic():
            row = Membership.objects.create(
                user=user, organization_id=inp.organization_id, role=inp.role
            )
    except IntegrityError:
        raise Conflict(
            errors=[{"field": field, "message": "Already a member of this organization."}]
        ) from None
    return _membership(row)


def _locked(ctx: Context, membership_id: Any) -> tuple[Membership, str, list[Membership]]:
    """The membership to change, the caller's role and the organization's owners, all locked.

    The owners are locked first, in primary-key order, then the target: every
    membership change takes its locks in that order, so none waits in a cycle.
    """
    org_id = (
        Membership.objects.filter(id=membership_id)
        .values_list("organization_id", flat=True)
        .first()
    )
    if org_id is None:
        raise NotFound()
    ensure_member(ctx, org_id)
    owners = list(
        Membership.objects.select_for_update()
        .filter(organization_id=org_id, role=OWNER)
        .order_by("pk")
    )
    target = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user")
        .filter(id=membership_id)
        .first()
    )
    if target is None:
        raise NotFound()
    role = (
        Membership.objects.filter(organization_id=org_id, user_id=ctx.user.pk)
        .values_list("role", flat=True)
        .first()
    )
    if role is None:
        raise Forbidden()
    return target, role, owners


def _keep_an_owner(target: Membership, owners: list[Membership], field: str) -> None:
    if target.role == OWNER and not [o for o in owners if o.pk != target.pk]:
        message = "An organization needs an owner: make another member owner first."
        raise Conflict(message, errors=[{"field": field, "message": message}])


def _hand_over(target: Membership, owners: list[Membership]) -> None:
    """Point ``Organization.owner`` at another owner when `target`'s user stops being one."""
    others = sorted((o for o in owners if o.pk != target.pk), key=lambda o: (o.created_at, o.pk))
    if others:
        Organization.objects.filter(pk=target.organization_id, owner_id=target.user_id).update(
            owner_id=others[0].user_id, updated_at=timezone.now()
        )


@mutation("memberships.update", input=m.MembershipUpdate, output=m.MembershipOut)
def update_membership(ctx: Context, inp: m.MembershipUpdate) -> dict:
    """Change a member's role (managers; granting or removing owner: owners only)."""
    target, role, owners = _locked(ctx, inp.id)
    if role not in MANAGERS:
        raise Forbidden("Only owners and admins change roles.")
    if target.role != inp.role and OWNER in (target.role, inp.role) and role != OWNER:
        raise Forbidden("Only an owner grants or removes the owner role.")
    if target.role != inp.role:
        if inp.role != OWNER:
            _keep_an_owner(target, owners, "role")
            _hand_over(target, owners)
        target.role = inp.role
        target.save(update_fields=["role", "updated_at"])
    return _membership(target)


@mutation("memberships.remove", input=s.ById, output=s.Deleted)
def remove_membership(ctx: Context, inp: s.ById) -> dict:
    """Remove a member (managers; an owner only by an owner), or leave (the member themself)."""
    target, role, owners = _locked(ctx, inp.id)
    if target.user_id != ctx.user.pk:
        if role not in MANAGERS:
            raise Forbidden("Only owners and admins remove members.")
        if target.role == OWNER and role != OWNER:
            raise Forbidden("Only an owner removes an owner.")
    _keep_an_owner(target, owners, "id")
    if target.role == OWNER:
        _hand_over(target, owners)
    target.delete()
    return {"id": str(inp.id), "deleted": True}


def _member_renamed(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    """A rename shows in the member lists of the user's organizations.

    A user row's own events go to that user's stream only, so the lists (and
    their cache entries) are invalidated by hand, in each organization's stream.
    Saves that name only other fields (``last_login`` at each login) are skipped.
    """
    fields = kwargs.get("update_fields")
    if created or kwargs.get("raw") or (fields is not None and not NAME_FIELDS & set(fields)):
        return
    orgs = Membership.objects.filter(user_id=instance.pk).values_list("organization_id", flat=True)
    for org_id in orgs:
        invalidate(scoped_tag(Membership, "organization_id", org_id), tenant=org_id)


post_save.connect(_member_renamed, sender=User, dispatch_uid="agency.members.renamed")


# --- organizations ----------------------------------------------------------------------------


@mutation(
    "organizations.update",
    input=m.OrganizationUpdate,
    output=s.OrganizationOut,
    access=manager_of("id"),
)
def update_organization(ctx: Context, inp: m.OrganizationUpdate) -> dict:
    """Rename an organization or replace its settings (managers)."""
    org = Organization.objects.select_for_update(no_key=True).filter(id=inp.id).first()
    if org is None:
        raise NotFound()
    with _fields_of("data"):
        _apply(org, inp.data.model_dump(exclude_unset=True))
    return organization({name: getattr(org, name) for name in ORGANIZATION_FIELDS})


@query(
    "organizations.getSettings",
    input=s.ById,
    output=dict[str, Any],
    dependencies=["agency.organization:id={id}"],
    access=member_of("id"),
    tenant="id",
)
def get_settings(ctx: Context, inp: s.ById) -> dict[str, Any]:
    """An organization's settings object (`timeZone`: the zone its crons run in)."""
    return Organization.objects.values_list("settings", flat=True).get(id=inp.id)
