"""The scheduler: each due slot of an enabled cron posts one message, exactly once.

``manage.py run_scheduler`` runs a :class:`Scheduler` until SIGTERM or SIGINT.
A tick reads the enabled crons (one query, no lock), works out which are due
(agency/slots.py), and fires each in a transaction of its own: lock the cron's
agent, lock the cron ``FOR UPDATE SKIP LOCKED``, re-read it and check again
that it is enabled and due, post the message, set ``last_run_at`` to the slot.
A second scheduler that found the same cron due either skips the locked row or
waits for the agent and then finds the slot taken, so any number of schedulers
fire each slot once (on SQLite the write lock serializes the transactions to
the same effect). After downtime only the latest missed slot fires.

Between ticks it sleeps until the earliest next slot, at most ``max_sleep``
seconds (a cron created meanwhile is seen within that), and wakes at once for
:meth:`Scheduler.wake` or :meth:`Scheduler.stop`. Its writes are ordinary
writes of another process: the database triggers record them and the server's
drainer (or this process's own drain after each commit) publishes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from .models import Agent, Cron, Message, Organization
from .slots import due_slot, next_run, next_slot, zone

logger = logging.getLogger("agency.scheduler")

MAX_SLEEP = 10.0  # seconds between two ticks at most
RETRY = 1.0  # seconds before trying again a due cron another transaction held
MIN_SLEEP = 0.01  # a timer that fires a hair early must not spin


class Outcome(Enum):
    """What :meth:`Scheduler.fire` did with a cron found due."""

    FIRED = "fired"
    BUSY = "busy"  # another transaction held it: try again soon
    SKIPPED = "skipped"  # gone, disabled, or its slot already taken


@dataclass(frozen=True)
class Due:
    """A cron a scan found due (read without a lock, so checked again when fired)."""

    cron_id: Any
    agent_id: Any
    slot: datetime


def message_content(payload: dict[str, Any], schedule: str) -> str:
    """The text a run posts: the payload's ``content``, else the payload as JSON."""
    content = payload.get("content")
    if isinstance(content, str) and content.strip():
        return content
    if payload:
        return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"Scheduled run ({schedule})."


def _zones(organization_ids: set[Any]) -> dict[Any, Any]:
    rows = Organization.objects.filter(id__in=organization_ids).values_list("id", "settings")
    return {org: zone(settings) for org, settings in rows}


class Scheduler:
    """Fires due cron slots; `now` is its clock (injectable: tests drive it)."""

    def __init__(
        self,
        now: Callable[[], datetime] = timezone.now,
        *,
        max_sleep: float = MAX_SLEEP,
        on_fire: Callable[[Cron, Message], None] | None = None,
    ) -> None:
        self.now = now
        self.max_sleep = max_sleep
        self.on_fire = on_fire
        self.stopping = False
        self.next_at: datetime | None = None  # the earliest next slot the last tick saw
        self.retry = False  # the last tick left a due cron behind
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # -- one tick ------------------------------------------------------------------------

    def scan(self, now: datetime) -> list[Due]:
        """The crons due at `now`; sets :attr:`next_at`, the earliest slot after those."""
        rows = list(
            Cron.objects.filter(enabled=True).values_list(
                "id", "agent_id", "organization_id", "schedule", "last_run_at", "armed_at"
            )
        )
        zones = _zones({row[2] for row in rows})
        due: list[Due] = []
        upcoming: list[datetime] = []
        for cron_id, agent_id, org_id, schedule, last_run_at, armed_at in rows:
            tz = zones.get(org_id, UTC)
            slot = due_slot(schedule, last_run_at, armed_at, tz, now)
            if slot is not None:
                due.append(Due(cron_id, agent_id, slot))
                after = next_slot(schedule, slot, tz)
            else:
                after = next_run(schedule, last_run_at, armed_at, tz)
            if after is not None:
                upcoming.append(after)
        self.next_at = min(upcoming, default=None)
        return due

    def fire(self, due: Due, now: datetime) -> Outcome:
        """Post the message of `due`'s slot and record the run, if it is still due."""
        with transaction.atomic():
            # The agent first, in the order agents.delete and messages.create lock it:
            # an agent deleted meanwhile takes its cron with it, and no message is
            # left pointing at it.
            Agent.objects.select_for_update().filter(pk=due.agent_id).exists()
            cron = (
                Cron.objects.select_for_update(skip_locked=True)
                .filter(pk=due.cron_id, enabled=True)
                .first()
            )
            if cron is None:
                held = Cron.objects.filter(pk=due.cron_id, enabled=True).exists()
                return Outcome.BUSY if held else Outcome.SKIPPED
            if cron.agent_id != due.agent_id:
                return Outcome.BUSY  # moved to another agent since the scan
            settings = Organization.objects.values_list("settings", flat=True)
            tz = zone(settings.get(pk=cron.organization_id))
            slot = due_slot(cron.schedule, cron.last_run_at, cron.armed_at, tz, now)
            if slot is None:
                return Outcome.SKIPPED  # another scheduler ran it, or it was re-armed
            message = Message.objects.create(
                organization_id=cron.organization_id,
                from_agent_id=cron.agent_id,
                content=message_content(cron.payload, cron.schedule),
                metadata={"cronId": str(cron.pk), "slot": slot.isoformat()},
            )
            cron.last_run_at = slot
            cron.save(update_fields=["last_run_at", "updated_at"])
        if self.on_fire is not None:
            self.on_fire(cron, message)
        return Outcome.FIRED

    def tick(self) -> int:
        """Fire every cron due now; returns how many fired."""
        now = self.now()
        fired = 0
        self.retry = False
        for due in self.scan(now):
            try:
                outcome = self.fire(due, now)
            except Exception:
                logger.exception(
                    "scheduler: cron %s could not run the slot of %s; retrying",
                    due.cron_id,
                    due.slot.isoformat(),
                )
                outcome = Outcome.BUSY
            fired += outcome is Outcome.FIRED
            self.retry |= outcome is Outcome.BUSY
        return fired

    def seconds_to_wait(self, now: datetime) -> float:
        """How long to sleep after a tick: until the next slot, at most :attr:`max_sleep`."""
        if self.retry:
            return min(RETRY, self.max_sleep)
        if self.next_at is None:
            return self.max_sleep
        return max(MIN_SLEEP, min(self.max_sleep, (self.next_at - now).total_seconds()))

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Tick and sleep until :meth:`stop`; a failing database is retried with a backoff."""
        backoff = RETRY
        while not self.stopping:
            close_old_connections()
            try:
                self.tick()
                wait = self.seconds_to_wait(self.now())
                backoff = RETRY
            except Exception:
                logger.exception("scheduler: the tick failed; retrying in %.0f s", backoff)
                connections.close_all()
                wait, backoff = backoff, min(backoff * 2, self.max_sleep)
            close_old_connections()
            if not self.stopping:
                self.sleep(wait)
        connections.close_all()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or until :meth:`wake` or :meth:`stop`."""
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)

    def wake(self) -> None:
        """End the current sleep now (safe from a signal handler or another thread)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"w")

    def stop(self) -> None:
        """Finish the current tick, then make :meth:`run` return."""
        self.stopping = True
        self.wake()

    def close(self) -> None:
        """Release the wake-up pipe."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
