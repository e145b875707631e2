"""Sends a plan's operations: bounded concurrency, a rate limit, retries, acknowledgements.

Each operation runs in a worker thread; the calling thread alone records results,
so acknowledgements reach state in small transactions as they arrive. A refused
batch is split to isolate its bad products. A fatal answer stops the target; a
stop request (SIGTERM) lets in-flight requests finish within a grace period; a
target still failing when the retry deadline has passed gets no further request.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

from syncd.config import RetryConfig
from syncd.diff import Operation
from syncd.errors import TargetFatalError, TargetRejectedError, TargetRetriableError
from syncd.inflight import InflightLimit
from syncd.model import Rejection
from syncd.retry import target_policy


class Clock(Protocol):
    """Time as the executor sees it; tests pass one that never really sleeps."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        """Sleep, waking early when ``stop`` is set."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        if seconds > 0:
            stop.wait(seconds)


class RateLimiter:
    """Spaces requests at most ``rate`` per second across threads; pausable on 429."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._paused_until = 0.0

    def acquire(self, stop: threading.Event) -> None:
        if not self._interval:
            # No rate: only a 429's pause holds workers back, and reading the pause needs
            # no lock (a float read is atomic; a pause set a moment later holds the next).
            paused_until = self._paused_until
            if paused_until:
                self._clock.sleep(paused_until - self._clock.monotonic(), stop)
            return
        with self._lock:
            now = self._clock.monotonic()
            slot = max(now, self._next, self._paused_until)
            self._next = slot + self._interval
        self._clock.sleep(slot - now, stop)

    def pause(self, seconds: float) -> None:
        """Hold every worker back (the target said it is over its limit)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)


class RetryBudget:
    """The wall time a run may retry in: a deadline ``seconds`` after the run started, on
    the executor's clock, whatever the number of workers waiting at once."""

    def __init__(self, seconds: float, clock: Clock) -> None:
        self._clock = clock
        self.deadline = clock.monotonic() + seconds

    def allows(self, delay: float) -> bool:
        """Whether a retry after ``delay`` seconds would still start before the deadline."""
        return self._clock.monotonic() + delay <= self.deadline

    def idled(self, seconds: float) -> None:
        """``seconds`` passed with nothing to send (waiting for planning while the read
        goes on): they don't count, so a long read leaves the budget to the sending."""
        self.deadline += max(seconds, 0.0)


class Health:
    """The target's last answers: failing when at least half of them were retriable errors.

    Decides whether a retry the budget refuses ends the run for the target (a target that
    mostly answers is not stopped by one late 503; one that mostly fails is).
    """

    def __init__(self, window: int) -> None:
        self._answers: deque[bool] = deque(maxlen=window)

    def record(self, answered: bool) -> None:
        # No lock: a bounded deque's append and count are each one C call, atomic under
        # the GIL (this runs once per request, on every worker).
        self._answers.append(answered)

    def failing(self) -> bool:
        answers = self._answers
        failures = answers.count(False)
        return failures > 0 and failures * 2 >= len(answers)


def backoff_delay(
    attempt: int, retry_after: float | None, policy: RetryConfig, rng: random.Random
) -> float:
    """The wait before try ``attempt + 1``: exponential with equal jitter, at least the
    server's ``Retry-After`` (so ``Retry-After: 0`` can't cause a hot loop), capped at
    ``max_delay_s``. (A ``Retry-After`` over the cap is not waited for: see ``_attempt``.)"""
    return target_policy(policy).delay(attempt, retry_after, rng)


class Sender(Protocol):
    """What the executor needs of a target."""

    name: str

    def send(self, operation: Operation) -> None: ...

    def split(self, operation: Operation) -> tuple[Operation, ...] | None: ...


@runtime_checkable
class Countable(Protocol):
    """Operations given to ``Executor.run`` that can count what was not taken without
    taking it (``remaining``): a plan whose operations are marked in flight as they are
    taken is counted without marking the ones never sent."""

    def __next__(self) -> Operation: ...

    def remaining(self) -> int:
        """Products in the operations not taken yet (the iterator is spent after)."""
        ...


