"""Membership-based authorization, used inside the reactive functions.

A user's memberships are read through the reactive cache, tagged by the user's
membership rows, so a check costs a cache round trip and a membership change
takes effect at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from reactive import Context, Forbidden, cached, scoped_tag

from .models import Membership

MANAGERS = (Membership.Role.OWNER, Membership.Role.ADMIN)


# The token lookup reads the caller's memberships in its own round trip and
# leaves them on the request (agency.auth): valid for that request only.
PREFETCHED = "prefetched_memberships"


def memberships(ctx: Context) -> dict[str, str]:
    """{organization id: role} for the caller."""
    if "memberships" not in ctx.memo:
        prefetched = getattr(ctx.request, PREFETCHED, None)
        ctx.memo["memberships"] = (
            prefetched if prefetched is not None else user_memberships(ctx.user.pk)
        )
    return ctx.memo["memberships"]


def membership_lookup(user_id: Any) -> tuple[str, list[str], Callable[[], dict[str, str]]]:
    """The cache key, tags and computation of a user's memberships (for ``cached``)."""
    return (
        f"memberships:{user_id}",
        [scoped_tag(Membership, "user_id", user_id)],
        lambda: {
            str(org): role
            for org, role in Membership.objects.filter(user_id=user_id).values_list(
                "organization_id", "role"
            )
        },
    )


def user_memberships(user_id: Any) -> dict[str, str]:
    """{organization id: role} for a user, from the cache while their memberships are unchanged."""
    return cached(*membership_lookup(user_id))


def ensure_member(ctx: Context, organization_id: Any, roles: tuple[str, ...] = ()) -> str:
    """The caller's role in the organization; Forbidden unless a member (with one of `roles`)."""
    role = memberships(ctx).get(str(organization_id))
    if role is None or (roles and role not in roles):
        raise Forbidden()
    return role


def member_of(field: str = "organization_id"):
    """An access check: the caller is a member of the organization named by `field`."""

    def check(ctx: Context, inp: BaseModel) -> None:
        ensure_member(ctx, getattr(inp, field))

    return check


def manager_of(field: str = "organization_id"):
    """An access check: the caller is an owner or admin of the organization named by `field`."""

    def check(ctx: Context, inp: BaseModel) -> None:
        ensure_member(ctx, getattr(inp, field), MANAGERS)

    return check


def result_member(ctx: Context, inp: BaseModel, data: dict) -> None:
    """A result check: the caller is a member of the organization the row belongs to."""
    ensure_member(ctx, data.get("organizationId") or data.get("id"))


def can_follow(user, organization_id: str) -> bool:
    """Whether `user` may receive an organization's events (streams' authorization hook).

    Cached like every membership check, so that an open stream's re-check is a
    cache hit (answered on the event loop) until the user's memberships change.
    """
    return str(organization_id) in user_memberships(user.pk)
