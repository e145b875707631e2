"""The command line: parses, loads the config, calls one function, prints the result.

Exit codes: 0 ok; 1 the run failed, was blocked by a guard or only partly done (``plan``:
a target or the source failed, so the plan is incomplete); 2 configuration or usage error;
3 ``plan --exit-code`` found pending changes; 4 ``plan --exit-code`` found something wrong
(a target unreachable or refusing the key, a failed source read, deletes held by a guard,
rejected products, drift), which beats 3.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from syncd import __version__
from syncd.config import SyncdConfig, TargetConfig, load_config, resolve_secret
from syncd.diff import Plan
from syncd.errors import ConfigError, ConfigProblem, SyncdError
from syncd.logs import (
    configure_logging,
    register_config_secrets,
    register_secret,
    scrub,
    scrub_document,
    scrub_snippet,
)
from syncd.model import RunRecord
from syncd.report import not_attempted_note, render_plan, table
from syncd.runs import FEED_MODE, RunOptions, RunReport
from syncd.state import StateStore, open_store

# The run (NumPy, httpx, the mappers, the stages) and the state database (SQLAlchemy) are
# imported by the commands that use them: `syncd healthcheck`, Docker's HEALTHCHECK, runs
# every few seconds and needs neither.
if TYPE_CHECKING:
    from syncd.product import ProductView
    from syncd.state.readonly import PlanState

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PENDING, EXIT_ATTENTION = 0, 1, 2, 3, 4

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class _Context:
    config_path: str | None
    log_level: str | None
    log_format: str | None
    _config: SyncdConfig | None = None

    def config(self, *, require_secrets: bool = True) -> SyncdConfig:
        """The config; ``require_secrets=False`` for the commands that only read state."""
        if self._config is None:
            self._config = load_config(self.config_path, require_secrets=require_secrets)
            logging = self._config.logging
            configure_logging(self.log_level or logging.level, self.log_format or logging.format)
            register_config_secrets(self._config)
            _importable_next_to(self.config_path)
        return self._config

    def store(self) -> StateStore:
        return open_store(self.config().state.resolved_url())

    def reader(self) -> PlanState:
        """The state database opened read-only: never created, never migrated."""
        from syncd.state.readonly import open_store_for_plan  # SQLAlchemy: see the imports

        return open_store_for_plan(self.config(require_secrets=False).state.resolved_url())


def _importable_next_to(config_path: str | None) -> None:
    """A ``mapping.callable``'s module is also looked up in the config file's folder (after
    the usual places), so a hook beside the config imports from any working directory."""
    import os

    path = config_path or os.environ.get("SYNCD_CONFIG")
    if path:
        folder = str(Path(path).parent.absolute())
        if folder not in sys.path:
            sys.path.append(folder)


class _Group(click.Group):
    """Turns syncd's errors into a message and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _echo(f"syncd: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
        except SyncdError as exc:
            _echo(f"syncd: {exc}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    envvar="SYNCD_CONFIG",
    metavar="PATH",
    help="The TOML config file (or $SYNCD_CONFIG).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None)
@click.version_option(__version__, prog_name="syncd")
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, log_level: str | None, log_format: str | None
) -> None:
    """syncd mirrors a product catalog into UserFlux and Vambe with the fewest writes."""
    ctx.obj = _Context(config_path, log_level, log_format)


def _target_options(func: F) -> F:
    func = click.option(
        "--target",
        "-t",
        "targets",
        multiple=True,
        metavar="NAME",
        help="Only this target (repeatable).",
    )(func)
    func = click.option(
        "--full",
        is_flag=True,
        help="Full refresh: re-send everything in the mode that makes each target exact.",
    )(func)
    return func


def _echo(message: str, *, err: bool = False) -> None:
    """Every line the CLI prints goes through here: no configured secret leaves."""
    click.echo(scrub(message), err=err)  # the one direct echo


_STATUS_RUNS = 500
"""Runs read back per target by ``status`` to find its last one past a change feed's."""
_TIMESTAMPS = frozenset({"started_at", "finished_at", "first_seen", "last_seen"})
"""Fields holding epoch seconds: printed in ``--json`` as ISO 8601 UTC."""


