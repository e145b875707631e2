"""Alerts: a target's outcome changing (ok -> failed, blocked, partial, rejecting, and back).

``alert_state`` sorts a run; ``Alerter`` compares each target's run with the telling run
before it in the runs table (never with a memory of its own: a restart, a second replica or
a CLI run beside the daemon then agree on what changed; a resend tells nothing), and
announces each change once to a JSON webhook and/or a Slack-compatible one. Delivery
runs in a background thread with bounded retries: a slow or broken endpoint never fails
a sync nor holds it up.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from syncd.config import AlertsConfig, SyncdConfig, resolve_secret
from syncd.errors import SyncdError
from syncd.httpclient import make_client
from syncd.logs import register_secret, scrub
from syncd.retry import RetryPolicy
from syncd.runs import RunReport, tells
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.alerts")

ALERT_STATES = ("ok", "rejecting", "partial", "blocked", "failed")
"""What a target's run says about it; an alert goes out when this changes."""

_FIGURES = (
    "created",
    "updated",
    "refreshed",
    "deleted",
    "unchanged",
    "rejected",
    "failed",
    "not_attempted",
    "held",
)
_DEGRADED = ("failed", "blocked", "partial")
_HISTORY_DEPTH = 50


def alert_state(outcome: str, rejected: int) -> str | None:
    """The state a run puts its target in; None for a run that says nothing about the
    target (``locked``: another process ran it; ``interrupted``, ``running``)."""
    if outcome in ("failed", "blocked", "partial"):
        return outcome
    if outcome == "ok":
        return "rejecting" if rejected else "ok"
    return None


def recorded_state(store: StateStore, target: str, before: int | None = None) -> str | None:
    """The state of the target's last telling run in state (older than run ``before``);
    None when no run tells. A resend (a few named keys) is not a telling run."""
    for run in store.recent_runs(target, limit=_HISTORY_DEPTH, feed=False):
        if before is not None and run.id >= before:
            continue
        if not tells(run.outcome, run.mode, run.mode_reason):
            continue
        state = alert_state(run.outcome, run.rejected)
        if state is not None:
            return state
    return None


def iso_utc(at: float) -> str:
    """POSIX seconds as ISO 8601 UTC with a ``Z`` (``2024-05-01T03:00:00Z``)."""
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Alert:
    """One target's state changing."""

    target: str
    previous: str
    current: str
    at: float
    run_id: int | None = None
    mode: str = ""
    figures: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def recovered(self) -> bool:
        """Back to ok, or out of failed/blocked/partial with only rejections left open."""
        return self.current == "ok" or (self.current == "rejecting" and self.previous in _DEGRADED)

    @property
    def command(self) -> str:
        """The command that shows more."""
        return f"syncd history --target {self.target}"

    def text(self) -> str:
        """One line for a chat channel."""
        if self.current == "ok":
            head = f"syncd: target {self.target} recovered: ok (was {self.previous})"
        elif self.recovered:
            rejected = self.figures.get("rejected", 0)
            head = (
                f"syncd: target {self.target} recovered from {self.previous}; "
                f"still rejecting {rejected} product{'' if rejected == 1 else 's'}"
            )
        else:
            head = f"syncd: target {self.target} is {self.current.upper()} (was {self.previous})"
        counts = ", ".join(f"{name} {n}" for name in _FIGURES if (n := self.figures.get(name)))
        parts = [head + (f" - {counts}" if counts else "")]
        if self.error:
            parts.append(f"error: {self.error}")
        parts.append(f"more: `{self.command}`")
        return scrub(". ".join(parts))

    def payload(self) -> dict[str, Any]:
        """The generic webhook's JSON body."""
        return {
            "event": "syncd.target.recovered" if self.recovered else "syncd.target.degraded",
            "target": self.target,
            "state": self.current,
            "previous_state": self.previous,
            "at": iso_utc(self.at),
            "run_id": self.run_id,
            "mode": self.mode,
            "figures": dict(self.figures),
            "error": None if self.error is None else scrub(self.error),
            "command": self.command,
            "text": self.text(),
        }


@dataclass(frozen=True, slots=True)
class Channel:
    """Where alerts go: ``webhook`` (the alert's JSON) or ``slack`` (``{"text": ...}``)."""

    kind: str
    url: str = field(repr=False)
    path: str
    """The TOML key naming it, for log lines (the URL itself is a secret)."""

    def body(self, alert: Alert) -> dict[str, Any]:
        return {"text": alert.text()} if self.kind == "slack" else alert.payload()


def channels_of(
    table: AlertsConfig, path: str, environ: Mapping[str, str] | None = None
) -> tuple[Channel, ...]:
    """The channels an ``[alerts]`` table names whose variable is set (each URL registered
    as a secret, so no log line ever shows it)."""
    out = []
    for key, kind in (("webhook_url_env", "webhook"), ("slack_webhook_url_env", "slack")):
        name = getattr(table, key)
        url = resolve_secret(name, environ) if name else None
        if url:
            register_secret(url)
            out.append(Channel(kind, url, f"{path}.{key}"))
    return tuple(out)


Sleep = Callable[[float], None]


