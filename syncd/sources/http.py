"""The HTTP source: a paginated JSON API of the backend, read one page at a time.

Owns the pagination styles (none, page, offset, cursor, next_url, link), the source's
auth, per-page retries with backoff, and the checks that make a partial read fail
loudly: bad pages, vanished pages, pagination loops and a disagreeing total.
``page_size`` goes out as ``size_param`` on every page and offset request; for the cursor
style too when set in the config, and for next_url/link on the first request only (the
server's next URLs carry it on).

Trust at the edges: a page body is streamed and refused past ``max_page_bytes``; an
object repeating a key fails the page; a next page on another origin (scheme, host,
port) than ``url`` is refused, so the credentials never leave the configured origin.
``item_url`` gives the second look at products a read did not find.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urljoin, urlsplit, urlunsplit

import httpx
import structlog

from syncd.config import HttpConfig, HttpSourceConfig, resolve_secret, url_origin
from syncd.errors import SourceError
from syncd.httpclient import (
    describe_tls_failure,
    make_client,
    parse_retry_after,
    permanent_tls_error,
)
from syncd.logs import scrub_snippet
from syncd.model import SourceItem, UnreadableRow
from syncd.retry import RetryPolicy, Sleep, real_sleep
from syncd.sources.base import KeyedRead, filter_records, unique_object

BACKOFF_INITIAL_S = 0.5
"""First wait before retrying a page; doubles on each try (with jitter)."""
BACKOFF_MAX_S = 30.0
"""Longest wait between two tries of a page."""
RETRY_AFTER_MAX_S = 300.0
"""Longest ``Retry-After`` honoured; a longer one is cut to this."""


def page_policy(config: HttpSourceConfig) -> RetryPolicy:
    """Tries and waits of one page: ``max_attempts``, the back-off above, a ``Retry-After``
    honoured up to ``RETRY_AFTER_MAX_S``."""
    return RetryPolicy(
        max_attempts=config.max_attempts,
        initial_delay_s=BACKOFF_INITIAL_S,
        max_delay_s=BACKOFF_MAX_S,
        max_retry_after_s=RETRY_AFTER_MAX_S,
    )


_RETRIABLE_STATUS = frozenset({408, 425, 429})
_GONE_STATUS = frozenset({404, 410})
_SNIPPET_BYTES = 4096
"""Bytes of an error response's body read for its message."""
log = structlog.get_logger("syncd.source")
_MISSING = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _walk(body: Any, dotted: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    value = body
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _origin_text(url: str) -> str:
    scheme, host, port = url_origin(url)
    return f"{scheme}://{host}:{port}"


def _safe_url(url: str | httpx.URL) -> str:
    """A URL without user information, for messages."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class _Page:
    """Where the next request goes: its URL and the query parameters to add."""

    number: int
    url: str
    params: dict[str, str] = field(default_factory=dict)


class HttpSource:
    """Reads the catalog from a paginated JSON API."""

    def __init__(
        self,
        config: HttpSourceConfig,
        http: HttpConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = real_sleep,
    ) -> None:
        self.config = config
        self.http = http
        self._transport = transport
        self._sleep = sleep
        self._retry = page_policy(config)
        self._present_key: str | None = None
        """A key the last read returned: the second look checks ``item_url`` with it."""

    def describe(self) -> str:
        return f"http {_safe_url(self.config.url)} ({self.config.pagination.style} pagination)"

    @property
    def can_prove_complete(self) -> bool:
        """True when the end of the pages is announced: an explicit "no next" (cursor,
        next_url, link), a single page, or a ``total_path`` checked at the end. False for
        ``page``/``offset`` without ``total_path``: an early empty or short page (a
        backend hiccup) looks exactly like the last one."""
        pagination = self.config.pagination
        return pagination.style not in ("page", "offset") or pagination.total_path is not None

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        """GET ``item_url`` for each key (URL-quoted), with the read's auth, headers,
        timeout and retries: 404 or 410 confirms it gone; a 2xx whose body is an object
        left out by ``source.where`` too. Anything else (another 2xx, an error, a body
        that isn't JSON) leaves the key unconfirmed. None without ``item_url``."""
        template = self.config.item_url
        if template is None:
            return None
        client, secret = self._client()
        gone: set[str] = set()
        with client:
            self._check_item_url(client, secret)
            for key in keys:
                url = template.replace("{key}", quote(str(key), safe=""))
                try:
                    response, body = self._fetch(
                        client, _Page(0, url), secret, what="item", also=_GONE_STATUS
                    )
                except SourceError as exc:
                    log.warning("syncd.source.item_unchecked", key=key, error=str(exc))
                    continue
                if response.status_code in _GONE_STATUS or self._filtered_out(body):
                    gone.add(str(key))
        return gone

    def read_keys(self, keys: Sequence[str]) -> KeyedRead:
        """GET ``item_url`` for each key (URL-quoted), with the read's auth, headers,
        timeout and retries: a 2xx JSON object is the product's row; 404 or 410 says it is
        gone; anything else (another status after retries, a body that isn't a JSON
        object) leaves the key unreachable. ``SourceError`` without ``item_url``."""
        template = self.config.item_url
        if template is None:
            raise SourceError("source.item_url is not set: no targeted read by key")
        client, secret = self._client()
        rows: list[SourceItem] = []
        gone: set[str] = set()
        unreachable: set[str] = set()
        with client:
            for key in dict.fromkeys(str(k) for k in keys):
                url = template.replace("{key}", quote(key, safe=""))
                try:
                    response, body = self._fetch(
                        client, _Page(0, url), secret, what="item", also=_GONE_STATUS
                    )
                except SourceError as exc:
                    log.warning("syncd.source.item_unreachable", key=key, error=str(exc))
                    unreachable.add(key)
                    continue
                if response.status_code in _GONE_STATUS:
                    gone.add(key)
                    continue
                try:
                    record = json.loads(
                        body, parse_constant=_reject_constant, object_pairs_hook=unique_object
                    )
                except (ValueError, RecursionError):
                    record = None
                if not isinstance(record, dict):
                    log.warning("syncd.source.item_unreachable", key=key, error="not a JSON object")
                    unreachable.add(key)
                    continue
                rows.append(record)
        return KeyedRead(tuple(rows), frozenset(gone), frozenset(unreachable))

    def _check_item_url(self, client: httpx.Client, secret: str | None) -> None:
        """Raise ``SourceError`` unless ``item_url`` answers 2xx for a key the read just
        returned: a wrong template would answer 404 for every key and confirm every delete."""
        template = self.config.item_url or ""
        known = self._present_key
        if known is None:
            raise SourceError(
                f"source.item_url: no key of the read to check {template!r} with; "
                "no absence is confirmed"
            )
        url = template.replace("{key}", quote(known, safe=""))
        response, _ = self._fetch(client, _Page(0, url), secret, what="item", also=_GONE_STATUS)
        if response.status_code in _GONE_STATUS:
            raise SourceError(
                f"source.item_url answered HTTP {response.status_code} for {known!r}, which "
                "the read just returned: check the template; no absence is confirmed"
            )

    def _filtered_out(self, body: bytes) -> bool:
        """Whether an item's body is a record that ``source.where`` leaves out."""
        if not self.config.where:
            return False
        try:
            record = json.loads(
                body, parse_constant=_reject_constant, object_pairs_hook=unique_object
            )
        except (ValueError, RecursionError):
            return False
        if not isinstance(record, dict):
            return False
        return not list(filter_records([record], self.config.where))

    # ----------------------------------------------------------------------------------
    # Auth

    def _secret(self, env_name: str | None, what: str) -> str:
        if not env_name:
            raise SourceError(f"source.auth.{what}: missing (needed by {self.config.auth.kind})")
        value = resolve_secret(env_name)
        if value is None:
            raise SourceError(f"source.auth.{what}: environment variable {env_name} is not set")
        return value

    def _client(self) -> tuple[httpx.Client, str | None]:
        """The client, and the secret to keep out of messages."""
        auth = self.config.auth
        headers: dict[str, str] = {}
        basic: httpx.Auth | None = None
        secret: str | None = None
        if auth.kind == "bearer":
            secret = self._secret(auth.token_env, "token_env")
            headers["Authorization"] = f"Bearer {secret}"
        elif auth.kind == "header":
            secret = self._secret(auth.token_env, "token_env")
            headers[auth.header] = secret
        elif auth.kind == "basic":
            secret = self._secret(auth.password_env, "password_env")
            basic = httpx.BasicAuth(auth.username or "", secret)
        client = make_client(
            self.http,
            headers=headers,
            timeout_s=self.config.timeout_s,
            max_connections=1,
            auth=basic,
            transport=self._transport,
        )
        return client, secret

    def _auth_hint(self) -> str:
        auth = self.config.auth
        if auth.kind in ("bearer", "header"):
            return f"check the token in ${auth.token_env}"
        if auth.kind == "basic":
            return f"check source.auth.username and the password in ${auth.password_env}"
        return "the API wants credentials: configure source.auth"

    # ----------------------------------------------------------------------------------
    # Reading

    def read(self) -> Iterator[SourceItem]:
        """Yield every page's records in order; every failure is raised while iterating."""
        client, secret = self._client()
        with client:
            for item in self._pages(client, secret):
                if self._present_key is None and isinstance(item, dict):
                    key = _walk(item, self.config.key)
                    if isinstance(key, str | int) and not isinstance(key, bool):
                        self._present_key = str(key)
                yield item

    def _pages(self, client: httpx.Client, secret: str | None) -> Iterator[SourceItem]:
        config = self.config
        pagination = config.pagination
        style = pagination.style
        first = _Page(1, config.url, dict(config.params))
        if style in ("cursor", "next_url", "link") and "page_size" in pagination.model_fields_set:
            first.params[pagination.size_param] = str(pagination.page_size)
        page: _Page | None = first
        position = pagination.first_page if style == "page" else 0
        seen: set[str] = set()
        previous_digest = b""
        count = 0
        total: Any = _MISSING
        while page is not None:
            if page.number > pagination.max_pages:
                raise SourceError(
                    f"{self.describe()}: more than {pagination.max_pages} pages; a pagination "
                    "loop? (raise source.pagination.max_pages if the catalog is that big)"
                )
            if style == "page":
                page.params[pagination.page_param] = str(position)
                page.params[pagination.size_param] = str(pagination.page_size)
            elif style == "offset":
                page.params[pagination.offset_param] = str(position)
                page.params[pagination.size_param] = str(pagination.page_size)
            response, content = self._fetch(client, page, secret)
            where = f"{self.describe()}: page {page.number} ({_safe_url(response.url)})"
            body = self._json(response, content, where)
            records = body if config.records_path is None else _walk(body, config.records_path)
            if records is _MISSING:
                raise SourceError(f"{where}: no {config.records_path!r} in the body")
            if not isinstance(records, list):
                raise SourceError(
                    f"{where}: {config.records_path or 'the body'} is a JSON "
                    f"{type(records).__name__}, not an array of records"
                )
            digest = hashlib.blake2b(content, digest_size=16).digest()
            if records and digest == previous_digest:
                raise SourceError(f"{where}: the same page again; the API ignores the pagination")
            previous_digest = digest
            if pagination.total_path is not None:
                found = _walk(body, pagination.total_path)
                if found is not _MISSING:
                    total = found
            for index, item in enumerate(records):
                if isinstance(item, dict):
                    yield item
                else:
                    yield UnreadableRow(
                        f"page {page.number} item {index}",
                        f"a JSON {type(item).__name__}, not an object",
                    )
            count += len(records)
            page = self._next(page, response, body, records, seen, where)
            if style in ("page", "offset"):
                position += 1 if style == "page" else len(records)
        if pagination.total_path is not None:
            self._check_total(total, count)

    def _next(
        self,
        page: _Page,
        response: httpx.Response,
        body: Any,
        records: list[Any],
        seen: set[str],
        where: str,
    ) -> _Page | None:
        """The page after this one, or None at the end."""
        pagination = self.config.pagination
        style = pagination.style
        number = page.number + 1
        if style == "none":
            return None
        if style in ("page", "offset"):
            if len(records) < pagination.page_size:
                return None
            return _Page(number, page.url, dict(page.params))
        if style == "link":
            target = response.links.get("next", {}).get("url")
        else:
            found = _walk(body, pagination.next_path)
            target = None if found is _MISSING or found in (None, "") else str(found)
        if not target:
            return None
        if style != "cursor":
            seen.add(str(response.url))
            target = urljoin(str(response.url), target)
            if url_origin(target) != url_origin(self.config.url):
                raise SourceError(
                    f"{where}: the next page {_safe_url(target)!r} is on another origin "
                    f"({_origin_text(target)}) than source.url ({_origin_text(self.config.url)}); "
                    "refused: the source's credentials go only to its own origin"
                )
        if target in seen:
            raise SourceError(
                f"{where}: next {style} {target!r} was already read: a pagination loop"
            )
        seen.add(target)
        if style == "cursor":
            params = dict(page.params)
            params[pagination.cursor_param] = target
            return _Page(number, self.config.url, params)
        url = target
        present = {key for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
        params = {k: v for k, v in self.config.params.items() if k not in present}
        return _Page(number, url, params)

    def _check_total(self, total: Any, count: int) -> None:
        path = self.config.pagination.total_path
        if total is _MISSING:
            raise SourceError(f"{self.describe()}: no page had a total at {path!r}")
        if isinstance(total, bool) or not isinstance(total, int | float | str):
            raise SourceError(f"{self.describe()}: the total at {path!r} is not a number")
        try:
            expected = int(total)
        except ValueError:
            raise SourceError(f"{self.describe()}: the total at {path!r} is not a number") from None
        if expected != count:
            raise SourceError(
                f"{self.describe()}: the API announced {expected} records ({path}) "
                f"but {count} were read"
            )

    # ----------------------------------------------------------------------------------
    # One page, with retries

    def _fetch(
        self,
        client: httpx.Client,
        page: _Page,
        secret: str | None,
        *,
        what: str = "page",
        also: frozenset[int] = frozenset(),
    ) -> tuple[httpx.Response, bytes]:
        """The response to a 2xx (or a status in ``also``) and its body, read to at most
        ``max_page_bytes``; retried on 429/5xx/timeouts, ``SourceError`` otherwise."""
        attempts = self._retry.max_attempts
        number = f" {page.number}" if what == "page" else ""
        where = f"{self.describe()}: {what}{number} ({_safe_url(page.url)})"
        try:
            # Merged here: ``params=`` would replace a next URL's own query.
            url = httpx.URL(page.url).copy_merge_params(page.params)
        except httpx.InvalidURL as exc:
            raise SourceError(f"{where}: {exc}") from exc
        where = f"{self.describe()}: {what}{number} ({_safe_url(url)})"
        for attempt in range(1, attempts + 1):
            wait: float | None = None
            try:
                response = client.send(client.build_request("GET", url), stream=True)
                try:
                    status = response.status_code
                    if status < 300 or status in also:
                        return response, self._body(response, where)
                    snippet = self._snippet(response)
                finally:
                    response.close()
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise SourceError(f"{where}: {exc}") from exc
            except httpx.TransportError as exc:
                reason = exc.__class__.__name__
                tls = permanent_tls_error(exc)
                if tls is not None:  # the same every time: not retried
                    raise SourceError(f"{where}: {describe_tls_failure(tls, url.host)}") from exc
                if attempt == attempts:
                    raise SourceError(
                        f"{where}: {exc.__class__.__name__} after {attempts} attempts: {exc}"
                    ) from exc
            else:
                if status not in _RETRIABLE_STATUS and status < 500:
                    raise SourceError(self._status_message(where, response, snippet, secret))
                if attempt == attempts:
                    message = self._status_message(where, response, snippet, secret)
                    raise SourceError(f"{message} after {attempts} attempts")
                reason = f"HTTP {status}"
                wait = parse_retry_after(response.headers.get("Retry-After"))
            wait = self._retry.delay(attempt, wait)
            log.warning(
                "syncd.source.page_retried",
                page=page.number,
                attempt=attempt,
                reason=reason,
                wait_s=round(wait, 3),
            )
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, response: httpx.Response, where: str) -> bytes:
        """The whole body, streamed; ``SourceError`` past ``max_page_bytes`` (decoded)."""
        limit = self.config.max_page_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise SourceError(
                f"{where}: the body is {declared} bytes (Content-Length), over "
                f"source.max_page_bytes={limit}; not downloaded"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise SourceError(
                    f"{where}: the body grew over source.max_page_bytes={limit}; download stopped"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _snippet(response: httpx.Response) -> str:
        """The start of an error response's body, for its message (never read whole)."""
        head = b""
        for chunk in response.iter_bytes():
            head += chunk
            if len(head) >= _SNIPPET_BYTES:
                break
        return head.decode("utf-8", "replace")  # cut only once scrubbed

    def _status_message(
        self, where: str, response: httpx.Response, snippet: str, secret: str | None
    ) -> str:
        status = response.status_code
        message = f"{where}: HTTP {status} {response.reason_phrase}".rstrip()
        if status in (401, 403):
            return f"{message}; {self._auth_hint()}"
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            return f"{message} to {_safe_url(location)!r}; configure the final URL"
        snippet = scrub_snippet(snippet, 200).strip()  # scrubbed whole, then cut
        if secret:
            snippet = snippet.replace(secret, "***")
        return f"{message}: {snippet}" if snippet else message

    def _json(self, response: httpx.Response, content: bytes, where: str) -> Any:
        try:
            return json.loads(
                content, parse_constant=_reject_constant, object_pairs_hook=unique_object
            )
        except RecursionError:
            raise SourceError(f"{where}: the body is nested too deeply to parse") from None
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            raise SourceError(f"{where}: the body is not valid JSON ({kind}): {exc}") from exc
