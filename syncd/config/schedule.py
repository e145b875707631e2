"""The ``[schedule]`` table: when ``syncd run`` syncs and refreshes."""

from __future__ import annotations

from pydantic import Field

from syncd.config.base import _Model


class ScheduleConfig(_Model):
    """When ``syncd run`` syncs."""

    cron: str | None = "0 3 * * *"
    """Crontab (5 fields) of the incremental sync; default nightly at 03:00."""
    interval_s: float | None = Field(default=None, gt=0)
    """Sync every N seconds instead of the cron."""
    full_refresh_cron: str | None = "0 4 * * 0"
    """Crontab of the full refresh (drift repair); default Sundays 04:00. Empty: never."""
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
    max_run_s: float | None = Field(default=None, gt=0)
    """A run's time budget in seconds, reading included (None: no limit). When it runs out
    no request starts any more: acknowledgements are kept, the run is recorded as
    ``incomplete`` with what is left, and the next run carries on (``--max-run-s``)."""
