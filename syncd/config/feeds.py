"""Change-feed config: the ``[[feeds]]`` tables (kind ``webhook`` here; ``postgres`` and
``rabbitmq`` in ``syncd.config.feeds_more``; all three in the ``FeedConfig`` union) and the
``[feed_sync]`` table saying how the events of every feed are coalesced and guarded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from syncd.config.base import SECRET, _Model
from syncd.config.feeds_more import PostgresFeedConfig, RabbitFeedConfig
from syncd.errors import ConfigProblem


class WebhookFeedConfig(_Model):
    """``POST /feeds/<name>`` on the daemon's listener with ``{"keys": [...]}``."""

    kind: Literal["webhook"]
    """The feed's kind: ``webhook``."""
    name: str = Field(default="webhook", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The feed's name: its URL path (``/feeds/<name>``), its label in metrics and status."""
    token_env: Annotated[str, SECRET]
    """Environment variable holding the bearer token callers must send
    (``Authorization: Bearer <token>``); never logged."""
    max_body_bytes: int = Field(default=1_000_000, ge=64)
    """A larger request body is refused with 413 before it is read."""
    max_keys: int = Field(default=10_000, ge=1)
    """A request naming more keys is refused with 413."""
    wait_timeout_s: float = Field(default=30.0, gt=0)
    """With ``?wait=1``: how long the request waits for the push before answering 503."""


FeedConfig = Annotated[
    WebhookFeedConfig | PostgresFeedConfig | RabbitFeedConfig, Field(discriminator="kind")
]
"""One ``[[feeds]]`` table, by its ``kind``."""


class FeedSyncConfig(_Model):
    """How the keys every feed names are synced (the ``[feed_sync]`` table)."""

    coalesce_s: float = Field(default=0.3, ge=0, le=60)
    """Events for the same key within this window (seconds, from the first event waiting)
    become one targeted read and push."""
    max_batch: int = Field(default=500, ge=1)
    """Keys read and pushed at most per targeted sync; more wait for the next one."""
    delete_window_s: float = Field(default=3600.0, gt=0)
    """The sliding window (seconds) over which the deletes the feeds sent count against each
    target's ``guards`` (``max_delete_fraction`` of the target's products,
    ``max_delete_count``): a burst of feed deletes past them is held for the scheduled run."""
    retry_locked_s: float = Field(default=1.0, gt=0)
    """A target leased by another replica's run: the keys are tried again after this long
    (until they get through, or the scheduled reconcile carries them)."""


def feed_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """Problems of ``[[feeds]]`` against the rest of a parsed document: a feed needs a
    source that can read products by key, and feed names must be unique."""
    feeds = data.get("feeds")
    if not isinstance(feeds, list) or not feeds:
        return []
    problems: list[ConfigProblem] = []
    source = data.get("source")
    source = source if isinstance(source, Mapping) else {}
    kind = source.get("kind")
    why: str | None = None
    if kind == "file":
        why = (
            "a file source has no targeted read (a feed names keys; a file can only be read "
            "whole): use a sql or http source, or remove [[feeds]] and rely on the schedule"
        )
    elif kind == "http" and not source.get("item_url"):
        why = "an http source reads products by key through source.item_url: set it"
    elif kind == "sql" and "." in str(source.get("key", "id")):
        why = (
            f"source.key {source.get('key')!r} is a path inside a column: a targeted read "
            "needs a column of the query"
        )
    if why is not None:
        problems.append(ConfigProblem("feeds", why))
    targets = data.get("targets")
    for index, target in enumerate(targets if isinstance(targets, list) else []):
        mapping = target.get("mapping") if isinstance(target, Mapping) else None
        if isinstance(mapping, Mapping) and mapping.get("key") is not None:
            problems.append(
                ConfigProblem(
                    f"targets[{index}].mapping.key",
                    "a change feed names products by the source's key: with [[feeds]], a "
                    "target's products must be keyed by it (remove mapping.key)",
                )
            )
    for index, feed in enumerate(feeds):
        if (
            isinstance(feed, Mapping)
            and feed.get("kind") == "postgres"
            and feed.get("url") is None
            and feed.get("url_env") is None
            and kind != "sql"
        ):
            problems.append(
                ConfigProblem(
                    f"feeds[{index}]",
                    "a postgres feed without url listens on the source's database, but the "
                    "source is not sql: give url (or url_env)",
                )
            )
    seen: dict[str, int] = {}
    for index, feed in enumerate(feeds):
        if not isinstance(feed, Mapping):
            continue
        name = feed.get("name", feed.get("kind"))
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(
                ConfigProblem(
                    f"feeds[{index}].name",
                    f"duplicate feed name {name!r} (also feeds[{seen[name]}])",
                )
            )
        seen.setdefault(name, index)
    return problems
