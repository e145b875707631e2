"""Building the configured change feeds from their ``[[feeds]]`` tables.

The webhook feed is built here; the other kinds (the database and broker feeds) by
``syncd.feeds.registry_more.build_more`` when that module is present.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from syncd.config import SyncdConfig, WebhookFeedConfig
from syncd.feeds.base import ChangeFeed
from syncd.feeds.webhook import WebhookFeed


def _more() -> Callable[[Any], ChangeFeed | None] | None:
    try:
        module = importlib.import_module("syncd.feeds.registry_more")
    except ModuleNotFoundError:
        return None
    build: Callable[[Any], ChangeFeed | None] = module.build_more
    return build


def build_feeds(config: SyncdConfig, environ: Mapping[str, str] | None = None) -> list[ChangeFeed]:
    """One feed per ``[[feeds]]`` table, in order (``ConfigError`` for a missing secret)."""
    feeds: list[ChangeFeed] = []
    for index, feed in enumerate(config.feeds):
        if isinstance(feed, WebhookFeedConfig):
            feeds.append(WebhookFeed(feed, index, environ=environ))
            continue
        more = _more()
        built = more(feed) if more is not None else None
        if built is None:
            raise TypeError(f"feeds[{index}]: no feed of kind {feed.kind!r} is built in")
        feeds.append(built)
    return feeds
