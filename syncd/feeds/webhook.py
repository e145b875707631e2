"""The webhook feed: ``POST /feeds/<name>`` on the daemon's listener, for backends that
can call a webhook on save.

The body is ``{"keys": ["P1", ...], "changed_at": 1733300000.5}`` (``changed_at``
optional: POSIX seconds or ISO 8601, when the source committed the change). A bearer
token from the environment variable ``token_env`` names is required (compared in
constant time, never logged): 401 without it or with a wrong one. A body over
``max_body_bytes`` or naming over ``max_keys`` keys is refused with 413, a malformed one
with 400 naming the problem; 202 once queued. ``?wait=1`` answers after the push: 200
once every target acknowledged it, 503 when it was not pushed (the caller retries).
What it can lose: a 202'd batch whose push then failed is not retried by syncd (the
feed marks itself ``missed_since``; the next scheduled reconcile repairs it).
"""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from syncd.config import WebhookFeedConfig, resolve_secret
from syncd.errors import ConfigError
from syncd.feeds.base import FeedSink, FeedStatus, KeyEvent

log = structlog.get_logger("syncd.feeds")

PATH_PREFIX = "/feeds/"
MAX_KEY_LENGTH = 1024
"""A key longer than this is refused (no product key is)."""

Answer = tuple[int, bytes, str, Mapping[str, str]]


def _answer(status: int, payload: dict[str, Any], **headers: str) -> Answer:
    body = json.dumps(payload).encode() + b"\n"
    return status, body, "application/json", headers


def _problem(status: int, message: str, **headers: str) -> Answer:
    return _answer(status, {"status": "refused", "error": message}, **headers)


class WebhookFeed:
    """One ``[[feeds]]`` table of kind ``webhook``: events arrive as HTTP requests."""

    kind = "webhook"

    def __init__(
        self, config: WebhookFeedConfig, index: int = 0, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        token = resolve_secret(config.token_env, environ)
        if token is None:
            raise ConfigError(
                f"feeds[{index}].token_env: environment variable {config.token_env} is not set"
            )
        self._token = token.encode()
        self._sink: FeedSink | None = None
        self._lock = threading.Lock()
        self._last_event_at: float | None = None
        self._missed_since: float | None = None

    def __repr__(self) -> str:  # never the token
        return f"WebhookFeed(name={self.name!r})"

    # -- ChangeFeed ---------------------------------------------------------------------
    def run(self, sink: FeedSink, stop: threading.Event) -> None:
        """Take requests (served by the daemon's listener) until ``stop`` is set."""
        self._sink = sink
        try:
            stop.wait()
        finally:
            self._sink = None

    def status(self) -> FeedStatus:
        with self._lock:
            return FeedStatus(
                name=self.name,
                kind=self.kind,
                connected=self._sink is not None,
                last_event_at=self._last_event_at,
                missed_since=self._missed_since,
            )

    def reconciled(self, started_at: float) -> bool:
        """A scheduled reconcile that started at ``started_at`` completed: a miss before
        it is repaired and forgotten, so a later one is reported again."""
        with self._lock:
            if self._missed_since is None or self._missed_since > started_at:
                return False
            self._missed_since = None
            return True

    # -- one request --------------------------------------------------------------------
    def handle(
        self,
        query: str,
        headers: Mapping[str, str],
        length: int | None,
        read: Callable[[int], bytes],
    ) -> Answer:
        """Answer one ``POST /feeds/<name>`` (``headers``: names lower-cased)."""
        if not self._authorized(headers.get("authorization") or ""):
            return _problem(
                401, "a valid bearer token is required", **{"WWW-Authenticate": "Bearer"}
            )
        config = self.config
        if length is None:
            return _problem(411, "Content-Length is required (the body is JSON)")
        if length > config.max_body_bytes:
            return _problem(
                413, f"the body is {length} bytes, over max_body_bytes={config.max_body_bytes}"
            )
        body = read(length)
        keys, changed_at, error = _parse(body, config.max_keys)
        if error is not None:
            return _problem(413 if error.startswith("too many") else 400, error)
        sink = self._sink
        if sink is None:
            return _problem(503, f"feed {self.name!r} is not running")
        wait = "wait=1" in query.split("&") or "wait=true" in query.split("&")
        now = time.time()
        events = [KeyEvent(key, self.name, now, changed_at) for key in keys]
        with self._lock:
            self._last_event_at = now
        log.info("syncd.feeds.received", feed=self.name, keys=len(keys), wait=wait)
        if not wait:
            sink(events, self._unwaited)
            return _answer(202, {"status": "queued", "keys": len(keys)})
        result: list[bool] = []
        settled = threading.Event()

        def done(ok: bool) -> None:
            result.append(ok)
            settled.set()

        sink(events, done)
        if not settled.wait(config.wait_timeout_s):
            return _answer(
                503,
                {
                    "status": "not pushed yet",
                    "error": f"not acknowledged within wait_timeout_s={config.wait_timeout_s:g}",
                },
            )
        if result[0]:
            return _answer(200, {"status": "pushed", "keys": len(keys)})
        return _answer(503, {"status": "not pushed", "error": "not every target acknowledged it"})

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._token)

    def _unwaited(self, ok: bool) -> None:
        """A queued batch nobody waits for: when it was not pushed, changes were missed
        (until the next scheduled reconcile)."""
        if not ok:
            with self._lock:
                if self._missed_since is None:
                    self._missed_since = time.time()
            log.warning(
                "syncd.feeds.missed", feed=self.name, reason="a queued batch was not pushed"
            )


def _parse(body: bytes, max_keys: int) -> tuple[list[str], float | None, str | None]:
    """The keys and ``changed_at`` of a body, or the problem with it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return [], None, "the body is not JSON"
    if not isinstance(data, dict):
        return [], None, 'the body must be a JSON object: {"keys": [...]}'
    unknown = sorted(set(data) - {"keys", "changed_at"})
    if unknown:
        return [], None, f"unknown field {unknown[0]!r} (expected keys, changed_at)"
    raw = data.get("keys")
    if not isinstance(raw, list):
        return [], None, "keys: missing or not a list"
    if len(raw) > max_keys:
        return [], None, f"too many keys: {len(raw)}, over max_keys={max_keys}"
    keys: list[str] = []
    for index, key in enumerate(raw):
        if isinstance(key, bool) or not isinstance(key, str | int):
            return [], None, f"keys[{index}]: a key is a string or an integer"
        text = str(key).strip()
        if not text or len(text) > MAX_KEY_LENGTH:
            return [], None, f"keys[{index}]: empty or longer than {MAX_KEY_LENGTH} characters"
        keys.append(text)
    changed_at = data.get("changed_at")
    when: float | None = None
    if changed_at is not None:
        when = _timestamp(changed_at)
        if when is None:
            return [], None, "changed_at: POSIX seconds or an ISO 8601 time with its offset"
    return list(dict.fromkeys(keys)), when, None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value > 0 else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None


def webhook_router(feeds: Sequence[WebhookFeed]) -> Callable[..., Answer | None]:
    """The listener's POST handler (``syncd.health.Post``) for these webhook feeds."""
    by_name = {feed.name: feed for feed in feeds}

    def post(
        path: str,
        query: str,
        headers: Mapping[str, str],
        length: int | None,
        read: Callable[[int], bytes],
    ) -> Answer | None:
        if not path.startswith(PATH_PREFIX):
            return None
        feed = by_name.get(path[len(PATH_PREFIX) :])
        if feed is None:
            return None
        return feed.handle(query, headers, length, read)

    return post
