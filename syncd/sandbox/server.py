"""Loopback HTTP plumbing shared by the fake targets.

Owns the threaded stdlib server bound to 127.0.0.1, request recording, fault
injection (status, Retry-After, delay, dropped connection, applied-then-failed),
global latency and the optional rate limit. Each fake only routes and validates.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import email.utils
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
_LOOPBACK_ALIASES = frozenset({LOOPBACK, "localhost"})

FaultMatcher = Callable[[str, str, object], bool]
"""``match(method, path, json_body) -> bool``: whether a fault applies to a request."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it, and the status it answered (0: dropped)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: object | None
    status: int


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour applied to the next ``times`` matching requests, in injection order.

    ``status`` answers that status instead of the real one (None: the real answer).
    ``delay`` seconds are waited after the request is processed, before answering.
    ``drop_connection`` closes the socket without any answer.
    ``apply_then_fail`` processes the request for real (the write lands in the
    catalog), then answers ``status`` or drops the connection anyway.
    """

    status: int | None = None
    retry_after: str | None = None
    body: str | bytes | None = None
    times: int | None = 1
    match: FaultMatcher | None = None
    delay: float = 0.0
    drop_connection: bool = False
    apply_then_fail: bool = False

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError("Fault.times must be at least 1, or None for forever")
        if self.delay < 0:
            raise ValueError("Fault.delay must not be negative")
        if self.status is None and not self.drop_connection and self.delay == 0:
            raise ValueError("Fault needs a status, a delay or drop_connection")
        if self.apply_then_fail and self.status is None and not self.drop_connection:
            raise ValueError("apply_then_fail needs a status or drop_connection")


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request handed to a fake's router (path without query, decoded JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: object | None
    json_error: str | None


@dataclass(frozen=True, slots=True)
class Response:
    """What a fake answers: status, body bytes and extra headers."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: object) -> Response:
    """A JSON answer."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, (("Content-Type", "application/json"),))


def error_response(status: int, reason: str) -> Response:
    """An error answer with the body ``{"error": reason}``."""
    return json_response(status, {"error": reason})


def require_loopback(host: str) -> str:
    """Return the address to bind, or raise ValueError for anything but loopback."""
    if host not in _LOOPBACK_ALIASES:
        raise ValueError(f"fake servers bind {LOOPBACK} only, not {host!r}")
    return LOOPBACK


class _PendingFault:
    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


class FakeServer(abc.ABC):
    """A fake target API served over real HTTP on 127.0.0.1; subclasses route requests.

    ``latency`` (seconds) is added to every answer; ``rate_limit_per_second`` (None:
    off) answers 429 with ``Retry-After: 1`` past that many requests in one second.
    """

    kind: str = "fake"

    def __init__(self, api_key: str, *, host: str = LOOPBACK, port: int = 0) -> None:
        self.api_key = api_key
        self.latency: float = 0.0
        self.rate_limit_per_second: float | None = None
        self._host = require_loopback(host)
        self._port = port
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._bytes_received = 0
        self._faults: list[_PendingFault] = []
        self._recent: collections.deque[float] = collections.deque()
        self._httpd: _LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; a restarted fake keeps its port."""
        if self._httpd is not None:
            raise RuntimeError(f"{self.kind} fake is already running")
        httpd = _LoopbackHTTPServer((self._host, self._port), self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"fake-{self.kind}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; the catalog is kept."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"{self.kind} fake has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    # -- faults ------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault; the first pending fault that matches a request is used."""
        with self._lock:
            self._faults.append(_PendingFault(fault))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [pending.fault for pending in self._faults]

    # -- recording ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def request_count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (method is None or r.method == method.upper())
                and (path_prefix is None or r.path.startswith(path_prefix))
            )

    @property
    def bytes_received(self) -> int:
        """Total request body bytes received since the last reset."""
        with self._lock:
            return self._bytes_received

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._bytes_received = 0

    # -- what subclasses provide -------------------------------------------------

    @abc.abstractmethod
    def _authorized(self, headers: dict[str, str]) -> bool:
        """Whether the request carries this fake's API key the way the API wants it."""

    @abc.abstractmethod
    def _dispatch(self, request: Request) -> Response:
        """Route an authorized request; called with the lock held."""

    # -- request handling ----------------------------------------------------------

    def _take_fault(self, request: Request) -> Fault | None:
        for index, pending in enumerate(self._faults):
            fault = pending.fault
            if fault.match is not None and not fault.match(
                request.method, request.path, request.json
            ):
                continue
            if pending.remaining is not None:
                pending.remaining -= 1
                if pending.remaining == 0:
                    del self._faults[index]
            return fault
        return None

    def _over_rate_limit(self) -> bool:
        limit = self.rate_limit_per_second
        if limit is None:
            return False
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= limit:
            return True
        self._recent.append(now)
        return False

    def _process(self, request: Request) -> Response:
        if not self._authorized(request.headers):
            return error_response(401, "missing or invalid API key")
        return self._dispatch(request)

    def _handle(self, request: Request, raw_path: str) -> tuple[Response | None, float]:
        """Decide the answer (None: drop the connection) and the delay before it."""
        with self._lock:
            fault = self._take_fault(request)
            response: Response | None
            if fault is None:
                if self._over_rate_limit():
                    response = error_response(429, "rate limit exceeded")
                    response = _with_header(response, "Retry-After", "1")
                else:
                    response = self._process(request)
            else:
                if fault.apply_then_fail:
                    self._process(request)
                if fault.drop_connection:
                    response = None
                elif fault.status is None:
                    response = self._process(request)
                else:
                    response = _fault_response(fault)
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=raw_path,
                    headers=request.headers,
                    body=request.body,
                    json=request.json,
                    status=0 if response is None else response.status,
                )
            )
            self._bytes_received += len(request.body)
        delay = self.latency + (fault.delay if fault is not None else 0.0)
        return response, delay


