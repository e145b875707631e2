"""Whether a product a complete read did not return may be deleted.

A read that ended without an error is complete only when the source can prove it (a
file parsed to its last terminated record, a SQL query, an HTTP list with a total or
an explicit last page). Where it can, a second look confirms each delete (a SQL query
by key, an HTTP item URL answering 404, a file unchanged since the read began); where
it can do neither, a product is deleted only after several consecutive reads missed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from syncd.config import SourceConfig
from syncd.errors import SourceError
from syncd.logs import scrub

log = structlog.get_logger("syncd.proof")

UNPROVEN_MISSING_RUNS = 3
"""Reads a product must be missing from when the source proves nothing (the default)."""


class DeleteProof:
    """One run's evidence about absent products, shared by every target: each key is
    looked at again at most once."""

    def __init__(self, source: Any, config: SourceConfig) -> None:
        self._source = source
        self._config = config
        self._looked: dict[str, bool] = {}
        # a targeted read (a change feed's) is itself the look: it answers by key
        looks = config.confirm_deletes or bool(getattr(source, "answers_by_key", False))
        self._can_look = looks and callable(getattr(source, "confirm_absent", None))
        self.failure: str | None = None
        """Why the second look failed, if it did (nothing is then confirmed)."""

    @property
    def complete(self) -> bool:
        """Whether a read that ended without an error is known to be whole."""
        return bool(getattr(self._source, "can_prove_complete", True))

    def confirm(self, keys: Sequence[str]) -> set[str] | None:
        """The keys a second look at the source confirms are gone; None: the source takes
        no second look. A key found again, or that the look could not reach, is left out."""
        if not self._can_look:
            return None
        new = [key for key in dict.fromkeys(keys) if key not in self._looked]
        if new and self.failure is None:
            try:
                gone = self._source.confirm_absent(new)
            except SourceError as exc:
                self.failure = scrub(str(exc))
                log.warning("syncd.source.second_look_failed", error=self.failure)
                gone = set()
            if gone is None:
                self._can_look = False
                return None
            self._looked.update((key, key in gone) for key in new)
        return {key for key in keys if self._looked.get(key, False)}

    def runs_needed(self, confirmed: bool) -> tuple[int, str]:
        """Consecutive complete reads a product must be missing from, and why."""
        configured = self._config.delete_after_missing_runs
        if configured is not None:
            return configured, "source.delete_after_missing_runs"
        if self.complete or confirmed:
            return 1, "the read proves itself complete" if self.complete else "second look"
        return UNPROVEN_MISSING_RUNS, (
            "the source can't prove a read complete and takes no second look "
            "(set source.item_url or pagination.total_path, or "
            "source.delete_after_missing_runs)"
        )
