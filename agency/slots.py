"""When a cron's slots fall: pure functions of what is stored, never of the clock.

A cron counts its slots from the later of its last run and the moment it was
armed (created, re-enabled, given a new schedule). Its next run is the first
slot of its schedule strictly after that moment, in its organization's time
zone (``settings["timeZone"]``, an IANA name; UTC when absent or unknown). So
``nextRunAt`` can be cached until the cron or its organization changes: one
in the past means "due now". The scheduler fires the latest slot that is due,
once, however many it missed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

TIME_ZONE_KEY = "timeZone"
_TICK = timedelta(microseconds=1)


def zone(settings: Any) -> tzinfo:
    """The time zone an organization's `settings` name, or UTC."""
    name = settings.get(TIME_ZONE_KEY) if isinstance(settings, dict) else None
    if not isinstance(name, str) or not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC  # settings are validated elsewhere; an unknown name must not stop crons


def counted_from(last_run_at: datetime | None, armed_at: datetime) -> datetime:
    """The moment the cron's next slot is counted from."""
    return max(last_run_at, armed_at) if last_run_at is not None else armed_at


def _slots(schedule: str, start: datetime, tz: tzinfo, reverse: bool = False):
    try:
        for slot in CronSim(schedule, start.astimezone(tz), reverse=reverse):
            yield slot.astimezone(UTC)
    except (CronSimError, ValueError):
        return  # an invalid schedule (stored before validation, or by hand) has no slots


def upcoming(schedule: str, after: datetime, tz: tzinfo, count: int) -> list[datetime]:
    """The first `count` slots strictly after `after` (UTC datetimes)."""
    out: list[datetime] = []
    for slot in _slots(schedule, after, tz):
        if len(out) == count:
            break
        out.append(slot)
    return out


def next_slot(schedule: str, after: datetime, tz: tzinfo) -> datetime | None:
    """The first slot strictly after `after`, or None for a schedule without slots."""
    found = upcoming(schedule, after, tz, 1)
    return found[0] if found else None


def next_run(
    schedule: str, last_run_at: datetime | None, armed_at: datetime, tz: tzinfo
) -> datetime | None:
    """A cron's ``nextRunAt``: its first slot after it last ran or was armed."""
    return next_slot(schedule, counted_from(last_run_at, armed_at), tz)


def due_slot(
    schedule: str, last_run_at: datetime | None, armed_at: datetime, tz: tzinfo, now: datetime
) -> datetime | None:
    """The slot to fire at `now`: the latest one due, or None when nothing is due.

    After downtime every missed slot but the latest is skipped: one run, never a burst.
    """
    start = counted_from(last_run_at, armed_at)
    first = next_slot(schedule, start, tz)
    if first is None or first > now:
        return None
    latest = next(iter(_slots(schedule, now + _TICK, tz, reverse=True)), None)
    return latest if latest is not None and first <= latest <= now else first