class Alerter:
    """Announces state changes of the targets; one background thread delivers them."""

    def __init__(
        self,
        config: SyncdConfig,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._closed = threading.Event()
        self._sleep = sleep or self._wait
        global_channels = channels_of(config.alerts, "alerts", environ)
        self._routes: dict[str, tuple[AlertsConfig, tuple[Channel, ...]]] = {}
        for index, target in enumerate(config.targets):
            if target.alerts is not None:
                own = channels_of(target.alerts, f"targets[{index}].alerts", environ)
                self._routes[target.name] = (target.alerts, own)
            else:
                self._routes[target.name] = (config.alerts, global_channels)
        self._queue: queue.Queue[tuple[Alert, AlertsConfig, Channel] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        """Alerts an endpoint acknowledged (2xx)."""
        self.given_up = 0
        """Alerts given up after their attempts."""

    @property
    def enabled(self) -> bool:
        return any(channels for _, channels in self._routes.values())

    # -- what changed -------------------------------------------------------------------
    def observe(self, report: RunReport, store: StateStore) -> list[Alert]:
        """Compare each target's run with the telling run before it in state; queue an
        alert per change. A resend says nothing about the target: no alert."""
        now = time.time()
        alerts = []
        for target in report.targets:
            current = alert_state(target.outcome, target.rejected)
            if current is None or not tells(target.outcome, target.mode, target.mode_reason):
                continue
            figures = {name: int(getattr(target, name)) for name in _FIGURES}
            alert = self._change(
                target.target,
                current,
                store,
                before=target.run_id,
                at=now,
                run_id=target.run_id,
                mode=target.mode,
                figures=figures,
                error=target.error,
            )
            if alert is not None:
                alerts.append(alert)
        return alerts

    def observe_failure(
        self,
        targets: Sequence[str],
        error: str,
        store: StateStore,
        run_ids: Mapping[str, int] | None = None,
    ) -> list[Alert]:
        """A run that raised before it could report: each of its targets failed (compared
        with the telling run before ``run_ids[target]``, the failed run recorded for it)."""
        now = time.time()
        alerts = []
        for name in targets:
            run_id = (run_ids or {}).get(name)
            alert = self._change(
                name, "failed", store, before=run_id, at=now, run_id=run_id, error=error
            )
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _change(
        self,
        target: str,
        current: str,
        store: StateStore,
        *,
        before: int | None,
        **details: Any,
    ) -> Alert | None:
        try:
            previous = recorded_state(store, target, before)
        except SyncdError as exc:
            log.warning("syncd.alerts.history_unreadable", target=target, error=str(exc))
            return None  # unknown: better no alert than a wrong one
        previous = previous or "ok"  # a target failing from its first run is news too
        if previous == current:
            return None
        alert = Alert(target=target, previous=previous, current=current, **details)
        table, channels = self._routes.get(target, (self._config.alerts, ()))
        log.info(
            "syncd.alerts.state_changed",
            target=target,
            previous=previous,
            state=current,
            channels=",".join(c.kind for c in channels) or None,
        )
        for channel in channels:
            self._enqueue(alert, table, channel)
        return alert

    # -- delivery -----------------------------------------------------------------------
    def _enqueue(self, alert: Alert, table: AlertsConfig, channel: Channel) -> None:
        if self._closed.is_set():
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="syncd-alerts", daemon=True)
            self._thread.start()
        self._queue.put((alert, table, channel))

    def _work(self) -> None:
        with make_client(self._config.http, transport=self._transport) as client:
            while (item := self._queue.get()) is not None:
                alert, table, channel = item
                try:
                    self._deliver(client, alert, table, channel)
                except Exception as exc:  # never let one alert stop the others
                    self.given_up += 1
                    log.error(
                        "syncd.alerts.given_up",
                        target=alert.target,
                        channel=channel.path,
                        error=scrub(repr(exc)),
                    )

    def _deliver(
        self, client: httpx.Client, alert: Alert, table: AlertsConfig, channel: Channel
    ) -> None:
        body = channel.body(alert)
        problem = ""
        # the project's one retry policy: doubling waits from backoff_s, no jitter, no cap
        policy = RetryPolicy(table.attempts, table.backoff_s, math.inf, jitter=False)
        for attempt in range(1, table.attempts + 1):
            if attempt > 1:
                if self._closed.is_set():
                    break  # shutting down: no more waiting
                self._sleep(policy.backoff(attempt - 1))
            try:
                response = client.post(channel.url, json=body, timeout=table.timeout_s)
            except httpx.HTTPError as exc:
                problem = scrub(f"{type(exc).__name__}: {exc}")
            else:
                if response.is_success:
                    self.delivered += 1
                    log.info(
                        "syncd.alerts.sent",
                        target=alert.target,
                        state=alert.current,
                        channel=channel.path,
                        attempts=attempt,
                    )
                    return
                problem = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                if response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the endpoint refuses it: retrying won't help
            log.warning(
                "syncd.alerts.retried" if attempt < table.attempts else "syncd.alerts.failed",
                target=alert.target,
                channel=channel.path,
                attempt=attempt,
                error=problem,
            )
        self.given_up += 1
        log.error(
            "syncd.alerts.given_up",
            target=alert.target,
            state=alert.current,
            channel=channel.path,
            error=problem,
        )

    def _wait(self, seconds: float) -> None:
        self._closed.wait(seconds)  # cut short by close()

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued within ``timeout`` seconds (then stop retrying); whether
        everything was done in time."""
        thread = self._thread
        if thread is None:
            self._closed.set()
            return True
        self._queue.put(None)
        thread.join(timeout)
        self._closed.set()  # what is still retrying gives up at its next attempt
        return not thread.is_alive()


__all__ = [
    "ALERT_STATES",
    "Alert",
    "Alerter",
    "Channel",
    "alert_state",
    "iso_utc",
    "recorded_state",
]
