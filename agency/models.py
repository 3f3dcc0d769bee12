"""TeamHub's main-database models: identity (users, accounts, tokens) and agency data."""

import hashlib
import json
import re
import secrets
import uuid

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

NAME_MAX = 200
TEXT_MAX = 100_000


class Timestamped(models.Model):
    """A UUID primary key and created/updated timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


# --- identity ----------------------------------------------------------------------


class User(AbstractUser):
    """TeamHub's user; custom from the first migration so it can grow."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=NAME_MAX, blank=True)
    image = models.URLField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.display_name or self.username


class Account(Timestamped):
    """A link between a user and an OAuth provider account."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="accounts")
    provider = models.CharField(max_length=64)
    provider_account_id = models.CharField(max_length=255)
    access_token = models.TextField(blank=True)
    refresh_token = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    scope = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_account_id"], name="account_provider_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.provider_account_id}"


def hash_token(raw: str) -> str:
    """The stored form of a secret token: its SHA-256, so a leaked table reveals nothing."""
    return hashlib.sha256(raw.encode()).hexdigest()


class VerificationToken(models.Model):
    """A one-time token (email verification, magic link), stored hashed."""

    identifier = models.CharField(max_length=255)
    token_hash = models.CharField(max_length=64, unique=True)
    expires = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["identifier", "token_hash"], name="verification_unique")
        ]

    def __str__(self) -> str:
        return self.identifier

    @classmethod
    def issue(
        cls, identifier: str, lifetime: timezone.timedelta
    ) -> tuple["VerificationToken", str]:
        """Create a token for `identifier`; returns the row and the raw token (shown once)."""
        raw = secrets.token_urlsafe(32)
        row = cls.objects.create(
            identifier=identifier, token_hash=hash_token(raw), expires=timezone.now() + lifetime
        )
        return row, raw


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> "ApiTokenQuerySet":
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(Timestamped):
    """A named, revocable bearer token for non-browser clients, stored hashed."""

    PREFIX = "thk_"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=NAME_MAX)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @classmethod
    def issue(cls, user: User, name: str) -> tuple["ApiToken", str]:
        """Create a token; returns the row and the raw token, which is never stored."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        return cls.objects.create(user=user, name=name, token_hash=hash_token(raw)), raw

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at", "updated_at"])


# --- agency -------------------------------------------------------------------------

database_name_validator = RegexValidator(
    regex=r"\A[a-z][a-z0-9_]{0,62}\Z",
    message=(
        "Database name must start with a lowercase letter and hold only lowercase letters, "
        "digits and underscores (at most 63 characters)."
    ),
)


class Organization(Timestamped):
    """A tenant: owns agents, tools, messages and jobs; has its own database."""

    name = models.CharField(max_length=NAME_MAX)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_organizations"
    )
    database_name = models.CharField(
        max_length=63, unique=True, validators=[database_name_validator]
    )
    database_url = models.CharField(max_length=500, blank=True)
    settings = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name


class Membership(Timestamped):
    """A user's membership of an organization, with a role."""

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class ToolType(Timestamped):
    """A kind of tool (http, python, search...)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=NAME_MAX)
    description = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class MessageType(Timestamped):
    """A kind of message (chat, task, result...)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=NAME_MAX)

    def __str__(self) -> str:
        return self.name


class Tool(Timestamped):
    """A tool an organization's agents may use."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tools")
    tool_type = models.ForeignKey(
        ToolType, on_delete=models.PROTECT, null=True, blank=True, related_name="tools"
    )
    name = models.CharField(max_length=NAME_MAX)
    description = models.TextField(blank=True, max_length=TEXT_MAX)
    config = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "-created_at"], name="tool_org_recent")]

    def __str__(self) -> str:
        return self.name


class Agent(Timestamped):
    """An AI agent of an organization."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=NAME_MAX)
    role = models.CharField(max_length=NAME_MAX)
    system_prompt = models.TextField(blank=True, max_length=TEXT_MAX)
    model = models.CharField(max_length=NAME_MAX, blank=True)
    temperature = models.FloatField(default=0.7)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    model_settings = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    tools = models.ManyToManyField(Tool, blank=True, related_name="agents")

    class Meta:
        indexes = [models.Index(fields=["organization", "-created_at"], name="agent_org_recent")]

    def __str__(self) -> str:
        return self.name


