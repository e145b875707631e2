"""The ``[schedule]`` table: when ``syncd run`` syncs and refreshes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from syncd.config.base import _Model

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def _duration(value: Any) -> Any:
    """``"7d"``, ``"12h"``, ``"90m"``, ``"3600s"``, ``"2w"`` or a number of seconds, as
    seconds; ``""`` or 0: off (None)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration: write seconds or a number with a unit "
                's, m, h, d or w (e.g. "7d"); "" turns it off'
            )
        return float(match[1]) * _UNITS[match[2] or "s"]
    return value


Duration = Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_duration)]
"""Seconds, written as a number or with a unit (``"7d"``); ``""`` or 0: off (None)."""


class ScheduleConfig(_Model):
    """When ``syncd run`` syncs."""

    cron: str | None = "0 3 * * *"
    """Crontab (5 fields) of the incremental sync; default nightly at 03:00."""
    interval_s: float | None = Field(default=None, gt=0)
    """Sync every N seconds instead of the cron."""
    full_refresh_cron: str | None = None
    """Crontab of a full refresh (every product re-sent at once; the Vambe mirror upsert),
    e.g. ``"0 4 * * 0"`` for Sundays 04:00; default never: the rolling refresh
    (``refresh_period``) repairs drift a slice per run instead."""
    refresh_period: Duration = 7 * 86400.0
    """The rolling refresh: every run re-sends whole the products acknowledged longest ago,
    ``ceil(products x time since the last run / refresh_period)`` of them, so each product
    is re-sent within this period at a steady cost per run. Seconds or ``"7d"``; default
    7 days; ``""`` or 0: off."""
    timezone: str = "UTC"
    """Time zone of the crontabs (an IANA name)."""
    run_at_start: bool = False
    """Run one sync as soon as the daemon starts."""
    catch_up: bool = True
    """At start, run a sync (or full refresh) whose scheduled time passed while no daemon ran,
    judged by the runs recorded in state (none recorded at all: nothing is caught up)."""
    misfire_grace_s: float = Field(default=3600.0, ge=1)
    """A run missed by up to this long (daemon was busy or down) still runs, once."""
    lease_ttl_s: float = Field(default=60.0, ge=1)
    """How long a target's lock outlives a holder that stopped renewing it (seconds, on
    the state database's clock); also how long a replica that stopped renewing its
    heartbeat keeps its share of the targets."""
    share_targets: bool = True
    """Daemons on one state database divide the enabled targets between them (each runs
    its fair share); false: every daemon tries every target and the lease lets one in."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long in-flight requests may take to finish."""
    spool_max_mb: float = Field(default=256.0, gt=0)
    """The most disk (MB) one target's planned requests waiting to be sent may take (its
    spool, in ``TMPDIR``) while the read goes on. A target that keeps up holds a few groups
    there; one that falls this far behind (slow, throttled) makes the read wait for it,
    so the others then go at its pace: the disk a run takes stays bounded whatever the
    catalog's size."""
    max_run_s: float | None = Field(default=None, gt=0)
    """A run's time budget in seconds, reading included (None: no limit). When it runs out
    no request starts any more: acknowledgements are kept, the run is recorded as
    ``incomplete`` with what is left, and the next run carries on (``--max-run-s``)."""
