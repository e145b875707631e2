"""The whole configuration file: one model whose fields are the TOML's tables."""

from __future__ import annotations

from pydantic import Field

from syncd.config.base import _Model
from syncd.config.feeds import FeedConfig, FeedSyncConfig
from syncd.config.schedule import ScheduleConfig
from syncd.config.service import HealthConfig, HttpConfig, LoggingConfig
from syncd.config.sources import SourceConfig
from syncd.config.state import StateConfig
from syncd.config.targets import AlertsConfig, TargetConfig
from syncd.errors import ConfigError


class SyncdConfig(_Model):
    """The whole configuration file."""

    source: SourceConfig
    """The source of truth (``kind`` = file, sql or http)."""
    targets: list[TargetConfig] = Field(min_length=1)
    """The product APIs to mirror into (``kind`` = userflux or vambe)."""
    state: StateConfig = Field(default_factory=StateConfig)
    """Where acknowledged state lives."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """When ``syncd run`` syncs."""
    health: HealthConfig = Field(default_factory=HealthConfig)
    """The health and metrics listener."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Log level and format."""
    http: HttpConfig = Field(default_factory=HttpConfig)
    """Settings of every HTTP client."""
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    """Alerts on a target's outcome changing (for targets without their own ``alerts``)."""
    feeds: list[FeedConfig] = Field(default_factory=list)
    """Change feeds naming the products that changed between scheduled runs (``syncd run``)."""
    feed_sync: FeedSyncConfig = Field(default_factory=FeedSyncConfig)
    """How the feeds' keys are coalesced, synced and guarded."""

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        raise ConfigError(
            f"no target named {name!r}; configured: {', '.join(t.name for t in self.targets)}"
        )
