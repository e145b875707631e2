"""Change feeds: what tells syncd which products changed, between scheduled runs.

``base`` holds the interface every feed keeps to; ``targeted`` reads just the named keys
and pushes them through the same run machinery; ``syncer`` coalesces the feeds' events
and runs targeted syncs one at a time; ``webhook`` is the HTTP feed on the daemon's
listener; ``registry`` builds the configured feeds.
"""

from __future__ import annotations

from syncd.feeds.base import ChangeFeed, Done, FeedSink, FeedStatus, KeyEvent

__all__ = ["ChangeFeed", "Done", "FeedSink", "FeedStatus", "KeyEvent"]
