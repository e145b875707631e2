"""The in-flight limit: where it starts, when it falls and rises, and its bounds."""

from __future__ import annotations

from syncd.inflight import InflightLimit

SLOW = 0.010
"""A wake-up lag well above ``HIGH_LAG_S``: threads queue for the interpreter."""
FAST = 0.0001
"""A lag well below ``LOW_LAG_S``: the calling thread runs as soon as it is woken."""


CLOCK = [0.0]


def feed(limit: InflightLimit, lag: float, periods: int, *, busy: bool = True) -> None:
    """``periods`` periods of ten wake-ups each at ``lag``, on a clock that only goes on."""
    for _ in range(periods * 10):
        CLOCK[0] += limit.PERIOD_S / 10 + 1e-6
        limit.observe(lag, CLOCK[0], busy)


def test_a_high_concurrency_starts_at_64_and_a_low_one_at_itself():
    assert InflightLimit(256).limit == 64
    assert InflightLimit(64).limit == 64
    assert InflightLimit(16).limit == 16
    assert InflightLimit(1).limit == 1


def test_the_limit_falls_while_the_calling_thread_waits_long_to_run_but_not_below_64():
    limit = InflightLimit(256)
    feed(limit, FAST, 20)  # up to the concurrency first
    assert limit.limit == 256
    feed(limit, SLOW, 2)
    assert 144 <= limit.limit < 256  # a quarter at most a period
    feed(limit, SLOW, 50)
    assert limit.limit == 64
    wide = InflightLimit(1024)
    feed(wide, SLOW, 50)
    assert wide.limit == 64


def test_the_limit_rises_back_to_the_concurrency_and_never_above_when_lags_are_short():
    limit = InflightLimit(256)
    feed(limit, FAST, 3)
    assert 64 < limit.limit < 256  # an eighth a period, not all at once
    feed(limit, FAST, 50)
    assert limit.limit == 256


def test_at_64_workers_or_fewer_the_limit_is_the_concurrency_whatever_the_lags():
    for concurrency in (1, 16, 64):
        limit = InflightLimit(concurrency)
        feed(limit, SLOW, 20)
        assert limit.limit == concurrency
        feed(limit, FAST, 20)
        assert limit.limit == concurrency


def test_lags_seen_below_the_limit_move_nothing():
    """A push the source can't keep fed, or a tail, says nothing about the limit."""
    limit = InflightLimit(256)
    feed(limit, FAST, 20, busy=False)
    feed(limit, SLOW, 20, busy=False)
    assert limit.limit == 64


def test_a_lag_between_the_thresholds_keeps_the_limit():
    limit = InflightLimit(256)
    feed(limit, (limit.LOW_LAG_S + limit.HIGH_LAG_S) / 2, 20)
    assert limit.limit == 64


def test_a_period_with_too_few_wake_ups_moves_nothing():
    limit = InflightLimit(256)
    limit.observe(SLOW, 0.0, True)
    limit.observe(SLOW, 1.0, True)  # a period over, with two lags in it
    limit.observe(SLOW, 2.0, True)
    assert limit.limit == 64
