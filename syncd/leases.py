"""Who runs a target: a lease per target, and the replicas' heartbeat that shares them out.

A lease outlives a holder that died by at most its TTL; a holder that can no longer
renew sets the run's stop event, so it stops sending before another process takes over.
Expiry is judged on the state database's clock, never a process's own, so replicas
with skewed clocks agree. ``assign_targets`` divides the targets between the live
replicas, each renewing a heartbeat row (``ReplicaHeartbeat``) while it lives.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Sequence

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
        if self._store.acquire_lease(target, self._holder, self._ttl):
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
                    held = self._store.renew_lease(target, self._holder, self._ttl)
                except Exception:
                    held = False
                if not held:
                    log.error("syncd.lease.lost", target=target)
                    self._lost.set()


# -- sharing the targets between replicas -----------------------------------------------


def _score(replica: str, target: str) -> bytes:
    return hashlib.blake2b(f"{replica}\0{target}".encode(), digest_size=8).digest()


def assign_targets(targets: Sequence[str], replicas: Collection[str]) -> dict[str, str]:
    """Target -> the replica that runs it: every replica computes the same answer from the
    same set of live replicas, whatever order it lists them in.

    Each target goes to the replica that ranks it highest (rendezvous hashing of the two
    names) among those not yet holding a fair share, ``ceil(targets / replicas)``: the
    work is spread evenly, and a replica joining or leaving moves few targets.
    """
    if not replicas:
        return {}
    share = math.ceil(len(targets) / len(replicas))
    load = dict.fromkeys(sorted(replicas), 0)
    out: dict[str, str] = {}
    for target in sorted(set(targets)):
        ranked = sorted(load, key=lambda replica: _score(replica, target), reverse=True)
        chosen = next(replica for replica in ranked if load[replica] < share)
        load[chosen] += 1
        out[target] = chosen
    return out


BeatListener = Callable[[tuple[str, ...], tuple[str, ...]], None]
"""Called after every heartbeat with the live replicas before and after it."""


class ReplicaHeartbeat:
    """This replica's row in the state database, renewed every ``ttl / 4`` seconds.

    A replica that stops renewing (killed, frozen, cut off from the database) drops out
    of every other replica's view at most ``ttl`` after its last heartbeat; one that
    stops cleanly removes its row at once.
    """

    def __init__(
        self, store: StateStore, replica: str, ttl: float, listener: BeatListener | None = None
    ) -> None:
        self.replica = replica
        self._store = store
        self._ttl = ttl
        self._listener = listener
        self._live: tuple[str, ...] = (replica,)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="syncd-heartbeat", daemon=True)

    @property
    def live(self) -> tuple[str, ...]:
        """The live replicas at the last heartbeat, this one always among them."""
        return self._live

    def beat(self) -> tuple[str, ...]:
        """Renew this replica's row now and return the live replicas (on a database error:
        the last known ones)."""
        with self._lock:
            before = self._live
            try:
                found = self._store.beat_replica(self.replica, self._ttl)
            except Exception as exc:
                log.warning("syncd.replica.heartbeat_failed", replica=self.replica, error=str(exc))
                return before
            after = tuple(sorted({*found, self.replica}))
            self._live = after
        if after != before:
            log.info(
                "syncd.replica.view_changed",
                replica=self.replica,
                live=len(after),
                joined=",".join(sorted(set(after) - set(before))),
                left=",".join(sorted(set(before) - set(after))),
            )
        if self._listener is not None:
            self._listener(before, after)
        return after

    def start(self) -> ReplicaHeartbeat:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing and remove this replica's row (the others take its targets)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self._store.leave_replica(self.replica)
        except Exception as exc:
            log.warning("syncd.replica.leave_failed", replica=self.replica, error=str(exc))

    def _loop(self) -> None:
        while not self._done.wait(self._ttl / 4):
            try:
                self.beat()
            except Exception:  # a listener's bug must not stop the heartbeat
                log.exception("syncd.replica.listener_failed", replica=self.replica)
