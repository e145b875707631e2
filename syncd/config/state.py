"""The ``[state]`` table: where acknowledged state lives, and how long runs are kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, field_validator

from syncd.config.base import SECRET, _Model, resolve_secret
from syncd.config.base import has_password as _has_password
from syncd.errors import ConfigError


class StateConfig(_Model):
    """Where syncd keeps what each target acknowledged."""

    url: str = "sqlite:///syncd-state.db"
    """SQLAlchemy URL; a relative SQLite path is relative to the config file (the default:
    ``syncd-state.db`` next to it)."""
    url_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the URL instead (when it carries a password)."""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        if _has_password(url):
            raise ValueError("holds a password: give the whole URL in url_env instead")
        return url

    def resolved_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL to open: from ``url_env`` when set, else ``url``."""
        if self.url_env:
            value = resolve_secret(self.url_env, environ)
            if value is None:
                raise ConfigError(f"state.url_env: environment variable {self.url_env} is not set")
            return value
        return self.url

    keep_runs_days: float = Field(default=90.0, ge=0)
    """Runs older than this many days are pruned after each daemon run (0: no age limit);
    a target's latest run is always kept."""
    keep_runs: int = Field(default=1000, ge=0)
    """At most this many runs kept per target (0: no count limit)."""
