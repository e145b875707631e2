"""One retry policy: how many tries, how long to wait before the next one (exponential or
linear back-off with equal jitter, floored by the server's ``Retry-After``, capped), and
the sleep that waits, injectable so no test sleeps for real.

Each caller keeps its own loop and limits: the executor (``[targets.retry]``), the HTTP
source (per page), Vambe's block inspection and the alert webhooks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from syncd.config import RetryConfig

Sleep = Callable[[float], None]
"""Waits this many seconds (``time.sleep``; a test passes one that records)."""


def real_sleep(seconds: float) -> None:
    """``time.sleep``, looked up when called (so a test's monkeypatch of it applies)."""
    time.sleep(seconds)


class Uniform(Protocol):
    """What the jitter needs of a random generator (``random.Random``)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Tries and waits of one kind of request."""

    max_attempts: int
    """Tries, the first included."""
    initial_delay_s: float
    """The first back-off; it doubles (``exponential``) or grows by itself (``linear``)."""
    max_delay_s: float
    """Longest back-off."""
    growth: Literal["exponential", "linear"] = "exponential"
    jitter: bool = True
    """Equal jitter: half of each back-off fixed, half random (tries spread out)."""
    max_retry_after_s: float | None = None
    """Longest ``Retry-After`` honoured (default ``max_delay_s``): a longer one is waited
    for only this long, or not at all where the caller checks ``honours``."""

    def backoff(self, attempt: int, rng: Uniform | None = None) -> float:
        """The back-off after try ``attempt`` (1 the first), jittered, not capped."""
        if self.growth == "exponential":
            base = self.initial_delay_s * (2 ** (attempt - 1))
        else:
            base = self.initial_delay_s * attempt
        if not self.jitter:
            return float(base)
        return float(base / 2 + (rng or random).uniform(0, base / 2))

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: Uniform | None = None
    ) -> float:
        """The wait before try ``attempt + 1``: the back-off, at least the server's
        ``Retry-After`` (so ``Retry-After: 0`` can't cause a hot loop), capped."""
        backoff = self.backoff(attempt, rng)
        if retry_after is None:
            return float(min(self.max_delay_s, backoff))
        return float(min(self.retry_after_cap, max(retry_after, backoff)))

    @property
    def retry_after_cap(self) -> float:
        return self.max_delay_s if self.max_retry_after_s is None else self.max_retry_after_s

    def honours(self, retry_after: float | None) -> bool:
        """Whether a ``Retry-After`` is short enough to wait for (else: give up for now)."""
        return retry_after is None or retry_after <= self.retry_after_cap

    def retries_after(self, attempt: int) -> bool:
        """Whether try ``attempt`` failing leaves another try."""
        return attempt < self.max_attempts


def target_policy(config: RetryConfig) -> RetryPolicy:
    """The policy of a target's requests, from its ``retry`` table."""
    return RetryPolicy(
        max_attempts=config.max_attempts,
        initial_delay_s=config.initial_delay_s,
        max_delay_s=config.max_delay_s,
    )