NOT_YET = Operation("", "", "not planned yet", ())
"""What operations given to ``Executor.run`` yield when the next one is still being
planned (the source read goes on): take nothing more now, ask again later (``Fed``)."""


@runtime_checkable
class Fed(Protocol):
    """Operations planned while they are sent: ``NOT_YET`` when none is ready, and ``wait``
    until one may be."""

    def __next__(self) -> Operation: ...

    def wait(self, timeout: float) -> None:
        """Until another operation may be ready (or ``timeout`` seconds)."""
        ...


class Settled(Protocol):
    """Called on the executor's thread once an operation taken is over: acknowledged,
    refused, failed or dropped (``replaced_by``: the halves a refused batch is re-sent
    as, which are settled in turn), or abandoned in flight when a stop's grace ran out.
    ``troubled``: the target refused it for good, or may have applied it unseen (in
    doubt): what the run does after sending needs its changes."""

    def __call__(
        self, operation: Operation, replaced_by: tuple[Operation, ...], troubled: bool
    ) -> None: ...


class Events(Protocol):
    """Hooks for metrics: every request answered, every retry."""

    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None: ...

    def retry(self, target: str, status: str) -> None: ...


class NoEvents:
    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
        pass

    def retry(self, target: str, status: str) -> None:
        pass


@dataclass
class Execution:
    """What happened to a plan's operations."""

    acked: Counter[str] = field(default_factory=Counter)
    """Products acknowledged, by change kind."""
    rejections: list[Rejection] = field(default_factory=list)
    failed: int = 0
    """Products still failing when retries or the budget ran out (re-sent next run)."""
    not_sent: int = 0
    """Products never attempted (stopped by a fatal error or a shutdown)."""
    fatal: str | None = None
    requests: int = 0
    retries: int = 0
    interrupted: bool = False
    last_error: str | None = None
    exhausted: bool = False
    """The retry deadline passed while the target was failing: the rest was not sent."""
    in_doubt: set[str] = field(default_factory=set)
    """Keys of operations that had an attempt the server may have applied though syncd
    did not see it acknowledged (a 5xx, a read timeout, a connection lost after sending,
    abandoned in flight), whether or not a later attempt succeeded."""
    out_of_time: bool = False
    """The run's time budget (``deadline``) ran out with operations not sent yet: they
    were left for the next run."""


@dataclass
class _Outcome:
    """What sending one operation came to: its requests, retries, and the error if any."""

    requests: int = 0
    retries: int = 0
    error: BaseException | None = None
    not_sent: bool = False
    """Dropped before its first request: the target was halted or is stopping."""
    maybe_applied: bool = False
    """Some attempt failed in a way the server may have applied it anyway."""


_T = TypeVar("_T")


class Future(Generic[_T]):
    """One operation given to the workers, and what came of it (the function's result,
    or the exception it raised).

    The little of ``concurrent.futures.Future`` the executor uses, without its per-future
    condition variable and locks: the result is written once, by one worker, before the
    done callback runs, and the calling thread reads it from that callback's queue.
    """

    __slots__ = ("_callback", "_calls", "_error", "_fn", "_operation", "_result", "done_at")

    def __init__(self, fn: Callable[[Operation], _T], operation: Operation) -> None:
        self._fn: Callable[[Operation], _T] | None = fn
        self._operation = operation
        self._result: _T | None = None
        self._error: BaseException | None = None
        self._callback: Callable[[Future[_T]], object] | None = None
        self._calls = itertools.count()
        """Drawn from by the worker when done and by ``add_done_callback``: the second
        to draw (``next`` on a count is atomic) runs the callback, so it runs once."""
        self.done_at = 0.0
        """``time.perf_counter()`` when the work ended (the calling thread's wake-up lag)."""

    def run(self) -> None:
        fn, self._fn = self._fn, None
        assert fn is not None
        try:
            self._result = fn(self._operation)
        except BaseException as exc:  # the calling thread settles it
            self._error = exc
        self.done_at = time.perf_counter()
        if next(self._calls):
            self._call_back()

    def add_done_callback(self, callback: Callable[[Future[_T]], object]) -> None:
        """Call ``callback(self)`` once done (now, when it already is); one callback."""
        self._callback = callback
        if next(self._calls):
            self._call_back()

    def _call_back(self) -> None:
        callback = self._callback
        assert callback is not None
        callback(self)

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> _T:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value] # set when no error was


