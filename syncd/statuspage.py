"""The status page the daemon's listener serves on ``/`` and ``/status``: read-only HTML.

``collect_status`` reads each target's last runs, runs in flight (with their progress:
the counts state holds, and the daemon's own for a run it is doing), open rejections and
drift from the state store; ``render_status_page`` turns that into one HTML document
(no build step; a few lines of vanilla JS filter the rejections as you type, and the
GET form does the same without JS). Every piece of text is scrubbed of secrets and
escaped: product keys and reasons come from the source and the targets.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from syncd import __version__
from syncd.config import SyncdConfig
from syncd.logs import ELLIPSIS, scrub, scrub_snippet
from syncd.model import RejectionRecord, RunRecord
from syncd.runs import names_keys
from syncd.state import StateStore

MAX_REJECTIONS = 200
"""Open rejections listed at most (a search by key narrows the whole set first)."""
MAX_RUNS = 20
"""Last runs listed, all targets together."""
_SUMMARY_LIMIT = 120
"""An error or reason longer than this (or on several lines) is folded: its first line,
cut, with the rest behind a ``<details>`` (and a tooltip), so rows stay one line high."""
_FULL_LIMIT = 4000
_FINISHED = ("ok", "partial")
"""Runs that went to the end: what a run in flight is compared with."""

Progress = Mapping[str, Mapping[str, int]]
"""Target -> counts of the run this process is doing for it (``"requests answered"``...)."""
FeedRow = Mapping[str, object]
"""One change feed as the daemon sees it: name, kind, connected, last_event_at, lag_s,
missed_since, error (``syncd.feeds``)."""


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One target's state: its last finished run, its products in state and drift."""

    name: str
    kind: str
    enabled: bool
    last: RunRecord | None
    products: int | None
    open_rejections: int
    took: Mapping[str, float] = field(default_factory=dict)
    """Mode -> seconds the target's last run of that mode took (one that went to the end,
    not a resend): a run in flight is compared with the same kind of run."""


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything the page shows, read at ``now`` (POSIX seconds)."""

    now: float
    targets: tuple[TargetStatus, ...]
    in_flight: tuple[RunRecord, ...]
    runs: tuple[RunRecord, ...]
    rejections: tuple[RejectionRecord, ...]
    rejections_total: int
    query: str = ""
    error: str | None = None
    """Why the state could not be read (the page still answers)."""
    feeds: tuple[FeedRow, ...] = ()
    """The daemon's change feeds (none configured: the section is left out)."""
    progress: Progress = field(default_factory=dict)
    """The daemon's own counts of the run it is doing, per target."""


def _took(runs: list[RunRecord]) -> dict[str, float]:
    took: dict[str, float] = {}
    for run in runs:  # newest first: the first of each mode wins
        if (
            run.outcome in _FINISHED
            and run.finished_at is not None
            and not names_keys(run.mode, run.mode_reason)
        ):
            took.setdefault(run.mode, run.finished_at - run.started_at)
    return took


def collect_status(
    config: SyncdConfig,
    store: StateStore,
    *,
    query: str = "",
    now: float | None = None,
    progress: Progress | None = None,
) -> StatusSnapshot:
    """Read what the page shows from ``store``; ``query`` narrows rejections by key;
    ``progress`` is the daemon's own count of the run it is doing."""
    now = time.time() if now is None else now
    runs = store.recent_runs(limit=max(MAX_RUNS, 50), feed=False)  # feeds: their own table
    targets = []
    for target in config.targets:
        own = store.recent_runs(target.name, limit=50, feed=False)
        done = [r for r in own if r.outcome != "running"]
        # a feed's targeted syncs of a few keys don't hide the last scheduled run
        finished = next((r for r in done if not names_keys(r.mode, r.mode_reason)), None)
        finished = finished or next(iter(done), None)
        targets.append(
            TargetStatus(
                name=target.name,
                kind=target.kind,
                enabled=target.enabled,
                last=finished,
                products=store.count(target.name),
                open_rejections=len(store.open_rejections(target.name)),
                took=_took(own),
            )
        )
    rejections = store.open_rejections()
    needle = query.strip().casefold()
    matching = [r for r in rejections if needle in r.key.casefold()] if needle else rejections
    return StatusSnapshot(
        now=now,
        targets=tuple(targets),
        in_flight=tuple(r for r in runs if r.outcome == "running"),
        runs=tuple(r for r in runs if r.outcome != "running")[:MAX_RUNS],
        rejections=tuple(matching[:MAX_REJECTIONS]),
        rejections_total=len(matching),
        query=query,
        progress=dict(progress or {}),
    )


