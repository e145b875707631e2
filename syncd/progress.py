"""How far each target's sending has got: done / total, rate and an ETA, per target.

A ``RunProgress`` is written by the run (``begin`` when a target starts sending, ``advance``
on each acknowledgement) and read by whoever shows it: the TTY line and the /metrics gauges.
Thread-safe; no I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TargetProgress:
    """One target's sending so far."""

    target: str
    done: int
    """Products settled (acknowledged, refused or given up on)."""
    total: int
    """Products the target's plan sends (so far, while ``planning``)."""
    elapsed_s: float
    planning: bool = False
    """The read goes on: ``total`` grows as more is planned (the ETA is a floor)."""

    @property
    def rate(self) -> float:
        """Products per second since the target started sending."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None: no rate yet); 0 when done."""
        if self.done >= self.total:
            return 0.0
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        """``uf: 1200/5000 products, 20.0/s, about 3m10s left``."""
        eta = self.eta_s
        left = "ETA unknown" if eta is None else f"about {_duration(eta)} left"
        if self.planning:
            # the total is what the read has planned so far
            floor = "ETA unknown" if eta is None else f"at least {_duration(eta)} left"
            left = f"still reading, {floor}"
        return f"{self.target}: {self.done}/{self.total} products, {self.rate:.1f}/s, {left}"


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class RunProgress:
    """Every target's ``TargetProgress`` during a run (the last run's, after it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._targets: dict[str, tuple[int, int, float]] = {}
        """target -> (done, total, started)."""
        self._planning: set[str] = set()
        """Targets whose total still grows (their read goes on)."""

    def begin(self, target: str, total: int, *, planning: bool = False) -> None:
        """``target`` starts sending ``total`` products (``planning``: so far; more are
        added with ``planned`` until ``planned_all``)."""
        with self._lock:
            self._targets[target] = (0, total, self._clock())
            if planning:
                self._planning.add(target)
            else:
                self._planning.discard(target)

    def planned(self, target: str, products: int) -> None:
        """``products`` more to send (planned while the read goes on)."""
        with self._lock:
            done, total, started = self._targets.get(target, (0, 0, self._clock()))
            self._targets[target] = (done, total + products, started)

    def planned_all(self, target: str) -> None:
        """The target's total is final."""
        with self._lock:
            self._planning.discard(target)

    def advance(self, target: str, products: int) -> None:
        with self._lock:
            done, total, started = self._targets.get(target, (0, 0, self._clock()))
            self._targets[target] = (done + products, total, started)

    def snapshot(self) -> list[TargetProgress]:
        now = self._clock()
        with self._lock:
            return [
                TargetProgress(name, done, total, now - started, name in self._planning)
                for name, (done, total, started) in sorted(self._targets.items())
            ]