class Message(Timestamped):
    """A message from one agent to another (or to everyone when there is no recipient)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="messages"
    )
    from_agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sent_messages")
    to_agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="received_messages"
    )
    message_type = models.ForeignKey(
        MessageType, on_delete=models.PROTECT, null=True, blank=True, related_name="messages"
    )
    content = models.TextField(max_length=TEXT_MAX)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="message_org_recent"),
            models.Index(fields=["from_agent", "-created_at"], name="message_from_recent"),
            models.Index(fields=["to_agent", "-created_at"], name="message_to_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.from_agent} -> {self.to_agent or 'all'}"


CRON_FIELDS = re.compile(r"\A\S+(\s+\S+){4}\Z")


def validate_cron(expression: str) -> None:
    """Reject anything that is not a valid five-field cron expression."""
    if expression != expression.strip() or not CRON_FIELDS.match(expression):
        raise ValidationError(
            f"Schedule {expression!r} must be a cron expression of five fields: "
            "minute hour day month weekday.",
            code="invalid_cron",
        )
    try:
        CronSim(expression, timezone.now())
    except CronSimError as exc:
        raise ValidationError(
            f"Invalid cron expression {expression!r}: {exc}", code="invalid_cron"
        ) from exc


PAYLOAD_MAX_CHARS = 16_384  # a cron's payload as JSON text, at most
PAYLOAD_MAX_DEPTH = 8  # levels of nesting (the payload object itself is level 1)


def _depth(value: object) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack += [(child, depth + 1) for child in children]
    return deepest


def validate_payload(value: object) -> None:
    """Reject a payload that is not a JSON object of bounded size and depth."""
    if not isinstance(value, dict):
        raise ValidationError("The payload must be a JSON object.", code="invalid_payload")
    if _depth(value) > PAYLOAD_MAX_DEPTH:
        raise ValidationError(
            f"The payload is nested deeper than {PAYLOAD_MAX_DEPTH} levels.", code="invalid_payload"
        )
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError):
        raise ValidationError("The payload must be JSON.", code="invalid_payload") from None
    if size > PAYLOAD_MAX_CHARS:
        raise ValidationError(
            f"The payload is larger than {PAYLOAD_MAX_CHARS} characters of JSON.",
            code="invalid_payload",
        )


class Cron(Timestamped):
    """A scheduled job: run an agent with a payload on a cron schedule.

    Its slots are counted from ``armed_at`` (set when it is created, re-enabled
    or given a new schedule) or from its last run, whichever is later (see
    agency/slots.py): a slot missed while it was disabled never fires.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="crons")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="crons")
    name = models.CharField(max_length=NAME_MAX, blank=True)
    schedule = models.CharField(max_length=100, validators=[validate_cron])
    payload = models.JSONField(default=dict, blank=True, validators=[validate_payload])
    enabled = models.BooleanField(default=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    armed_at = models.DateTimeField(
        default=timezone.now,
        editable=False,
        help_text="When the schedule started counting: creation, re-enabling, a new schedule.",
    )

    class Meta:
        indexes = [models.Index(fields=["enabled", "organization"], name="cron_enabled_org")]

    def __str__(self) -> str:
        return f"{self.name or self.agent} [{self.schedule}]"

    def save(self, *args, **kwargs) -> None:
        """Save; a new schedule or re-enabling re-arms it (``armed_at`` = now)."""
        # Here rather than in each caller, so that the functions, the admin and a
        # shell agree on when a schedule starts counting again.
        schedule, enabled = getattr(self, "_stored", (None, None))
        if not self._state.adding and (
            (schedule is not None and schedule != self.schedule)
            or (enabled is False and self.enabled)
        ):
            self.armed_at = timezone.now()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "armed_at"}
        super().save(*args, **kwargs)
        self._stored = (self.schedule, self.enabled)

    @classmethod
    def from_db(cls, db, field_names, values, **kwargs):
        """A row as loaded, remembering the values whose change re-arms it."""
        # **kwargs: Django 6.1 passes fetch_mode (and deprecates from_db() without it).
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._stored = (instance.__dict__.get("schedule"), instance.__dict__.get("enabled"))
        return instance

    def clean(self) -> None:
        if (
            self.agent_id
            and self.organization_id
            and self.agent.organization_id != self.organization_id
        ):
            raise ValidationError({"agent": "The agent belongs to another organization."})
