"""Building the configured change feeds from their ``[[feeds]]`` tables."""

from __future__ import annotations

from collections.abc import Mapping

from syncd.config import SyncdConfig, WebhookFeedConfig
from syncd.feeds.base import ChangeFeed
from syncd.feeds.webhook import WebhookFeed


def build_feeds(config: SyncdConfig, environ: Mapping[str, str] | None = None) -> list[ChangeFeed]:
    """One feed per ``[[feeds]]`` table, in order (``ConfigError`` for a missing secret)."""
    feeds: list[ChangeFeed] = []
    for index, feed in enumerate(config.feeds):
        if isinstance(feed, WebhookFeedConfig):
            feeds.append(WebhookFeed(feed, index, environ=environ))
        else:  # pragma: no cover - every kind of the union is handled above
            raise TypeError(f"feeds[{index}]: unknown feed kind {feed.kind!r}")
    return feeds
