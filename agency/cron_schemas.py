"""Input and output schemas of the crons functions (conventions of agency/schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.core.exceptions import ValidationError
from pydantic import AfterValidator, Field, Strict

from reactive import Input

from .models import (
    CRON_FIELDS,
    NAME_MAX,
    PAYLOAD_MAX_CHARS,
    PAYLOAD_MAX_DEPTH,
    validate_cron,
    validate_payload,
)
from .schemas import Limit, Output

# The model's five-field rule (\A...\Z) as JSON Schema (ECMA-262) writes it.
SCHEDULE_PATTERN = "^" + CRON_FIELDS.pattern.removeprefix(r"\A").removesuffix(r"\Z") + "$"
EXAMPLE = "*/5 * * * *"


def _django(check):
    """A Django validator as a pydantic one: its message becomes the field's error."""

    def validate(value: Any) -> Any:
        try:
            check(value)
        except ValidationError as exc:
            raise ValueError(" ".join(exc.messages)) from None
        return value

    return validate


Schedule = Annotated[
    str,
    Field(
        max_length=100,
        description="A cron expression of five fields: minute hour day month weekday.",
        examples=[EXAMPLE, "0 9 * * 1-5"],
        # Shown, not enforced here: the validator below gives the model's message.
        json_schema_extra={"pattern": SCHEDULE_PATTERN},
    ),
    AfterValidator(_django(validate_cron)),
]
Payload = Annotated[
    dict[str, Any],
    Field(
        max_length=100,
        description=(
            f"A JSON object, at most {PAYLOAD_MAX_DEPTH} levels deep and {PAYLOAD_MAX_CHARS} "
            'characters as JSON. Its "content" (a string) is the text of the message each '
            "run posts; without one the message is the payload as JSON."
        ),
        examples=[{"content": "Post the daily summary."}],
    ),
    AfterValidator(_django(validate_payload)),
]
CronName = Annotated[str, Field(max_length=NAME_MAX)]
Enabled = Annotated[bool, Strict()]


class CronsQuery(Input):
    organization_id: UUID
    agent_id: UUID | None = None  # only this agent's crons
    limit: Limit = 200


# Optional fields default to None, which a caller cannot send (422): left out, they
# keep their value.


class CronFields(Input):
    name: CronName = None
    schedule: Schedule = None
    payload: Payload = None
    enabled: Enabled = None
    agent_id: UUID = None


class CronCreate(Input):
    organization_id: UUID
    agent_id: UUID
    schedule: Schedule
    name: CronName = None
    payload: Payload = None
    enabled: Enabled = Field(True, description="Whether it runs. Default: true.")


class CronUpdate(Input):
    id: UUID
    data: CronFields


class CronOut(Output):
    id: UUID
    organization_id: UUID
    agent_id: UUID
    name: str
    schedule: str
    payload: dict[str, Any]
    enabled: bool
    last_run_at: datetime | None = Field(description="The slot it last ran for")
    next_run_at: datetime | None = Field(
        description=(
            "The first slot after its last run (or after it was armed: created, re-enabled, "
            "rescheduled), in its organization's time zone; in the past means due now; "
            "null when disabled"
        )
    )
    created_at: datetime
    updated_at: datetime
