"""A fake backend catalog API on loopback, for testing the HTTP source.

Owns ``FakeCatalogApi``: real HTTP on 127.0.0.1 serving a list of records in one of the
pagination styles the HTTP source reads, with optional auth and injected faults (failing,
malformed and vanished pages). Self-contained: stdlib server, no syncd imports.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

STYLES = ("none", "page", "offset", "cursor", "next_url", "link")
PATH = "/products"


class _Fault:
    def __init__(self, status: int, times: int | None, retry_after: str | None) -> None:
        self.status = status
        self.times = times
        self.retry_after = retry_after


class FakeCatalogApi:
    """The catalog ``records`` served page by page in ``style``.

    Query parameters: ``page``/``per_page`` (page, link), ``offset``/``limit`` (offset),
    ``cursor``/``limit`` (cursor), ``after``/``limit`` (next_url); ``limit`` and ``per_page``
    are both accepted as the size. Bodies are ``{<records_path>: [...], "total": N,
    "next": ...}`` (``next``: the cursor or a relative URL), or the bare list when
    ``records_path`` is None. ``link`` style sends ``Link: <absolute URL>; rel="next"``.
    Pages are numbered from 1 (page n starts at record ``(n - 1) * size``).
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        *,
        style: str = "page",
        page_size_default: int = 100,
        auth: tuple[str, str] | None = None,
        records_path: str | None = "products",
        item_key: str | None = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}: expected one of {', '.join(STYLES)}")
        self.records = records
        self.style = style
        self.page_size_default = page_size_default
        self.auth = auth
        self.records_path = records_path
        self.item_key = item_key
        """With a field name: ``GET /products/{value}`` answers that record, or 404."""
        self.requests = 0
        """Requests received, answered or not."""
        self.headers: list[dict[str, str]] = []
        """The headers of every request, in order."""
        self._faults: dict[int, _Fault] = {}
        self._malformed: set[int] = set()
        self._vanish_from: int | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------
    # Faults

    def fail_on_page(
        self, n: int, status: int = 500, times: int | None = None, retry_after: str | None = None
    ) -> None:
        """Answer ``status`` to requests for page ``n``: the next ``times`` ones (None: all)."""
        self._faults[n] = _Fault(status, times, retry_after)

    def malformed_page(self, n: int) -> None:
        """Answer page ``n`` with 200 and a body that is not JSON."""
        self._malformed.add(n)

    def vanish_from_page(self, n: int) -> None:
        """Answer 404 for page ``n`` and every page after it."""
        self._vanish_from = n

    # ----------------------------------------------------------------------------------
    # Lifecycle

    @property
    def url(self) -> str:
        """The first page's URL (without query parameters)."""
        if self._server is None:
            raise RuntimeError("the fake catalog API is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------------
    # Answering

    def answer(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body for a GET of ``target`` (path and query)."""
        with self._lock:
            self.requests += 1
            self.headers.append(headers)
            parts = urlsplit(target)
            item = parts.path.startswith(PATH + "/") and self.item_key is not None
            if parts.path != PATH and not item:
                return _error(404, "no such path")
            if self.auth is not None:
                name, expected = self.auth
                if headers.get(name.lower()) != expected:
                    return _error(401, "unauthorized")
            if item:
                return self._item(unquote(parts.path[len(PATH) + 1 :]))
            try:
                offset, size = self._window(parse_qs(parts.query))
            except ValueError as exc:
                return _error(400, str(exc))
            number = offset // size + 1 if size else 1
            if self._vanish_from is not None and number >= self._vanish_from:
                return _error(404, f"page {number} not found")
            fault = self._faults.get(number)
            if fault is not None and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                status, base, body = _error(fault.status, "injected fault")
                return status, {**base, **extra}, body
            if number in self._malformed:
                return 200, {"Content-Type": "application/json"}, b'{"products": [{"id": "1"'
            return self._page(offset, size)

    def _item(self, key: str) -> tuple[int, dict[str, str], bytes]:
        for record in self.records:
            if str(record.get(self.item_key or "")) == key:
                body = json.dumps(record).encode()
                return 200, {"Content-Type": "application/json"}, body
        return _error(404, f"no product {key!r}")

    def _window(self, query: dict[str, list[str]]) -> tuple[int, int]:
        def get(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        size_text = get("per_page") or get("limit")
        size = int(size_text) if size_text else self.page_size_default
        if size < 1:
            raise ValueError("page size must be at least 1")
        if self.style == "none":
            return 0, 0
        if self.style in ("page", "link"):
            return (int(get("page") or 1) - 1) * size, size
        if self.style == "offset":
            return int(get("offset") or 0), size
        if self.style == "next_url":
            return int(get("after") or 0), size
        cursor = get("cursor")
        if not cursor:
            return 0, size
        try:
            return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("at:")), size
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"bad cursor {cursor!r}") from None

    def _page(self, offset: int, size: int) -> tuple[int, dict[str, str], bytes]:
        total = len(self.records)
        chunk = self.records[offset : offset + size] if size else list(self.records)
        following = offset + size if size and offset + size < total else None
        headers = {"Content-Type": "application/json"}
        next_value: str | None = None
        if following is not None:
            if self.style == "cursor":
                next_value = base64.urlsafe_b64encode(f"at:{following}".encode()).decode()
            elif self.style == "next_url":
                next_value = f"{PATH}?after={following}&limit={size}"
            elif self.style == "link":
                page = following // size + 1
                headers["Link"] = f'<{self.url}?page={page}&per_page={size}>; rel="next"'
        body: Any = chunk
        if self.records_path:
            body = {"total": total, "next": next_value}
            holder = body
            *parents, last = self.records_path.split(".")
            for part in parents:
                holder = holder.setdefault(part, {})
            holder[last] = chunk
        return 200, headers, json.dumps(body).encode()


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps({"error": message}).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        fake: FakeCatalogApi = self.server.fake  # type: ignore[attr-defined]
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, extra, body = fake.answer(self.path, headers)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``requests`` and ``headers`` instead."""
