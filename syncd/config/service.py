"""How the daemon serves and talks: the ``[health]``, ``[logging]`` and ``[http]`` tables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from syncd.config.base import _Model


class HealthConfig(_Model):
    """The HTTP listener with /healthz, /readyz and /metrics."""

    enabled: bool = True
    """Serve it in ``syncd run`` (``syncd sync`` never does unless asked)."""
    host: str = "0.0.0.0"  # noqa: S104 (the container's port is published on purpose)
    """Address to listen on (all interfaces, for the container)."""
    port: int = Field(default=9102, ge=0, le=65535)
    """Port to listen on."""
    max_failing_s: float = Field(default=2 * 86_400.0, gt=0)
    """Ignored since readiness no longer depends on runs (failing runs are metrics and
    alerts: ``syncd_runs_total``, ``[alerts]``); kept so older configs still load."""


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: coloured console on a terminal, JSON lines otherwise."""


class HttpConfig(_Model):
    """Settings of every HTTP client syncd opens."""

    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to establish a connection."""
    ca_bundle: Path | None = None
    """A PEM file of extra CA certificates (a relative path is relative to the config
    file); TLS verification itself can't be turned off."""