def iso_timestamps(value: Any) -> Any:
    """``value`` with every timestamp field (``_TIMESTAMPS``) as ISO 8601 UTC text."""
    if isinstance(value, dict):
        return {
            k: _iso(v) if k in _TIMESTAMPS and isinstance(v, int | float) else iso_timestamps(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [iso_timestamps(v) for v in value]
    return value


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _print_json(value: Any) -> None:
    value = iso_timestamps(value)
    _echo(json.dumps(scrub_document(value), indent=2, default=str, ensure_ascii=False))


def _selected(config: SyncdConfig, names: Sequence[str]) -> list[TargetConfig]:
    """The targets named by ``--target`` (none: every target); an unknown name is a usage
    error (exit 2) naming the configured ones."""
    known = [t.name for t in config.targets]
    for name in names:
        if name not in known:
            raise click.BadParameter(
                f"no target named {name!r}; configured: {', '.join(known)}",
                param_hint="'--target'",
            )
    return [t for t in config.targets if not names or t.name in names]


def plan_exit_code(plans: Sequence[Plan], *, detailed: bool) -> int:
    """``plan``'s exit code, the worst first.

    With ``--exit-code`` (``detailed``): 4 when any target has a problem (``Plan.problems``),
    else 3 when changes are pending, else 0. Without it: 1 when a target or the source
    failed (the plan shown is incomplete), else 0.
    """
    if detailed:
        if any(p.problems for p in plans):
            return EXIT_ATTENTION
        return EXIT_PENDING if any(p.pending for p in plans) else EXIT_OK
    failed = any(p.error is not None or not p.source_complete for p in plans)
    return EXIT_FAILED if failed else EXIT_OK


@main.command()
@_target_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 4 when something is wrong (a target unreachable or refusing the key, a failed "
    "source read, deletes held by a guard, rejected products, drift), else 3 when changes "
    "are pending, else 0 (like `alembic check`).",
)
@click.option("--sample", default=5, show_default=True, help="Keys shown per kind of request.")
@click.pass_obj
def plan(
    obj: _Context, targets: Sequence[str], full: bool, as_json: bool, exit_code: bool, sample: int
) -> None:
    """Show what a sync would send to each target, sending and writing nothing.

    The state database is only read: a missing one is planned against as empty (and
    said so), and one whose schema is behind is refused, never created or migrated.

    \b
    Exit codes:
      0  the plan was made (with --exit-code: every target in line)
      1  a target or the source failed: the plan is incomplete, or no plan
         could be made (state database unreadable or behind)
      2  configuration or usage error
      3  with --exit-code: changes are pending, nothing wrong
      4  with --exit-code: something is wrong (target unreachable or refusing the
         key, source read failed, deletes held by a guard, products rejected,
         drift, or no plan could be made); beats 3
    """
    from syncd.reconcile import Reconciler  # the run: see the imports
    from syncd.state.readonly import open_store_for_plan

    config = obj.config()
    _selected(config, targets)
    try:
        state = open_store_for_plan(config.state.resolved_url())
        try:
            plans = Reconciler(config, state.store).plan(
                RunOptions(full=full, targets=tuple(targets)),
                payloads=False,  # shown, never sent: no payload waits in TMPDIR
            )
        finally:
            state.store.close()
    except ConfigError:
        raise
    except SyncdError as exc:  # no plan at all: state, source or target unusable
        _echo(f"syncd: {exc}", err=True)
        sys.exit(EXIT_ATTENTION if exit_code else EXIT_FAILED)
    if as_json:
        if state.notice:
            plans = [dataclasses.replace(p, notes=(state.notice, *p.notes)) for p in plans]
        _print_json([p.summary(sample) for p in plans])
    else:
        if state.notice:
            _echo(f"note: {state.notice}\n")
        _echo("\n\n".join(render_plan(p, sample) for p in plans))
    for p in plans:
        if p.error is not None:
            _echo(f"syncd: {p.target}: {p.error}", err=True)
    sys.exit(plan_exit_code(plans, detailed=exit_code))


def _report_rows(report: RunReport) -> list[list[Any]]:
    return [
        [
            t.target,
            t.outcome,
            t.mode,
            t.created,
            t.updated + t.refreshed,
            t.deleted,
            t.unchanged,
            t.rejected,
            t.failed,
            t.not_attempted,
            t.held,
            t.requests,
            f"{t.duration_ms / 1000:.1f}s",
        ]
        for t in report.targets
    ]


@main.command()
@_target_options
@click.option(
    "--allow-deletes",
    is_flag=True,
    help="Let deletes through a tripped size guard, this run only.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    metavar="PORT",
    help="Serve /metrics, /healthz and /readyz on this port while the run lasts.",
)
@click.option(
    "--max-run-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Time budget of this run (default: schedule.max_run_s); stops as incomplete, exit 0.",
)
@click.pass_obj
def sync(
    obj: _Context,
    targets: Sequence[str],
    full: bool,
    allow_deletes: bool,
    as_json: bool,
    metrics_port: int | None,
    max_run_s: float | None,
) -> None:
    """Run one sync now: read the source, send the changes, record the acknowledgements.

    SIGTERM or Ctrl-C stops it cleanly (exit 0): in-flight requests finish and their
    acknowledgements are kept; the next run sends the rest (after an interrupted
    ``--full``, run ``--full`` again: an incremental run skips unchanged products).
    """
    from syncd.daemon import sync_once

    config = obj.config()
    _selected(config, targets)
    store = obj.store()
    stop = threading.Event()
    try:
        options = RunOptions(
            full=full, targets=tuple(targets), allow_deletes=allow_deletes, max_run_s=max_run_s
        )
        report = sync_once(
            config,
            store,
            options,
            metrics_port=metrics_port,
            progress=sys.stderr.isatty(),
            stop=stop,
        )
    finally:
        store.close()
    _print_report(report, as_json)
    sys.exit(EXIT_OK if stop.is_set() else report.exit_code)


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        _print_json(dataclasses.asdict(report))
        return
    headers = [
        "target",
        "outcome",
        "mode",
        "created",
        "updated",
        "deleted",
        "unchanged",
        "rejected",
        "failed",
        "not sent",
        "held",
        "requests",
        "took",
    ]
    _echo(table(headers, _report_rows(report)))
    for target in report.targets:
        if target.error:
            _echo(f"{target.target}: {target.error}", err=True)
        if (note := not_attempted_note(target)) is not None:
            _echo(note, err=True)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _last_real_run(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The newest run that did something: a run refused because another syncd held the
    target ("locked") says nothing about the target, so the one before it counts; nor
    does a change feed's targeted sync of a few keys (mode ``feed``)."""
    return next(
        (r for r in runs if r.outcome != "locked" and r.mode != FEED_MODE),
        runs[0] if runs else None,
    )


def target_problems(
    run: RunRecord | None, open_rejections: int, lease_holder: str | None
) -> list[str]:
    """What ``status`` must not hide about one target (empty: its last run ended ok)."""
    problems: list[str] = []
    if run is None:
        problems.append("never synced")
    elif run.outcome == "running" and lease_holder is None:
        problems.append("last run still marked running but no syncd holds the target: it died")
    elif run.outcome not in ("ok", "running"):
        problems.append(f"last run {run.outcome}: {run.error or 'no reason recorded'}")
    if open_rejections:
        problems.append(f"{open_rejections} products rejected (see `syncd rejections`)")
    return problems


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(obj: _Context, as_json: bool) -> None:
    """Per target: the last run, its outcome and counts, products in state, open rejections.

    Exits 1 when a target's last run did not end ok (failed, blocked, partial,
    interrupted), and says why under the table.
    """
    config = obj.config(require_secrets=False)
    state = obj.reader()
    store = state.store
    if state.notice:
        _echo(f"note: {state.notice}", err=True)
    try:
        rows: list[dict[str, Any]] = []
        for target in config.targets:
            run = _last_real_run(store.recent_runs(target.name, limit=_STATUS_RUNS, feed=False))
            rejected = len(store.open_rejections(target.name))
            holder = store.lease_holder(target.name)  # on the database's clock
            problems = target_problems(run, rejected, holder)
            rows.append(
                {
                    "target": target.name,
                    "kind": target.kind,
                    "enabled": target.enabled,
                    "products_in_state": store.count(target.name),
                    "open_rejections": rejected,
                    "last_run": dataclasses.asdict(run) if run else None,
                    "lease_holder": holder,
                    "last_run_ok": run is None
                    or run.outcome == "ok"
                    or (run.outcome == "running" and holder is not None),
                    "healthy": not problems,
                    "problems": problems,
                }
            )
    finally:
        store.close()
    failing = any(r["enabled"] and not r["last_run_ok"] for r in rows)
    from syncd.daemon import next_runs

    last_started = {r["target"]: r["last_run"]["started_at"] for r in rows if r["last_run"]}
    upcoming = next_runs(config, datetime.now(UTC), last_started)
    next_at = {name: when.timestamp() for name, when in upcoming.items() if when}
    for r in rows:
        when = upcoming[r["target"]]
        r["next_run"] = _iso(when.timestamp()) if when else None
    if as_json:
        _print_json(rows)
        sys.exit(EXIT_FAILED if failing else EXIT_OK)
    _echo(
        table(
            [
                "target",
                "kind",
                "in state",
                "rejections",
                "last run",
                "outcome",
                "created",
                "updated",
                "deleted",
                "next run",
                "error",
            ],
            [
                [
                    r["target"],
                    r["kind"],
                    r["products_in_state"],
                    r["open_rejections"],
                    _when(r["last_run"]["started_at"]) if r["last_run"] else "never",
                    r["last_run"]["outcome"] if r["last_run"] else "",
                    r["last_run"]["created"] if r["last_run"] else "",
                    r["last_run"]["updated"] if r["last_run"] else "",
                    r["last_run"]["deleted"] if r["last_run"] else "",
                    _when(next_at.get(r["target"])),
                    scrub_snippet(r["last_run"]["error"] or "", 60) if r["last_run"] else "",
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        for problem in r["problems"]:
            _echo(f"{r['target']}: {problem}")
    sys.exit(EXIT_FAILED if failing else EXIT_OK)


@main.command()
@click.option("--target", "-t", default=None, metavar="NAME")
@click.option("--limit", "-n", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(obj: _Context, target: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first (reads the state database; needs no API key)."""
    _selected(obj.config(require_secrets=False), [target] if target else [])
    state = obj.reader()
    if state.notice:
        _echo(f"note: {state.notice}", err=True)
    try:
        runs = state.store.recent_runs(target, limit=limit)
    finally:
        state.store.close()
    if as_json:
        _print_json([dataclasses.asdict(r) for r in runs])
        return
    _echo(
        table(
            [
                "id",
                "target",
                "started",
                "took",
                "mode",
                "outcome",
                "created",
                "updated",
                "deleted",
                "unchanged",
                "rejected",
                "failed",
                "requests",
                "error",
            ],
            [
                [
                    r.id,
                    r.target,
                    _when(r.started_at),
                    f"{(r.finished_at - r.started_at):.1f}s" if r.finished_at else "",
                    r.mode,
                    r.outcome,
                    r.created,
                    r.updated,
                    r.deleted,
                    r.unchanged,
                    r.rejected,
                    r.failed,
                    r.requests,
                    scrub_snippet(r.error or "", 60),
                ]
                for r in runs
            ],
        )
    )


@main.command()
@click.option("--target", "-t", default=None, metavar="NAME")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rejections(obj: _Context, target: str | None, as_json: bool) -> None:
    """Products refused (locally or by the target), with the reason (needs no API key)."""
    _selected(obj.config(require_secrets=False), [target] if target else [])
    state = obj.reader()
    if state.notice:
        _echo(f"note: {state.notice}", err=True)
    try:
        found = state.store.open_rejections(target)
    finally:
        state.store.close()
    if as_json:
        _print_json(
            [dict(dataclasses.asdict(r), hash=r.hash.hex() if r.hash else None) for r in found]
        )
        return
    _echo(
        table(
            ["target", "key", "by", "count", "first seen", "last seen", "reason"],
            [
                [
                    r.target,
                    r.key,
                    "target" if r.by_target else "local",
                    r.count,
                    _when(r.first_seen),
                    _when(r.last_seen),
                    scrub_snippet(r.reason, 100),
                ]
                for r in found
            ],
        )
    )


@main.group()
def db() -> None:
    """The state database's schema (Alembic migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: _Context) -> None:
    """Apply pending migrations (also done automatically at start)."""
    from syncd.state.sql import upgrade_database

    revision = upgrade_database(obj.config().state.resolved_url())
    _echo(f"state database at revision {revision}")


@db.command("current")
@click.pass_obj
def db_current(obj: _Context) -> None:
    """Print the state database's revision (read only: never creates or migrates it)."""
    from syncd.state.readonly import read_revision  # SQLAlchemy: see the imports

    revision, notice = read_revision(obj.config(require_secrets=False).state.resolved_url())
    if notice:
        _echo(f"note: {notice}", err=True)
    _echo(revision or "empty (no revision)")


@main.command("check-config")
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Also read N source records and warn about mapping paths none of them has.",
)
@click.pass_obj
def check_config(obj: _Context, sample: int | None) -> None:
    """Validate the config file and the environment variables it names.

    Every problem is reported in one pass: the file's, the environment's, and what the
    targets' contracts refuse (a constant currency Vambe does not take, a block_id that
    is not a UUID). Exits 2 when there is any; warnings about --sample exit 0.
    """
    from syncd.checks import (
        contract_problems,
        raw_contract_problems,
        read_sample,
        sample_warnings,
    )

    problems: list[ConfigProblem] = []
    config: SyncdConfig | None = None
    try:
        config = obj.config()
    except ConfigError as first:
        problems.extend(first.problems)
        try:  # the file itself is fine and only secrets are missing: check the rest too
            config = load_config(obj.config_path, require_secrets=False)
        except ConfigError:
            # the models refused the file: its contract checks come in the same pass
            data = _parsed_document(obj.config_path)
            if data is None:
                raise first from None
            _importable_next_to(obj.config_path)
            reported = {str(p) for p in problems}
            problems.extend(p for p in raw_contract_problems(data) if str(p) not in reported)
    if config is not None:
        if problems:  # only secrets are missing: hooks beside the config import all the same
            _importable_next_to(obj.config_path)
        problems.extend(contract_problems(config))
        if sample:  # read with secrets not required: its warnings come with the problems
            try:
                warnings = sample_warnings(config, read_sample(config, sample))
            except SyncdError as exc:
                warnings = [f"the sample could not be read: {exc}"]
            for warning in warnings:
                _echo(f"warning: {warning}")
    if problems or config is None:
        raise ConfigError(problems, source=obj.config_path or "")
    _echo(
        f"config OK: source {config.source.kind}, "
        + ", ".join(f"{t.name} ({t.kind})" for t in config.targets)
    )


def _parsed_document(config_path: str | None) -> dict[str, Any] | None:
    """The config file as parsed TOML, or None when it can't be read or parsed (its
    ``ConfigError`` already says why)."""
    import os
    import tomllib

    path = config_path or os.environ.get("SYNCD_CONFIG")
    if not path:
        return None
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def _render_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _render_product(view: ProductView) -> str:
    out = [f"product {view.key}"]
    if view.source_error:
        out.append(f"  source: read FAILED before the key was found: {view.source_error}")
    elif view.record is None:
        out.append("  source: no record with this key")
    else:
        out.append("  source record:")
        out.extend(
            f"    {line}" for line in json.dumps(view.record, indent=2, default=str).splitlines()
        )
    for t in view.targets:
        out.append(f"target {t.target} ({t.kind}): key {t.key}")
        if t.mapping_error:
            out.append(f"  mapping: REJECTED: {t.mapping_error}")
        elif t.payload is not None:
            out.append(f"  mapped payload: {_render_value(t.payload)}")
        if t.acknowledged is None:
            out.append("  acknowledged: nothing (not in state)")
        else:
            flight = " (last write in flight, unconfirmed)" if t.in_flight else ""
            out.append(f"  acknowledged{flight}: {_render_value(t.acknowledged)}")
        if t.changes and t.payload is not None and t.acknowledged is not None:
            out.append("  diff (acknowledged -> mapped):")
            out.extend(
                f"    {c.path}: {_render_value(c.before)} -> {_render_value(c.after)}"
                for c in t.changes
            )
        if t.request is None:
            out.append(f"  request: none — {t.reason}")
        else:
            r = t.request
            out.append(f"  request: {r['endpoint']} {r['mode']} {r['path']} — {r['reason']}")
            out.append(f"    why: {t.reason}")
            out.append(f"    body: {_render_value(r['body'])}")
        if t.rejection is not None:
            j = t.rejection
            by = "the target" if j.by_target else "syncd (locally)"
            out.append(
                f"  rejected by {by} {j.count} times, first {_when(j.first_seen)}, "
                f"last {_when(j.last_seen)}: {j.reason}"
            )
    return "\n".join(out)


@main.command()
@click.argument("key")
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@click.pass_obj
def show(obj: _Context, key: str, targets: Sequence[str], as_json: bool) -> None:
    """One product: the source record, the mapped payload per target, what the target last
    acknowledged, the diff between them, the request a sync would send and why, and any
    rejection with its history. Sends nothing, writes nothing, needs no API key.

    Exits 1 when the source has no record with this key.
    """
    from syncd.product import show_product

    config = obj.config(require_secrets=False)
    selected = _selected(config, targets)
    state = obj.reader()
    if state.notice:
        _echo(f"note: {state.notice}", err=True)
    try:
        view = show_product(config, state.store, key, selected, config_path=obj.config_path)
    finally:
        state.store.close()
    if as_json:
        _print_json(dataclasses.asdict(view))
    else:
        _echo(_render_product(view))
    if view.source_error:
        _echo(f"syncd: {view.source_error}", err=True)
    sys.exit(EXIT_OK if view.record is not None else EXIT_FAILED)


@main.command()
@click.argument("keys", nargs=-1, required=True)
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.pass_obj
def resend(obj: _Context, keys: Sequence[str], targets: Sequence[str], as_json: bool) -> None:
    """Re-send the named products now, whole (UserFlux FULL_UPDATE; Vambe create), through
    the same guards, lease and acknowledgements as a sync. Nothing else is sent and
    nothing is deleted. Exits 1 when a target's run did not end ok or a key is not in
    the source.
    """
    from syncd.daemon import sync_once
    from syncd.reconcile import NOT_IN_SOURCE

    config = obj.config()
    _selected(config, targets)
    store = obj.store()
    stop = threading.Event()
    try:
        options = RunOptions(targets=tuple(targets), keys=tuple(dict.fromkeys(keys)))
        report = sync_once(config, store, options, progress=False, stop=stop)
    finally:
        store.close()
    _print_report(report, as_json)
    missing = [
        (target.target, note)
        for target in report.targets
        for note in target.plan.get("notes", ())
        if note.startswith(NOT_IN_SOURCE)
    ]
    for name, note in missing:
        _echo(f"{name}: {note}", err=True)
    code = report.exit_code or (EXIT_FAILED if missing else EXIT_OK)
    sys.exit(EXIT_OK if stop.is_set() else code)


@main.command()
@click.argument("kind", type=click.Choice(["userflux", "vambe"]))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option(
    "--api-key-env",
    default="SANDBOX_API_KEY",
    show_default=True,
    help="Environment variable holding the key the fake accepts.",
)
@click.option("--block", "blocks", multiple=True, help="Vambe: a block id to create (repeatable).")
def sandbox(kind: str, host: str, port: int, api_key_env: str, blocks: Sequence[str]) -> None:
    """Run a fake UserFlux or Vambe API on loopback, to try a config without an account."""
    from syncd.sandbox import serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise click.BadParameter("the fakes bind to loopback only (127.0.0.1)", param_hint="--host")
    api_key = resolve_secret(api_key_env)
    if not api_key:
        raise ConfigError(f"--api-key-env: environment variable {api_key_env} is not set")
    try:
        serve(kind, host, port, api_key, list(blocks) or None)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise click.BadParameter(
            f"port {port} on {host} is already taken (another sandbox or program listens "
            "there): stop it or pick another with --port",
            param_hint="'--port'",
        ) from None


@main.command("feed-trigger")
@click.option("--table", required=True, help="The products table (optionally schema.table).")
@click.option("--key", "key_column", required=True, help="The column holding the product key.")
@click.option(
    "--channel",
    default="syncd_products",
    show_default=True,
    help="The NOTIFY channel (the postgres feed's `channel`).",
)
@click.option(
    "--install",
    is_flag=True,
    help="Install it (idempotent) instead of printing it: into the database of --url-env, "
    "else the SQL source's.",
)
@click.option(
    "--url-env",
    metavar="NAME",
    default=None,
    help="With --install: the environment variable holding the database's URL.",
)
@click.pass_obj
def feed_trigger(
    obj: _Context,
    table: str,
    key_column: str,
    channel: str,
    install: bool,
    url_env: str | None,
) -> None:
    """Print (or --install) the PostgreSQL trigger that notifies each changed product key
    to the postgres change feed, on insert, update and delete, at commit."""
    from syncd.feeds.pgtrigger import trigger_name, trigger_sql

    try:
        script = trigger_sql(table, key_column, channel)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not install:
        _echo(script.rstrip("\n"))
        return
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError("feed-trigger --install needs psycopg: pip install 'syncd[postgres]'")
    from syncd.config.feeds_more import PostgresFeedConfig
    from syncd.feeds.postgres import install_trigger
    from syncd.feeds.registry_more import postgres_connection

    if url_env is not None:
        url = resolve_secret(url_env)
        if url is None:
            raise ConfigError(f"--url-env: environment variable {url_env} is not set")
        password = None
        register_secret(url)
    else:
        feed = PostgresFeedConfig(kind="postgres", channel=channel)
        url, password = postgres_connection(feed, obj.config().source, where="--install")
    install_trigger(url, table, key_column, channel, password=password)
    _echo(
        f"installed trigger {trigger_name(channel)} on {table}: notifies {key_column} "
        f"on channel {channel}"
    )


@main.command()
@click.option("--dir", "workdir", default=".demo", show_default=True, help="Scratch folder.")
@click.option(
    "--live",
    is_flag=True,
    help="Instead: a running `syncd run` with a webhook change feed pushes a change to the "
    "fakes within seconds (a SQLite catalog).",
)
def demo(workdir: str, live: bool) -> None:
    """Run the offline demo: the sample catalog synced to fake UserFlux and Vambe APIs."""
    from pathlib import Path

    if live:
        from syncd.demo.live import run_live_demo

        sys.exit(run_live_demo(Path(workdir + "-live" if workdir == ".demo" else workdir)))
    from syncd.demo import run_demo

    sys.exit(run_demo(Path(workdir)))


@main.command()
@click.option(
    "--run-now/--no-run-now",
    default=None,
    help="Run one sync as soon as the daemon starts (default: schedule.run_at_start).",
)
@click.pass_obj
def run(obj: _Context, run_now: bool | None) -> None:
    """Run the daemon in the foreground: sync on schedule until SIGTERM (the container command)."""
    from syncd.daemon import run_daemon

    sys.exit(run_daemon(obj.config(), obj.store, run_at_start=run_now))


@main.command()
@click.option("--port", type=int, default=None, help="The listener's port (default: health.port).")
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for an answer.")
@click.pass_obj
def healthcheck(obj: _Context, port: int | None, timeout: float) -> None:
    """Exit 0 when the daemon's /healthz answers 200, else 1 (Docker's HEALTHCHECK)."""
    from syncd.health import local_address, probe

    host = "127.0.0.1"
    if port is None:
        try:
            health = obj.config(require_secrets=False).health
        except ConfigError as exc:
            _echo(f"syncd: unhealthy: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        host, port = local_address(health.host), health.port
    healthy, message = probe(f"http://{host}:{port}/healthz", timeout)
    _echo(message, err=not healthy)
    sys.exit(EXIT_OK if healthy else EXIT_FAILED)


def _set_global(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        obj = ctx.find_object(_Context)
        if obj is not None:
            setattr(obj, name, value)

    return callback


def _global_options_after(command: click.Command) -> None:
    """``--config``, ``--log-level`` and ``--log-format`` accepted after the subcommand too
    (``syncd plan --config x``): the value given there wins over one given before it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _global_options_after(sub)
    if command is main:
        return
    command.params.extend(
        [
            click.Option(
                ["--config", "-c"],
                metavar="PATH",
                expose_value=False,
                callback=_set_global("config_path"),
                help="The TOML config file (as before the subcommand).",
            ),
            click.Option(
                ["--log-level"],
                type=click.Choice(["debug", "info", "warning", "error"]),
                expose_value=False,
                callback=_set_global("log_level"),
                help="As before the subcommand.",
            ),
            click.Option(
                ["--log-format"],
                type=click.Choice(["auto", "json", "console"]),
                expose_value=False,
                callback=_set_global("log_format"),
                help="As before the subcommand.",
            ),
        ]
    )


_global_options_after(main)


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two passes of the cyclic collector over the youngest objects
(Python's default: 700). A run allocates a few dicts and lists per product and frees them
by reference counting; with passes every 700 allocations, each pass walks the live ones of a
chunk again. Cyclic garbage is rare here and waits a little longer to be freed."""


def entry() -> None:
    """The ``syncd`` command (and ``python -m syncd``): ``main``, with the objects of the
    modules imported so far frozen out of the collector's full passes (``gc.freeze``).
    They live as long as the process, and a full pass walks them all: a dozen times while
    a first sync of 50k products is planned, ~5 µs per product and target. The passes
    over young objects come less often (``GC_YOUNG_THRESHOLD``): 249.8k → 244.0k
    instructions per product and target of a first sync's plan (callgrind)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    main()
