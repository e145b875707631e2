"""TLS failures against a real loopback HTTPS server: a certificate that is not trusted
or a handshake that can't succeed is fatal at once, never retried; a trusted one works."""

from __future__ import annotations

import itertools
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from syncd.config import HttpConfig, RetryConfig, UserfluxTargetConfig
from syncd.diff import Change, ChangeKind
from syncd.errors import TargetFatalError, TargetRetriableError
from syncd.executor import Executor
from syncd.httpclient import permanent_tls_error
from syncd.model import Document
from syncd.sandbox import FakeUserflux
from syncd.targets.userflux import UserfluxTarget, plan_update

KEY = "uf-tls-test-key-51c0"
RETRY = RetryConfig(max_attempts=6, initial_delay_s=0.5, max_delay_s=60, budget_s=900)


def make_certificate(folder: Path, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for ``san``, made with ``openssl req``."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class _Answer204(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpsServer(ThreadingHTTPServer):
    """Answers 204 to every POST over TLS; counts the connections it was offered."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Answer204)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.connections = 0
        self.handshakes = 0

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, address = self.socket.accept()
        self.connections += 1
        wrapped = self.context.wrap_socket(sock, server_side=True)  # raises if refused
        self.handshakes += 1
        return wrapped, address

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    return {
        "ip": make_certificate(folder, "loopback-ip", "IP:127.0.0.1"),
        "name": make_certificate(folder, "elsewhere", "DNS:elsewhere.example"),
    }


def serve(cert: Path, key: Path) -> Iterator[HttpsServer]:
    server = HttpsServer(cert, key)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def https_ip(certificates) -> Iterator[HttpsServer]:
    yield from serve(*certificates["ip"])


@pytest.fixture
def https_other_name(certificates) -> Iterator[HttpsServer]:
    yield from serve(*certificates["name"])


def target_for(base_url: str, ca_bundle: Path | None = None) -> UserfluxTarget:
    config = UserfluxTargetConfig(
        kind="userflux",
        name="uf",
        api_key_env="UF_KEY",
        type_id="shoes",
        base_url=base_url,
        timeout_s=5,
    )
    return UserfluxTarget(config, HttpConfig(ca_bundle=ca_bundle), api_key=KEY)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        if seconds > 0:
            self.sleeps.append(seconds)
            self.now += seconds


def push(target: UserfluxTarget, count: int = 3):
    operations = tuple(
        plan_update(
            Change(
                ChangeKind.CREATE,
                f"p{i}",
                Document.of(f"p{i}", {"id": f"p{i}", "typeId": "shoes", "properties": {}}),
            )
        )
        for i in range(count)
    )
    acked: list[str] = []
    clock = FakeClock()
    executor = Executor(target, concurrency=1, rate_limit_per_s=0, retry=RETRY, clock=clock)
    result = executor.run(operations, lambda op: acked.extend(op.keys), lambda: None)
    return result, acked, clock


def test_a_self_signed_certificate_is_fatal_after_one_attempt_naming_the_host(https_ip):
    target = target_for(f"https://127.0.0.1:{https_ip.server_port}")

    result, acked, clock = push(target)
    target.close()

    assert result.requests == 1
    assert https_ip.connections == 1 and https_ip.handshakes == 0
    assert clock.sleeps == [], "not retried"
    assert acked == []
    assert result.fatal is not None
    assert "127.0.0.1" in result.fatal
    assert "self-signed" in result.fatal
    assert "http.ca_bundle" in result.fatal
    assert "not retried" in result.fatal
    assert KEY not in result.fatal
    assert result.not_sent == 3


def test_a_certificate_for_another_host_name_is_fatal_even_when_its_ca_is_trusted(
    https_other_name, certificates
):
    cert, _ = certificates["name"]
    target = target_for(f"https://127.0.0.1:{https_other_name.server_port}", ca_bundle=cert)

    result, acked, clock = push(target)
    target.close()

    assert acked == []
    assert result.requests == 1 and https_other_name.connections == 1
    assert clock.sleeps == []
    assert result.fatal is not None and "127.0.0.1" in result.fatal
    assert "mismatch" in result.fatal.lower() or "not valid" in result.fatal.lower()


def test_a_certificate_signed_by_a_ca_in_the_bundle_is_accepted(https_ip, certificates):
    cert, _ = certificates["ip"]
    target = target_for(f"https://127.0.0.1:{https_ip.server_port}", ca_bundle=cert)

    result, acked, _ = push(target)
    target.close()

    assert result.fatal is None
    assert sorted(acked) == ["p0", "p1", "p2"]
    assert https_ip.handshakes >= 1


def test_https_to_a_plain_http_port_is_fatal_after_one_attempt():
    with FakeUserflux(api_key=KEY) as fake:
        target = target_for(fake.url.replace("http://", "https://"))

        result, acked, clock = push(target)
        target.close()

    assert result.requests == 1 and acked == []
    assert clock.sleeps == []
    assert result.fatal is not None and "TLS" in result.fatal and "127.0.0.1" in result.fatal


def chained(*errors: BaseException) -> BaseException:
    """``errors[0]`` raised from ``errors[1]`` raised from ..., as httpx chains them."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


@pytest.mark.parametrize(
    "cause",
    [ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), ConnectionResetError()],
    ids=["eof-mid-handshake", "reset"],
)
def test_a_connection_cut_during_the_handshake_is_not_a_permanent_tls_failure(cause):
    error = chained(httpx.ConnectError("cut"), OSError("wrapper"), cause)

    assert permanent_tls_error(error) is None


def test_a_certificate_verification_failure_deep_in_the_chain_is_permanent():
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error = chained(httpx.ConnectError("failed"), RuntimeError("httpcore"), cause)

    assert permanent_tls_error(error) is cause


def test_a_transient_tls_failure_stays_retriable(monkeypatch):
    def handshake_cut(request: httpx.Request) -> httpx.Response:
        raise chained(httpx.ConnectError("cut"), ssl.SSLEOFError(8, "EOF"))

    config = UserfluxTargetConfig(
        kind="userflux", name="uf", api_key_env="UF_KEY", type_id="shoes", timeout_s=5
    )
    target = UserfluxTarget(
        config, HttpConfig(), api_key=KEY, transport=httpx.MockTransport(handshake_cut)
    )
    (operation,) = push_operations()

    with pytest.raises(TargetRetriableError) as caught:
        target.send(operation)
    target.close()

    assert not isinstance(caught.value, TargetFatalError)
    assert caught.value.maybe_applied is False


def push_operations():
    document = Document.of("p0", {"id": "p0", "typeId": "shoes", "properties": {}})
    return (plan_update(Change(ChangeKind.CREATE, "p0", document)),)


def test_an_http_source_whose_certificate_is_not_trusted_fails_its_read_after_one_attempt(
    https_ip,
):
    from syncd.config import HttpSourceConfig
    from syncd.errors import SourceError
    from syncd.sources.http import HttpSource

    host, port = https_ip.server_address[:2]
    config = HttpSourceConfig(kind="http", url=f"https://{host}:{port}/products", max_attempts=4)

    untrusted = r"certificate of 127\.0\.0\.1 is not trusted.*not retried"
    with pytest.raises(SourceError, match=untrusted):
        list(HttpSource(config, HttpConfig()).read())
    assert https_ip.connections == 1
