"""The one error tree of syncd, sorted by what the caller does next.

- ``ConfigError``: exit at start (exit code 2), every problem listed with its place.
- ``SourceError``: the read failed or was partial; no deletes this run.
- ``TargetRetriableError``: try again later (carries ``retry_after``).
- ``TargetFatalError``: the target is misconfigured; stop that target's run.
- ``RecordError``: one record or product is refused; reject it and go on.
- ``StateError``: the state database is unusable.
Library exceptions are translated into these once, at the adapter boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in the configuration: where (a TOML path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(SyncdError):
    """The configuration is unusable; every problem is listed at once."""

    def __init__(self, problems: Sequence[ConfigProblem] | str, *, source: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("", problems)]
        self.problems = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class SourceError(SyncdError):
    """Reading the source failed or came back incomplete."""


class TargetError(SyncdError):
    """A request to a target failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TargetRetriableError(TargetError):
    """Worth retrying: 429, 5xx, timeouts, dropped connections.

    ``maybe_applied`` says whether the server may have applied the request anyway (a 5xx,
    a read timeout, a connection lost after sending); when not given, it is derived from
    the status: unknown or 5xx yes, 408/425/429 no.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_applied: bool | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.maybe_applied = (
            maybe_applied if maybe_applied is not None else status is None or status >= 500
        )


class TargetFatalError(TargetError):
    """The target is misconfigured (bad key, IP not allowed, block missing): stop it."""


class TargetRejectedError(TargetError):
    """The target refused the products of a request (HTTP 400, or another answer about
    those products, such as 404, 409, 413 or 422); the target itself goes on."""


class RecordError(SyncdError):
    """One record cannot become a valid document for a target; it is rejected.

    ``key`` is the product the record stands for (kept, not deleted, while it is
    refused); ``also_keys`` are other keys it may have been pushed under before (the
    raw form of a key refused for invisible characters), to be kept the same way.
    """

    def __init__(
        self,
        reason: str,
        *,
        key: str | None = None,
        field: str | None = None,
        also_keys: tuple[str, ...] = (),
    ) -> None:
        self.reason = reason
        self.key = key
        self.field = field
        self.also_keys = also_keys
        where = f"{field}: " if field else ""
        super().__init__(f"{where}{reason}")

    problems: tuple[tuple[str, str], ...] = ()
    """Each ``(field, reason)`` when the record fails on several fields (``record_error``)."""


class StateError(SyncdError):
    """The state database cannot be used."""


class StateVersionError(StateError):
    """The state database was written by a newer syncd than this one."""


class StateSchemaError(StateError):
    """The state database is reachable but its schema is missing or behind (for example
    replaced by an empty database); the next run's start migrates it."""


class LockHeldError(SyncdError):
    """Another process holds the lease on a target."""


def record_error(
    problems: Sequence[tuple[str, str]], *, key: str | None = None, also_keys: tuple[str, ...] = ()
) -> RecordError:
    """One ``RecordError`` naming every failing field of a record, in order:
    ``price: not a number: 'abc'; description: missing (required)``. ``problems`` holds
    ``(field, reason)`` pairs (an empty field: a reason about the whole record)."""
    if len(problems) == 1:
        field, reason = problems[0]
        error = RecordError(reason, key=key, field=field or None, also_keys=also_keys)
    else:
        listed = "; ".join(f"{field}: {reason}" if field else reason for field, reason in problems)
        error = RecordError(listed, key=key, also_keys=also_keys)
    error.problems = tuple(problems)
    return error
