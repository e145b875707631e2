"""The RabbitMQ feed: consumes an AMQP queue whose messages name changed product keys,
and acknowledges a message only once its keys were pushed to every target.

A message not acknowledged (syncd stopped or crashed, the connection dropped, a target
failing: ``Done(False)`` requeues it after a back-off) goes back to the queue and is
delivered again, so a broker feed normally misses nothing. A message that can't be read
is rejected without requeue: dead-lettered when the queue has a dead-letter exchange.

pika's ``BlockingConnection`` is not thread-safe: everything touching it runs on the
feed's thread; ``Done``, called from any thread, goes through
``add_callback_threadsafe``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import structlog
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from syncd.config.feeds_more import RabbitFeedConfig
from syncd.feeds.base import Done, FeedSink, KeyEvent
from syncd.feeds.tracking import Clock, ConnectedFeed, error_text, reconnect_policy
from syncd.logs import register_credentials, register_secret, scrub

log = structlog.get_logger("syncd.feed")
logging.getLogger("pika").setLevel(logging.CRITICAL)
"""pika logs every failed attempt and closed channel itself, at WARNING and ERROR: the
feed's own events (``syncd.feed.disconnected`` with the step and the broker's reason, its
status ``error``) say it once, scrubbed."""

POLL_S = 0.25
"""Longest wait for the broker before ``stop`` is looked at again."""
BATCH_WINDOW_S = 0.02
"""After a first message, how long more are gathered into the same batch."""
MAX_KEY_CHARS = 1024
"""A longer key is not a product key: the message is rejected."""

_ERRORS = (pika.exceptions.AMQPError, OSError)


def connection_parameters(
    url: str, password: str | None, config: RabbitFeedConfig, name: str
) -> pika.URLParameters:
    """pika's parameters for ``url`` (its user, if any, with ``password``; none: RabbitMQ's
    default ``guest``), with the config's timeouts and heartbeat."""
    parts = urlsplit(url)
    if password is not None and parts.username:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username}:{quote(password, safe='')}@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    params = pika.URLParameters(url)
    params.heartbeat = config.heartbeat_s
    params.socket_timeout = config.connect_timeout_s
    params.stack_timeout = config.connect_timeout_s * 2
    params.blocked_connection_timeout = max(60.0, config.connect_timeout_s)
    params.connection_attempts = 1
    params.client_properties = {"connection_name": f"syncd feed {name}"}
    return params


