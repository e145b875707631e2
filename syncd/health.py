"""The HTTP listener of the daemon: ``/healthz``, ``/readyz`` and ``/metrics`` (and the
change feeds' webhooks, ``POST /feeds/<name>``, handled by ``Probes.post``).

A stdlib ``ThreadingHTTPServer`` in a daemon thread; what each endpoint reports comes
from callables the daemon passes in: /healthz (liveness) is the process and its
scheduler running, /readyz (readiness) the state database reachable with a current
schema. Failing runs make neither fail: they go to /metrics and alerts, which a pod
taken out of service would stop. ``probe`` is the client ``syncd healthcheck`` uses.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import structlog

from syncd.errors import ConfigError

log = structlog.get_logger("syncd.health")

Alive = Callable[[], bool]
"""Whether the process is alive (the scheduler thread runs)."""
Ready = Callable[[], list[str]]
"""Why the process is not ready; an empty list when it is."""
Metrics = Callable[[], tuple[bytes, str]]
"""The metrics text and its content type."""
StatusPage = Callable[[str], tuple[bytes, str]]
"""The status page for a query string: its body and content type (``syncd.statuspage``)."""
Post = Callable[
    [str, str, Mapping[str, str], int | None, Callable[[int], bytes]],
    tuple[int, bytes, str, Mapping[str, str]] | None,
]
"""A POST (the change feeds' webhooks): (path, query, headers (names lower-cased),
Content-Length, read) →
status, body, content type and extra headers; None: no such endpoint. It reads the body
itself (``read(n)``), so it can refuse one too large before reading it."""

FAILING = frozenset({"failed", "partial", "blocked"})
"""Outcomes that count as failing; ``locked`` and ``interrupted`` are neutral."""


@dataclass(frozen=True, slots=True)
class Probes:
    """What the endpoints report."""

    alive: Alive
    ready: Ready
    metrics: Metrics | None = None
    status: StatusPage | None = None
    post: Post | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        post = self.server.probes.post
        extra: Mapping[str, str] = {}
        try:
            raw_length = self.headers.get("Content-Length")
            length = int(raw_length) if raw_length is not None and raw_length.isdigit() else None
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = None if post is None else post(path, query, headers, length, self.rfile.read)
            if answer is None:
                status, body, ctype = _json(404, "not found", [f"no endpoint {path}"])
            else:
                status, body, ctype, extra = answer
        except Exception as exc:  # a handler that breaks answers 500, its body unread
            log.warning("syncd.health.post_failed", path=path, error=repr(exc))
            status, body, ctype = _json(500, "error", [exc.__class__.__name__])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")  # a refused body may be left unread
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes and probes every few seconds: not worth a log line

    def _answer(self, *, with_body: bool) -> None:
        path, _, query = self.path.partition("?")
        probes = self.server.probes
        try:
            if path == "/healthz":
                alive = probes.alive()
                status, body, ctype = _json(200 if alive else 503, "ok" if alive else "dead", [])
            elif path == "/readyz":
                reasons = probes.ready()
                status, body, ctype = _json(
                    503 if reasons else 200, "unready" if reasons else "ok", reasons
                )
            elif path == "/metrics" and probes.metrics is not None:
                body, ctype = probes.metrics()
                status = 200
            elif path in ("/", "/status") and probes.status is not None:
                body, ctype = probes.status(query)
                status = 200
            else:
                status, body, ctype = _json(404, "not found", [f"no endpoint {path}"])
        except Exception as exc:  # a probe that breaks answers 503
            log.warning("syncd.health.probe_failed", path=path, error=repr(exc))
            status, body, ctype = _json(503, "error", [repr(exc)])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)


def _json(status: int, state: str, reasons: list[str]) -> tuple[int, bytes, str]:
    payload: dict[str, Any] = {"status": state}
    if reasons:
        payload["reasons"] = reasons
    return status, json.dumps(payload).encode() + b"\n", "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], probes: Probes) -> None:
        self.probes = probes
        super().__init__(address, _Handler)


class HealthServer:
    """Serves the probes on ``host:port`` (port 0: any free port) in a background thread."""

    def __init__(self, host: str, port: int, probes: Probes) -> None:
        self._host = host
        self._port = port
        self._probes = probes
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        try:
            httpd = _Server((self._host, self._port), self._probes)
        except OSError as exc:
            raise ConfigError(
                f"health.port: cannot listen on {self._host}:{self._port}: {exc.strerror or exc}"
            ) from exc
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="syncd-health",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{local_address(self._host)}:{self._port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def local_address(host: str) -> str:
    """Where to reach a listener bound to ``host`` from the same machine."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (a wildcard bind is reached on loopback)
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def probe(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """GET ``url``: whether it answered 200, and a line saying what happened."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (checked above)
            return response.status == 200, f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"


__all__ = ["FAILING", "HealthServer", "Probes", "local_address", "probe"]
