"""When a run must stop early: a stop request (SIGTERM, a lost lease) or its time budget."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from syncd.errors import SourceError


@dataclass(frozen=True)
class Budget:
    """A run's stop event and time budget (``max_run_s``), shared by its stages."""

    stop: threading.Event = field(default_factory=threading.Event)
    budget_s: float | None = None
    """The run's time budget in seconds; None: none."""
    deadline: float | None = None
    """When the budget runs out (``time.monotonic``); None: never."""

    @classmethod
    def starting(cls, stop: threading.Event, budget_s: float | None, now: float) -> Budget:
        """A budget of ``budget_s`` seconds from ``now`` (``time.monotonic``)."""
        return cls(stop, budget_s, None if budget_s is None else now + budget_s)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def check_read(self) -> None:
        """Raise ``SourceError`` when the read must end early: a stop request, or the run's
        time budget ran out (the read is then incomplete: no deletes are decided)."""
        if self.stop.is_set():
            raise SourceError("stopped (SIGTERM) before the read completed")
        if self.out_of_time():
            raise SourceError(
                f"the run's time budget (max_run_s={self.budget_s:g}) ran out before the "
                "read completed"
            )
