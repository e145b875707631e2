"""One retry policy for the executor, the HTTP source's pages and Vambe's block read."""

from __future__ import annotations

import pytest

from syncd.config import HttpConfig, HttpSourceConfig, VambeTargetConfig
from syncd.errors import TargetFatalError
from syncd.retry import RetryPolicy
from syncd.sandbox import FakeVambe, Fault
from syncd.sources.http import page_policy
from syncd.targets.vambe import VambeTarget


class FixedRandom:
    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.fraction


@pytest.mark.parametrize(
    ("growth", "attempt", "expected"), [("exponential", 3, 4.0), ("linear", 3, 3.0)]
)
def test_the_backoff_grows_as_the_policy_says(growth, attempt, expected):
    policy = RetryPolicy(5, 1.0, 60.0, growth=growth, jitter=False)
    assert policy.delay(attempt) == expected


def test_equal_jitter_keeps_half_of_the_backoff_fixed():
    policy = RetryPolicy(5, 2.0, 60.0)
    assert policy.delay(1, rng=FixedRandom(0.0)) == 1.0
    assert policy.delay(1, rng=FixedRandom(1.0)) == 2.0


def test_retry_after_floors_the_wait_and_its_own_cap_bounds_it():
    policy = RetryPolicy(5, 1.0, 30.0, max_retry_after_s=300.0)
    assert policy.delay(1, retry_after=0.0, rng=FixedRandom(1.0)) == 1.0, "no hot loop"
    assert policy.delay(1, retry_after=120.0) == 120.0
    assert policy.delay(1, retry_after=900.0) == 300.0
    assert policy.honours(300.0) and not policy.honours(300.5)


def test_an_http_source_page_waits_at_least_its_backoff_when_retry_after_is_zero():
    policy = page_policy(HttpSourceConfig(kind="http", url="https://shop.test/p"))
    assert policy.max_attempts == 4
    assert 0.25 <= policy.delay(1, retry_after=0.0) <= 0.5
    assert policy.delay(1, retry_after=400.0) == 300.0


def test_vambe_reads_its_blocks_three_times_waiting_through_the_injected_sleep():
    slept: list[float] = []
    with FakeVambe(api_key="k-123456") as fake:
        block = fake.add_block(name="catalog")
        config = VambeTargetConfig(
            kind="vambe", name="vb", api_key_env="VB", block_id=block, base_url=fake.url
        )
        target = VambeTarget(
            config, HttpConfig(), api_key="k-123456", inspect_retry_delay_s=1.5, sleep=slept.append
        )
        fake.inject(Fault(status=503, times=None))
        with pytest.raises(TargetFatalError, match=r"\(3 tries\)"):
            target.inspect()
        target.close()
    assert slept == [1.5, 3.0]