class _Workers:
    """``concurrency`` threads taking futures from one queue: a ``ThreadPoolExecutor``
    without its per-task locks, semaphores and condition variables (bench/push.py
    measures what they cost).

    Threads start as work arrives, up to ``concurrency``, one future each. The calling
    thread starts one, which starts the others the work calls for before it takes any:
    ``Thread.start`` waits for the new thread to run, and at 256 workers a calling thread
    contending for the GIL with every started one would spend the push's first seconds
    starting them while they wait for the work it hands out.
    """

    def __init__(self, concurrency: int, thread_name_prefix: str) -> None:
        self._queue: queue.SimpleQueue[Future[_Outcome] | None] = queue.SimpleQueue()
        self._max = concurrency
        self._wanted = 0
        """Threads the work submitted so far calls for: one per future, at most ``_max``."""
        self._prefix = thread_name_prefix
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._growing = False
        """A thread is starting the threads still wanted (only one at a time)."""
        self._closed = False

    def submit(self, fn: Callable[[Operation], _Outcome], operation: Operation) -> Future[_Outcome]:
        if self._closed:
            raise RuntimeError("cannot submit after shutdown")
        future = Future(fn, operation)
        self._queue.put(future)
        if self._wanted < self._max:
            with self._lock:
                self._wanted += 1
                grower = None
                if not self._growing and len(self._threads) < self._wanted:
                    self._growing = True
                    grower = self._new_thread(grows=True)
            if grower is not None and not self._start(grower) and not self._threads:
                raise RuntimeError("cannot start a worker thread")  # none to run the work
        return future

    def _new_thread(self, *, grows: bool = False) -> threading.Thread:
        """A thread, counted (call with the lock held)."""
        # a daemon thread: a request still hanging after the shutdown grace (already
        # counted in doubt) never holds the process's exit, and a pool nobody shut down
        # can't either (ThreadPoolExecutor wakes its idle workers at exit; this pool has no
        # such hook)
        thread = threading.Thread(
            target=self._work,
            args=(grows,),
            name=f"{self._prefix}_{len(self._threads)}",
            daemon=True,
        )
        self._threads.append(thread)
        return thread

    def _start(self, thread: threading.Thread) -> bool:
        try:
            thread.start()
        except RuntimeError:  # the system refused a thread: carry on with those running
            with self._lock:
                self._threads.remove(thread)
                self._growing = False
            return False
        return True

    def _grow(self) -> None:
        """Start threads until as many run as the work submitted calls for."""
        while True:
            with self._lock:
                if self._closed or len(self._threads) >= self._wanted:
                    self._growing = False
                    return
                thread = self._new_thread()
            if not self._start(thread):
                return

    def _work(self, grows: bool) -> None:
        if grows:
            self._grow()
        take = self._queue.get
        while (future := take()) is not None:
            future.run()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once their current work is done; ``cancel_futures`` drops the
        work not started (its futures never complete)."""
        with self._lock:  # no thread starts after this: each one counted gets its sentinel
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()


def _drain(
    finished: queue.SimpleQueue[Future[_Outcome]], timeout: float
) -> tuple[list[Future[_Outcome]], float]:
    """The futures finished so far, waiting up to ``timeout`` for the first one; and the
    calling thread's wake-up lag: from the later of its wait's start and the first
    future's end to now (time spent waiting for the interpreter, see ``InflightLimit``)."""
    waited = time.perf_counter()
    try:
        first = finished.get(timeout=timeout)
    except queue.Empty:
        return [], 0.0
    lag = time.perf_counter() - max(waited, first.done_at)
    done = [first]
    while True:
        try:
            done.append(finished.get_nowait())
        except queue.Empty:
            return done, lag


