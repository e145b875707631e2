"""One measured sync, run in a fresh process: ``python -m bench.child CONFIG [--full]``.

Does what ``syncd sync --json`` does (load the config, open the store, one
``Reconciler.sync``) and prints one JSON line: the run report, the time to the first
request, the push window per target (first request sent to last answer), which the
throughput figures are computed from, and its own peak RSS. The parent reads its
CPU time with ``os.wait4``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from typing import Any

from syncd.config import load_config
from syncd.logs import configure_logging
from syncd.reconcile import Reconciler, RunOptions
from syncd.state import open_store


class PushTiming:
    """``Events`` that remember, per target, the first request's start and the last answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.windows: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}

    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
        now = time.perf_counter()
        with self._lock:
            window = self.windows.setdefault(target, [now - seconds, now])
            window[0] = min(window[0], now - seconds)
            window[1] = max(window[1], now)
            self.counts[target] = self.counts.get(target, 0) + 1

    def retry(self, target: str, status: str) -> None:
        pass


def peak_rss_mb() -> float | None:
    """This process's own peak RSS since it exec'd (``VmHWM``).

    ``ru_maxrss`` won't do: Linux carries the forking parent's peak into it at exec,
    and the bench's process holds the fakes' whole catalogs.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    config = load_config(argv[0])
    configure_logging("warning", "json")
    store = open_store(config.state.resolved_url())
    timing = PushTiming()
    try:
        report = Reconciler(config, store, events=timing).sync(RunOptions(full="--full" in argv))
    finally:
        store.close()
    finished = time.perf_counter()
    push: dict[str, Any] = {
        target: {
            "requests": timing.counts[target],
            "seconds": window[1] - window[0],
            "first_request_after_s": window[0] - started,
        }
        for target, window in timing.windows.items()
    }
    out = {
        "report": dataclasses.asdict(report),
        "seconds": finished - started,
        "push": push,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(out, default=str))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