def _with_header(response: Response, name: str, value: str) -> Response:
    return Response(response.status, response.body, (*response.headers, (name, value)))


def _fault_response(fault: Fault) -> Response:
    assert fault.status is not None
    if fault.body is None:
        response = error_response(fault.status, f"injected fault: status {fault.status}")
    else:
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        try:
            json.loads(body)
            content_type = "application/json"
        except ValueError:
            content_type = "text/plain; charset=utf-8"
        response = Response(fault.status, body, (("Content-Type", content_type),))
    if fault.retry_after is not None:
        response = _with_header(response, "Retry-After", fault.retry_after)
    return response


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Handler(BaseHTTPRequestHandler):
    """Lean HTTP/1.1 keep-alive handler: a dict of headers, one write per answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _LoopbackHTTPServer
    header_dict: dict[str, str]
    raw_requestline: bytes

    def parse_request(self) -> bool:
        self.command = ""
        # The stdlib parses headers with the email package, the slowest part of a
        # request; a dict is all the fakes need.
        self.request_version = "HTTP/1.1"
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        parts = self.requestline.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.send_error(400, f"bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = parts
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if not colon or len(line) > _MAX_LINE:
                self.send_error(400, "malformed header line")
                return False
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            self.send_error(431, "too many headers")
            return False
        self.header_dict = headers
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in connection
        else:
            self.close_connection = "close" in connection
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib access log."""

    def _read_body(self) -> bytes:
        if "chunked" in self.header_dict.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = int(self.header_dict.get("content-length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline(_MAX_LINE).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE)

    def _answer(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._write(error_response(400, "malformed request body framing"))
            return
        parsed: object | None = None
        json_error: str | None = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                json_error = f"body is not valid JSON: {exc}"
        request = Request(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=self.header_dict,
            body=body,
            json=parsed,
            json_error=json_error,
        )
        response, delay = self.server.fake._handle(request, self.path)
        if delay > 0:
            time.sleep(delay)
        if response is None:
            self.close_connection = True
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        status = response.status
        phrase = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {phrase}", "Server: syncd-sandbox", f"Date: {_http_date()}"]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        has_body = status >= 200 and status not in (204, 304)
        if has_body:
            lines.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")
        self.wfile.write(head + response.body if has_body else head)


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


class _LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], fake: FakeServer) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away; show real bugs."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)