class Executor:
    """Runs operations against one target."""

    def __init__(
        self,
        target: Sender,
        *,
        concurrency: int,
        rate_limit_per_s: float,
        retry: RetryConfig,
        clock: Clock | None = None,
        events: Events | None = None,
        stop: threading.Event | None = None,
        grace_s: float = 30.0,
        flush_every: int = 100,
        flush_interval_s: float = 0.2,
        seed: int | None = None,
        deadline: float | None = None,
    ) -> None:
        self._target = target
        self._concurrency = concurrency
        self._clock = clock or SystemClock()
        self._limiter = RateLimiter(rate_limit_per_s, self._clock)
        self._retry = retry
        self._budget = RetryBudget(retry.budget_s, self._clock)
        self._health = Health(window=max(10, 2 * concurrency))
        self._events = events or NoEvents()
        self._stop = stop or threading.Event()
        self._grace_s = grace_s
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._halt = threading.Event()
        """Set on a fatal answer: queued operations are dropped, not sent."""
        self._exhausted = threading.Event()
        """Set when the retry deadline refuses a retry and the target is failing."""
        self._wake = threading.Event()
        """Set on halt, exhaustion or an observed stop: wakes workers waiting for a slot."""
        self._started: set[int] = set()
        """``id`` of the operations whose first request has gone out."""
        self._started_lock = threading.Lock()
        self._deadline = deadline
        """On the clock: no request starts after it (the run's time budget); None: none."""
        self._out_of_time = threading.Event()

    def run(
        self,
        operations: Iterable[Operation],
        on_ack: Callable[[Operation], None],
        flush: Callable[[], None],
        on_settled: Settled | None = None,
    ) -> Execution:
        """Send every operation; ``on_ack`` on each acknowledgement, ``flush`` to commit,
        ``on_settled`` once each operation taken is over (see ``Settled``).

        ``operations`` is pulled lazily, as slots free up (at most ``concurrency * 2`` in
        flight): a plan read back from disk is never held whole in memory. Above 64 workers
        fewer requests may be in flight than ``concurrency`` while this process is what
        holds the push back (``InflightLimit``).
        """
        self._budget = RetryBudget(self._retry.budget_s, self._clock)  # from the run's start
        slots = InflightLimit(self._concurrency)
        """Operations given to the workers: fewer than ``concurrency`` while this process
        is the bottleneck (threads queueing for the GIL), never more."""
        result = Execution()
        incoming = iter(operations)
        pending: deque[Operation] = deque()
        """Halves of refused batches, sent before what ``incoming`` still holds."""
        inflight: dict[Future[_Outcome], Operation] = {}
        # Finished futures arrive here, so each wake-up costs O(1), not O(in flight).
        finished: queue.SimpleQueue[Future[_Outcome]] = queue.SimpleQueue()
        unflushed = 0
        last_flush = self._clock.monotonic()
        stop_deadline: float | None = None
        pool = _Workers(self._concurrency, thread_name_prefix=f"syncd-{self._target.name}")
        try:
            while True:
                if self._stop.is_set() or self._past_deadline():
                    self._wake.set()  # workers waiting for a rate-limit slot drop their work
                stopping = (
                    self._stop.is_set()
                    or result.fatal is not None
                    or self._exhausted.is_set()
                    or self._out_of_time.is_set()
                )
                waiting = False  # the next operation is still being planned (NOT_YET)
                # at full concurrency as many again wait queued, so a worker never waits for
                # this thread; below it, every operation given out is a request in flight
                # (some of the threads started earlier are idle and would take it at once)
                cap = slots.limit if slots.limit < self._concurrency else self._concurrency * 2
                while not stopping and len(inflight) < cap:
                    operation = pending.popleft() if pending else next(incoming, None)
                    if operation is None:
                        break
                    if operation is NOT_YET:
                        waiting = True
                        break
                    future = pool.submit(self._attempt, operation)
                    inflight[future] = operation
                    future.add_done_callback(finished.put)
                if stopping and stop_deadline is None:
                    # real time: the grace bounds real threads, whatever clock paces retries
                    stop_deadline = time.monotonic() + self._grace_s
                if not inflight and not waiting:
                    break
                done: list[Future[_Outcome]] = []
                if inflight:
                    busy = len(inflight) >= slots.limit
                    done, lag = _drain(finished, timeout=0.2)
                    if done:
                        slots.observe(lag, time.perf_counter(), busy)
                elif isinstance(incoming, Fed):
                    idle = self._clock.monotonic()
                    incoming.wait(0.2)  # idle until planning puts more
                    self._budget.idled(self._clock.monotonic() - idle)
                for future in done:
                    if future not in inflight:
                        continue  # abandoned after the grace period
                    operation = inflight.pop(future)
                    with self._started_lock:  # settled: no longer possibly in flight
                        self._started.discard(id(operation))
                    unflushed += self._settle(
                        future, operation, result, pending, on_ack, on_settled
                    )
                now = self._clock.monotonic()
                if unflushed >= self._flush_every or (
                    unflushed and now - last_flush >= self._flush_interval_s
                ):
                    flush()
                    unflushed, last_flush = 0, now
                if stop_deadline is not None and time.monotonic() > stop_deadline and inflight:
                    result.not_sent += sum(len(op.changes) for op in inflight.values())
                    with self._started_lock:  # abandoned mid-request: may land later
                        for abandoned in inflight.values():
                            started = id(abandoned) in self._started
                            if started:
                                result.in_doubt.update(abandoned.keys)
                            if on_settled is not None:
                                on_settled(abandoned, (), started)
                    result.interrupted = True
                    inflight.clear()
                    break
            # what was never taken (stopped, halted, out of time); read to its end to count
            result.not_sent += sum(len(op.changes) for op in pending)
            result.not_sent += (
                incoming.remaining()
                if isinstance(incoming, Countable)
                else sum(len(op.changes) for op in incoming)
            )
            result.out_of_time = self._out_of_time.is_set() and bool(
                result.not_sent or result.failed
            )
            result.exhausted = self._exhausted.is_set()
            if result.exhausted:
                result.last_error = (
                    f"{result.last_error}; the retry budget ({self._retry.budget_s:g} s) ran "
                    "out while the target was failing, so the rest was not sent"
                )
            if self._stop.is_set() and (result.not_sent or result.failed):
                result.interrupted = True  # stopped with work left; nothing left is not that
        finally:
            try:
                flush()
            finally:  # a flush that raises (state unreachable, a crash) still ends the pool
                pool.shutdown(wait=False, cancel_futures=True)
        return result

    def _settle(
        self,
        future: Future[_Outcome],
        operation: Operation,
        result: Execution,
        pending: deque[Operation],
        on_ack: Callable[[Operation], None],
        on_settled: Settled | None = None,
    ) -> int:
        """Count what ``operation``'s attempts came to; the acknowledged products."""
        crash = future.exception()
        # an exception from the adapter itself: whether it sent anything is unknown
        outcome = (
            _Outcome(error=crash, maybe_applied=True) if crash is not None else future.result()
        )
        result.requests += outcome.requests
        result.retries += outcome.retries
        if outcome.maybe_applied:
            result.in_doubt.update(operation.keys)
        halves: tuple[Operation, ...] = ()
        refused = False
        acked = self._count(operation, outcome, result, on_ack)
        if acked is None:  # refused
            halves = self._target.split(operation) or ()
            if halves:
                pending.extendleft(reversed(halves))
            else:
                refused = True
                for change in operation.changes:
                    digest = change.document.hash if change.document else None
                    result.rejections.append(
                        Rejection(change.key, str(outcome.error), digest, by_target=True)
                    )
        if on_settled is not None:
            on_settled(operation, halves, refused or outcome.maybe_applied)
        return acked or 0

    @staticmethod
    def _count(
        operation: Operation,
        outcome: _Outcome,
        result: Execution,
        on_ack: Callable[[Operation], None],
    ) -> int | None:
        """Count ``operation``'s outcome but a refusal (None): the products acknowledged."""
        error = outcome.error
        if outcome.not_sent:
            result.not_sent += len(operation.changes)
            return 0
        if error is None:
            on_ack(operation)
            for change in operation.changes:
                result.acked[change.kind.value] += 1
            return len(operation.changes)
        if isinstance(error, TargetRejectedError):
            return None
        if isinstance(error, TargetFatalError):
            result.fatal = result.fatal or str(error)
            result.not_sent += len(operation.changes)
            return 0
        result.failed += len(operation.changes)
        result.last_error = str(error) if isinstance(error, TargetRetriableError) else repr(error)
        return 0

    def _stopping(self) -> bool:
        """Halted (fatal), out of budget against a failing target, out of time, or asked
        to stop."""
        return self._wake.is_set() or self._stop.is_set() or self._past_deadline()

    def _past_deadline(self) -> bool:
        """Whether the run's time budget has run out (then no request starts any more)."""
        if self._deadline is None:
            return False
        if not self._out_of_time.is_set() and self._clock.monotonic() >= self._deadline:
            self._out_of_time.set()
            self._wake.set()
        return self._out_of_time.is_set()

    def _give_up(self) -> None:
        """The deadline refused a retry: when the target is failing, send it nothing more."""
        if self._health.failing():
            self._exhausted.set()
            self._wake.set()

    def _attempt(self, operation: Operation) -> _Outcome:
        """Send one operation with retries; never raises for the target's answers."""
        outcome = _Outcome()
        name = self._target.name
        for attempt in range(1, self._retry.max_attempts + 1):
            if self._stopping() and attempt == 1:
                outcome.not_sent = True
                return outcome
            self._limiter.acquire(self._wake)
            if self._stopping():  # stopped or halted while waiting for the slot
                outcome.not_sent = attempt == 1
                return outcome
            if attempt == 1:
                self._started.add(id(operation))  # one C call: atomic under the GIL
            started = time.perf_counter()
            outcome.requests += 1
            try:
                self._target.send(operation)
            except TargetRetriableError as exc:
                self._health.record(False)
                outcome.maybe_applied = outcome.maybe_applied or exc.maybe_applied
                status = str(exc.status or "error")
                self._events.request(
                    name, operation.endpoint, status, time.perf_counter() - started
                )
                outcome.error = exc
                if attempt == self._retry.max_attempts or self._stopping():
                    return outcome
                if not target_policy(self._retry).honours(exc.retry_after):
                    self._give_up()
                    return outcome  # the server asks for longer than we wait: next run
                with self._rng_lock:
                    delay = backoff_delay(attempt, exc.retry_after, self._retry, self._rng)
                if not self._budget.allows(delay):
                    self._give_up()
                    return outcome
                if exc.status == 429:
                    self._limiter.pause(delay)
                self._events.retry(name, status)
                outcome.retries += 1
                self._clock.sleep(delay, self._wake)
                if self._stopping():
                    return outcome  # stopping: no further request; re-sent next run
                continue
            except (TargetRejectedError, TargetFatalError) as exc:
                if isinstance(exc, TargetFatalError):
                    self._halt.set()  # here, before this worker takes the next operation
                    self._wake.set()
                else:
                    self._health.record(True)  # the target answered
                status = str(exc.status or "error")
                self._events.request(
                    name, operation.endpoint, status, time.perf_counter() - started
                )
                outcome.error = exc
                return outcome
            self._health.record(True)
            self._events.request(name, operation.endpoint, "2xx", time.perf_counter() - started)
            outcome.error = None
            return outcome
        return outcome
