"""The one factory of HTTP clients: explicit timeouts, pool limits, TLS and User-Agent.

Adapters receive a client from here; tests inject a transport or point the base URL
at a loopback fake. TLS verification is always on; a custom CA bundle may be added.
"""

from __future__ import annotations

import email.utils
import functools
import ssl
import threading
import time
from collections.abc import Callable, Mapping

import httpx

from syncd import __version__
from syncd.config import HttpConfig
from syncd.errors import ConfigError

USER_AGENT = f"syncd/{__version__}"


_CONTEXT_LOCK = threading.Lock()


def _ssl_context(http: HttpConfig) -> ssl.SSLContext:
    # one thread builds it while the others wait, rather than each building its own
    with _CONTEXT_LOCK:
        return _verifying_context(str(http.ca_bundle) if http.ca_bundle is not None else None)


@functools.lru_cache(maxsize=8)
def _verifying_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying TLS context (shared: building one costs 50-100 ms; it is thread-safe)."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"http.ca_bundle: cannot load {ca_bundle}: {exc}") from None
    return context


class ThreadClients:
    """One client per worker thread, made on first use and all closed together.

    The constructing thread's client is made at once, so what clients share (the TLS
    context, 50-100 ms to build) is ready before the first worker sends.

    A single ``httpx.Client`` shared by many threads serialises on its connection pool:
    at 64 workers and 50 ms latency it reached ~314 requests/s against ~689 with a
    client per thread (bench/README.md).
    """

    def __init__(self, factory: Callable[[], httpx.Client]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._made: list[httpx.Client] = []
        self._lock = threading.Lock()
        self.get()

    def get(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
            with self._lock:
                self._made.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for client in made:
            client.close()


def make_client(
    http: HttpConfig,
    *,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    max_connections: int = 10,
    auth: httpx.Auth | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A configured ``httpx.Client``; the caller closes it."""
    all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    all_headers.update(headers or {})
    return httpx.Client(
        base_url=base_url,
        headers=all_headers,
        auth=auth,
        timeout=httpx.Timeout(timeout_s, connect=http.connect_timeout_s, pool=None),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        verify=_ssl_context(http),
        transport=transport,
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


_TRANSIENT_TLS = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ssl.SSLSyscallError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
)
"""TLS failures a retry may cure: the connection was cut during or after the handshake."""


def permanent_tls_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind an httpx transport error when retrying won't fix it.

    An untrusted, expired or wrong-host certificate (``SSLCertVerificationError``), or a
    handshake the two ends can't agree on (plain HTTP on the port, no common protocol),
    fails the same way every time; a connection cut mid-handshake does not count.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return None if isinstance(current, _TRANSIENT_TLS) else current
        current = current.__cause__ or current.__context__
    return None


def describe_tls_failure(error: ssl.SSLError, host: str) -> str:
    """What failed, for which host, and what to check; says it is not retried."""
    if isinstance(error, ssl.SSLCertVerificationError):
        why = error.verify_message or error.reason or "certificate verification failed"
        return (
            f"TLS: the certificate of {host} is not trusted ({why}); not retried. Check the "
            f"URL's host name, that the server's certificate covers {host} and has not "
            "expired, and, if a private CA signs it, add that CA's PEM file as the "
            "http.ca_bundle option"
        )
    why = error.reason or error.__class__.__name__
    return (
        f"TLS: the handshake with {host} failed ({why}); not retried. Check the URL is "
        "https:// on the server's HTTPS port and that the server's TLS setup is valid "
        "(http.ca_bundle adds a CA; verification can't be turned off)"
    )