def status_page(
    config: SyncdConfig,
    store: Callable[[], StateStore | None],
    progress: Callable[[], Progress] | None = None,
    feeds: Callable[[], Sequence[FeedRow]] | None = None,
) -> Callable[[str], tuple[bytes, str]]:
    """The listener's ``/status`` handler: the query string in, the HTML page out.

    ``store`` gives the daemon's open state store (None before it is open); a state
    that can't be read still gives a page, saying why. ``progress`` gives the daemon's
    counts of the run it is doing; ``feeds`` its change feeds.
    """

    def page(query_string: str) -> tuple[bytes, str]:
        query = urllib.parse.parse_qs(query_string).get("key", [""])[0]
        opened = store()
        try:
            if opened is None:
                raise RuntimeError("the state store is not open yet")
            snapshot = collect_status(
                config, opened, query=query, progress=progress() if progress else None
            )
        except Exception as exc:  # the page reports it; the listener goes on
            snapshot = StatusSnapshot(
                now=time.time(),
                targets=(),
                in_flight=(),
                runs=(),
                rejections=(),
                rejections_total=0,
                query=query,
                error=f"cannot read the state: {exc}",
            )
        if feeds is not None:
            snapshot = replace(snapshot, feeds=tuple(feeds()))
        return render_status_page(snapshot), "text/html; charset=utf-8"

    return page


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

_SCRIPT = """
(function () {
  var box = document.getElementById("key-search");
  var rows = document.querySelectorAll("#rejections tbody tr");
  var shown = document.getElementById("rejections-shown");
  function apply() {
    var needle = box.value.trim().toLowerCase(), count = 0;
    rows.forEach(function (row) {
      var match = row.dataset.key.toLowerCase().indexOf(needle) !== -1;
      row.hidden = !match;
      if (match) { count += 1; }
    });
    shown.textContent = String(count);
  }
  var fromHash = /^#key=(.*)$/.exec(location.hash);
  if (fromHash) { box.value = decodeURIComponent(fromHash[1]); }
  box.addEventListener("input", apply);
  apply();
  document.body.dataset.scripted = "yes";
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; form-action 'self'; base-uri 'none'"
)

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin-top: 1.8rem; }
table { border-collapse: collapse; margin-top: .5rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.outcome { font-weight: 600; padding: 0 .4rem; border-radius: 3px; }
.ok { background: #d8f5d8; } .running { background: #d8e8ff; }
.failed, .blocked { background: #ffd8d8; } .partial, .interrupted, .locked { background: #fff0c8; }
.muted { color: #777; } .reason { max-width: 40rem; word-break: break-word; }
.error { background: #ffd8d8; padding: .5rem; }
details.long summary { cursor: pointer; }
details.long pre { white-space: pre-wrap; max-height: 20rem; overflow: auto; margin: .3rem 0; }
"""


