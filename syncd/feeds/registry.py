"""Building the configured change feeds from their ``[[feeds]]`` tables.

The webhook feed is built here; the database and broker feeds (``postgres``, ``rabbitmq``)
by ``syncd.feeds.registry_more.build_more``.
"""

from __future__ import annotations

from collections.abc import Mapping

from syncd.config import SyncdConfig, WebhookFeedConfig
from syncd.feeds.base import ChangeFeed
from syncd.feeds.registry_more import build_more
from syncd.feeds.webhook import WebhookFeed


def build_feeds(config: SyncdConfig, environ: Mapping[str, str] | None = None) -> list[ChangeFeed]:
    """One feed per ``[[feeds]]`` table, in order (``ConfigError`` for a missing secret)."""
    feeds: list[ChangeFeed] = []
    for index, feed in enumerate(config.feeds):
        if isinstance(feed, WebhookFeedConfig):
            feeds.append(WebhookFeed(feed, index, environ=environ))
            continue
        built = build_more(feed, config.source, environ=environ, where=f"feeds[{index}]")
        if built is None:
            raise TypeError(f"feeds[{index}]: no feed of kind {feed.kind!r} is built in")
        feeds.append(built)
    return feeds