def _at_path(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else None
        else:
            return None
    return value


def _key_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: a key must be a string or an integer, not {_kind(value)}")
    key = str(value).strip()
    if not key:
        raise ValueError(f"{where}: an empty key")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"{where}: a key of {len(key)} characters (at most {MAX_KEY_CHARS})")
    return key


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _timestamp(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}: {value[:40]!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    raise ValueError(f"{where}: a time must be epoch seconds or ISO 8601 text")


def parse_message(
    body: bytes, config: RabbitFeedConfig, default_changed_at: float | None = None
) -> list[tuple[str, float | None]]:
    """The (key, commit time) pairs a message names; ``ValueError`` saying what is wrong
    (the message is then rejected, never requeued)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    if config.format == "text":
        keys = [_key_text(line, f"line {n}") for n, line in enumerate(text.splitlines(), 1)
                if line.strip()]  # fmt: skip
        if not keys:
            raise ValueError("no key (an empty message)")
        return [(key, default_changed_at) for key in keys]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    items = data if isinstance(data, list) else [data]
    found: list[tuple[str, float | None]] = []
    for index, item in enumerate(items):
        where = f"item {index}" if isinstance(data, list) else "message"
        if not isinstance(item, dict):
            found.append((_key_text(item, where), default_changed_at))
            continue
        value = _at_path(item, config.key_path)
        if value is None:
            raise ValueError(f"{where}: no key at {config.key_path!r}")
        changed_at = default_changed_at
        if config.changed_at_path is not None:
            at = _timestamp(_at_path(item, config.changed_at_path), config.changed_at_path)
            changed_at = default_changed_at if at is None else at
        values = value if isinstance(value, list) else [value]
        for position, one in enumerate(values):
            path = config.key_path + (f"[{position}]" if isinstance(value, list) else "")
            found.append((_key_text(one, f"{where}: {path}"), changed_at))
    if not found:
        raise ValueError("no key (an empty list)")
    return found


class _SetupError(Exception):
    """Opening the channel failed at ``step`` (the queue missing, access refused)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.cause = cause


@dataclass
class _Pending:
    """Messages received and not handed over yet (one batch in the making), on one
    channel; and whether the broker cancelled its consumer."""

    tags: list[int] = field(default_factory=list)
    events: list[KeyEvent] = field(default_factory=list)
    first_at: float = 0.0
    cancelled: bool = False

    def cancel(self, _frame: object) -> None:
        self.cancelled = True


class RabbitFeed(ConnectedFeed):
    """Consumes one queue; each batch of messages is acknowledged once its keys are pushed."""

    kind = "rabbitmq"

    def __init__(
        self,
        config: RabbitFeedConfig,
        url: str,
        *,
        password: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(config, clock)
        self.config = config
        register_secret(password)
        try:
            url_password = urlsplit(url).password
            register_credentials(urlsplit(url).username, password or url_password)
        except ValueError:
            pass
        self._params = connection_parameters(url, password, config, self.name)
        self._nack_policy = reconnect_policy(
            max(config.nack_delay_s, 0.001), config.reconnect_max_delay_s
        )
        self._failed_batches = 0
        """Batches in a row the targets did not take (the requeue back-off grows with it);
        touched on the connection's thread only."""

    # ----------------------------------------------------------------------------------
    # The connection

    def run(self, sink: FeedSink, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            step = "connecting"
            try:
                conn = pika.BlockingConnection(self._params)
            except _ERRORS as exc:
                failures += 1
                self._lost(step, exc, failures)
                stop.wait(self._policy.delay(failures))
                continue
            pending = _Pending()
            try:
                channel = self._open(conn, pending)
                self._tracker.connected(may_have_missed=False)
                log.info(
                    "syncd.feed.connected",
                    feed=self.name,
                    kind=self.kind,
                    queue=self.config.queue,
                    reconnect=failures > 0,
                )
                failures = 0
                step = "consuming"
                self._consume(conn, channel, pending, sink, stop)
            except _SetupError as exc:
                failures += 1
                self._lost(exc.step, exc.cause, failures)
                _close(conn)
                stop.wait(self._policy.delay(failures))
            except _ERRORS as exc:
                failures += 1
                self._lost(step, exc, failures)
                _close(conn)
                stop.wait(self._policy.delay(failures))
            else:
                _close(conn)  # unacknowledged messages go back to the queue
        self._tracker.disconnected(None, may_have_missed=False)
        log.info("syncd.feed.stopped", feed=self.name, kind=self.kind)

    def _open(self, conn: pika.BlockingConnection, pending: _Pending) -> BlockingChannel:
        """A channel consuming the queue, declared, checked and bound as configured;
        ``_SetupError`` naming the step that failed."""
        config = self.config
        step = "opening a channel"
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=config.prefetch)
            if config.declare:
                step = f"declaring queue {config.queue!r}"
                arguments = (
                    {"x-dead-letter-exchange": config.dead_letter_exchange}
                    if config.dead_letter_exchange is not None
                    else None
                )
                channel.queue_declare(config.queue, durable=config.durable, arguments=arguments)
            else:
                step = f"looking up queue {config.queue!r} (declare = false: it must exist)"
                channel.queue_declare(config.queue, passive=True)
            if config.exchange is not None:
                step = f"binding queue {config.queue!r} to exchange {config.exchange!r}"
                channel.queue_bind(config.queue, config.exchange, routing_key=config.routing_key)
            step = f"consuming queue {config.queue!r}"

            def on_message(
                ch: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes
            ) -> None:
                self._received(ch, method, props, body, pending)

            channel.add_on_cancel_callback(pending.cancel)
            channel.basic_consume(config.queue, on_message, auto_ack=False)
        except _ERRORS as exc:
            raise _SetupError(step, exc) from exc
        return channel

    def _lost(self, step: str, exc: BaseException, failures: int) -> None:
        error = f"{step}: {error_text(exc)}"
        self._tracker.disconnected(error, may_have_missed=False)
        log.warning(
            "syncd.feed.disconnected",
            feed=self.name,
            kind=self.kind,
            error=error,
            failures=failures,
            missed="none: unacknowledged messages are redelivered",
        )

    # ----------------------------------------------------------------------------------
    # Messages

    def _consume(
        self,
        conn: pika.BlockingConnection,
        channel: BlockingChannel,
        pending: _Pending,
        sink: FeedSink,
        stop: threading.Event,
    ) -> None:
        while not stop.is_set():
            if pending.tags:
                wait = max(0.0, pending.first_at + BATCH_WINDOW_S - time.monotonic())
            else:
                wait = POLL_S
            conn.process_data_events(time_limit=wait)
            if pending.cancelled:  # reconnect: declares (or looks up) the queue again
                raise pika.exceptions.ConsumerCancelled(
                    f"the broker cancelled the consumer of queue {self.config.queue!r} "
                    "(the queue was deleted, or its node failed)"
                )
            if pending.tags and (
                len(pending.events) >= self.config.prefetch
                or time.monotonic() >= pending.first_at + BATCH_WINDOW_S
            ):
                self._hand_over(conn, channel, pending, sink)

    def _received(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        props: BasicProperties,
        body: bytes,
        pending: _Pending,
    ) -> None:
        tag = method.delivery_tag or 0
        stamp = props.timestamp if isinstance(props.timestamp, int) else None
        try:
            keys = parse_message(body, self.config, None if stamp is None else float(stamp))
        except ValueError as exc:
            channel.basic_reject(delivery_tag=tag, requeue=False)
            log.warning(
                "syncd.feed.message_rejected",
                feed=self.name,
                kind=self.kind,
                queue=self.config.queue,
                reason=str(exc),
                body=scrub(body[:200].decode("utf-8", "replace")),
                dead_letter_exchange=self.config.dead_letter_exchange,
            )
            return
        received_at = self._clock()
        if not pending.tags:
            pending.first_at = time.monotonic()
        pending.tags.append(tag)
        pending.events.extend(KeyEvent(key, self.name, received_at, at) for key, at in keys)

    def _hand_over(
        self,
        conn: pika.BlockingConnection,
        channel: BlockingChannel,
        pending: _Pending,
        sink: FeedSink,
    ) -> None:
        tags, events = list(pending.tags), list(pending.events)
        pending.tags.clear()
        pending.events.clear()
        self._tracker.received(events[-1].received_at)
        sink(events, self._done(conn, channel, tags))

    def _done(
        self, conn: pika.BlockingConnection, channel: BlockingChannel, tags: Sequence[int]
    ) -> Done:
        lock = threading.Lock()
        called = False

        def settle(pushed: bool) -> None:  # on the connection's thread
            if not channel.is_open:
                return  # the connection dropped: the broker redelivers these
            if pushed:
                self._failed_batches = 0
                for tag in tags:
                    channel.basic_ack(delivery_tag=tag)
                return
            self._failed_batches += 1
            delay = self._nack_policy.delay(self._failed_batches)
            log.warning(
                "syncd.feed.batch_requeued",
                feed=self.name,
                kind=self.kind,
                messages=len(tags),
                delay_s=round(delay, 3),
            )
            conn.call_later(delay, lambda: _nack(channel, tags))

        def done(pushed: bool) -> None:
            nonlocal called
            with lock:
                if called:
                    log.warning("syncd.feed.done_repeated", feed=self.name, kind=self.kind)
                    return
                called = True
            try:
                conn.add_callback_threadsafe(lambda: _guarded(settle, pushed))
            except pika.exceptions.ConnectionWrongStateError:
                log.info(
                    "syncd.feed.ack_dropped",
                    feed=self.name,
                    kind=self.kind,
                    messages=len(tags),
                    reason="the connection closed first: the broker redelivers them",
                )

        return done


def _nack(channel: BlockingChannel, tags: Sequence[int]) -> None:
    try:
        if channel.is_open:
            for tag in tags:
                channel.basic_nack(delivery_tag=tag, requeue=True)
    except _ERRORS as exc:  # the channel just closed: the broker redelivers them anyway
        log.info("syncd.feed.ack_dropped", reason=error_text(exc))


def _guarded(settle: Callable[[bool], None], pushed: bool) -> None:
    """An ack or nack that fails because the channel just closed is left to redelivery."""
    try:
        settle(pushed)
    except _ERRORS as exc:
        log.info("syncd.feed.ack_dropped", reason=error_text(exc))


def _close(conn: pika.BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except _ERRORS:
        pass
