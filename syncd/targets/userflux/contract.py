"""What UserFlux's contract refuses, checked before anything is sent, and what each
HTTP status of its answers means (``STATUSES``)."""

from __future__ import annotations

import re
import unicodedata

from syncd.errors import record_error
from syncd.model import Payload
from syncd.targets.base import DEFAULT_STATUSES, OK, Answer, StatusTable

STATUSES: StatusTable = {
    **DEFAULT_STATUSES,
    401: Answer(
        "fatal",
        "UserFlux refused the API key ({reason}): check ${env} holds the Product Read + "
        "Write key of the right workspace",
    ),
    403: Answer(
        "fatal",
        "UserFlux forbade the request ({reason}): either ${env} is the wrong key family "
        "(it must be Product Read + Write, not Write Only) or this host's IP is not in "
        "the key's IP allow-list",
    ),
}
"""UserFlux's answers: the defaults, with 401 and 403 saying which key to check."""

DELETE_STATUSES: StatusTable = {**STATUSES, 404: OK}
"""A delete answered 404: the product is already gone, which is what was wanted."""

_UNSAFE_IN_SEGMENT = "/\\?#%"
_UNSAFE_CHARACTER = re.compile(f"[{re.escape(_UNSAFE_IN_SEGMENT)}]")
_SAFE_CHARACTER = r"!\"$&-.0->@-\[\]-~"
"""Printable ASCII but the space and ``_UNSAFE_IN_SEGMENT`` (``#%/?\\``), as ranges."""
SAFE_SEGMENT = re.compile(
    rf"(?!\.\.?\Z)[{_SAFE_CHARACTER}](?:[ {_SAFE_CHARACTER}]*[{_SAFE_CHARACTER}])?"
)
"""A text ``unsafe_segment`` finds nothing wrong with, matched whole in one C call: printable
ASCII without ``#%/?\\``, not empty, no space at either end, not ``.`` or ``..`` (nearly
every id). What it doesn't match may still be safe: ``unsafe_segment`` judges it."""


def unsafe_segment(value: str) -> str | None:
    """Why ``value`` can't be one URL path segment of ``DELETE /product/{typeId}/{id}``
    safely, or ``None``. Percent-encoding alone is not enough: clients resolve ``.`` and
    ``..`` segments, and servers may decode ``%2F`` or ``%2E`` before routing."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return f"is {value!r}, which a URL path resolves as a relative step"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if value.isascii() and value.isprintable():  # no control character: the five to look for
        unsafe = _UNSAFE_CHARACTER.search(value)  # the first of them (one C call, no list)
        if unsafe is not None:
            return f"contains {unsafe.group()!r}, which a URL path segment can't carry safely"
        return None
    for char in value:
        if char in _UNSAFE_IN_SEGMENT:
            return f"contains {char!r}, which a URL path segment can't carry safely"
        if unicodedata.category(char) == "Cc":
            return f"contains the control character U+{ord(char):04X}"
    return None


def validate_payload(key: str, payload: Payload) -> None:
    """The contract's required keys and types (``UpsertProductRequest``); one
    ``RecordError`` lists every field that breaks them."""
    problems: list[tuple[str, str]] = []
    for name in ("id", "typeId"):
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            problems.append((name, f"{name} must be a non-empty string"))
            continue
        problem = unsafe_segment(value)
        if problem is not None:
            problems.append(
                (
                    name,
                    f"{name} {value!r} {problem}: it is a segment of the URL that deletes "
                    f"product {key!r}, so it would address another resource",
                )
            )
    if not isinstance(payload.get("properties"), dict):
        problems.append(("properties", "properties must be an object"))
    if "aiPropertyOverrides" in payload and not isinstance(payload["aiPropertyOverrides"], dict):
        problems.append(("aiPropertyOverrides", "aiPropertyOverrides must be an object"))
    if problems:
        raise record_error(problems, key=key)
