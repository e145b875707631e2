"""The status page: what a person sees in a real browser (Chromium, headless), and its escaping.

Chromium is Debian's package (``scripts/services.sh`` installs it); without it the browser
tests skip locally and fail under ``CI=true``, like the SQL tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from syncd.daemon import Daemon
from syncd.health import HealthServer, Probes
from syncd.logs import register_secret
from syncd.model import Rejection, RunRecord
from syncd.state import StateStore, open_store
from syncd.statuspage import StatusSnapshot, collect_status, render_status_page, status_page
from tests.test_daemon import ENV_KEYS, config_toml, load

XSS_KEY = "<img src=x onerror=\"document.title='pwned'\">sku-9"
SCRIPT_KEY = "</script><script>document.title='pwned'</script>"
SECRET = "tok-SECRET-4242-abcdef"


# -- a state with history, a run in flight and open rejections ---------------------------


def _config(state_url: str, port: int = 0) -> Any:
    return load(
        config_toml(
            catalog=Path("/nonexistent/catalog.jsonl"),
            state_url=state_url,
            userflux_url="http://127.0.0.1:9",
            health={"host": "127.0.0.1", "port": port},
        )
    )


def _finish(
    store: StateStore,
    target: str,
    *,
    mode: str = "incremental",
    seconds: float = 125,
    **fields: Any,
) -> None:
    run_id = store.start_run(target, mode=mode, mode_reason="", holder="host-a")
    [started] = [r for r in store.recent_runs(target, limit=5) if r.id == run_id]
    store.finish_run(
        RunRecord(
            id=run_id,
            target=target,
            started_at=started.started_at - seconds,
            finished_at=started.started_at,
            mode=mode,
            mode_reason="",
            holder="host-a",
            **fields,
        )
    )


@pytest.fixture
def store(sqlite_url: str) -> Iterator[StateStore]:
    register_secret(SECRET)
    opened = open_store(sqlite_url)
    _finish(opened, "uf", mode="full", seconds=3725, outcome="ok", created=7, requests=7)
    _finish(opened, "uf", outcome="ok", created=7, updated=2, requests=9)
    _finish(
        opened,
        "uf",
        outcome="partial",
        updated=1,
        rejected=3,
        drift=3,
        error=f"refused with {SECRET}",
    )
    opened.record_rejections(
        "uf",
        [
            Rejection(key="sku-1", reason="price: not a number", by_target=True),
            Rejection(key="sku-2", reason=f"400 Bad Request: token {SECRET} invalid"),
            Rejection(key=XSS_KEY, reason="<b>bold</b> reason"),
            Rejection(key=SCRIPT_KEY, reason="name: missing"),
        ],
        time.time(),
    )
    opened.start_run("uf", mode="full", mode_reason="--full given", holder="host-b")
    yield opened
    opened.close()


@pytest.fixture
def page_url(store: StateStore, sqlite_url: str) -> Iterator[str]:
    server = HealthServer(
        "127.0.0.1",
        0,
        Probes(
            alive=lambda: True,
            ready=list,
            status=status_page(_config(sqlite_url), lambda: store),
        ),
    )
    with server:
        yield server.url + "/status"


# -- Chromium ------------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (scripts/services.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    return found


def _browse(url: str, tmp_path: Path, *, screenshot: Path | None = None) -> str:
    """Open ``url`` in headless Chromium; the DOM after its scripts ran (or a screenshot)."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    action = [f"--screenshot={screenshot}", "--window-size=1400,1000"] if screenshot else []
    completed = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *(action or ["--dump-dom"]),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


