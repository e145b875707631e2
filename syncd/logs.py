"""Logging: structlog events, JSON lines when not on a terminal, secrets scrubbed.

Library loggers (httpx, apscheduler, alembic) go through the same pipeline; httpx's
per-request lines are turned down to warnings.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote, urlsplit

import structlog

from syncd.config import SyncdConfig, credential_names, resolve_secret, secret_names

_secrets: set[str] = set()
_by_length: tuple[str, ...] = ()
"""The registered forms, longest first (a longer form is replaced before its parts)."""
_secrets_lock = threading.Lock()

_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")
MIN_SECRET = 4
"""Shorter values are not secrets worth hiding (and would blank out ordinary words)."""
ELLIPSIS = "…"


def secret_forms(value: str) -> set[str]:
    r"""Every form ``value`` takes on the wire or in a document: raw; URL-encoded (``quote``
    and ``quote_plus``, upper- and lower-case hex); JSON-escaped (ASCII-only and not, ``/``
    as ``\/`` as PHP writes it, every punctuation character as ``\uXXXX``); HTML-escaped;
    and base64 (standard and URL-safe, with and without padding)."""
    quoted = {quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
    forms = {value, *quoted, *(_LOWER_HEX.sub(lambda m: m[0].lower(), q) for q in quoted)}
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= escaped | {e.replace("/", "\\/") for e in escaped}
    for hex_format in ("\\u{:04x}", "\\u{:04X}"):
        forms.add("".join(c if c.isalnum() else hex_format.format(ord(c)) for c in value))
    forms |= {html.escape(value), html.escape(value, quote=False)}
    raw = value.encode("utf-8")
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms |= {text, text.rstrip("=")}
    return {form for form in forms if len(form) >= MIN_SECRET}


def _add(forms: set[str]) -> None:
    global _by_length
    with _secrets_lock:
        _secrets.update(forms)
        _by_length = tuple(sorted(_secrets, key=lambda s: (-len(s), s)))


def register_secret(value: str | None) -> None:
    """Never let this value appear in any output (API keys, tokens, passwords, and the
    password inside a URL such as a database URL from the environment), in any of the
    forms ``secret_forms`` lists."""
    if not value or len(value) < MIN_SECRET:
        return
    found = {value}
    if "://" in value:
        try:
            parts = urlsplit(value)
            username, password = parts.username, parts.password
        except ValueError:
            username = password = None
        if password:
            found |= {password, unquote(password)}
            if username:
                found.add(f"{unquote(username)}:{unquote(password)}")
    _add(set().union(*(secret_forms(v) for v in found if len(v) >= MIN_SECRET)))


def register_credentials(username: str | None, password: str | None) -> None:
    """Register a user and password pair: the password, ``user:password`` and the
    ``Basic base64(user:password)`` header value, in every form."""
    if not password:
        return
    register_secret(password)
    pair = f"{username or ''}:{password}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    register_secret(pair)
    register_secret(f"Basic {token}")


def register_config_secrets(config: SyncdConfig, environ: Mapping[str, str] | None = None) -> None:
    """Register every secret ``config`` names (read from the environment), a user and
    password (the HTTP source's basic auth) as a pair: both found by the models' markers."""
    for _, name in secret_names(config):
        register_secret(resolve_secret(name, environ))
    for username, name in credential_names(config):
        register_credentials(username, resolve_secret(name, environ))


def registered_secrets() -> tuple[str, ...]:
    """Every registered form, longest first."""
    return _by_length


def scrub(text: str) -> str:
    """Replace every registered secret, in every registered form, in ``text`` by ``***``."""
    for secret in _by_length:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _secret_prefix_at_end(text: str) -> int:
    """The length of the longest tail of ``text`` (at least ``MIN_SECRET`` characters)
    that is the beginning of a registered secret; 0 when none is."""
    longest = 0
    for secret in _by_length:
        for size in range(min(len(secret) - 1, len(text)), max(MIN_SECRET, longest + 1) - 1, -1):
            if secret.startswith(text[-size:]):
                longest = size
                break
    return longest


def scrub_snippet(text: str, limit: int) -> str:
    """``text`` scrubbed, then cut to ``limit`` characters (``…`` marks a cut).

    The scrub comes first, so a secret straddling the cut is replaced whole; then a
    tail that is the beginning of a secret (a body cut short by its sender) is dropped.
    """
    text = scrub(text)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    while tail := _secret_prefix_at_end(text):
        text, cut = text[:-tail], True
    return text + ELLIPSIS if cut else text


def scrub_document(value: Any) -> Any:
    """A JSON-like document with every string in it scrubbed (keys too)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_document(k): scrub_document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_document(v) for v in value]
    return value


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, BaseException):
        return value  # exc_info: rendered (and scrubbed) with the whole line
    return scrub(str(value))


class _ScrubbedRenderer:
    """Renders the event, then scrubs the rendered line: a traceback formatted from
    ``exc_info`` is scrubbed too."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        rendered = self._renderer(logger, name, event)
        return scrub(rendered) if isinstance(rendered, str) and _secrets else rendered


def _scrub_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event
    for key, value in event.items():
        event[key] = _scrubbed(value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog and the standard library's logging to write one pipeline."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _ScrubbedRenderer(renderer),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in ("httpx", "httpcore", "apscheduler.executors", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
