"""The Django admin for TeamHub's main-database models.

Every foreign key uses autocomplete (so the admin stays usable with many rows),
secrets are never editable, and tokens created here are shown once, like the API
does. Creating an organization here only writes its row: its database is not
provisioned (use the API for that).
"""

from __future__ import annotations

import secrets

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import Truncator

from .models import (
    Account,
    Agent,
    ApiToken,
    Cron,
    Membership,
    Message,
    MessageType,
    Organization,
    Tool,
    ToolType,
    User,
    VerificationToken,
    hash_token,
)
from .slots import next_run, zone

TIMESTAMPS = ("id", "created_at", "updated_at")


# --- identity ------------------------------------------------------------------------


class MembershipInline(admin.TabularInline):
    """Memberships edited from the organization (or user) page."""

    model = Membership
    extra = 0
    autocomplete_fields = ("user", "organization")
    fields = ("user", "organization", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Django's user admin plus TeamHub's profile fields."""

    fieldsets = (
        *BaseUserAdmin.fieldsets,
        ("Profile", {"fields": ("display_name", "image")}),
    )
    add_fieldsets = (
        *BaseUserAdmin.add_fieldsets,
        ("Profile", {"classes": ("wide",), "fields": ("email", "display_name")}),
    )
    list_display = (
        "username",
        "email",
        "display_name",
        "is_active",
        "is_staff",
        "is_superuser",
        "date_joined",
        "last_login",
    )
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    search_fields = ("username", "email", "display_name", "first_name", "last_name")
    date_hierarchy = "date_joined"
    readonly_fields = ("last_login", "date_joined", "updated_at")
    ordering = ("username",)
    inlines = (MembershipInline,)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_inline_instances(self, request: HttpRequest, obj: User | None = None) -> list:
        # The add page is the short "username and password" step: memberships come after.
        return super().get_inline_instances(request, obj) if obj is not None else []


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """OAuth account links; the provider tokens are shown only as set or not."""

    list_display = ("__str__", "user", "provider", "expires_at", "created_at")
    list_filter = ("provider", "created_at")
    search_fields = ("provider_account_id", "user__username", "user__email")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user",)
    list_select_related = ("user",)
    fields = (
        "user",
        "provider",
        "provider_account_id",
        "scope",
        "expires_at",
        "has_access_token",
        "has_refresh_token",
        *TIMESTAMPS,
    )
    readonly_fields = ("has_access_token", "has_refresh_token", *TIMESTAMPS)
    ordering = ("-created_at",)

    @admin.display(boolean=True, description="access token")
    def has_access_token(self, obj: Account) -> bool:
        return bool(obj.access_token)

    @admin.display(boolean=True, description="refresh token")
    def has_refresh_token(self, obj: Account) -> bool:
        return bool(obj.refresh_token)


@admin.register(VerificationToken)
class VerificationTokenAdmin(admin.ModelAdmin):
    """One-time tokens; only the hash is stored, a token added here is shown once."""

    list_display = ("identifier", "expires", "is_expired")
    search_fields = ("identifier",)
    date_hierarchy = "expires"
    fields = ("identifier", "expires", "token_hash")
    readonly_fields = ("token_hash",)
    ordering = ("-expires",)

    @admin.display(boolean=True, description="expired")
    def is_expired(self, obj: VerificationToken) -> bool:
        return obj.expires <= timezone.now()

    def save_model(self, request: HttpRequest, obj: VerificationToken, form, change: bool) -> None:
        """Give a new token a random secret, store its hash and show it once."""
        raw = None
        if not change:
            raw = secrets.token_urlsafe(32)
            obj.token_hash = hash_token(raw)
        super().save_model(request, obj, form, change)
        if raw is not None:
            messages.success(
                request, f"The token for {obj.identifier} is {raw} — copy it now, it is not stored."
            )


class RevokedFilter(admin.SimpleListFilter):
    """Active or revoked API tokens."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """API tokens: hash never editable, raw token shown once on creation, revocable."""

    list_display = ("name", "user", "is_active", "created_at", "last_used_at", "revoked_at")
    list_filter = (RevokedFilter, "created_at", "last_used_at")
    search_fields = ("name", "user__username", "user__email")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user",)
    list_select_related = ("user",)
    fields = ("user", "name", "token_hash", "last_used_at", "revoked_at", *TIMESTAMPS)
    readonly_fields = ("token_hash", "last_used_at", "revoked_at", *TIMESTAMPS)
    ordering = ("-created_at",)
    actions = ("revoke_tokens",)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple:
        # A token is never moved to another user once issued.
        readonly = tuple(super().get_readonly_fields(request, obj))
        return ("user", *readonly) if obj is not None else readonly

    @admin.display(boolean=True, description="active")
    def is_active(self, obj: ApiToken) -> bool:
        return obj.revoked_at is None

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        """Revoke every selected token that is still active."""
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            token.revoke()
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change: bool) -> None:
        """Issue a new token like ApiToken.issue: store the hash, show the raw token once."""
        raw = None
        if not change:
            raw = ApiToken.PREFIX + secrets.token_urlsafe(32)
            obj.token_hash = hash_token(raw)
        super().save_model(request, obj, form, change)
        if raw is not None:
            messages.success(
                request,
                f"The new token {obj.name!r} for {obj.user} is {raw} — copy it now, "
                "it is not stored and cannot be shown again.",
            )


# --- agency -------------------------------------------------------------------------


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    """Tenants, with their members inline."""

    list_display = ("name", "database_name", "owner", "member_count", "created_at")
    list_filter = ("created_at",)
    search_fields = ("name", "database_name", "owner__username", "owner__email")
    date_hierarchy = "created_at"
    autocomplete_fields = ("owner",)
    list_select_related = ("owner",)
    fields = ("name", "owner", "database_name", "database_url", "settings", *TIMESTAMPS)
    readonly_fields = TIMESTAMPS
    ordering = ("name",)
    inlines = (MembershipInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return super().get_queryset(request).annotate(_member_count=Count("memberships"))

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj: Organization) -> int:
        return obj._member_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Who belongs to which organization, with which role."""

    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", "created_at")
    search_fields = ("user__username", "user__email", "organization__name")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user", "organization")
    list_select_related = ("user", "organization")
    readonly_fields = TIMESTAMPS
    ordering = ("-created_at",)


class _TypeAdmin(admin.ModelAdmin):
    """Shared admin of the small lookup tables (tool and message types)."""

    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = TIMESTAMPS
    ordering = ("slug",)


@admin.register(ToolType)
class ToolTypeAdmin(_TypeAdmin):
    """Kinds of tools."""

    fields = ("name", "slug", "description", *TIMESTAMPS)


@admin.register(MessageType)
class MessageTypeAdmin(_TypeAdmin):
    """Kinds of messages."""

    fields = ("name", "slug", *TIMESTAMPS)


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    """An organization's tools."""

    list_display = ("name", "organization", "tool_type", "created_at")
    list_filter = ("tool_type", ("organization", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("name", "description", "organization__name")
    date_hierarchy = "created_at"
    autocomplete_fields = ("organization", "tool_type")
    list_select_related = ("organization", "tool_type")
    readonly_fields = TIMESTAMPS
    ordering = ("-created_at",)


class AgentForm(forms.ModelForm):
    """Rejects tools of another organization than the agent's."""

    class Meta:
        model = Agent
        fields = "__all__"  # noqa: DJ007 - the admin narrows the fields itself

    def clean(self) -> dict:
        data = super().clean()
        org, tools = data.get("organization"), data.get("tools")
        if org is not None and tools:
            foreign = [tool.name for tool in tools if tool.organization_id != org.pk]
            if foreign:
                self.add_error("tools", f"Not tools of {org}: {', '.join(foreign)}.")
        return data


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    """An organization's agents."""

    form = AgentForm
    list_display = ("name", "role", "organization", "model", "is_active", "created_at")
    list_filter = ("is_active", ("organization", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("name", "role", "model", "organization__name")
    date_hierarchy = "created_at"
    autocomplete_fields = ("organization", "tools")
    list_select_related = ("organization",)
    fieldsets = (
        (None, {"fields": ("organization", "name", "role", "is_active")}),
        ("Behaviour", {"fields": ("system_prompt", "tools")}),
        ("Model", {"fields": ("model", "temperature", "max_tokens", "model_settings")}),
        ("Record", {"classes": ("collapse",), "fields": TIMESTAMPS}),
    )
    readonly_fields = TIMESTAMPS
    ordering = ("-created_at",)


class MessageForm(forms.ModelForm):
    """Rejects agents of another organization than the message's."""

    class Meta:
        model = Message
        fields = "__all__"  # noqa: DJ007 - the admin narrows the fields itself

    def clean(self) -> dict:
        data = super().clean()
        org = data.get("organization")
        if org is not None:
            for field in ("from_agent", "to_agent"):
                agent = data.get(field)
                if agent is not None and agent.organization_id != org.pk:
                    self.add_error(field, ValidationError(f"{agent} is not an agent of {org}."))
        return data


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages between an organization's agents."""

    form = MessageForm
    list_display = (
        "summary",
        "from_agent",
        "to_agent",
        "message_type",
        "organization",
        "created_at",
    )
    list_filter = ("message_type", ("organization", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("content", "from_agent__name", "to_agent__name", "organization__name")
    date_hierarchy = "created_at"
    autocomplete_fields = ("organization", "from_agent", "to_agent", "message_type")
    list_select_related = ("organization", "from_agent", "to_agent", "message_type")
    readonly_fields = TIMESTAMPS
    ordering = ("-created_at",)
    show_full_result_count = False  # the table grows large; skip the second COUNT(*)

    @admin.display(description="content")
    def summary(self, obj: Message) -> str:
        return Truncator(obj.content).chars(80)


@admin.register(Cron)
class CronAdmin(admin.ModelAdmin):
    """Scheduled agent runs; schedule and agent are validated by the model."""

    list_display = (
        "__str__",
        "agent",
        "organization",
        "schedule",
        "enabled",
        "last_run_at",
        "next_run_at",
    )
    list_filter = ("enabled", ("organization", admin.RelatedOnlyFieldListFilter), "last_run_at")
    search_fields = ("name", "schedule", "agent__name", "organization__name")
    date_hierarchy = "created_at"
    autocomplete_fields = ("organization", "agent")
    list_select_related = ("organization", "agent")
    readonly_fields = ("last_run_at", "armed_at", "next_run_at", *TIMESTAMPS)
    ordering = ("-created_at",)
    actions = ("enable", "disable")

    @admin.display(description="next run")
    def next_run_at(self, cron: Cron):
        """When the scheduler runs it next (as crons.getAll says), in UTC."""
        if not cron.enabled or cron.pk is None:
            return None
        tz = zone(cron.organization.settings)
        return next_run(cron.schedule, cron.last_run_at, cron.armed_at, tz)

    @admin.action(description="Enable selected jobs")
    def enable(self, request: HttpRequest, queryset: QuerySet[Cron]) -> None:
        # Re-armed as Cron.save re-arms them: a slot missed while disabled never fires.
        count = queryset.filter(enabled=False).update(enabled=True, armed_at=timezone.now())
        self.message_user(request, f"Enabled {count} job(s).", messages.SUCCESS)

    @admin.action(description="Disable selected jobs")
    def disable(self, request: HttpRequest, queryset: QuerySet[Cron]) -> None:
        count = queryset.update(enabled=False)
        self.message_user(request, f"Disabled {count} job(s).", messages.SUCCESS)
