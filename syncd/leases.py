"""One writer per target: a lease in the state database, renewed while a run lasts.

A lease outlives a holder that died by at most its TTL; a holder that can no longer
renew sets the run's stop event, so it stops sending before another process takes over.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import structlog

from syncd.state.base import StateStore

log = structlog.get_logger("syncd.lease")


def holder_id() -> str:
    """Who holds a lease: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    """Holds the targets' leases and renews them in the background while a run lasts."""

    def __init__(self, store: StateStore, holder: str, ttl: float, lost: threading.Event) -> None:
        self._store = store
        self._holder = holder
        self._ttl = ttl
        self._lost = lost
        self._targets: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="syncd-lease", daemon=True)

    def acquire(self, target: str) -> bool:
        if self._store.acquire_lease(target, self._holder, self._ttl, time.time()):
            self._targets.append(target)
            return True
        return False

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        for target in self._targets:
            try:
                self._store.release_lease(target, self._holder)
            except Exception:
                log.warning("syncd.lease.release_failed", target=target)

    def _renew(self) -> None:
        while not self._done.wait(self._ttl / 3):
            for target in list(self._targets):
                try:
                    held = self._store.renew_lease(target, self._holder, self._ttl, time.time())
                except Exception:
                    held = False
                if not held:
                    log.error("syncd.lease.lost", target=target)
                    self._lost.set()