class _Dom(HTMLParser):
    """The DOM Chromium dumped: elements with their attributes, and rows' visible text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self.text: list[str] = []
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text.append(data)

    def rows(self, attribute: str) -> dict[str, bool]:
        """``attribute`` value of each row that has it -> whether the row is shown."""
        return {
            str(attrs[attribute]): "hidden" not in attrs
            for tag, attrs in self.elements
            if tag == "tr" and attribute in attrs
        }

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def test_the_status_page_in_chromium_shows_a_run_in_progress_and_a_rejected_product(
    page_url: str, tmp_path: Path
) -> None:
    dom = _Dom(_browse(page_url, tmp_path))

    assert ("body", {"data-scripted": "yes"}) in dom.elements  # its script ran
    assert dom.title == "syncd status"  # no injected script renamed it
    text = " ".join(dom.all_text.split())
    assert "Run in progress: uf (full: --full given)" in text
    assert "by host-b" in text and "the last full run took 1h02m05s" in text  # like with like
    shown = dom.rows("data-key")
    assert shown == {"sku-1": True, "sku-2": True, XSS_KEY: True, SCRIPT_KEY: True}
    assert XSS_KEY in text and SCRIPT_KEY in text  # the keys are text, not markup
    assert not [tag for tag, _ in dom.elements if tag in ("img", "b")]
    assert [tag for tag, _ in dom.elements].count("script") == 1
    assert "price: not a number" in text
    assert "7 created, 2 updated" not in text  # the target's state is its latest run
    assert "partial" in text and "1 updated" in text
    assert "uf: the target holds +3 products compared with state" in text
    assert SECRET not in text and "token *** invalid" in text


def test_the_key_search_filters_the_rejections_in_the_browser(
    page_url: str, tmp_path: Path
) -> None:
    typed = _Dom(_browse(page_url + "#key=SKU-", tmp_path))  # the script reads the box
    assert typed.rows("data-key") == {
        "sku-1": True,
        "sku-2": True,
        XSS_KEY: True,
        SCRIPT_KEY: False,
    }
    assert ("span", {"id": "rejections-shown"}) in typed.elements
    assert "3 shown" in " ".join(typed.all_text.split())

    submitted = _Dom(_browse(page_url + "?key=sku-2", tmp_path))  # the form, without JS
    assert submitted.rows("data-key") == {"sku-2": True}
    assert ("input", {"value": "sku-2"}) in [
        (tag, {k: v for k, v in attrs.items() if k == "value"})
        for tag, attrs in submitted.elements
        if tag == "input"
    ]


def test_the_status_page_renders_a_screenshot_with_its_tables(
    page_url: str, tmp_path: Path
) -> None:
    shot = tmp_path / "status.png"
    _browse(page_url, tmp_path, screenshot=shot)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a page of tables, not a blank canvas
    if os.environ.get("SYNCD_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["SYNCD_KEEP_SCREENSHOT"])


# -- the HTML itself -----------------------------------------------------------------------


def test_keys_reasons_and_errors_are_escaped_and_scrubbed(
    store: StateStore, sqlite_url: str
) -> None:
    page = render_status_page(collect_status(_config(sqlite_url), store)).decode()

    assert XSS_KEY not in page and SCRIPT_KEY not in page and "<b>bold" not in page
    assert "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;sku-9" in page
    assert "&lt;/script&gt;&lt;script&gt;" in page
    assert SECRET not in page
    assert "refused with ***" in page


def test_a_run_in_flight_is_compared_with_the_last_run_of_its_own_mode(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        _finish(store, "uf", mode="full", seconds=3725, outcome="ok")
        _finish(store, "uf", mode="incremental", seconds=125, outcome="ok")
        _finish(store, "uf", mode="incremental", seconds=5, outcome="failed")  # not to the end
        _finish(store, "uf", mode="resend", seconds=1, outcome="ok")  # two keys: no yardstick
        store.start_run("uf", mode="incremental", mode_reason="", holder="host-b")
        page = render_status_page(collect_status(_config(sqlite_url), store)).decode()
        assert "the last incremental run took 2m05s" in page
        store.mark_interrupted("uf")
        store.start_run("uf", mode="full", mode_reason="--full", holder="host-b")
        page = render_status_page(collect_status(_config(sqlite_url), store)).decode()
        assert "the last full run took 1h02m05s" in page
    finally:
        store.close()


def test_a_run_in_flight_shows_the_daemon_s_progress_counts(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        store.start_run("uf", mode="full", mode_reason="", holder="host-b")
        config = _config(sqlite_url)
        unknown = render_status_page(collect_status(config, store)).decode()
        assert "progress: not known here" in unknown
        page = status_page(
            config, lambda: store, lambda: {"uf": {"requests answered": 1234, "retried": 5}}
        )("")[0].decode()
        assert "so far: 1234 requests answered, 5 retried" in page
    finally:
        store.close()


def test_the_daemon_counts_the_requests_of_the_run_it_is_doing() -> None:
    from syncd.metrics import SyncdMetrics

    metrics = SyncdMetrics(["uf"])
    metrics.request("uf", "product", "2xx", 0.1)  # before any run: not a run's progress
    assert metrics.run_progress() == {}
    metrics.run_started()
    for _ in range(3):
        metrics.request("uf", "product", "2xx", 0.1)
    metrics.retry("uf", "503")
    assert metrics.run_progress() == {"uf": {"requests answered": 3, "retried": 1}}
    metrics.run_ended()
    assert metrics.run_progress() == {}


def test_a_long_error_is_folded_into_one_line_with_the_whole_behind_details(
    sqlite_url: str,
) -> None:
    store = open_store(sqlite_url)
    long_error = "Traceback (most recent call last):\n" + "\n".join(
        f'  File "x.py", line {n}, in f{n}' for n in range(40)
    )
    try:
        _finish(store, "uf", outcome="failed", error=long_error)
        store.record_rejections("uf", [Rejection(key="sku-9", reason="x" * 2000)], time.time())
        page = render_status_page(collect_status(_config(sqlite_url), store)).decode()
    finally:
        store.close()
    parser = _Summaries()
    parser.feed(page)
    assert len(parser.summaries) == 2
    for summary in parser.summaries:
        assert "\n" not in summary and len(summary) <= 121
    assert parser.summaries[0].startswith("Traceback (most recent call last):")
    assert "line 39, in f39" in page  # the whole is still there, behind the fold


class _Summaries(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.summaries: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "summary":
            self._inside = True
            self.summaries.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "summary":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.summaries[-1] += data


def test_the_search_query_is_escaped_in_the_search_box(store: StateStore, sqlite_url: str) -> None:
    evil = '"><script>alert(1)</script>'
    page = render_status_page(collect_status(_config(sqlite_url), store, query=evil)).decode()

    assert evil not in page
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert "<tr data-key=" not in page  # nothing matches


def test_the_page_lists_at_most_the_first_rejections_and_says_how_many_match(
    sqlite_url: str,
) -> None:
    store = open_store(sqlite_url)
    try:
        store.record_rejections(
            "uf", [Rejection(key=f"k{i:04d}", reason="bad") for i in range(250)], time.time()
        )
        snapshot = collect_status(_config(sqlite_url), store)
    finally:
        store.close()
    page = render_status_page(snapshot).decode()
    assert page.count("<tr data-key=") == 200
    assert "250 match; the first 200 are listed" in page


def test_a_state_that_cannot_be_read_still_gives_a_page_saying_why(sqlite_url: str) -> None:
    body, ctype = status_page(_config(sqlite_url), lambda: None)("")

    assert ctype == "text/html; charset=utf-8"
    assert "cannot read the state: the state store is not open yet" in body.decode()


def test_a_target_without_runs_shows_no_run_yet(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        snapshot = collect_status(_config(sqlite_url), store)
    finally:
        store.close()
    assert isinstance(snapshot, StatusSnapshot)
    page = render_status_page(snapshot).decode()
    assert "no run yet" in page and "No run in progress." in page


def test_the_daemon_serves_the_status_page_on_its_listener(sqlite_url: str) -> None:
    daemon = Daemon(_config(sqlite_url), lambda: open_store(sqlite_url), environ=ENV_KEYS)
    daemon.start(run_at_start=False)
    try:
        assert daemon.health_url is not None
        for path in ("/", "/status?key=nothing"):
            with urllib.request.urlopen(daemon.health_url + path, timeout=5) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                assert "<h2>Open rejections</h2>" in response.read().decode()
    finally:
        daemon.request_stop()
        daemon.shutdown()
