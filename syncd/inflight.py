"""How many requests one target has in flight: at most its ``concurrency``, fewer while the
process itself, not the target, holds the push back (threads queueing for the GIL, each
waking every 5 ms to ask for it: at 256 threads and 50 ms latency ~40 context switches a
request and 1.7x the CPU per request of 96 threads, for less throughput; bench/push.py).
"""

from __future__ import annotations

import statistics


class InflightLimit:
    """Requests in flight at most ``limit``, between ``START`` (or ``concurrency``, when
    lower) and ``concurrency``: ``START`` at first, raised while the limit is reached and
    the calling thread's wake-up lag is short, lowered while that lag shows threads
    queueing for the interpreter. Read and adjusted by the executor's calling thread."""

    HIGH_LAG_S = 0.003
    """Median wake-up lag over a period above which the limit falls (by a tenth to a
    quarter, in proportion to how far above it the lag is)."""
    LOW_LAG_S = 0.00035
    """Median wake-up lag below which the limit rises (by an eighth). Measured at 50 ms
    latency on 2 cores: ~0.3-0.5 ms at 96 in flight (the fastest), 5 ms at 256."""
    PERIOD_S = 0.1
    """How often the limit may move, and the window its lag samples come from."""
    START = 64
    """The limit a run starts at, and its floor, when its concurrency is higher: 64
    threads waiting on 50 ms answers did not saturate the 2-core machine (bench/push.py),
    while 256 given out at once queued for the GIL before the first answer came back."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.floor = min(concurrency, self.START)
        """The limit never falls below ``START``: a loaded machine (or a CPU quota) delays
        every thread whatever the work, and 64 in flight still keep a target busy. At 64
        or fewer workers the limit is therefore the concurrency, as it always was."""
        self.limit = self.floor
        self._lags: list[float] = []
        self._period_start: float | None = None

    def observe(self, lag: float, now: float, busy: bool) -> None:
        """One wake-up ``lag`` of the calling thread at ``now`` (seconds, perf counter).
        ``busy``: the limit was reached at the time (a limit not reached can't be what
        holds throughput back, so lags seen below it move nothing)."""
        if self._period_start is None:
            self._period_start = now
        if busy:
            self._lags.append(lag)
        if now - self._period_start < self.PERIOD_S:
            return
        lags, self._lags, self._period_start = self._lags, [], now
        if len(lags) >= 3:
            self.limit = self._next_limit(statistics.median(lags))

    def _next_limit(self, lag: float) -> int:
        if lag > self.HIGH_LAG_S:
            factor = min(0.9, max(0.75, self.HIGH_LAG_S / lag))
            return max(self.floor, min(self.limit - 1, int(self.limit * factor)))
        if lag < self.LOW_LAG_S:
            return min(self.concurrency, self.limit + max(1, self.limit // 8))
        return self.limit
