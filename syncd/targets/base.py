"""The ``Target`` protocol, and the translation of HTTP answers into syncd's errors.

A target plans requests from changes (pure), sends one request per ``Operation``,
and raises ``TargetRetriableError`` / ``TargetRejectedError`` / ``TargetFatalError``;
everything httpx raises is translated here, once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from syncd import logs
from syncd.diff import Change, Operation
from syncd.errors import TargetFatalError, TargetRejectedError, TargetRetriableError
from syncd.httpclient import describe_tls_failure, parse_retry_after, permanent_tls_error
from syncd.model import Payload


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

    def validate(self, key: str, payload: Payload, well_formed: Collection[str] = ()) -> None:
        """Raise ``RecordError`` when a payload breaks the target's contract.

        ``well_formed``: fields whose shape the mapping code guarantees (``Mapper.well_formed``),
        which need not be checked item by item; what their contents break is still found."""
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
        upsert_refused: str | None = None,
    ) -> PlannedRequests:
        """Operations for the changes (pure: no I/O); ``full_reason`` says why a run is full.

        ``keep`` holds keys in the source that are not sent this run (rejected, held back):
        no request may remove them from the target. ``upsert_refused`` says why a request
        that replaces everything the target holds (Vambe's whole-block upsert) must not be
        used this run (a run planned in parts, too large for one request); None: it may.
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


def send_request(
    client: httpx.Client,
    method: str,
    path: str | httpx.URL,
    *,
    body: bytes | None,
    what: str,
) -> httpx.Response:
    """Send one request; transport failures become ``TargetRetriableError`` (saying whether
    the server may have applied it), a TLS failure that won't fix itself ``TargetFatalError``.

    ``path`` is relative to the client's base URL, or a whole ``httpx.URL`` (which httpx
    doesn't parse and merge again).
    """
    headers = _JSON if body is not None else None
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


_JSON = {"Content-Type": "application/json"}

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


def fatal(message: str, status: int | None = None) -> TargetFatalError:
    return TargetFatalError(message, status=status)


# --------------------------------------------------------------------------------------
# From an HTTP status to syncd's error: one table per target, consulted by one function
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What one HTTP status means for the request that got it.

    ``ok``: acknowledged. ``retriable``: try again (``maybe_applied`` for a 5xx, which the
    server may have applied; 408/425/429 were refused before any work). ``rejected``:
    the products of the request are refused, the target goes on (``hint`` says what to
    check when every product gets it). ``fatal``: the target is misconfigured, its run
    stops; ``message`` says what to check.

    ``message`` and ``hint`` are ``str.format`` templates over ``what`` (the request),
    ``reason`` (status line and body) and the target's own fields (``env``, ``base_url``,
    ``name``, ``block_id``, ...).
    """

    outcome: Literal["ok", "retriable", "rejected", "fatal"]
    message: str = ""
    hint: str = ""


OK = Answer("ok")
RETRIABLE = Answer("retriable")
REJECTED = Answer("rejected")
REFUSED = Answer(
    "rejected",
    hint="refused for these products only; if every product gets this answer, check "
    "base_url ({base_url})",
)
"""A 3xx/4xx answer no table names: only the products of this request are rejected (one
product's odd answer never stops the target); the hint points at ``base_url``."""

StatusTable = Mapping[int, Answer]

DEFAULT_STATUSES: StatusTable = {
    **{status: RETRIABLE for status in (408, 425, 429, 500, 502, 503, 504)},
    **{status: REJECTED for status in (400, 413, 422)},
    401: Answer("fatal", "{what}: the target refused the API key ({reason}): check ${env}"),
    403: Answer("fatal", "{what}: the target forbade the request ({reason}): check ${env}"),
}
"""What every target shares; a target's table overrides some statuses (``{**DEFAULT_STATUSES,
404: ...}``). A 2xx not named is ``OK``, a 5xx ``RETRIABLE``, anything else ``REFUSED``."""


def answer_for(status: int, table: StatusTable) -> Answer:
    """The table's answer to ``status``, or the default for its class."""
    if status in table:
        return table[status]
    if 200 <= status < 300:
        return OK
    return RETRIABLE if status >= 500 else REFUSED


def check_response(
    response: httpx.Response, what: str, table: StatusTable, **context: object
) -> None:
    """Return when the answer acknowledges the request; raise the ``TargetError`` the
    table gives its status otherwise. ``context``: the target's fields its messages use."""
    status = response.status_code
    answer = answer_for(status, table)
    if answer.outcome == "ok":
        return
    if answer.outcome == "retriable":
        raise TargetRetriableError(
            f"{what}: {response_reason(response)}",
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            maybe_applied=status >= 500,  # 408/425/429: refused before work
        )
    fields = {"what": what, "reason": response_reason(response), **context}
    if answer.outcome == "fatal":
        raise fatal(answer.message.format(**fields), status)
    raise rejected(response, what, answer.hint.format(**fields))
