"""The executor: retries and back-off, the budget, the rate limit, concurrency, splitting
refused batches, fatal errors and shutdown; with a fake clock that never really sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import pytest

from syncd import executor as executor_module
from syncd.config import RetryConfig
from syncd.diff import Change, ChangeKind, Operation
from syncd.errors import TargetFatalError, TargetRejectedError, TargetRetriableError
from syncd.executor import Execution, Executor, RateLimiter, backoff_delay
from syncd.model import Document

# -- fakes ------------------------------------------------------------------------------


START = 1e9
"""Far past the machine's real monotonic time: the grace period must not read this clock."""


class FakeClock:
    """Monotonic time that only moves when someone sleeps; nobody really sleeps."""

    def __init__(self, start: float = START, on_sleep: Callable[[float], None] | None = None):
        self.now = start
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
        if self._on_sleep is not None:
            self._on_sleep(seconds)


Respond = Callable[[Operation, int], BaseException | None]
"""``respond(operation, attempt) -> error to raise, or None to acknowledge``."""


class FakeSender:
    """An in-memory target: records every send, answers from ``respond``, halves on split."""

    name = "fake"

    def __init__(
        self,
        respond: Respond | None = None,
        *,
        clock: FakeClock | None = None,
        hold_s: float = 0.0,
        splittable: bool = True,
    ):
        self._respond = respond or (lambda operation, attempt: None)
        self._clock = clock
        self._hold_s = hold_s
        self._splittable = splittable
        self._lock = threading.Lock()
        self.sent: list[tuple[str, ...]] = []
        self.times: list[float] = []
        self.attempts: dict[tuple[str, ...], int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.splits: list[tuple[str, ...]] = []

    def send(self, operation: Operation) -> None:
        with self._lock:
            self.sent.append(operation.keys)
            if self._clock is not None:
                self.times.append(self._clock.monotonic())
            attempt = self.attempts[operation.keys] = self.attempts.get(operation.keys, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._hold_s:
                time.sleep(self._hold_s)
            error = self._respond(operation, attempt)
            if error is not None:
                raise error
        finally:
            with self._lock:
                self.in_flight -= 1

    def split(self, operation: Operation) -> tuple[Operation, ...] | None:
        self.splits.append(operation.keys)
        if not self._splittable or len(operation.changes) < 2:
            return None
        middle = len(operation.changes) // 2
        return (
            Operation(operation.endpoint, operation.mode, "split", operation.changes[:middle]),
            Operation(operation.endpoint, operation.mode, "split", operation.changes[middle:]),
        )


class Recorder:
    """``on_ack`` and ``flush``, in the order they were called."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, ...]] = []
        self.calls: list[str] = []

    def on_ack(self, operation: Operation) -> None:
        self.acked.append(operation.keys)
        self.calls.append("ack")

    def flush(self) -> None:
        self.calls.append("flush")

    @property
    def acked_keys(self) -> list[str]:
        return [key for keys in self.acked for key in keys]


def op(*keys: str, kind: ChangeKind = ChangeKind.CREATE) -> Operation:
    changes = tuple(
        Change(kind, key, None if kind is ChangeKind.DELETE else Document.of(key, {"k": key}))
        for key in keys
    )
    return Operation("block.create", "create", "test", changes)


def ops(count: int) -> tuple[Operation, ...]:
    return tuple(op(f"k{i}") for i in range(count))


def retriable(status: int = 503, retry_after: float | None = None) -> TargetRetriableError:
    return TargetRetriableError(f"HTTP {status}", status=status, retry_after=retry_after)


RETRY = RetryConfig(max_attempts=4, initial_delay_s=0.5, max_delay_s=60, budget_s=900)


def execute(
    sender: FakeSender,
    operations: Iterable[Operation],
    *,
    clock: FakeClock | None = None,
    recorder: Recorder | None = None,
    retry: RetryConfig = RETRY,
    concurrency: int = 1,
    rate_limit_per_s: float = 0.0,
    **options: object,
) -> tuple[Execution, Recorder, FakeClock]:
    clock = clock or FakeClock()
    recorder = recorder or Recorder()
    runner = Executor(
        sender,
        concurrency=concurrency,
        rate_limit_per_s=rate_limit_per_s,
        retry=retry,
        clock=clock,
        seed=7,
        **options,  # type: ignore[arg-type]
    )
    result = runner.run(operations, recorder.on_ack, recorder.flush)
    return result, recorder, clock


# -- the happy path ---------------------------------------------------------------------


def test_every_acknowledged_operation_is_acked_counted_and_flushed():
    sender = FakeSender()
    operations = (op("a", "b"), op("c"), op("d", kind=ChangeKind.DELETE))

    result, recorder, clock = execute(sender, operations, concurrency=3)

    assert sorted(recorder.acked) == [("a", "b"), ("c",), ("d",)]
    assert result.acked == {"create": 3, "delete": 1}
    assert (result.requests, result.retries, result.failed, result.not_sent) == (3, 0, 0, 0)
    assert result.rejections == []
    assert result.fatal is None
    assert not result.interrupted
    assert recorder.calls[-1] == "flush"
    assert clock.sleeps == []


def test_flush_runs_every_flush_every_acked_products():
    result, recorder, _ = execute(FakeSender(), ops(5), flush_every=2)

    assert result.acked == {"create": 5}
    assert recorder.calls.count("flush") >= 2
    assert recorder.calls[0] == "ack"
    assert recorder.calls[-1] == "flush"
    assert recorder.calls.index("flush") >= 2, "flushed once at least flush_every were acked"


def test_an_empty_plan_sends_nothing_and_still_flushes():
    sender = FakeSender()

    result, recorder, _ = execute(sender, ())

    assert sender.sent == []
    assert recorder.calls == ["flush"]
    assert result.requests == 0


# -- retries ----------------------------------------------------------------------------


def test_a_retriable_failure_is_retried_with_growing_backoff_until_max_attempts_then_failed():
    sender = FakeSender(lambda operation, attempt: retriable(503))

    result, recorder, clock = execute(sender, (op("a", "b"),))

    assert sender.sent == [("a", "b")] * 4
    assert len(clock.sleeps) == 3
    for attempt, delay in enumerate(clock.sleeps, start=1):
        base = 0.5 * 2 ** (attempt - 1)
        assert base / 2 <= delay <= base
    assert result.failed == 2
    assert (result.requests, result.retries) == (4, 3)
    assert "503" in (result.last_error or "")
    assert recorder.acked == [], "never acked without a 2xx"
    assert result.acked == {}


def test_a_request_that_succeeds_on_retry_is_acked_once():
    sender = FakeSender(lambda operation, attempt: retriable(500) if attempt < 3 else None)

    result, recorder, clock = execute(sender, (op("a"),))

    assert recorder.acked == [("a",)]
    assert (result.requests, result.retries, result.failed) == (3, 2, 0)
    assert len(clock.sleeps) == 2


def test_retry_after_is_honoured_as_a_floor():
    sender = FakeSender(lambda operation, attempt: retriable(429, 7.0) if attempt == 1 else None)

    _, recorder, clock = execute(sender, (op("a"),))

    assert clock.sleeps == [7.0]
    assert recorder.acked == [("a",)]


def test_retry_after_zero_still_backs_off_so_there_is_no_hot_loop():
    sender = FakeSender(lambda operation, attempt: retriable(429, 0.0))

    result, _, clock = execute(sender, (op("a"),))

    assert len(sender.sent) == RETRY.max_attempts
    assert len(clock.sleeps) == RETRY.max_attempts - 1
    assert all(delay > 0 for delay in clock.sleeps)
    assert sum(clock.sleeps) > 0
    assert result.failed == 1


def test_retry_after_longer_than_max_delay_leaves_the_request_for_the_next_run():
    retry = RetryConfig(max_attempts=2, initial_delay_s=0.5, max_delay_s=30, budget_s=900)
    sender = FakeSender(lambda operation, attempt: retriable(503, 3600.0))

    result, _, clock = execute(sender, (op("a"),), retry=retry)

    assert clock.sleeps == []
    assert result.requests == 1 and result.failed == 1


def test_the_retry_budget_stops_retrying_and_leaves_the_rest_for_next_run():
    retry = RetryConfig(max_attempts=50, initial_delay_s=1.0, max_delay_s=60, budget_s=5)
    sender = FakeSender(lambda operation, attempt: retriable(503))

    result, recorder, clock = execute(sender, (op("a"), op("b")), retry=retry)

    assert sum(clock.sleeps) <= 5
    assert len(sender.sent) < 10
    assert result.failed == 1, "the operation whose retry the budget refused"
    assert result.not_sent == 1, "the target is failing: the next one is not even tried"
    assert result.exhausted
    assert "retry budget" in (result.last_error or "")
    assert recorder.acked == []


def test_an_exhausted_budget_means_no_retry_at_all():
    retry = RetryConfig(max_attempts=5, initial_delay_s=1.0, max_delay_s=60, budget_s=0)
    sender = FakeSender(lambda operation, attempt: retriable(503))

    result, _, clock = execute(sender, (op("a"),), retry=retry)

    assert sender.sent == [("a",)]
    assert clock.sleeps == []
    assert result.failed == 1


def test_an_unexpected_exception_counts_as_failed_not_acked():
    sender = FakeSender(lambda operation, attempt: RuntimeError("bug in adapter"))

    result, recorder, _ = execute(sender, (op("a"), op("b")))

    assert result.failed == 2
    assert "bug in adapter" in (result.last_error or "")
    assert recorder.acked == []


# -- backoff_delay ----------------------------------------------------------------------


class FixedRandom:
    """``uniform`` returns the given fraction of its range."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.fraction


@pytest.mark.parametrize(
    ("attempt", "retry_after", "fraction", "initial", "cap", "expected"),
    [
        (1, None, 0.0, 1.0, 60, 0.5),
        (1, None, 1.0, 1.0, 60, 1.0),
        (2, None, 1.0, 1.0, 60, 2.0),
        (3, None, 0.5, 1.0, 60, 3.0),
        (4, None, 1.0, 1.0, 60, 8.0),
        (10, None, 1.0, 1.0, 60, 60.0),
        (1, 5.0, 0.0, 1.0, 60, 5.0),
        (1, 0.0, 0.0, 1.0, 60, 0.5),
        (3, 1.0, 1.0, 1.0, 60, 4.0),
        (1, 120.0, 1.0, 1.0, 60, 60.0),
        (1, None, 1.0, 0.0, 60, 0.0),
    ],
)
def test_backoff_delay_is_exponential_with_jitter_floored_by_retry_after_and_capped(
    attempt, retry_after, fraction, initial, cap, expected
):
    policy = RetryConfig(initial_delay_s=initial, max_delay_s=cap)

    delay = backoff_delay(attempt, retry_after, policy, FixedRandom(fraction))  # type: ignore[arg-type]

    assert delay == pytest.approx(expected)


# -- rate limit -------------------------------------------------------------------------


def test_requests_are_spaced_by_the_rate_limit():
    clock = FakeClock()
    sender = FakeSender(clock=clock)

    execute(sender, ops(5), clock=clock, rate_limit_per_s=10)

    gaps = [later - earlier for earlier, later in zip(sender.times, sender.times[1:], strict=False)]
    assert sender.times[0] == START
    assert gaps == [pytest.approx(0.1)] * 4


def test_no_request_starts_after_the_deadline_and_the_rest_is_left_for_the_next_run():
    clock = FakeClock()
    sender = FakeSender(clock=clock)

    result, _, _ = execute(sender, ops(10), clock=clock, rate_limit_per_s=10, deadline=START + 0.35)

    assert all(t <= START + 0.35 for t in sender.times)
    assert len(sender.times) == 4  # at 0, 0.1, 0.2 and 0.3 s
    assert result.acked["create"] == 4
    assert result.not_sent == 6 and result.failed == 0
    assert result.out_of_time and not result.interrupted


def test_a_deadline_not_reached_changes_nothing():
    clock = FakeClock()

    result, _, _ = execute(
        FakeSender(clock=clock), ops(5), clock=clock, rate_limit_per_s=10, deadline=START + 60
    )

    assert result.acked["create"] == 5 and not result.out_of_time


def test_a_zero_rate_limit_does_not_wait():
    clock = FakeClock()

    execute(FakeSender(clock=clock), ops(5), clock=clock, rate_limit_per_s=0)

    assert clock.sleeps == []


def test_a_paused_rate_limiter_holds_the_next_request_back():
    clock = FakeClock(start=100.0)
    limiter = RateLimiter(0, clock)
    stop = threading.Event()

    limiter.pause(4.0)
    limiter.acquire(stop)
    limiter.acquire(stop)

    assert clock.sleeps == [4.0]
    assert clock.now == 104.0


class RecordingLimiter(RateLimiter):
    pauses: list[float] = []

    def pause(self, seconds: float) -> None:
        RecordingLimiter.pauses.append(seconds)
        super().pause(seconds)


@pytest.mark.parametrize(("status", "paused"), [(429, True), (503, False)])
def test_a_429_pauses_the_rate_limiter_for_every_worker(monkeypatch, status, paused):
    monkeypatch.setattr(executor_module, "RateLimiter", RecordingLimiter)
    monkeypatch.setattr(RecordingLimiter, "pauses", [])
    sender = FakeSender(lambda operation, attempt: retriable(status, 3.0) if attempt == 1 else None)

    execute(sender, (op("a"),), rate_limit_per_s=5)

    assert RecordingLimiter.pauses == ([3.0] if paused else [])


# -- concurrency ------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_more_than_concurrency_requests_are_in_flight(concurrency):
    sender = FakeSender(hold_s=0.005)

    result, _, _ = execute(sender, ops(24), concurrency=concurrency)

    assert result.acked == {"create": 24}
    assert sender.max_in_flight <= concurrency
    if concurrency > 1:
        assert sender.max_in_flight > 1, "requests do run concurrently"


def test_a_high_concurrency_starts_with_64_requests_in_flight_and_sends_everything_once():
    """Above 64 workers the first requests are 64 (``InflightLimit``): while they are all
    unanswered no 65th goes out; once answers come every operation is sent exactly once."""
    release = threading.Event()
    seen: list[int] = []

    def respond(operation: Operation, attempt: int) -> None:
        if not release.is_set():
            release.wait(5)
        return None

    sender = FakeSender(respond)

    def watch() -> None:
        while sender.in_flight < 64 and not release.is_set():
            time.sleep(0.001)
        time.sleep(0.05)  # a 65th request would have had time to start
        seen.append(sender.max_in_flight)
        release.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    result, recorder, _ = execute(sender, ops(300), concurrency=256)
    watcher.join()

    assert seen == [64]
    assert result.acked == {"create": 300}
    assert sorted(recorder.acked_keys) == sorted(f"k{i}" for i in range(300))
    assert len(sender.sent) == 300
    assert sender.max_in_flight <= 256


# -- refused batches --------------------------------------------------------------------


def test_a_refused_batch_is_split_down_to_the_bad_products_and_the_rest_is_acked():
    bad = {"k3", "k6"}

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        if bad & set(operation.keys):
            return TargetRejectedError("HTTP 400: invalid product data", status=400)
        return None

    sender = FakeSender(respond)
    batch = op(*(f"k{i}" for i in range(8)))

    result, recorder, _ = execute(sender, (batch,))

    assert sorted(r.key for r in result.rejections) == ["k3", "k6"]
    assert all(r.by_target and "invalid product data" in r.reason for r in result.rejections)
    assert all(r.hash == batch.changes[int(r.key[1:])].document.hash for r in result.rejections)
    assert sorted(recorder.acked_keys) == sorted({f"k{i}" for i in range(8)} - bad)
    assert not bad & set(recorder.acked_keys), "a refused product is never acked"
    assert result.acked == {"create": 6}
    assert result.failed == 0
    assert result.retries == 0, "a 400 is never retried as is"


def test_a_refused_single_product_is_rejected_without_a_retry():
    sender = FakeSender(lambda operation, attempt: TargetRejectedError("HTTP 400: no", status=400))

    result, recorder, clock = execute(sender, (op("a"),))

    assert sender.sent == [("a",)]
    assert [(r.key, r.by_target) for r in result.rejections] == [("a", True)]
    assert recorder.acked == []
    assert clock.sleeps == []


def test_an_unsplittable_refused_batch_rejects_every_product_in_it():
    sender = FakeSender(
        lambda operation, attempt: TargetRejectedError("HTTP 400", status=400), splittable=False
    )

    result, recorder, _ = execute(sender, (op("a", "b", "c"),))

    assert [r.key for r in result.rejections] == ["a", "b", "c"]
    assert recorder.acked == []


# -- fatal errors -----------------------------------------------------------------------


def fatal_on(key: str) -> Respond:
    def respond(operation: Operation, attempt: int) -> BaseException | None:
        if key in operation.keys:
            return TargetFatalError("check $KEY", status=401)
        return None

    return respond


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_fatal_error_stops_further_sends_and_reports_the_products_not_sent(concurrency):
    sender = FakeSender(fatal_on("k0"))

    result, recorder, clock = execute(sender, ops(6), concurrency=concurrency)

    assert result.fatal == "check $KEY"
    assert sender.sent[0] == ("k0",)
    if concurrency == 1:
        assert sender.sent == [("k0",)], "nothing queued behind a fatal answer is sent"
    assert ("k0",) not in recorder.acked
    assert result.not_sent == 6 - len(recorder.acked)
    assert len(recorder.acked) == len(sender.sent) - 1
    assert clock.sleeps == [], "a fatal answer is not retried"
    assert result.failed == 0
    assert recorder.calls[-1] == "flush"


# -- stopping ---------------------------------------------------------------------------


def test_a_stop_set_before_the_run_sends_nothing_and_marks_interrupted():
    stop = threading.Event()
    stop.set()
    sender = FakeSender()

    result, recorder, _ = execute(sender, ops(4), stop=stop)

    assert sender.sent == []
    assert result.interrupted
    assert result.not_sent == 4
    assert recorder.acked == []
    assert recorder.calls == ["flush"]


def test_a_stop_during_the_run_stops_new_sends_and_keeps_finished_acks():
    stop = threading.Event()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        if operation.keys == ("k0",):
            stop.set()
        return None

    sender = FakeSender(respond)

    result, recorder, _ = execute(sender, ops(6), stop=stop)

    assert result.interrupted
    assert recorder.acked == [("k0",)], "the request in flight when stopped is kept"
    assert sender.sent == [("k0",)], "nothing queued is sent after the stop"
    assert result.not_sent == 5
    assert recorder.calls[-1] == "flush"


def test_a_stop_during_a_backoff_gives_up_the_retry_as_failed():
    stop = threading.Event()
    clock = FakeClock(on_sleep=lambda seconds: stop.set())
    sender = FakeSender(lambda operation, attempt: retriable(503))

    result, recorder, _ = execute(sender, (op("a"),), clock=clock, stop=stop)

    assert result.interrupted
    assert result.failed == 1
    assert recorder.acked == []
    assert len(sender.sent) <= 2


def test_a_stop_during_a_backoff_sends_no_further_request():
    stop = threading.Event()
    clock = FakeClock(on_sleep=lambda seconds: stop.set())
    sender = FakeSender(lambda operation, attempt: retriable(503))

    execute(sender, (op("a"),), clock=clock, stop=stop)

    assert sender.sent == [("a",)]


def test_in_flight_requests_may_finish_within_the_grace_period_after_a_stop():
    stop = threading.Event()
    slow_sending = threading.Event()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        if operation.keys == ("fast",):
            slow_sending.wait(5)  # stop only once "slow" is really in flight
            stop.set()
        else:
            slow_sending.set()
            time.sleep(0.6)  # well past the executor's 0.2 s wait
        return None

    sender = FakeSender(respond)
    clock = FakeClock(start=-1e9)  # any clock whose epoch differs from time.monotonic()'s

    result, recorder, _ = execute(
        sender, (op("fast"), op("slow")), clock=clock, concurrency=2, stop=stop, grace_s=30
    )

    assert sorted(recorder.acked) == [("fast",), ("slow",)]
    assert result.not_sent == 0


# -- the retry budget is a deadline -----------------------------------------------------


def test_the_retry_budget_is_a_deadline_on_the_runs_clock_not_a_sum_of_waits():
    """Waits cost nothing here, answers take 1 s: a sum of waits would never run out."""
    clock = FakeClock()
    clock.sleep = lambda seconds, stop: clock.sleeps.append(seconds)  # type: ignore[method-assign]

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        clock.now += 1.0
        return retriable(503)

    retry = RetryConfig(max_attempts=1000, initial_delay_s=0.5, max_delay_s=1, budget_s=30)
    sender = FakeSender(respond, clock=clock)

    result, _, _ = execute(sender, ops(5), clock=clock, retry=retry)

    assert sender.times and max(sender.times) <= START + 30
    assert len(sender.sent) <= 31
    assert result.exhausted
    assert result.failed + result.not_sent == 5


def test_a_failing_target_gets_no_burst_of_requests_once_the_budget_is_spent():
    clock = FakeClock()
    sender = FakeSender(lambda operation, attempt: retriable(503), clock=clock)
    retry = RetryConfig(max_attempts=4, initial_delay_s=0.5, max_delay_s=60, budget_s=20)

    result, recorder, _ = execute(sender, ops(500), clock=clock, retry=retry, concurrency=16)

    assert len(sender.sent) <= 16 * 4 + 16
    assert max(sender.times) <= START + 20, "no request after the deadline"
    late = [t for t in sender.times if t >= START + 20 - 1]
    assert len(late) <= 16, "the end of the budget is not followed by a burst"
    assert result.exhausted
    assert result.failed + result.not_sent == 500
    assert result.not_sent >= 500 - 32
    assert recorder.acked == []


def test_a_target_asking_to_come_back_later_than_max_delay_gets_no_burst():
    sender = FakeSender(lambda operation, attempt: retriable(503, retry_after=3600))

    result, _, _ = execute(sender, ops(200), concurrency=8)

    assert len(sender.sent) <= 8 * 2
    assert result.exhausted
    assert result.failed + result.not_sent == 200


def test_a_healthy_target_that_takes_long_is_not_stopped_by_the_retry_budget():
    clock = FakeClock()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        clock.now += 10.0  # slow answers: 50 of them take 500 s, ten budgets
        return None

    retry = RetryConfig(max_attempts=4, initial_delay_s=0.5, max_delay_s=60, budget_s=50)

    result, recorder, _ = execute(FakeSender(respond), ops(50), clock=clock, retry=retry)

    assert len(recorder.acked) == 50
    assert not result.exhausted and result.not_sent == 0


def test_a_late_503_from_a_target_that_mostly_answers_fails_that_operation_only():
    clock = FakeClock()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        clock.now += 10.0
        return retriable(503) if operation.keys == ("k30",) else None

    retry = RetryConfig(max_attempts=4, initial_delay_s=0.5, max_delay_s=60, budget_s=100)

    result, recorder, _ = execute(FakeSender(respond), ops(50), clock=clock, retry=retry)

    assert len(recorder.acked) == 49
    assert result.failed == 1 and result.not_sent == 0
    assert not result.exhausted


# -- stop and halt reach workers waiting for a rate-limit slot --------------------------


class WaitingClock(FakeClock):
    """Sleeps wait (really, but at most ``cap`` seconds) for the event they are given,
    then advance the time: a wait for a slot lasts until someone wakes it."""

    def __init__(self, cap: float = 3.0) -> None:
        super().__init__()
        self.cap = cap
        self.waiting = 0
        self._changed = threading.Condition()

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        if seconds > 0:
            with self._changed:
                self.waiting += 1
                self._changed.notify_all()
            stop.wait(self.cap)
        super().sleep(seconds, stop)

    def wait_for_sleepers(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.waiting >= count, timeout=5)


def test_a_fatal_answer_reaches_workers_waiting_for_a_rate_limit_slot():
    clock = WaitingClock()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        clock.wait_for_sleepers(7)  # every other worker waits for its slot
        return TargetFatalError("check $KEY", status=401)

    sender = FakeSender(respond)
    began = time.monotonic()

    result, recorder, _ = execute(sender, ops(8), clock=clock, concurrency=8, rate_limit_per_s=1)

    assert len(sender.sent) == 1, "only the first request reaches the target"
    assert time.monotonic() - began < 2.5, "the waiting workers were woken, not timed out"
    assert result.fatal == "check $KEY"
    assert result.not_sent == 8
    assert recorder.acked == []


def test_a_stop_reaches_workers_waiting_for_a_rate_limit_slot():
    stop = threading.Event()
    clock = WaitingClock()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        clock.wait_for_sleepers(7)
        stop.set()  # SIGTERM while the other workers wait for their slot
        return None

    sender = FakeSender(respond)

    result, recorder, _ = execute(
        sender, ops(8), clock=clock, concurrency=8, rate_limit_per_s=1, stop=stop
    )

    assert len(sender.sent) == 1, "no request after the stop"
    assert recorder.acked == [("k0",)]
    assert result.not_sent == 7 and result.interrupted


def test_a_fatal_answer_wakes_a_worker_waiting_to_retry_and_it_sends_nothing_more():
    clock = WaitingClock(cap=5)

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        if operation.keys == ("a",):
            return retriable(503)
        clock.wait_for_sleepers(1)  # "a" is waiting to retry
        return TargetFatalError("check $KEY", status=401)

    sender = FakeSender(respond)
    began = time.monotonic()

    result, _, _ = execute(sender, (op("a"), op("b")), clock=clock, concurrency=2)

    assert time.monotonic() - began < 2
    assert sorted(sender.sent) == [("a",), ("b",)], "no retry of a after the fatal answer"
    assert result.fatal == "check $KEY"


# -- writes in doubt --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "in_doubt"),
    [
        (TargetRetriableError("HTTP 503", status=503), True),
        (TargetRetriableError("HTTP 500", status=500), True),
        (TargetRetriableError("timed out (ReadTimeout)", maybe_applied=True), True),
        (TargetRetriableError("RemoteProtocolError", maybe_applied=True), True),
        (TargetRetriableError("ConnectError", maybe_applied=False), False),
        (TargetRetriableError("timed out (ConnectTimeout)", maybe_applied=False), False),
        (TargetRetriableError("HTTP 429", status=429), False),
        (TargetRetriableError("HTTP 408", status=408), False),
    ],
)
def test_a_write_the_server_may_have_applied_is_reported_in_doubt_even_once_acked(first, in_doubt):
    sender = FakeSender(lambda operation, attempt: first if attempt == 1 else None)

    result, recorder, _ = execute(sender, (op("a", "b"), op("c")), concurrency=1)

    assert sorted(recorder.acked_keys) == ["a", "b", "c"]
    assert result.in_doubt == ({"a", "b", "c"} if in_doubt else set())


def test_a_write_failing_for_good_after_a_5xx_is_in_doubt_and_a_rejection_is_not():
    def respond(operation: Operation, attempt: int) -> BaseException | None:
        if operation.keys == ("a",):
            return retriable(502)
        if operation.keys == ("b",):
            return TargetRejectedError("HTTP 422", status=422)
        return None

    result, _, _ = execute(FakeSender(respond), (op("a"), op("b"), op("c")))

    assert result.failed == 1
    assert result.in_doubt == {"a"}


def test_a_request_abandoned_in_flight_after_the_grace_period_is_in_doubt():
    stop = threading.Event()
    release = threading.Event()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        stop.set()
        release.wait(5)  # still in flight when the grace period ends
        return None

    sender = FakeSender(respond)

    try:
        result, recorder, _ = execute(
            sender, (op("a"), op("b")), concurrency=1, stop=stop, grace_s=0
        )
    finally:
        release.set()

    assert recorder.acked == []
    assert result.in_doubt == {"a"}, "b was never sent"
    assert result.not_sent == 2


# -- how much a crash can lose ----------------------------------------------------------


class CountingRecorder(Recorder):
    """Tracks the most acknowledgements ever waiting for a flush, and for how long."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waiting = 0
        self.most_waiting = 0
        self.first_waiting: float | None = None
        self.longest_wait = 0.0

    def on_ack(self, operation: Operation) -> None:
        super().on_ack(operation)
        self.waiting += len(operation.changes)
        self.most_waiting = max(self.most_waiting, self.waiting)
        if self.first_waiting is None:
            self.first_waiting = self.clock.monotonic()

    def flush(self) -> None:
        super().flush()
        if self.first_waiting is not None:
            self.longest_wait = max(self.longest_wait, self.clock.monotonic() - self.first_waiting)
        self.waiting, self.first_waiting = 0, None


def test_by_default_at_most_100_acknowledgements_wait_for_a_flush():
    clock = FakeClock()
    recorder = CountingRecorder(clock)

    execute(FakeSender(), ops(450), clock=clock, recorder=recorder, concurrency=4)

    assert len(recorder.acked) == 450
    assert recorder.most_waiting <= 100 + 2 * 4  # a flush waits for one batch of answers


def test_by_default_no_acknowledgement_waits_for_a_flush_much_over_a_fifth_of_a_second():
    clock = FakeClock()

    def respond(operation: Operation, attempt: int) -> BaseException | None:
        with clock._lock:
            clock.now += 0.01
        return None

    recorder = CountingRecorder(clock)

    execute(FakeSender(respond), ops(300), clock=clock, recorder=recorder)

    assert len(recorder.acked) == 300
    assert recorder.longest_wait <= 0.2 + 0.05


# -- operations pulled lazily -----------------------------------------------------------


def test_operations_are_pulled_as_slots_free_up_not_all_at_once():
    """A plan read back from disk is never held whole: the executor takes the next
    operation only when fewer than ``concurrency * 2`` are in flight."""
    pulled: list[int] = []
    in_flight_when_pulled: list[int] = []
    sender = FakeSender()

    def operations():
        for i in range(50):
            pulled.append(i)
            in_flight_when_pulled.append(len(pulled) - len(sender.sent))
            yield op(f"k{i}")

    result, recorder, _ = execute(sender, operations(), concurrency=2)

    assert len(recorder.acked) == 50 and result.not_sent == 0
    assert max(in_flight_when_pulled) <= 2 * 2 + 1, "never more than concurrency*2 taken ahead"


def test_what_a_fatal_answer_leaves_in_a_lazy_input_is_counted_not_sent():
    sender = FakeSender(fatal_on("k3"))

    result, _, _ = execute(
        sender,
        (op(f"k{i}", f"x{i}") if i == 7 else op(f"k{i}") for i in range(20)),
        concurrency=1,
    )

    assert result.fatal == "check $KEY"
    assert sender.sent[-1] == ("k3",), "nothing after the fatal answer is sent"
    # k3 and the 16 operations after it, one of them two products: 18 products
    assert result.not_sent == 18


def test_a_flush_that_raises_still_ends_the_worker_threads():
    """A crash in acknowledging (state unreachable) must not leave the pool's threads
    waiting for work: a long-lived daemon would gather them run after run."""

    def before() -> set[int]:
        return {t.ident for t in threading.enumerate() if t.ident is not None}

    def leftover(idents: set[int]) -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t.ident not in idents and t.name.startswith("syncd-") and t.is_alive()
        ]

    class Broken(Exception):
        pass

    def flush() -> None:
        raise Broken

    started = before()
    runner = Executor(FakeSender(), concurrency=3, rate_limit_per_s=0.0, retry=RETRY, seed=7)
    with pytest.raises(Broken):
        runner.run(ops(6), lambda operation: None, flush)
    deadline = time.monotonic() + 5
    while leftover(started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leftover(started) == []
