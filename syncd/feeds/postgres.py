"""The PostgreSQL ``LISTEN/NOTIFY`` feed: the listener that hands the keys the trigger
(``syncd.feeds.pgtrigger``) notifies to the sink, and the trigger's installer.

NOTIFY is fire-and-forget: what is sent while syncd is not listening is lost, and a
batch the targets did not take can't be asked for again. Both set ``missed_since`` in the
feed's status; the next scheduled reconcile repairs what was missed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing

import psycopg
import structlog

from syncd.config.feeds_more import PostgresFeedConfig
from syncd.errors import SourceError
from syncd.feeds.base import Done, FeedSink, KeyEvent
from syncd.feeds.pgtrigger import (
    FUNCTION_NAME,
    quote_ident,
    quote_table,
    trigger_name,
    trigger_sql,
)
from syncd.feeds.tracking import Clock, ConnectedFeed, error_text
from syncd.logs import register_secret, scrub

log = structlog.get_logger("syncd.feed")

POLL_S = 0.25
"""Longest wait for a notification before ``stop`` is looked at again."""
BATCH_WINDOW_S = 0.02
"""After a first notification, how long more are gathered into the same batch."""
IDLE_PING_S = 30.0
"""A connection quiet this long is pinged, so a dead one is noticed and reconnected."""


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (``postgresql+psycopg://``) as libpq takes it."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def install_trigger(
    conninfo: str,
    table: str,
    key: str,
    channel: str = "syncd_products",
    *,
    password: str | None = None,
    connect_timeout_s: float = 10.0,
) -> None:
    """Install the trigger in one transaction; ``SourceError`` naming what failed (the
    connection, the table or key column, the privileges)."""
    script = trigger_sql(table, key, channel)
    register_secret(password)
    try:
        conn = _connect(conninfo, password, connect_timeout_s, "syncd feed-trigger")
    except psycopg.Error as exc:
        raise SourceError(f"feed-trigger: could not connect: {error_text(exc)}") from None
    with closing(conn):
        step = f"checking column {key!r} of table {table}"
        try:
            with conn.transaction():
                conn.execute(f"SELECT {quote_ident(key)} FROM {quote_table(table)} LIMIT 0")
                step = f"creating function {FUNCTION_NAME}() and trigger {trigger_name(channel)}"
                conn.execute(script)
        except psycopg.Error as exc:
            raise SourceError(f"feed-trigger: {step} failed: {error_text(exc)}") from None


def _connect(
    conninfo: str, password: str | None, timeout_s: float, application_name: str
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        libpq_url(conninfo),
        autocommit=True,
        connect_timeout=max(1, round(timeout_s)),
        application_name=application_name[:63],
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        password=password,  # None: left out (libpq's own rules: PGPASSWORD, .pgpass)
    )


def parse_payload(payload: str) -> tuple[str, float | None]:
    """A notification's key and commit time. The payload is the trigger's JSON object
    (``{"key": ..., "at": ...}``), or, from a hand-written trigger, the bare key as text
    (one not starting with ``{``, ``[`` or ``"``, which are read as JSON). ``ValueError``
    saying what is wrong."""
    text = payload.strip()
    if not text:
        raise ValueError("empty payload")
    if text[0] not in '{["':
        return text, None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if isinstance(data, str) and data.strip():
        return data.strip(), None
    if not isinstance(data, dict):
        raise ValueError('not a JSON object with a "key"')
    key = data.get("key")
    if isinstance(key, bool) or not isinstance(key, str | int) or str(key).strip() == "":
        raise ValueError('no "key" (a non-empty string or an integer)')
    at = data.get("at")
    changed_at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
    return str(key).strip(), changed_at


class PostgresFeed(ConnectedFeed):
    """Listens on a NOTIFY channel and hands each notified key to the sink."""

    kind = "postgres"

    def __init__(
        self,
        config: PostgresFeedConfig,
        conninfo: str,
        *,
        password: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(config, clock)
        self.config = config
        self._conninfo = conninfo
        self._password = password
        register_secret(password)

    def run(self, sink: FeedSink, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                conn = _connect(
                    self._conninfo,
                    self._password,
                    self.config.connect_timeout_s,
                    f"syncd feed {self.name}",
                )
            except psycopg.Error as exc:
                failures += 1
                self._lost(exc, failures)
                stop.wait(self._policy.delay(failures))
                continue
            with closing(conn):
                try:
                    conn.execute(f"LISTEN {quote_ident(self.config.channel)}")
                    self._tracker.connected(may_have_missed=True)
                    log.info(
                        "syncd.feed.connected",
                        feed=self.name,
                        kind=self.kind,
                        channel=self.config.channel,
                        reconnect=failures > 0,
                    )
                    failures = 0
                    self._check_trigger(conn)
                    self._listen(conn, sink, stop)
                except psycopg.Error as exc:
                    failures += 1
                    self._lost(exc, failures)
                    stop.wait(self._policy.delay(failures))
        self._tracker.disconnected(None, may_have_missed=True)
        log.info("syncd.feed.stopped", feed=self.name, kind=self.kind)

    def _check_trigger(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Warn (log and status) when the database has no trigger of ``syncd feed-trigger``
        for the channel: nothing would ever be notified (a hand-written one may still)."""
        name = trigger_name(self.config.channel)
        row = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = %s", (name,)).fetchone()
        if row is not None and row[0] == 0:
            problem = (
                f"no trigger {name} in this database: install it with syncd feed-trigger "
                f"--channel {self.config.channel} --install (a hand-written trigger works too)"
            )
            self._tracker.note(problem)
            log.warning("syncd.feed.no_trigger", feed=self.name, kind=self.kind, problem=problem)

    def _lost(self, exc: psycopg.Error, failures: int) -> None:
        error = error_text(exc)
        self._tracker.disconnected(error, may_have_missed=True)
        log.warning(
            "syncd.feed.disconnected",
            feed=self.name,
            kind=self.kind,
            error=error,
            failures=failures,
            missed="notifications sent until it reconnects are lost; the next reconcile "
            "repairs them",
        )

    def _listen(
        self, conn: psycopg.Connection[tuple[object, ...]], sink: FeedSink, stop: threading.Event
    ) -> None:
        quiet_since = time.monotonic()
        while not stop.is_set():
            payloads = [n.payload for n in conn.notifies(timeout=POLL_S, stop_after=1)]
            if not payloads:
                if time.monotonic() - quiet_since > IDLE_PING_S:
                    conn.execute("SELECT 1")
                    quiet_since = time.monotonic()
                continue
            if self.config.batch_max > 1:
                more = conn.notifies(timeout=BATCH_WINDOW_S, stop_after=self.config.batch_max - 1)
                payloads.extend(n.payload for n in more)
            quiet_since = time.monotonic()
            for batch in _chunks(payloads, self.config.batch_max):
                self._hand_over(batch, sink)

    def _hand_over(self, payloads: Sequence[str], sink: FeedSink) -> None:
        received_at = self._clock()
        events: list[KeyEvent] = []
        for payload in payloads:
            try:
                key, changed_at = parse_payload(payload)
            except ValueError as exc:
                log.warning(
                    "syncd.feed.payload_skipped",
                    feed=self.name,
                    kind=self.kind,
                    reason=str(exc),
                    payload=scrub(payload[:200]),
                )
                continue
            events.append(KeyEvent(key, self.name, received_at, changed_at))
        if not events:
            return
        self._tracker.received(received_at)
        sink(events, self._done_once())

    def _done_once(self) -> Done:
        lock = threading.Lock()
        called = False

        def done(pushed: bool) -> None:
            nonlocal called
            with lock:
                if called:
                    log.warning("syncd.feed.done_repeated", feed=self.name, kind=self.kind)
                    return
                called = True
            if not pushed:
                # NOTIFY can't redeliver: the next reconcile must repair these keys.
                self._tracker.missed()
                log.warning(
                    "syncd.feed.batch_failed",
                    feed=self.name,
                    kind=self.kind,
                    missed="can't be redelivered; the next reconcile repairs it",
                )

        return done


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
