"""The schedule: crontab and interval triggers for the sync and the full refresh.

``missed_run`` says whether a scheduled run fell while no daemon ran (judged by the
runs recorded in state), so the daemon catches it up at start.

Crontab days of week follow cron (0 and 7 are Sunday), not APScheduler 3's own
numbering (0 is Monday), so ``0 4 * * 0`` fires on Sundays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import ScheduleConfig, SyncdConfig
from syncd.errors import ConfigError

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_day(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in _DAYS:
        return _DAYS.index(token[:3])
    raise ValueError(f"{token!r} is not a day of the week (0-7 or sun-sat)")


def crontab_day_of_week(field: str) -> str:
    """A crontab day-of-week field (0 and 7 are Sunday) in APScheduler 3's terms.

    APScheduler 3 numbers days from Monday = 0, so ``0`` would mean Monday there;
    the field is spelled out as day names instead (``1-5`` becomes ``mon,...,fri``).
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _crontab_day(low), _crontab_day(high)
        else:
            first = _crontab_day(span)
            last = 6 if step_text else first
        if last < first:
            raise ValueError(f"range {span!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAYS[day] for day in sorted(days))


def crontab_trigger(expression: str, timezone: ZoneInfo, *, path: str) -> CronTrigger:
    """A 5-field crontab as an APScheduler trigger; a bad one is a ``ConfigError`` at ``path``."""
    fields = expression.split()
    try:
        if len(fields) != 5:
            raise ValueError("a crontab needs 5 fields")
        minute, hour, day, month, day_of_week = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_day_of_week(day_of_week),
            timezone=timezone,
        )
    except ValueError as exc:
        raise ConfigError(f"{path}: {expression!r}: {exc}") from None


def schedule_timezone(schedule: ScheduleConfig) -> ZoneInfo:
    try:
        return ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"schedule.timezone: unknown time zone {schedule.timezone!r}") from None


@dataclass(frozen=True)
class Triggers:
    """When incremental runs and full refreshes fire (None: never on a schedule)."""

    sync: BaseTrigger | None
    full_refresh: BaseTrigger | None


def schedule_triggers(
    schedule: ScheduleConfig, *, interval_start: datetime | None = None
) -> Triggers:
    """The triggers of a schedule: ``interval_s`` wins over ``cron``.

    An interval counts from ``interval_start`` (default one interval from now).
    """
    timezone = schedule_timezone(schedule)
    sync: BaseTrigger | None = None
    if schedule.interval_s is not None:
        sync = IntervalTrigger(
            seconds=schedule.interval_s, start_date=interval_start, timezone=timezone
        )
    elif schedule.cron:
        sync = crontab_trigger(schedule.cron, timezone, path="schedule.cron")
    full = (
        crontab_trigger(schedule.full_refresh_cron, timezone, path="schedule.full_refresh_cron")
        if schedule.full_refresh_cron
        else None
    )
    return Triggers(sync, full)


def next_fire(trigger: BaseTrigger | None, now: datetime) -> datetime | None:
    if trigger is None:
        return None
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return None if fire is None else fire.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class MissedRun:
    """A scheduled run that fell while no daemon ran: caught up at start."""

    full: bool
    """The full refresh was missed (it covers the incremental sync too)."""
    due_at: datetime
    """When it was due (aware UTC)."""
    last_run_at: datetime
    """When the run it is judged against started (aware UTC)."""


def missed_run(
    schedule: ScheduleConfig,
    now: datetime,
    last_started: Mapping[str, float],
    last_full_started: Mapping[str, float] | None = None,
) -> MissedRun | None:
    """The run to catch up at start, if any.

    ``last_started``: per target with recorded runs, when its last run that got going
    started (POSIX seconds); ``last_full_started``: the same for full refreshes (a target
    never fully refreshed is judged against ``last_started``). A target with no recorded
    run has missed nothing (a new install waits for its schedule or ``run_at_start``).
    A scheduled time that fell after that start and before ``now`` was missed.
    """
    if not last_started:
        return None
    last_full_started = last_full_started or {}
    triggers = schedule_triggers(schedule)
    candidates = []
    oldest = min(last_started.values())
    oldest_full = min(last_full_started.get(name, since) for name, since in last_started.items())
    for full, trigger, since in (
        (True, triggers.full_refresh, oldest_full),
        (False, triggers.sync, oldest),
    ):
        anchor = datetime.fromtimestamp(since, UTC)
        if trigger is None:
            continue
        if isinstance(trigger, IntervalTrigger):
            due: datetime | None = anchor + trigger.interval
        else:
            due = next_fire(trigger, anchor + timedelta(microseconds=1))
        if due is not None and due <= now:
            candidates.append(MissedRun(full=full, due_at=due.astimezone(UTC), last_run_at=anchor))
    return candidates[0] if candidates else None


def next_runs(
    config: SyncdConfig, now: datetime, last_started: Mapping[str, float] | None = None
) -> dict[str, datetime | None]:
    """Per target, when the daemon runs it next (incremental or full, whichever comes first).

    For an ``interval_s`` schedule the daemon counts from its own start, which
    ``syncd status`` can't see: the interval is counted from the target's last run
    (``last_started``, POSIX seconds) when known, else from ``now``. Disabled
    targets never run on the schedule: None. Times are aware UTC datetimes.
    """
    last_started = last_started or {}
    schedule = config.schedule
    full = next_fire(schedule_triggers(schedule).full_refresh, now)
    out: dict[str, datetime | None] = {}
    for target in config.targets:
        if not target.enabled:
            out[target.name] = None
            continue
        start = None
        if schedule.interval_s is not None:
            last = last_started.get(target.name)
            anchor = datetime.fromtimestamp(last, UTC) if last is not None else now
            start = anchor + timedelta(seconds=schedule.interval_s)
        sync = next_fire(schedule_triggers(schedule, interval_start=start).sync, now)
        candidates = [fire for fire in (sync, full) if fire is not None]
        out[target.name] = min(candidates) if candidates else None
    return out