def _e(value: object) -> str:
    """Scrubbed and escaped text for HTML content and attribute values."""
    return html.escape(scrub(str(value)), quote=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes = f"{rest // 60:02d}m" if hours else f"{rest // 60}m"
    return f"{hours}h{minutes}{rest % 60:02d}s" if hours else f"{minutes}{rest % 60:02d}s"


def _folded(text: str) -> str:
    """Scrubbed, escaped text; a long or multi-line one folded into its first line (cut,
    with the whole as a tooltip) and a ``<details>`` holding the rest."""
    whole = scrub_snippet(text, _FULL_LIMIT)
    first = whole.splitlines()[0] if whole.strip() else ""
    if len(whole) <= _SUMMARY_LIMIT and "\n" not in whole:
        return html.escape(whole)
    summary = scrub_snippet(first, _SUMMARY_LIMIT)
    if summary == whole:
        summary += ELLIPSIS
    return (
        f'<details class="long"><summary title="{html.escape(whole, quote=True)}">'
        f"{html.escape(summary)}</summary><pre>{html.escape(whole)}</pre></details>"
    )


def _progress(run: RunRecord, own: Mapping[str, int] | None) -> str:
    """What a run in flight has done so far: state's counts, the daemon's own."""
    parts = [
        f"{n} {name}"
        for name, n in (
            ("created", run.created),
            ("updated", run.updated),
            ("deleted", run.deleted),
            ("rejected", run.rejected),
            ("failed", run.failed),
            ("requests", run.requests),
        )
        if n
    ]
    parts += [f"{n} {name}" for name, n in (own or {}).items()]
    if not parts:
        return "; progress: not known here (counts come when it ends)"
    return "; so far: " + ", ".join(parts)


def _outcome(outcome: str) -> str:
    return f'<span class="outcome {_e(outcome)}">{_e(outcome)}</span>'


def _counts(run: RunRecord) -> str:
    return (
        f"{run.created} created, {run.updated} updated, {run.deleted} deleted, "
        f"{run.unchanged} unchanged, {run.rejected} rejected, {run.failed} failed, "
        f"{run.held} held"
    )


def _targets(snapshot: StatusSnapshot) -> str:
    rows = []
    for t in snapshot.targets:
        last = t.last
        drift = "—" if last is None or last.drift is None else f"{last.drift:+d}"
        rows.append(
            f'<tr data-target="{_e(t.name)}"><td>{_e(t.name)}</td><td>{_e(t.kind)}</td>'
            f"<td>{_outcome(last.outcome) if last else '<span class=muted>no run yet</span>'}"
            f"{'' if t.enabled else ' <span class=muted>(disabled)</span>'}</td>"
            f"<td>{_when(last.finished_at if last else None)}</td>"
            f"<td>{_e(_counts(last)) if last else '—'}</td>"
            f'<td class="n">{"—" if t.products is None else t.products}</td>'
            f'<td class="n">{t.open_rejections}</td><td class="n">{_e(drift)}</td></tr>'
        )
    return (
        '<table id="targets"><thead><tr><th>target</th><th>kind</th><th>last outcome</th>'
        "<th>finished</th><th>counts</th><th>products in state</th><th>open rejections</th>"
        "<th>drift</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _in_flight(snapshot: StatusSnapshot) -> str:
    if not snapshot.in_flight:
        return '<p id="in-flight" class="muted">No run in progress.</p>'
    items = []
    for run in snapshot.in_flight:
        target = next((t for t in snapshot.targets if t.name == run.target), None)
        seconds = target.took.get(run.mode) if target is not None else None
        took = (
            f"; the last {run.mode} run took {_duration(seconds)}"
            if seconds is not None
            else f"; no {run.mode} run finished before"
        )
        items.append(
            f'<li data-target="{_e(run.target)}">'
            f"Run in progress: <strong>{_e(run.target)}</strong> "
            f"({_e(run.mode)}: {_e(run.mode_reason or 'changes since the last run')}), "
            f"started {_when(run.started_at)}, running for "
            f"{_duration(snapshot.now - run.started_at)}{_e(took)}"
            f"{_e(_progress(run, snapshot.progress.get(run.target)))}"
            f"{f', by {_e(run.holder)}' if run.holder else ''}</li>"
        )
    return '<ul id="in-flight">' + "".join(items) + "</ul>"


def _runs(snapshot: StatusSnapshot) -> str:
    rows = []
    for run in snapshot.runs:
        took = "—" if run.finished_at is None else _duration(run.finished_at - run.started_at)
        error = "" if not run.error else _folded(run.error)
        rows.append(
            f"<tr><td>{_e(run.target)}</td><td>{_when(run.started_at)}</td><td>{took}</td>"
            f"<td>{_e(run.mode)}</td><td>{_outcome(run.outcome)}</td>"
            f'<td class="n">{run.created}</td><td class="n">{run.updated}</td>'
            f'<td class="n">{run.deleted}</td><td class="n">{run.unchanged}</td>'
            f'<td class="n">{run.rejected}</td><td class="n">{run.failed}</td>'
            f'<td class="n">{run.held}</td><td class="n">{run.requests}</td>'
            f'<td class="n">{run.retries}</td>'
            f'<td class="n">{"—" if run.drift is None else run.drift}</td>'
            f'<td class="reason">{error}</td></tr>'
        )
    return (
        '<table id="runs"><thead><tr><th>target</th><th>started</th><th>took</th>'
        "<th>mode</th><th>outcome</th><th>created</th><th>updated</th><th>deleted</th>"
        "<th>unchanged</th><th>rejected</th><th>failed</th><th>held</th><th>requests</th>"
        "<th>retries</th><th>drift</th><th>error</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _rejections(snapshot: StatusSnapshot) -> str:
    rows = [
        f'<tr data-key="{_e(r.key)}"><td>{_e(r.target)}</td><td class="key">{_e(r.key)}</td>'
        f'<td class="reason">{_folded(r.reason)}</td>'
        f"<td>{'target' if r.by_target else 'syncd'}</td><td>{_when(r.first_seen)}</td>"
        f'<td>{_when(r.last_seen)}</td><td class="n">{r.count}</td></tr>'
        for r in snapshot.rejections
    ]
    more = ""
    if snapshot.rejections_total > len(snapshot.rejections):
        more = (
            f'<p class="muted">{snapshot.rejections_total} match; the first '
            f"{len(snapshot.rejections)} are listed. Search by key to narrow them, or run "
            "<code>syncd rejections</code>.</p>"
        )
    return (
        '<form method="get" action="status" role="search">'
        '<label for="key-search">Search by key </label>'
        f'<input id="key-search" name="key" type="search" value="{_e(snapshot.query)}" '
        'autocomplete="off"> <button type="submit">Search</button> '
        f'<span class="muted"><span id="rejections-shown">{len(snapshot.rejections)}</span> '
        "shown</span></form>"
        '<table id="rejections"><thead><tr><th>target</th><th>key</th><th>reason</th>'
        "<th>refused by</th><th>since</th><th>last seen</th><th>times</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>" + more
    )


def _drift(snapshot: StatusSnapshot) -> str:
    drifting = [t for t in snapshot.targets if t.last is not None and t.last.drift not in (None, 0)]
    if not drifting:
        return '<p id="drift" class="muted">No drift seen by the last runs.</p>'
    items = "".join(
        f"<li>{_e(t.name)}: the target holds {t.last.drift:+d} products compared with state "
        "(repaired by the next full refresh)</li>"
        for t in drifting
        if t.last is not None and t.last.drift is not None
    )
    return f'<ul id="drift">{items}</ul>'


def _feeds(snapshot: StatusSnapshot) -> str:
    if not snapshot.feeds:
        return ""
    rows = []
    for feed in snapshot.feeds:
        lag = feed.get("lag_s")
        missed = feed.get("missed_since")
        error = feed.get("error")
        rows.append(
            f"<tr><td>{_e(feed.get('name'))}</td><td>{_e(feed.get('kind'))}</td>"
            f"<td>{_outcome('ok' if feed.get('connected') else 'failed')}</td>"
            f"<td>{_when(feed.get('last_event_at'))}</td>"  # type: ignore[arg-type]
            f'<td class="n">{"—" if lag is None else _duration(float(lag))}</td>'  # type: ignore[arg-type]
            f"<td>{'—' if missed is None else _when(missed)}</td>"  # type: ignore[arg-type]
            f"<td class=reason>{'' if error is None else _folded(scrub(str(error)))}</td></tr>"
        )
    return (
        "<h2>Change feeds</h2>"
        '<p class="muted">missed since: the feed may have missed changes from then until the '
        "next scheduled run repairs them; the counts of a target's last scheduled run above "
        "are what it repaired that the feeds missed</p>"
        '<table id="feeds"><thead><tr><th>feed</th><th>kind</th><th>connected</th>'
        "<th>last event</th><th>lag</th><th>missed since</th><th>error</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def render_status_page(snapshot: StatusSnapshot) -> bytes:
    """The whole page, UTF-8 encoded."""
    error = f'<p class="error" role="alert">{_e(snapshot.error)}</p>' if snapshot.error else ""
    body = (
        f"<h1>syncd status</h1>"
        f'<p class="muted">syncd {_e(__version__)} · read {_when(snapshot.now)} · '
        "read-only; reload for fresh figures</p>"
        f"{error}"
        f"<h2>Targets</h2>{_targets(snapshot)}"
        f"{_feeds(snapshot)}"
        f"<h2>Run in progress</h2>{_in_flight(snapshot)}"
        f"<h2>Last runs</h2>{_runs(snapshot)}"
        f"<h2>Open rejections</h2>{_rejections(snapshot)}"
        f"<h2>Drift</h2>{_drift(snapshot)}"
    )
    document = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>syncd status</title><style>{_STYLE}</style></head>"
        f"<body>{body}<script>{_SCRIPT}</script></body></html>\n"
    )
    return document.encode()


__all__ = [
    "MAX_REJECTIONS",
    "MAX_RUNS",
    "StatusSnapshot",
    "TargetStatus",
    "collect_status",
    "render_status_page",
    "status_page",
]
