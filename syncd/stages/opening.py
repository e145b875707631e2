"""Opening a run's targets: each one's API key, client, lease, mode, state and staging."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace

import httpx
import structlog

from syncd.config import SyncdConfig, TargetConfig, resolve_secret
from syncd.errors import ConfigError, TargetError
from syncd.leases import LeaseKeeper
from syncd.mapping import Mapper, build_mapper
from syncd.runs import FEED_MODE, RESEND_MODE, RunOptions
from syncd.state.base import Staging, StateStore
from syncd.targets import Target, open_target

log = structlog.get_logger("syncd.run")


@dataclass(frozen=True)
class OpenTarget:
    """One target as a run found it at the start: what every later stage reads."""

    config: TargetConfig
    index: int
    target: Target
    mapper: Mapper
    mode: str
    mode_reason: str
    state_count: int
    held_rejections: Mapping[str, bytes | None]
    staging: Staging | None = None
    """Where the run's keys and hashes are compared with state; None: not planned."""
    run_id: int | None = None
    drift: int | None = None
    target_count: int | None = None
    """Products the target says it holds (Vambe's block count), when it can tell."""
    notes: tuple[str, ...] = ()
    outcome: str | None = None
    """Set when the target's run ended before reading (``locked``, ``failed``)."""
    error: str | None = None
    holder: str = ""
    doubts: tuple[int, int] = (0, 0)
    """Products whose last write is in doubt: (re-sent this run, still within the window)."""
    remember: bool = False
    """A sync (it records what it learns); a plan writes nothing."""
    only: frozenset[str] = frozenset()
    """``RunOptions.keys`` (a resend): only these products are mapped, staged and sent;
    empty: the whole catalog."""

    @property
    def full(self) -> bool:
        """Every product sent whole: a full refresh, or a resend of named products."""
        return self.mode in ("full", RESEND_MODE)

    @property
    def name(self) -> str:
        return self.config.name


def select_targets(config: SyncdConfig, names: Sequence[str]) -> list[tuple[int, TargetConfig]]:
    """The targets a run covers, with their index in ``targets``: the named ones, or every
    enabled one."""
    if names:
        wanted = [config.target(name) for name in names]
        return [(config.targets.index(t), t) for t in wanted]
    return [(i, t) for i, t in enumerate(config.targets) if t.enabled]


def open_targets(
    config: SyncdConfig,
    store: StateStore,
    options: RunOptions,
    stack: ExitStack,
    *,
    environ: Mapping[str, str],
    transports: Mapping[str, httpx.BaseTransport],
    leases: LeaseKeeper | None,
    holder: str = "",
) -> list[OpenTarget]:
    """Open every selected target (closed by ``stack``). With ``leases`` (a sync) each is
    leased and its run started in state; without (a plan) nothing is written."""
    return [
        _open_one(
            config,
            store,
            options,
            stack,
            index,
            target_config,
            environ=environ,
            transport=transports.get(target_config.name),
            leases=leases,
            holder=holder,
        )
        for index, target_config in select_targets(config, options.targets)
    ]


def _mode(options: RunOptions, state_count: int) -> tuple[str, str]:
    if options.feed is not None:  # a feed's targeted sync: the diff of the named keys
        return FEED_MODE, f"feed: {len(options.keys)} changed products, only what changed"
    if options.keys:  # a resend: the named products, sent whole (see planning)
        # never the night's run nor a full refresh (syncd.runs)
        return RESEND_MODE, f"resend of {len(options.keys)} named products: sent whole"
    if options.full:
        return "full", options.full_reason
    if state_count == 0:
        return "full", "state holds nothing for this target: full refresh"
    return "incremental", "only what changed since the last acknowledged push"


def _open_one(
    config: SyncdConfig,
    store: StateStore,
    options: RunOptions,
    stack: ExitStack,
    index: int,
    target_config: TargetConfig,
    *,
    environ: Mapping[str, str],
    transport: httpx.BaseTransport | None,
    leases: LeaseKeeper | None,
    holder: str,
) -> OpenTarget:
    name = target_config.name
    api_key = resolve_secret(target_config.api_key_env, environ)
    if api_key is None:
        raise ConfigError(
            f"targets[{index}].api_key_env: environment variable "
            f"{target_config.api_key_env} is not set"
        )
    target = open_target(target_config, config.http, api_key=api_key, transport=transport)
    stack.callback(target.close)
    mapper = build_mapper(target_config, config.source.key)
    state_count = store.count(name)
    mode, reason = _mode(options, state_count)
    since = time.time() - target_config.rejection_backoff_s
    opened = OpenTarget(
        config=target_config,
        index=index,
        target=target,
        mapper=mapper,
        mode=mode,
        mode_reason=reason,
        state_count=state_count,
        held_rejections=store.held_rejections(name, since),
        remember=leases is not None,
        only=frozenset(options.keys),
    )
    if leases is None:
        opened = replace(opened, doubts=store.count_doubts(name, time.time()))
    else:
        if not leases.acquire(name):
            other = store.lease_holder(name)  # on the database clock
            return replace(
                opened,
                outcome="locked",
                error=f"another syncd ({other}) is running this target; not started",
            )
        store.mark_interrupted(name)
        due = store.reassert_doubts(name, time.time())
        opened = replace(
            opened,
            state_count=store.count(name) if due else state_count,
            doubts=(due, store.count_doubts(name, time.time())[1]),
            holder=holder,
            run_id=store.start_run(name, mode=mode, mode_reason=reason, holder=holder),
        )
    refresh_period = config.schedule.refresh_period
    if refresh_period and mode == "incremental":
        # the rolling refresh: the products acknowledged longest ago, re-sent whole (a sync
        # marks them; a plan only counts them)
        due_refresh = store.mark_refresh_due if leases is not None else store.refresh_due
        refresh = due_refresh(name, time.time(), refresh_period)
        if refresh.size:
            note = refresh.note(
                batch_size=getattr(target_config, "batch_size", 1),
                rate_per_s=target_config.rate_limit_per_s,
                planned=leases is None,
            )
            opened = replace(opened, notes=(*opened.notes, note))
    if mode == FEED_MODE:  # a few keys: the block's count is the scheduled run's to check
        staging = store.begin_staging(name)
        stack.callback(staging.close)
        return replace(opened, staging=staging)
    try:
        info = target.inspect(probe=leases is None)  # a plan probes, writing nothing
    except TargetError as exc:  # fatal, or still failing (retriable) at the start
        return replace(opened, outcome="failed", error=str(exc))
    opened = replace(opened, target_count=info.count)
    if info.count is not None and info.count != state_count:
        opened = replace(
            opened,
            drift=info.count - state_count,
            notes=(
                *opened.notes,
                f"drift: the target holds {info.count} products, state says {state_count}; "
                "a full refresh repairs it",
            ),
        )
        log.warning(
            "syncd.target.drift_detected",
            target=name,
            target_count=info.count,
            state_count=state_count,
        )
    staging = store.begin_staging(name)
    stack.callback(staging.close)
    return replace(opened, staging=staging)
