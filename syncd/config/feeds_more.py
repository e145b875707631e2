"""Feed config of the database and broker feeds: the ``[[feeds]]`` tables of kind
``postgres`` (LISTEN/NOTIFY) and ``rabbitmq`` (an AMQP queue). The webhook feed's model
lives in ``syncd.config.feeds``, which joins all three in one ``FeedConfig`` union."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from syncd.config.base import SECRET, TRANSPORT, _Model
from syncd.config.base import has_password as _has_password

CHANNEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
"""A NOTIFY channel: a plain identifier, at most 63 bytes (PostgreSQL's limit)."""

FEED_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _has_user(url: str) -> bool:
    try:
        return bool(urlsplit(url).username)
    except ValueError:
        return False


class _FeedBase(_Model):
    name: str | None = Field(default=None, pattern=FEED_NAME_PATTERN)
    """The feed's name in logs, status and metrics (default: its kind)."""
    reconnect_delay_s: Annotated[float, TRANSPORT] = Field(default=1.0, gt=0, le=600)
    """First wait before reconnecting after the connection failed or dropped; it doubles
    (with jitter) on each further failure, up to ``reconnect_max_delay_s``."""
    reconnect_max_delay_s: Annotated[float, TRANSPORT] = Field(default=60.0, gt=0, le=3600)
    """Longest wait between two connection attempts."""
    connect_timeout_s: Annotated[float, TRANSPORT] = Field(default=10.0, gt=0, le=600)
    """Give up one connection attempt after this long (seconds)."""

    @property
    def feed_name(self) -> str:
        """``name``, or the kind when it has none."""
        return self.name or str(getattr(self, "kind", "feed"))


class PostgresFeedConfig(_FeedBase):
    """PostgreSQL ``LISTEN/NOTIFY``: a trigger on the products table notifies each changed
    key (``syncd feed-trigger`` prints or installs it). Notifications sent while syncd is
    not connected are lost: the feed's status then says changes may have been missed, and
    the next scheduled reconcile repairs them."""

    kind: Literal["postgres"]
    """Selects this feed kind."""
    url: str | None = None
    """The database to listen on, without the password (``postgresql://syncd@db/shop``; a
    SQLAlchemy URL such as ``postgresql+psycopg://...`` is accepted too). Default: the SQL
    source's own URL and password (the source must then be PostgreSQL)."""
    url_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the whole URL (use instead of ``url``)."""
    password_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the password to use with ``url``."""
    channel: str = Field(default="syncd_products", pattern=CHANNEL_PATTERN)
    """The NOTIFY channel the trigger sends on (``syncd feed-trigger --channel``)."""
    batch_max: Annotated[int, TRANSPORT] = Field(default=500, ge=1, le=100_000)
    """Keys handed over at most in one batch."""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and _has_password(url):
            raise ValueError("holds a password: put it in password_env (or the URL in url_env)")
        if url is not None and not re.match(r"^postgres(ql)?(\+\w+)?://", url):
            raise ValueError("must be a postgresql:// URL")
        return url

    @model_validator(mode="after")
    def _one_url(self) -> PostgresFeedConfig:
        if self.url is not None and self.url_env is not None:
            raise ValueError("give url or url_env, not both")
        if self.password_env is not None and self.url is None:
            raise ValueError("password_env needs url (without url, the source's own is used)")
        return self


class RabbitFeedConfig(_FeedBase):
    """An AMQP 0-9-1 queue on RabbitMQ: each message names one or more changed keys. A
    message is acknowledged only once its keys were pushed to every target; a message not
    acknowledged (syncd stopped or crashed, a target failing) is redelivered."""

    kind: Literal["rabbitmq"]
    """Selects this feed kind."""
    url: str | None = "amqp://127.0.0.1:5672/%2F"
    """The broker, without the password (``amqp://syncd@rabbit:5672/shop``; ``amqps://``
    for TLS; the virtual host URL-encoded, ``%2F`` for ``/``). A URL without a user logs in
    as RabbitMQ's default ``guest`` (password ``guest``, allowed from localhost only)."""
    url_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the whole URL, password included (instead of ``url``)."""
    password_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the password of the URL's user (needed when the URL
    names a user)."""
    queue: str = Field(min_length=1, max_length=255)
    """The queue to consume."""
    declare: bool = False
    """Declare the queue (``durable``, with ``dead_letter_exchange``) when it does not exist;
    false: it must exist already (checked at connect, with a clear error naming it)."""
    durable: bool = True
    """With ``declare``: the queue survives a broker restart (its persistent messages too)."""
    dead_letter_exchange: str | None = None
    """With ``declare``: the exchange unparseable messages are dead-lettered to (they are
    rejected without requeue; without one, the broker drops them). An existing queue gets
    it from a broker policy instead."""
    exchange: str | None = None
    """Bind the queue to this (existing) exchange, e.g. the backend's product-events topic."""
    routing_key: str = "#"
    """With ``exchange``: the binding's routing key (``#``: every message of a topic
    exchange; ``product.*`` only product events)."""
    prefetch: Annotated[int, TRANSPORT] = Field(default=200, ge=1, le=65_535)
    """Messages delivered and not yet acknowledged at most: how many changes are in flight
    at once (a failing target holds at most this many)."""
    format: Literal["json", "text"] = "json"
    """``json``: the body is an object (its key at ``key_path``: a key or a list of keys),
    or a list of keys or of such objects. ``text``: the body is the key, or several keys
    one per line."""
    key_path: str = Field(default="key", min_length=1)
    """``json``: dotted path of the key in each object (``sku``, ``data.product.id``)."""
    changed_at_path: str | None = None
    """``json``: dotted path of when the source committed the change (epoch seconds, or ISO
    8601 text), for the latency figures; default the message's AMQP ``timestamp``."""
    heartbeat_s: Annotated[int, TRANSPORT] = Field(default=30, ge=0, le=3600)
    """AMQP heartbeat (seconds; 0: off): how fast a dead broker connection is noticed."""
    nack_delay_s: Annotated[float, TRANSPORT] = Field(default=1.0, ge=0, le=600)
    """A batch the targets did not take is requeued after this wait, doubling (with jitter)
    while batches keep failing, up to ``reconnect_max_delay_s``: a failing target does not
    spin."""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and _has_password(url):
            raise ValueError("holds a password: put it in password_env (or the URL in url_env)")
        if url is not None and not re.match(r"^amqps?://", url):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> RabbitFeedConfig:
        if self.url_env is not None:
            if self.password_env is not None:
                raise ValueError("password_env goes with url, not url_env")
        elif self.url is None:
            raise ValueError("give url or url_env")
        elif self.password_env is None and _has_user(self.url):
            raise ValueError("url names a user: give its password in password_env")
        if not self.declare and self.dead_letter_exchange is not None:
            raise ValueError(
                "dead_letter_exchange is set on a queue syncd declares (declare = true); "
                "for an existing queue use a broker policy"
            )
        if self.format == "text" and self.changed_at_path is not None:
            raise ValueError('changed_at_path needs format = "json"')
        return self
