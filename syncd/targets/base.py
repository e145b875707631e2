"""The ``Target`` protocol, and the translation of HTTP answers into syncd's errors.

A target plans requests from changes (pure), sends one request per ``Operation``,
and raises ``TargetRetriableError`` / ``TargetRejectedError`` / ``TargetFatalError``;
everything httpx raises is translated here, once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from syncd import logs
from syncd.diff import Change, Operation
from syncd.errors import TargetFatalError, TargetRejectedError, TargetRetriableError
from syncd.httpclient import parse_retry_after
from syncd.model import Payload

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REJECTED_STATUSES = frozenset({400, 413, 422})
"""Answers that refuse the products sent; any other 3xx/4xx stops the target."""


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What a target tells about itself before a run."""

    count: int | None = None
    """Products the target says it holds, when it can tell (Vambe's block count)."""


@dataclass(frozen=True, slots=True)
class PlannedRequests:
    """The operations for a run, plus the held-back deletes and the notes on choices."""

    operations: tuple[Operation, ...]
    held: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()


class Target(Protocol):
    """A product API that syncd mirrors the catalog into."""

    name: str
    kind: str

    def inspect(self) -> TargetInfo:
        """Check the target is usable (raise ``TargetFatalError`` if not) and read what it tells."""
        ...

    def validate(self, key: str, payload: Payload) -> None:
        """Raise ``RecordError`` when a payload breaks the target's contract."""
        ...

    def plan(
        self,
        changes: Sequence[Change],
        deletes: Sequence[Change],
        *,
        full: bool,
        deletes_allowed: bool,
        full_reason: str = "full refresh",
        keep: Collection[str] = (),
    ) -> PlannedRequests:
        """Operations for the changes (pure: no I/O); ``full_reason`` says why a run is full.

        ``keep`` holds keys in the source that are not sent this run (rejected, held back):
        no request may remove them from the target.
        """
        ...

    def send(self, operation: Operation) -> None:
        """Send one operation; return on acknowledgement, raise a ``TargetError`` otherwise."""
        ...

    def split(self, operation: Operation) -> tuple[Operation, ...] | None:
        """Halves of a refused batch, to isolate the bad products; ``None`` if it is one."""
        ...

    def close(self) -> None: ...


def response_reason(response: httpx.Response, limit: int = 300) -> str:
    """The status line plus the body's error text, shortened, for messages."""
    text = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            found = body.get("error") or body.get("message") or body.get("detail")
            text = found if isinstance(found, str) else json.dumps(body)
        else:
            text = json.dumps(body)
    except (ValueError, UnicodeDecodeError):
        text = response.text
    text = " ".join(text.split())
    for header in ("authorization", "x-api-key"):
        secret = response.request.headers.get(header) if response.request else None
        for value in (secret, secret.partition(" ")[2] if secret else None):
            if value and len(value) >= 4:
                text = text.replace(value, "***")  # some gateways echo the key back
    text = logs.scrub_snippet(text, limit)  # scrubbed before the cut
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    return f"{status}: {text}" if text else status


def raise_for_retriable(response: httpx.Response, what: str) -> None:
    """Raise ``TargetRetriableError`` for 408/425/429/5xx answers."""
    if response.status_code in RETRIABLE_STATUSES or response.status_code >= 500:
        raise TargetRetriableError(
            f"{what}: {response_reason(response)}",
            status=response.status_code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


def send_request(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    body: bytes | None,
    what: str,
) -> httpx.Response:
    """Send one request; transport failures become ``TargetRetriableError``."""
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        return client.request(method, path, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise TargetRetriableError(f"{what}: timed out ({exc.__class__.__name__})") from exc
    except httpx.TransportError as exc:
        raise TargetRetriableError(f"{what}: {exc.__class__.__name__}: {exc}") from exc


def rejected(response: httpx.Response, what: str) -> TargetRejectedError:
    return TargetRejectedError(f"{what}: {response_reason(response)}", status=response.status_code)


def fatal(message: str, status: int | None = None) -> TargetFatalError:
    return TargetFatalError(message, status=status)
