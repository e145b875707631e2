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
from syncd.httpclient import describe_tls_failure, parse_retry_after, permanent_tls_error
from syncd.model import Payload

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REJECTED_STATUSES = frozenset({400, 413, 422})
"""Answers that say the products sent are invalid. Every other 3xx/4xx answer to a
product request, except the target's auth (and Vambe's block) failures, also refuses
only the products of that request: one product's odd answer never stops the target."""


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

    def inspect(self, *, probe: bool = False) -> TargetInfo:
        """Check the target is usable (raise ``TargetFatalError`` if not) and read what it tells.

        ``probe`` (``syncd plan``, which sends nothing else): also check, with a request
        that writes nothing, that a target without a read endpoint can be reached and
        doesn't refuse the key; a sync learns that from its first write instead.
        """
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
            maybe_applied=response.status_code >= 500,  # 408/425/429: refused before work
        )


def send_request(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    body: bytes | None,
    what: str,
) -> httpx.Response:
    """Send one request; transport failures become ``TargetRetriableError`` (saying whether
    the server may have applied it), a TLS failure that won't fix itself ``TargetFatalError``.
    """
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        return client.request(method, path, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise TargetRetriableError(
            f"{what}: timed out ({exc.__class__.__name__})",
            maybe_applied=not isinstance(exc, _NOT_SENT),
        ) from exc
    except httpx.TransportError as exc:
        tls = permanent_tls_error(exc)
        if tls is not None:
            raise TargetFatalError(f"{what}: {describe_tls_failure(tls, _host(client))}") from exc
        raise TargetRetriableError(
            f"{what}: {exc.__class__.__name__}: {exc}",
            maybe_applied=not isinstance(exc, _NOT_SENT),
        ) from exc


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
"""Transport failures before any byte of the request left: the server can't have applied it.
(A read timeout, a dropped connection or a protocol error after sending may have been.)"""


def _host(client: httpx.Client) -> str:
    return client.base_url.host or str(client.base_url)


def rejected(response: httpx.Response, what: str, hint: str = "") -> TargetRejectedError:
    """The products of this request are refused, with the status, the reason and a hint."""
    message = f"{what}: {response_reason(response)}"
    return TargetRejectedError(
        f"{message}; {hint}" if hint else message, status=response.status_code
    )


def refused_for(response: httpx.Response, what: str, base_url: str) -> TargetRejectedError:
    """A 3xx/4xx answer that is neither an auth failure nor a documented refusal: the
    products of this request are rejected (re-tried under the rejection back-off), the
    target goes on. When every product gets it, the hint points at ``base_url``."""
    if response.status_code in REJECTED_STATUSES:
        return rejected(response, what)
    return rejected(
        response,
        what,
        f"refused for these products only; if every product gets this answer, check "
        f"base_url ({base_url})",
    )


def fatal(message: str, status: int | None = None) -> TargetFatalError:
    return TargetFatalError(message, status=status)
